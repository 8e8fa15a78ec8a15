"""Federation tools without Flower processes: drills on stand-in processes, certs/keygen CLI,
``flwr run`` argument building."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rantune.simulations.commands.federation import register
from rantune.simulations.federation import auth, drills, launcher, processes, tls
from rantune.simulations.federation.runner import run_command, run_config_arg
from rantune.simulations.federation.state import Federation


def _fake_federation(tmp_path: Path) -> Federation:
    """A recorded 'federation' whose SuperNode bs-0 is a harmless ``sleep``."""
    sleep = shutil.which("sleep")
    record = processes.start_process(
        "bs-0", [sleep, "300"], tmp_path / "logs" / "bs-0.log", {"PATH": "/usr/bin:/bin"}
    )
    fed = Federation(
        out_dir=tmp_path,
        name="fake",
        address="127.0.0.1:1",
        flwr_home=tmp_path / "home",
        ca_cert=None,
        auth=False,
        processes=[record],
        nodes=[{"name": "bs-0", "node_config": "partition-id=0 num-partitions=1", "port": 2}],
    )
    fed.save()
    return fed


def test_kill_and_restart_a_node_keeps_the_record_current(tmp_path):
    fed = _fake_federation(tmp_path)
    try:
        # Execute: kill
        killed = drills.kill_node(tmp_path, "bs-0")

        # Assert
        assert killed == 1
        assert launcher.status(tmp_path) == {"bs-0": "not running"}
        with pytest.raises(ValueError, match="no process 'bs-9'"):
            drills.kill_node(tmp_path, "bs-9")

        # Execute: restart (same argv, new log, recorded so `down` stops it)
        again = drills.restart_node(tmp_path, "bs-0")

        # Assert
        new = again.processes[0]
        assert new.argv == fed.processes[0].argv and new.pid != fed.processes[0].pid
        assert Path(new.log).name == "bs-0.restart-1.log"
        assert launcher.status(tmp_path) == {"bs-0": "running"}
        with pytest.raises(ValueError, match="still running"):
            drills.restart_node(tmp_path, "bs-0")
    finally:
        outcome = launcher.down(tmp_path)
    assert outcome == {"bs-0": "stopped"}


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    register(app)
    return app


def test_certs_and_keygen_commands_write_usable_material(tmp_path):
    runner = CliRunner()

    # Execute
    certs = runner.invoke(
        _app(), ["federation", "certs", "--out", str(tmp_path / "pki"), "--host", "sl.ran.test"]
    )
    keys = runner.invoke(
        _app(),
        [
            "federation",
            "keygen",
            "--out",
            str(tmp_path / "keys"),
            "--name",
            "bs-0",
            "--name",
            "bs-1",
        ],
    )

    # Assert
    assert certs.exit_code == 0, certs.output
    files = tls.load_tls_files(
        tmp_path / "pki" / "ca.pem",
        tmp_path / "pki" / "server.pem",
        tmp_path / "pki" / "server.key",
    )
    assert "sl.ran.test" in tls.certificate_hosts(files.server_cert)
    assert keys.exit_code == 0, keys.output
    for name in ("bs-0", "bs-1"):
        key = tmp_path / "keys" / f"{name}.key"
        assert auth.public_key_of(key) in (tmp_path / "keys" / f"{name}.pub").read_bytes()
    bad = runner.invoke(_app(), ["federation", "keygen", "--out", str(tmp_path), "--name", "a b"])
    assert bad.exit_code == 2 and "invalid node name" in bad.output


def test_kill_serverapp_without_a_federation_fails_clearly(tmp_path):
    result = CliRunner().invoke(_app(), ["federation", "kill-serverapp", "--out", str(tmp_path)])

    assert result.exit_code == 2
    assert "no federation recorded" in " ".join(result.output.split())


def test_run_config_argument_is_toml():
    assert (
        run_config_arg({"a": 1, "b": "x y", "c": True, "d": 1e-5}) == 'a=1 b="x y" c=true d=1e-05'
    )
    fed = Federation(Path("/x"), "conn", "127.0.0.1:9", Path("/h"), None, False)
    command = run_command(fed, {"num-server-rounds": 2}, Path("/app"))
    assert command[1:6] == ["run", "/app", "conn", "--stream", "--run-config"]
    assert command[-1] == "num-server-rounds=2"
