"""Node-configs, the flwr connection table, ports and pid-verified process control."""

from __future__ import annotations

import dataclasses
import socket
import sys
from pathlib import Path

import pytest

from rantune.simulations.federation import connection, processes
from rantune.simulations.federation.launcher import LaunchConfig, _validate, check_port_free, up
from rantune.simulations.federation.node_config import (
    build_node_config,
    check_partitions,
    validate_node_config,
)

# ---------------------------------------------------------------- node-config


def test_built_node_config_parses_the_same_in_flower() -> None:
    from flwr.common.config import parse_config_args

    text = build_node_config(1, 3, preset="smoke")

    assert parse_config_args([text]) == {
        "partition-id": 1,
        "num-partitions": 3,
        "data-preset": "smoke",
    }
    assert validate_node_config(text) == parse_config_args([text])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("num-partitions=2", "has no partition-id"),
        ('data-preset="smoke"', "has no partition-id or num-partitions"),
        ('partition-id="0" num-partitions=2', "must be integers"),
        ("partition-id=2 num-partitions=2", "0 <= partition-id < num-partitions"),
        ("partition-id=0 num-partitions=2 data-preset=smoke", "values must be TOML"),
        ("partition-id=0 num-partitions=2 stray", "cannot read 'stray'"),
        ("partition-id=0 num-partitions=2 data-preset=3", "data-preset must be a quoted string"),
    ],
)
def test_bad_node_configs_fail_with_a_hint(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_node_config(text)


def test_a_federation_needs_every_partition_exactly_once() -> None:
    ok = ["partition-id=1 num-partitions=2", "partition-id=0 num-partitions=2"]
    dup = ["partition-id=0 num-partitions=2", "partition-id=0 num-partitions=2"]

    assert [p["partition-id"] for p in check_partitions(ok)] == [1, 0]
    with pytest.raises(ValueError, match="exactly once"):
        check_partitions(dup)
    with pytest.raises(ValueError, match="the federation has 3 SuperNodes"):
        check_partitions([*ok, "partition-id=0 num-partitions=2"])


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"use_auth": True}, "--auth needs --tls"),
        ({"num_nodes": 0}, "--nodes must be in"),
        ({"host": "0.0.0.0"}, "not an IPv4 loopback"),
        ({"name": "bad name"}, "invalid connection name"),
        ({"node_configs": ("partition-id=0 num-partitions=2",)}, "1 node-configs for 2"),
        ({"node_configs": ("num-partitions=2", "partition-id=1 num-partitions=2")}, "no partition"),
        ({"preset": "smoke preset"}, "invalid preset name"),
    ],
)
def test_launch_requests_are_validated_before_anything_starts(
    tmp_path: Path, changes: dict, match: str
) -> None:
    cfg = LaunchConfig(out_dir=tmp_path / "fed", num_nodes=2, flwr_home=tmp_path / "home")
    bad = dataclasses.replace(cfg, **changes)

    with pytest.raises(ValueError, match=match):
        up(bad)
    assert not (tmp_path / "fed").exists()
    assert _validate(cfg) == [build_node_config(i, 2) for i in range(2)]


def test_port_in_use_is_reported() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        with pytest.raises(ValueError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port_free("127.0.0.1", port, "SuperLink")


# ---------------------------------------------------------------- flwr connection


def test_connection_is_read_by_flowers_cli(tmp_path: Path, monkeypatch) -> None:
    # Prepare
    from flwr.cli.flower_config import read_superlink_connection

    home = tmp_path / "flwr-home"
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("FLWR_HOME", str(home))

    # Execute
    connection.write_connection(home, "secure", "127.0.0.1:9999", ca)
    connection.write_connection(home, "plain", "127.0.0.1:9998", None)

    # Assert
    secure = read_superlink_connection("secure")
    assert (secure.address, secure.root_certificates, secure.insecure) == (
        "127.0.0.1:9999",
        str(ca.resolve()),
        False,
    )
    assert read_superlink_connection("plain").insecure is True
    assert read_superlink_connection("local").address == ":local:"  # Flower's defaults kept


def test_remove_connection_only_touches_its_own_address(tmp_path: Path) -> None:
    connection.write_connection(tmp_path, "fed", "127.0.0.1:1", None)

    assert not connection.remove_connection(tmp_path, "fed", "127.0.0.1:2")
    assert connection.read_connection(tmp_path, "fed") == {
        "address": "127.0.0.1:1",
        "insecure": True,
    }
    assert connection.remove_connection(tmp_path, "fed", "127.0.0.1:1")
    assert connection.read_connection(tmp_path, "fed") is None
    assert not connection.remove_connection(tmp_path, "fed", "127.0.0.1:1")


# ---------------------------------------------------------------- processes


SPAWNER = "import subprocess, sys, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"


def test_stop_processes_ends_a_process_and_its_children(tmp_path: Path) -> None:
    # Prepare
    record = processes.start_process(
        "parent", [sys.executable, "-c", SPAWNER], tmp_path / "p.log", env={}
    )
    try:
        for _ in range(50):
            children = processes.descendants(record.pid)
            if children:
                break
            processes.time.sleep(0.1)
        assert processes.matches(record)

        # Execute
        outcome = processes.stop_processes([record], grace_s=5)

        # Assert
        assert outcome == {"parent": "stopped"}
        assert not processes.is_running(record.pid)
        assert children and not any(processes.is_running(pid) for pid, _ in children)
        assert processes.stop_processes([record]) == {"parent": "not running"}
    finally:
        processes.stop_processes([record], grace_s=1)


def test_a_reused_pid_is_left_alone(tmp_path: Path) -> None:
    record = processes.start_process("sleeper", ["sleep", "60"], tmp_path / "s.log", env={})
    try:
        impostor = processes.ProcessRecord(
            name="old", pid=record.pid, start_ticks=record.start_ticks - 1, argv=record.argv, log=""
        )
        other_cmd = processes.ProcessRecord(
            name="old", pid=record.pid, start_ticks=record.start_ticks, argv=["sleep", "61"], log=""
        )

        assert processes.stop_processes([impostor, other_cmd]) == {"old": "pid reused (left alone)"}
        assert processes.is_running(record.pid)
    finally:
        assert processes.stop_processes([record], grace_s=2) == {"sleeper": "stopped"}
