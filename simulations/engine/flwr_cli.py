"""Drive ``flwr run .`` (Flower's Ray simulation) from Python: tests and benchmarks.

:func:`flwr_simulation` starts its own simulation SuperLink on free loopback ports
with a private ``FLWR_HOME`` (so nothing in ``~/.flwr`` is used or changed), writes
the connection to ``$FLWR_HOME/config.toml``::

    [superlink.rantune-sim]
    address = "127.0.0.1:<port>"
    insecure = true

runs ``flwr run . rantune-sim --stream`` with ``--federation-config
num-supernodes=N``, and stops the SuperLink it started (its process group, by id)
on exit, also when the run fails. Runtime dependency installation is disabled:
the apps run in this virtual environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CONNECTION = "rantune-sim"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


@dataclass
class FlwrRunResult:
    """Outcome of one ``flwr run``: exit code, output and wall-time split (s)."""

    returncode: int
    output: str
    submitted_s: float  # from launching `flwr run` to the SuperLink accepting the run
    total_s: float  # from launching `flwr run` to its exit (the run finished)


@dataclass
class FlwrSimulation:
    """A private simulation SuperLink; :meth:`run` submits ``flwr run .`` to it."""

    home: Path
    port: int
    env: dict
    log: Path

    def run(
        self,
        run_config: Mapping[str, object],
        num_supernodes: int,
        app_dir: Path = ROOT,
        timeout: float = 900.0,
        extra_federation_config: str = "",
    ) -> FlwrRunResult:
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
        federation = f"num-supernodes={num_supernodes} {extra_federation_config}".strip()
        command = [
            _bin("flwr"),
            "run",
            str(app_dir),
            CONNECTION,
            "--stream",
            "--run-config",
            overrides,
            "--federation-config",
            federation,
        ]
        start = time.perf_counter()
        proc = subprocess.Popen(
            command,
            env=self.env,
            cwd=app_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines, submitted = [], None
        try:
            deadline = start + timeout
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if submitted is None and "Successfully started run" in line:
                    submitted = time.perf_counter() - start
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"flwr run took more than {timeout:.0f} s")
            proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        total = time.perf_counter() - start
        return FlwrRunResult(proc.returncode, "".join(lines), submitted or float("nan"), total)


@contextmanager
def flwr_simulation(extra_env: Mapping[str, str] | None = None) -> Iterator[FlwrSimulation]:
    """Start a private simulation SuperLink; stop it (and only it) on exit."""
    with tempfile.TemporaryDirectory(prefix="rantune-flwr-") as tmp:
        home = Path(tmp) / "flwr-home"
        home.mkdir()
        port, control = free_port(), free_port()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{port}"\ninsecure = true\n'
        )
        env = dict(os.environ)
        env.update(extra_env or {})
        env["FLWR_HOME"] = str(home)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
        log = home / "superlink.log"
        command = [
            _bin("flower-superlink"),
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--control-api-address",
            f"127.0.0.1:{control}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database",
            ":flwr-in-memory:",
            "--disable-runtime-dependency-installation",
        ]
        with open(log, "w") as handle:
            superlink = subprocess.Popen(
                command,
                env=env,
                cwd=tmp,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for_port(port, superlink, log)
            yield FlwrSimulation(home=home, port=port, env=env, log=log)
        finally:
            _stop_group(superlink)


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"flower-superlink exited ({proc.returncode}); log:\n{log.read_text()[-2000:]}"
            )
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"flower-superlink did not listen on port {port} within {timeout:.0f} s")


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group this module created (by its id), then SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    # children that outlive the leader keep the group id: make sure they are gone
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
