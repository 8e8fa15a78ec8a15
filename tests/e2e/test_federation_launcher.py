"""Real Flower 1.41 SuperLink/SuperNode processes on 127.0.0.1: TLS, node auth, clean shutdown.

Every test stops what it starts (fixtures with ``finally``), and checks that no
process mentioning one of the federation's ports is left (SuperExec included).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from federation_checks import federation_ports, stray_processes, wait_no_strays
from typer.testing import CliRunner

from rantune.simulations.commands.federation import register
from rantune.simulations.federation import auth, connection, launcher, processes

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
TIMEOUT_S = 90.0  # generous: CI machines with 2 busy cores start Flower slowly


_ports = federation_ports


def _assert_nothing_left(ports: list[int], timeout_s: float = 15.0) -> None:
    left = wait_no_strays(ports, timeout_s)
    assert not left, f"stray processes: {left}"


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "FLWR_HOME": str(home)}


def _wait_exit(record: processes.ProcessRecord, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while processes.is_running(record.pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.Federation]:
    """A TLS + SuperNode-auth federation of 2 registered SuperNodes (smoke preset)."""
    root = tmp_path_factory.mktemp("secure-federation")
    cfg = launcher.LaunchConfig(
        out_dir=root / "fed",
        num_nodes=2,
        use_tls=True,
        use_auth=True,
        preset="smoke",
        station_data=False,  # 2 clients of an iid split: nodes read the shared cache
        name="secure",
        flwr_home=root / "flwr-home",
        timeout_s=TIMEOUT_S,
    )
    fed = launcher.up(cfg)  # stops what it started if it raises
    try:
        yield fed
    finally:
        launcher.down(fed.out_dir)
        _assert_nothing_left(_ports(fed))


def _supernode_argv(fed: launcher.Federation, port: int, extra: list[str]) -> list[str]:
    argv = [str(BIN / "flower-supernode"), "--superlink", fed.address, "--port", str(port)]
    return argv + extra + ["--node-config", "partition-id=0 num-partitions=2"]


@pytest.fixture(scope="module")
def refused(
    secure: launcher.Federation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[processes.ProcessRecord, int]]]:
    """Two SuperNodes the secure SuperLink must refuse, started together to save time.

    ``intruder``: TLS and a valid key pair that was never registered.
    ``plain``: no TLS (``--insecure``), no key.
    Each maps to (record, runtime port); all are stopped afterwards, whatever happened.
    """
    root = tmp_path_factory.mktemp("refused")
    keys = auth.generate_node_keys(root, "intruder")
    intruder = ["--root-certificates", str(secure.ca_cert)]
    intruder += ["--auth-supernode-private-key", str(keys.private_key)]
    plain = ["--insecure", "--max-retries", "1", "--max-wait-time", "5"]
    started: dict[str, tuple[processes.ProcessRecord, int]] = {}
    try:
        for name, extra in (("intruder", intruder), ("plain", plain)):
            port = launcher.free_port()
            argv = _supernode_argv(secure, port, extra)
            record = processes.start_process(
                name, argv, root / f"{name}.log", _env(secure.flwr_home)
            )
            started[name] = (record, port)
        for record, _ in started.values():
            _wait_exit(record, 60)
        yield started
    finally:
        processes.stop_processes([record for record, _ in started.values()], grace_s=5)


def test_tls_auth_federation_has_both_registered_nodes_online(
    secure: launcher.Federation,
) -> None:
    # Execute
    listed = auth.list_nodes(secure.name, secure.flwr_home, flwr_bin=str(BIN / "flwr"))

    # Assert
    online = {int(n["node-id"]) for n in listed if n["status"] == "online"}
    assert online == {int(n["node_id"]) for n in secure.nodes}
    assert connection.read_connection(secure.flwr_home, secure.name) == {
        "address": secure.address,
        "root-certificates": secure.ca_cert,
    }
    assert launcher.status(secure.out_dir) == dict.fromkeys(
        ["superlink", "bs-0", "bs-1"], "running"
    )
    configs = [n["node_config"] for n in secure.nodes]
    assert configs == [f'partition-id={i} num-partitions=2 data-preset="smoke"' for i in range(2)]
    superlink_argv = secure.processes[0].argv
    assert "--enable-supernode-auth" in superlink_argv and "--ssl-certfile" in superlink_argv


def test_supernode_with_unregistered_key_is_refused(
    secure: launcher.Federation, refused: dict
) -> None:
    # Prepare / Execute: the `refused` fixture started a SuperNode with an unregistered key
    record, port = refused["intruder"]

    # Assert
    assert not processes.is_running(record.pid), "an unregistered SuperNode must not stay"
    assert "Failed to activate SuperNode" in Path(record.log).read_text()
    listed = auth.list_nodes(secure.name, secure.flwr_home, flwr_bin=str(BIN / "flwr"))
    assert sum(n["status"] == "online" for n in listed) == 2
    # Its SuperExec can outlive it (Flower 1.41); stopping the record ends that too.
    assert processes.stop_processes([record]) == {"intruder": "not running"}
    _assert_nothing_left([port])


def test_plaintext_connections_to_the_tls_superlink_fail(
    secure: launcher.Federation, refused: dict
) -> None:
    # Prepare
    record, port = refused["plain"]
    connection.write_connection(secure.flwr_home, "plain-probe", secure.address, None)
    host, link_port = secure.address.rsplit(":", 1)

    # Execute / Assert: a SuperNode without TLS gives up
    assert not processes.is_running(record.pid)
    assert "could not establish a connection" in Path(record.log).read_text()
    processes.stop_processes([record])
    _assert_nothing_left([port])
    # ... the flwr CLI without TLS gets no answer
    with pytest.raises(RuntimeError, match="unavailable"):
        auth.list_nodes("plain-probe", secure.flwr_home, flwr_bin=str(BIN / "flwr"))
    # ... and neither does a raw HTTP request
    plain_http = http.client.HTTPConnection(host, int(link_port), timeout=10)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        plain_http.request("POST", "/v1/control/list-nodes", body=b"")
        plain_http.getresponse()
    plain_http.close()


# A minimal Flower App (not rantune's): checks that `flwr run . NAME` reaches the
# launched TLS + auth federation and that each ClientApp sees its own node-config.
TINY_PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "tinyfed"
version = "1.0.0"
description = "launcher probe"
license = "Apache-2.0"
dependencies = ["flwr>=1.41"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "rantune"

[tool.flwr.app.components]
serverapp = "tinyfed.server:app"
clientapp = "tinyfed.client:app"

[tool.flwr.app.config]
num-server-rounds = 2
out-file = ""
"""
TINY_SERVER = """
import json
import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    strategy = FedAvg(fraction_evaluate=0.0, min_available_nodes=2, min_train_nodes=2)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(3, dtype=np.float32)]),
        num_rounds=int(context.run_config["num-server-rounds"]),
    )
    rounds = {str(k): dict(v) for k, v in result.train_metrics_clientapp.items()}
    with open(str(context.run_config["out-file"]), "w") as f:
        json.dump({"w": result.arrays.to_numpy_ndarrays()[0].tolist(), "rounds": rounds}, f)
"""
TINY_CLIENT = """
import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    assert context.node_config["data-preset"] == "smoke"
    w = msg.content["arrays"].to_numpy_ndarrays()[0] + pid + 1
    metrics = {"num-examples": 10, "partition-id": pid,
               "num-partitions": int(context.node_config["num-partitions"])}
    content = RecordDict({"arrays": ArrayRecord([w.astype(np.float32)]),
                          "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)
"""


def test_flwr_run_reaches_the_tls_auth_federation(
    secure: launcher.Federation, tmp_path: Path
) -> None:
    # Prepare
    app_dir = tmp_path / "tinyfed"
    (app_dir / "tinyfed").mkdir(parents=True)
    (app_dir / "pyproject.toml").write_text(TINY_PYPROJECT)
    (app_dir / "tinyfed" / "__init__.py").write_text("")
    (app_dir / "tinyfed" / "server.py").write_text(TINY_SERVER)
    (app_dir / "tinyfed" / "client.py").write_text(TINY_CLIENT)
    out_file = tmp_path / "result.json"

    # Execute: the command `rantune federation up` prints
    command = [str(BIN / "flwr"), "run", ".", secure.name, "--stream"]
    command += ["--run-config", f'out-file="{out_file}"']
    result = subprocess.run(
        command,
        cwd=app_dir,
        env=_env(secure.flwr_home),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    # Assert: 2 rounds with both SuperNodes; each adds partition-id + 1, FedAvg averages
    logs = result.stdout + result.stderr
    assert result.returncode == 0, logs[-3000:]
    assert out_file.exists(), logs[-3000:]
    summary = json.loads(out_file.read_text())
    assert summary["w"] == [3.0, 3.0, 3.0]  # 2 rounds x mean(1, 2)
    assert summary["rounds"] == {
        str(r): {"partition-id": 0.5, "num-partitions": 2.0} for r in (1, 2)
    }


# ---------------------------------------------------------------- the CLI


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    register(app)
    return app


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(_app(), args)
    return result.exit_code, result.output  # click 8.2+: stdout and stderr together


def test_cli_up_status_down_leaves_no_processes(tmp_path: Path) -> None:
    out, home = tmp_path / "fed", tmp_path / "flwr-home"
    base = ["--out", str(out)]
    try:
        # Execute: up
        code, text = _invoke(["federation", "up", "--nodes", "1", "--flwr-home", str(home)] + base)
        assert code == 0, text
        assert "flwr run . rantune-local" in text
        fed = launcher.Federation.load(out)
        ports = _ports(fed)
        family = [d for p in fed.processes for d in processes.descendants(p.pid)]
        assert stray_processes(ports)

        code, text = _invoke(["federation", "status", *base])
        assert code == 0 and "2/2 running" in text, text

        # Execute: down (twice: idempotent)
        code, text = _invoke(["federation", "down", *base])
        assert code == 0 and "superlink: stopped" in text, text
        code, text = _invoke(["federation", "down", *base])
        assert code == 0 and "superlink: not running" in text, text

        # Assert
        assert not any(processes.is_running(p.pid) for p in fed.processes)
        assert not any(processes.is_running(pid) for pid, _ in family)
        _assert_nothing_left(ports, timeout_s=2)
        assert connection.read_connection(home, "rantune-local") is None
    finally:
        if (out / launcher.STATE_FILE).exists():
            launcher.down(out)


def test_port_in_use_gives_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        code, text = _invoke(
            ["federation", "up", "--nodes", "1", "--port", str(port), "--out", str(tmp_path)]
        )

    assert code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in " ".join(text.split())
    assert not (tmp_path / launcher.STATE_FILE).exists()
    _assert_nothing_left([port], timeout_s=0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "--tls",
                "--tls-ca-cert",
                "/nonexistent/ca.pem",
                "--tls-cert",
                "/x",
                "--tls-key",
                "/y",
            ],
            "/nonexistent/ca.pem does not exist",
        ),
        (["--tls-ca-cert", "/nonexistent/ca.pem"], "give all of --tls-ca-cert"),
        (["--node-config", "num-partitions=1"], "has no partition-id"),
        (["--auth"], "--auth needs --tls"),
    ],
)
def test_bad_input_fails_before_any_process_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, text = _invoke(["federation", "up", "--nodes", "1", "--out", str(tmp_path), *args])

    assert code == 2
    assert message in " ".join(text.split())
    assert not (tmp_path / launcher.STATE_FILE).exists()


def test_failure_after_start_stops_what_was_started(tmp_path: Path) -> None:
    # Prepare: a time limit no SuperLink can meet, so `up` fails after starting it
    cfg = launcher.LaunchConfig(
        out_dir=tmp_path, num_nodes=1, flwr_home=tmp_path / "home", timeout_s=0.05
    )
    try:
        # Execute
        with pytest.raises(RuntimeError, match="did not listen"):
            launcher.up(cfg)

        # Assert
        fed = launcher.Federation.load(tmp_path)
        assert [p.name for p in fed.processes] == ["superlink"]
        assert not fed.running()
        _assert_nothing_left(_ports(fed), timeout_s=5)
    finally:
        if (tmp_path / launcher.STATE_FILE).exists():
            launcher.down(tmp_path)
