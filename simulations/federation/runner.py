"""Submit ``flwr run . NAME --stream`` to a launched federation and watch its log stream.

>>> with start_run(fed, {"num-server-rounds": 2, "out-dir": "runs/dep"}) as run:
...     run.wait_for(r"\\[ROUND 1/2\\]")        # e.g. to kill a node mid-round
...     code = run.wait(timeout_s=900)

``flwr run --stream`` exits 0 even when the ServerApp fails: check the run's
outputs (``history.json``, ``global_adapter.safetensors``), not the exit code.
The ``flwr`` process is started in its own session and stopped (its process group,
by id) when the context exits, also on errors.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rantune.simulations.federation.state import Federation

ROOT = Path(__file__).resolve().parents[2]


def toml_value(value: object) -> str:
    """A run-config value as TOML (strings quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def run_config_arg(run_config: Mapping[str, object]) -> str:
    """``{"k": v}`` -> the ``--run-config`` string ``k=v ...``."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())


def run_command(fed: Federation, run_config: Mapping[str, object], app_dir: Path = ROOT) -> list:
    """The ``flwr run`` argv for this federation (``--stream``: logs until the run ends)."""
    flwr = str(Path(sys.executable).with_name("flwr"))
    command = [flwr, "run", str(app_dir), fed.name, "--stream"]
    return command + (["--run-config", run_config_arg(run_config)] if run_config else [])


@dataclass
class FlwrRun:
    """A running ``flwr run --stream``: its output lines, collected by a thread."""

    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _thread: threading.Thread | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float = 600.0, start: int = 0) -> str:
        """Block until an output line (from index ``start``) matches ``pattern``; return it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        seen = start
        while time.monotonic() < deadline:
            lines = self.lines
            for line in lines[seen:]:
                if regex.search(line):
                    return line
            seen = len(lines)
            if self.proc.poll() is not None and self._thread and not self._thread.is_alive():
                if not any(regex.search(line) for line in self.lines[start:]):
                    raise RuntimeError(
                        f"flwr run exited ({self.proc.returncode}) before printing {pattern!r}; "
                        f"last output:\n{self.output[-3000:]}"
                    )
            time.sleep(0.3)
        raise TimeoutError(
            f"no line matching {pattern!r} within {timeout_s:.0f} s; last output:\n"
            f"{self.output[-3000:]}"
        )

    def wait(self, timeout_s: float = 900.0) -> int:
        """Wait for ``flwr run`` to exit (the run ended); returns its exit code."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as err:
            raise TimeoutError(
                f"flwr run did not finish within {timeout_s:.0f} s; last output:\n"
                f"{self.output[-3000:]}"
            ) from err
        if self._thread is not None:
            self._thread.join(timeout=10)
        return code

    def stop(self) -> None:
        """Stop ``flwr run`` (SIGTERM to its process group, then SIGKILL); idempotent."""
        if self.proc.poll() is None:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FlwrRun:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_run(
    fed: Federation,
    run_config: Mapping[str, object],
    app_dir: Path = ROOT,
    env: Mapping[str, str] | None = None,
) -> FlwrRun:
    """Start ``flwr run APP_DIR NAME --stream --run-config ...`` against ``fed``."""
    full_env = dict(env or os.environ)
    full_env["FLWR_HOME"] = str(fed.flwr_home)
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
    full_env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    proc = subprocess.Popen(  # noqa: S603 - argv built here, no shell
        run_command(fed, run_config, app_dir),
        cwd=app_dir,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    run = FlwrRun(proc)
    run._thread = threading.Thread(target=run._read, daemon=True)
    run._thread.start()
    return run
