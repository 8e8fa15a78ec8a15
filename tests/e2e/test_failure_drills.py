"""Failure drills on the deployment engine (TLS + node auth, 2 SuperNodes, real rantune app).

One run of 2 rounds (smoke preset, 2 clients):

1. during round 1 base station ``bs-1`` is killed (SuperNode, SuperExec and
   ClientApp at once); the SuperLink notices the missed heartbeats, round 1
   aggregates ``bs-0`` alone (``min-train-clients=1``) and ``history.json`` records
   the missing node with the SuperLink's reason;
2. ``bs-1`` is restarted (same key, so the same node id) and answers again in round 2
   (``min-available-clients=2`` makes the server wait for it);
3. during round 2 the ServerApp is killed; ``flwr run`` again with the same run
   config resumes after round 1 and finishes round 2.

Every process is stopped afterwards, also on failure.
"""

from __future__ import annotations

import json

import pytest
from federation_checks import (
    federation_ports,
    pretrained_or_none,
    wait_no_strays,
)

from rantune.simulations.federation import drills, launcher
from rantune.simulations.federation.runner import start_run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

HEARTBEAT_S = 240.0  # Flower 1.41: 30 s heartbeats, patience 2, plus a loaded machine
RUN_TIMEOUT_S = 900.0


@pytest.fixture
def federation(tmp_path, smoke_sites):
    cfg = launcher.LaunchConfig(
        out_dir=tmp_path / "federation",
        num_nodes=2,
        use_tls=True,
        use_auth=True,
        preset="smoke",
        station_data=False,  # 2 clients of an iid split: nodes read the shared cache
        name="rantune-drill",
        flwr_home=tmp_path / "flwr-home",
        timeout_s=120.0,
    )
    fed = launcher.up(cfg)  # stops what it started if it raises
    try:
        yield fed
    finally:
        launcher.down(fed.out_dir)
        left = wait_no_strays(federation_ports(fed))
        assert not left, f"stray processes: {left}"


def test_node_killed_mid_round_and_serverapp_killed_then_resumed(federation, tmp_path):
    # Prepare
    out = tmp_path / "run"
    config = {
        "num-server-rounds": 2,
        "partition.scheme": "iid",
        "partition.num-clients": 2,
        "model.pretrained": pretrained_or_none(),
        "min-train-clients": 1,
        "min-evaluate-clients": 2,
        "min-available-clients": 2,
        "out-dir": str(out),
    }
    victim = next(n for n in federation.nodes if n["name"] == "bs-1")

    # Execute (1): kill bs-1 once round 1 has started
    with start_run(federation, config) as first:
        first.wait_for(r"\[ROUND 1/2\]", RUN_TIMEOUT_S)
        assert drills.kill_node(federation.out_dir, "bs-1") >= 1
        assert drills.wait_node_status(federation, "bs-1", ("offline",), HEARTBEAT_S)
        failure = first.wait_for(r"round 1: client .* failed", HEARTBEAT_S)

        # Execute (2): bring it back; round 1's evaluation and round 2 wait for it
        fed = drills.restart_node(federation.out_dir, "bs-1")
        drills.wait_node_status(fed, "bs-1", ("online",), HEARTBEAT_S)

        # Execute (3): kill the ServerApp during round 2
        first.wait_for(r"\[ROUND 2/2\]", RUN_TIMEOUT_S)
        round_1 = json.loads((out / "checkpoints" / "round_001.json").read_text())
        assert drills.kill_serverapp(federation.out_dir) >= 1
        first.wait(RUN_TIMEOUT_S)  # the SuperLink ends the run: no ServerApp heartbeat
    assert not (out / "global_adapter.safetensors").exists()
    with start_run(federation, config) as second:
        second.wait(RUN_TIMEOUT_S)

    # Assert (1): round 1 went on without bs-1 and says why
    assert "Node Unavailable" in failure
    history = json.loads((out / "history.json").read_text())
    train_1 = history["rounds"][1]["train"]
    missing = f"node-{victim['node_id']}"  # it had not answered before: known by node id
    assert train_1["sampled"] == sorted(["0", missing])
    assert train_1["answered"] == ["0"] and train_1["aggregated"] is True
    assert [f["client"] for f in train_1["failed"]] == [missing]
    assert "Node Unavailable" in train_1["failed"][0]["reason"]
    # Assert (2): bs-1 (partition 1) rejoined: evaluated round 1, trained in round 2
    assert history["rounds"][1]["evaluate"]["answered"] == ["0", "1"]
    train_2 = history["rounds"][2]["train"]
    assert train_2["answered"] == ["0", "1"] and train_2["failed"] == []
    # Assert (3): the second `flwr run` resumed after round 1 (round 1 not redone)
    assert "resuming" in second.output and "after round 1" in second.output
    assert history["rounds"][1]["started-at"] == round_1["record"]["started-at"]
    assert [r["round"] for r in history["rounds"]] == [0, 1, 2]
    for name in ("config.json", "history.json", "global_adapter.safetensors"):
        assert (out / name).exists(), second.output[-3000:]
