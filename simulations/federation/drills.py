"""Failure drills on a launched federation: kill and restart a SuperNode, kill the ServerApp.

>>> drills.kill_node(out_dir, "bs-1")          # SIGKILL the node, its SuperExec, its ClientApp
>>> drills.wait_node_offline(fed, "bs-1")      # SuperLink noticed (missed heartbeats, <= ~60 s)
>>> drills.restart_node(out_dir, "bs-1")       # same argv, key and node-config: it rejoins
>>> drills.kill_serverapp(out_dir)             # the running ServerApp dies; `flwr run` again resumes

A killed node is what a base station losing power looks like to Flower 1.41: the
SuperLink keeps it *online* until it misses heartbeats (interval 30 s, patience 2),
then answers the ServerApp's pending messages to it with ``NODE_UNAVAILABLE``
errors. rantune's round loop records the node under ``failed`` in that round of
``history.json`` and aggregates the others when at least ``min-train-clients``
answered. A restarted node with the same auth key is the same node id, so
the next round samples it again.

Every process is found by the launcher's record (pid + start time + argv) or as a
descendant of a recorded process; nothing is matched by name alone.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from rantune.errors import InputError
from rantune.simulations.federation import auth, processes
from rantune.simulations.federation.state import Federation

SERVERAPP = "flwr-serverapp"


def _record(fed: Federation, name: str) -> processes.ProcessRecord:
    for record in fed.processes:
        if record.name == name:
            return record
    names = [p.name for p in fed.processes]
    raise InputError(f"no process {name!r} in {fed.out_dir} (recorded: {', '.join(names)})")


def _family(record: processes.ProcessRecord) -> list[tuple[int, int]]:
    """The process, its descendants and the SuperExec it started (pid, start ticks)."""
    found = [(record.pid, record.start_ticks)] if processes.matches(record) else []
    family = processes.descendants(record.pid) if found else []
    for pid, ticks in processes.detached_children(record):
        family += [(pid, ticks), *processes.descendants(pid)]
    return found + sorted(set(family))


def _kill(targets: list[tuple[int, int]], sig: signal.Signals) -> int:
    killed = 0
    for pid, ticks in targets:
        stat = processes._stat(pid)  # noqa: SLF001 - same package
        if stat is None or stat[2] != ticks:
            continue
        try:
            os.kill(pid, sig)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def kill_node(out_dir: Path, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
    """Kill SuperNode ``name`` with its SuperExec and ClientApp processes at once.

    Returns the number of processes signalled. The federation record keeps the
    node (``status`` shows it as not running) so :func:`restart_node` can bring it back.
    """
    fed = Federation.load(Path(out_dir).resolve())
    record = _record(fed, name)
    if not name.startswith("bs-"):
        raise InputError(f"{name!r} is not a SuperNode (bs-<i>); kill_serverapp ends the server")
    targets = _family(record)
    count = _kill(targets, sig)
    deadline = time.monotonic() + 10
    while any(processes.is_running(pid) for pid, _ in targets) and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def restart_node(out_dir: Path, name: str, env: dict[str, str] | None = None) -> Federation:
    """Start SuperNode ``name`` again with its recorded argv (same key, node-config, port).

    Its log continues in ``logs/NAME.restart-K.log``; ``federation.json`` records the
    new process so ``down`` stops it. ``env`` defaults to this process's environment
    with the venv's bin on PATH (SuperNodes take ``RANTUNE_CACHE`` etc. from it).
    """
    out_dir = Path(out_dir).resolve()
    fed = Federation.load(out_dir)
    old = _record(fed, name)
    if processes.matches(old):
        raise InputError(f"{name} is still running (pid {old.pid}); kill_node first")
    bin_dir = str(Path(sys.executable).parent)
    env = dict(env or os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_HOME"] = str(fed.flwr_home)
    env.setdefault("PYTHONUNBUFFERED", "1")
    node = next((n for n in fed.nodes if n.get("name") == name), {})
    if node.get("cache"):  # a node with its own station data keeps its private cache
        env["RANTUNE_CACHE"] = node["cache"]
    restarts = len(list((out_dir / "logs").glob(f"{name}.restart-*.log")))
    log = out_dir / "logs" / f"{name}.restart-{restarts + 1}.log"
    record = processes.start_process(name, list(old.argv), log, env)
    fed.processes = [record if p is old else p for p in fed.processes]
    fed.save()
    return fed


def serverapp_processes(out_dir: Path) -> list[tuple[int, int]]:
    """Running ``flwr-serverapp`` processes started by this federation's SuperLink."""
    fed = Federation.load(Path(out_dir).resolve())
    found = []
    for pid, ticks in _family(_record(fed, "superlink")):
        cmdline = processes._cmdline(pid) or []  # noqa: SLF001 - same package
        if any(Path(part).name == SERVERAPP for part in cmdline[:2]):
            found.append((pid, ticks))
    return found


def kill_serverapp(out_dir: Path, sig: signal.Signals = signal.SIGKILL) -> int:
    """Kill the running ServerApp process(es) of the federation; returns how many."""
    targets = serverapp_processes(out_dir)
    family = list(targets)
    for pid, _ in targets:
        family += processes.descendants(pid)
    return _kill(family, sig)


def node_status(fed: Federation, name: str) -> str:
    """The SuperLink's view of node ``name`` (``online``, ``offline``, ...); needs auth
    (node ids are known only for registered nodes)."""
    node = next((n for n in fed.nodes if n["name"] == name), None)
    if node is None or "node_id" not in node:
        raise InputError(f"{name}: no registered node id (start the federation with --auth)")
    flwr_bin = str(Path(sys.executable).with_name("flwr"))
    listed = auth.list_nodes(fed.name, fed.flwr_home, flwr_bin=flwr_bin)
    for entry in listed:
        if int(entry["node-id"]) == int(node["node_id"]):
            return str(entry["status"])
    return "unknown"


def wait_node_status(
    fed: Federation, name: str, wanted: tuple[str, ...], timeout_s: float = 180.0
) -> str:
    """Poll ``flwr supernode list`` until node ``name`` has one of ``wanted`` statuses."""
    deadline = time.monotonic() + timeout_s
    status = "unknown"
    while time.monotonic() < deadline:
        status = node_status(fed, name)
        if status in wanted:
            return status
        time.sleep(2.0)
    raise TimeoutError(f"{name} is {status!r}, not {wanted}, after {timeout_s:.0f} s")
