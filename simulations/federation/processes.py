"""Start, identify and stop the federation's OS processes (Linux ``/proc``).

A pid alone is not an identity: after a process exits its pid can be reused.
A started process is therefore recorded as pid + kernel start time + argv, and
is only signalled when all three still match. Flower's SuperLink and
SuperNodes spawn ``flower-superexec`` (which spawns ServerApp/ClientApp
processes) in new sessions; those should exit once their parent is gone, and
:func:`stop_processes` stops any that linger (see :func:`detached_children`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessRecord:
    """What identifies a process this package started.

    Attributes
    ----------
    name : str
        Role name (``superlink``, ``bs-0``, ...).
    pid : int
        Process id.
    start_ticks : int
        Kernel start time (``/proc/PID/stat`` field 22, clock ticks after boot).
    argv : list of str
        The exact command line it was started with.
    log : str
        Path of the file receiving its stdout and stderr.
    """

    name: str
    pid: int
    start_ticks: int
    argv: list[str]
    log: str

    def to_json(self) -> dict:
        """Return a JSON-serializable dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ProcessRecord:
        """Inverse of :meth:`to_json`."""
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            argv=[str(a) for a in data["argv"]],
            log=str(data["log"]),
        )


def _stat(pid: int) -> tuple[str, int, int] | None:
    """Return ``(state, ppid, start_ticks)`` of ``pid`` or ``None`` if it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_running(pid: int) -> bool:
    """Return whether ``pid`` exists and is not a zombie (reaping it if it is our child)."""
    _reap(pid)
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is a child of this process."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def matches(record: ProcessRecord) -> bool:
    """Return whether ``record.pid`` is still the process that was recorded."""
    if not is_running(record.pid):
        return False
    stat = _stat(record.pid)
    if stat is None or stat[2] != record.start_ticks:
        return False
    cmdline = _cmdline(record.pid)
    if cmdline is None:
        return False
    # A script runs as ``python SCRIPT ARGS``: match ARGS as the tail, SCRIPT by name before it.
    tail = record.argv[1:]
    head = cmdline[: len(cmdline) - len(tail)]
    program = Path(record.argv[0]).name
    return cmdline[len(head) :] == tail and any(Path(part).name == program for part in head)


def descendants(pid: int) -> list[tuple[int, int]]:
    """Return ``(pid, start_ticks)`` of every live descendant of ``pid``."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[0] in ("Z", "X"):
            continue
        children.setdefault(stat[1], []).append((int(entry.name), stat[2]))
    found: list[tuple[int, int]] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child[0])
    return found


def detached_children(record: ProcessRecord) -> list[tuple[int, int]]:
    """Return live processes started by ``record`` with ``--parent-pid PID`` on their command line.

    Flower's SuperLink/SuperNode start ``flower-superexec --parent-pid PID`` in a
    new session. SuperExec is meant to exit when that parent is gone, but its
    monitor raises SIGINT only once, and a SuperExec still starting up (e.g. when
    the SuperLink refused its SuperNode) can miss it and linger, reparented to
    init. Matching the flag (and a start time not before the parent's) finds it
    even after its parent exited.
    """
    found = []
    flag = ["--parent-pid", str(record.pid)]
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        cmdline = _cmdline(int(entry.name))
        stat = _stat(int(entry.name))
        if not cmdline or stat is None or stat[0] in ("Z", "X") or stat[2] < record.start_ticks:
            continue
        if any(cmdline[i : i + 2] == flag for i in range(len(cmdline) - 1)):
            found.append((int(entry.name), stat[2]))
    return found


def start_process(name: str, argv: list[str], log: Path, env: dict[str, str]) -> ProcessRecord:
    """Start ``argv`` in its own session with stdout/stderr appended to ``log``.

    Returns
    -------
    ProcessRecord
        The started process's identity.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as handle:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by the launcher, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    stat = _stat(proc.pid)
    start_ticks = stat[2] if stat is not None else -1
    return ProcessRecord(name=name, pid=proc.pid, start_ticks=start_ticks, argv=argv, log=str(log))


def _signal(pid: int, start_ticks: int, sig: signal.Signals) -> None:
    stat = _stat(pid)
    if stat is None or stat[2] != start_ticks:
        return  # gone, or the pid now belongs to someone else
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int, start_ticks: int) -> bool:
    if not is_running(pid):
        return False
    stat = _stat(pid)
    return stat is not None and stat[2] == start_ticks


def _wait_gone(procs: list[tuple[int, int]], timeout_s: float) -> list[tuple[int, int]]:
    deadline = time.monotonic() + timeout_s
    alive = procs
    while True:
        alive = [(p, t) for p, t in alive if _alive(p, t)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def stop_processes(records: list[ProcessRecord], grace_s: float = 10.0) -> dict[str, str]:
    """Stop recorded processes and whatever they spawned, all at once; idempotent.

    SIGTERM first (Flower shuts down gracefully and ends its SuperExec), then
    SIGKILL after ``grace_s``. Descendants (recorded before the signal) that
    outlive their parent get the same treatment. A pid that now belongs to
    another program is left alone.

    Returns
    -------
    dict
        Name -> ``"stopped"``, ``"not running"`` or ``"pid reused (left alone)"``.
    """
    outcome: dict[str, str] = {}
    targets: list[tuple[int, int]] = []
    family: list[tuple[int, int]] = []
    for record in records:
        if not is_running(record.pid):
            outcome[record.name] = "not running"
            family += detached_children(record)
        elif not matches(record):
            outcome[record.name] = "pid reused (left alone)"
        else:
            outcome[record.name] = "stopped"
            targets.append((record.pid, record.start_ticks))
            family += descendants(record.pid) + detached_children(record)
    family = sorted(set(family))
    _terminate(targets, grace_s)
    # SuperExec and app processes poll for their parent, but a parent that is an unreaped
    # zombie still "exists" to them: end them the way SuperLink does (SIGTERM, then SIGKILL).
    _terminate(_wait_gone(family, 0.5), grace_s)
    return outcome


def _terminate(procs: list[tuple[int, int]], grace_s: float) -> None:
    for pid, ticks in procs:
        _signal(pid, ticks, signal.SIGTERM)
    stubborn = _wait_gone(procs, grace_s)
    for pid, ticks in stubborn:
        _signal(pid, ticks, signal.SIGKILL)
    _wait_gone(stubborn, 5.0)


def log_tail(path: str | Path, lines: int = 15) -> str:
    """Return the last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])
