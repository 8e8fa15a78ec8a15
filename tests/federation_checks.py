"""Checks shared by the deployment tests and drills: leftover processes, the model to use.

``stray_processes(ports)`` lists live processes whose command line names one of a
federation's ports (SuperLink, SuperNodes and the SuperExec processes they start
carry them), so a test can assert that ``down`` left nothing behind.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from rantune.simulations.federation import processes
from rantune.simulations.federation.state import Federation


def federation_ports(fed: Federation) -> list[int]:
    """The SuperLink port and every SuperNode's Runtime API port."""
    return [int(fed.address.rsplit(":", 1)[1])] + [int(n["port"]) for n in fed.nodes]


def stray_processes(ports: list[int]) -> list[tuple[int, str]]:
    """Live processes (other than this one) whose command line names one of ``ports``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(re.search(rf"(:|--port )({port})\b", cmd) for port in ports):
            if processes.is_running(int(entry.name)):
                found.append((int(entry.name), cmd))
    return found


def wait_no_strays(ports: list[int], timeout_s: float = 20.0) -> list[tuple[int, str]]:
    """Wait until no process names one of ``ports``; return what is left after the wait."""
    deadline = time.monotonic() + timeout_s
    while (left := stray_processes(ports)) and time.monotonic() < deadline:
        time.sleep(0.3)
    return left


def pretrained_or_none() -> str:
    """``model.pretrained``: the shipped ``tiny`` encoder if present, else ``"none"``."""
    from rantune.federated.workload import resolve_checkpoint

    try:
        resolve_checkpoint("tiny")
        return "tiny"
    except ValueError:
        return "none"
