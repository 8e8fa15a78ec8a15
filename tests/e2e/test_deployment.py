"""The real rantune app on Flower's deployment engine: SuperLink + 2 SuperNodes on
127.0.0.1 with TLS and SuperNode authentication, 2 rounds of the smoke preset
through ``flwr run``.

``flwr run --stream`` exits 0 even when the ServerApp fails, so the test checks the
run's output files. Every process is stopped afterwards, also on failure (the
fixture's ``finally``), and nothing using the federation's ports may be left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from rantune.simulations.federation import launcher
from rantune.simulations.federation.checks import (
    federation_ports,
    pretrained_or_none,
    wait_no_strays,
)
from rantune.simulations.federation.runner import start_run

pytestmark = pytest.mark.e2e

TIMEOUT_S = 120.0  # Flower start-up on 2 busy cores
RUN_TIMEOUT_S = 900.0  # every message starts a ClientApp process that imports torch


def assert_nothing_left(ports: list[int], timeout_s: float = 20.0) -> None:
    left = wait_no_strays(ports, timeout_s)
    assert not left, f"stray processes: {left}"


def secure_federation(root: Path, name: str) -> launcher.LaunchConfig:
    """2 SuperNodes (partitions 0, 1 of the smoke preset), TLS + node auth, own FLWR_HOME."""
    return launcher.LaunchConfig(
        out_dir=root / "federation",
        num_nodes=2,
        use_tls=True,
        use_auth=True,
        preset="smoke",
        name=name,
        flwr_home=root / "flwr-home",
        timeout_s=TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def federation(tmp_path_factory, smoke_sites) -> Iterator[launcher.Federation]:
    # smoke_sites: the channel cache exists before the SuperNodes (which inherit
    # RANTUNE_CACHE from this process) need it
    root = tmp_path_factory.mktemp("deployment")
    fed = launcher.up(secure_federation(root, "rantune-e2e"))  # cleans up if it raises
    try:
        yield fed
    finally:
        launcher.down(fed.out_dir)
        assert_nothing_left(federation_ports(fed))


def test_real_app_runs_two_rounds_over_tls_and_node_auth(federation, tmp_path):
    # Prepare: 2 clients = 2 SuperNodes (iid split of the 3 smoke sites)
    out = tmp_path / "run"
    config = {
        "num-server-rounds": 2,
        "partition.scheme": "iid",
        "partition.num-clients": 2,
        "model.pretrained": pretrained_or_none(),
        "local-epochs": 1,
        "out-dir": str(out),
    }

    # Execute
    with start_run(federation, config) as run:
        run.wait(RUN_TIMEOUT_S)

    # Assert: the outputs a simulation writes, from both base stations, every round
    logs = run.output[-4000:]
    for name in ("config.json", "history.json", "global_adapter.safetensors"):
        assert (out / name).exists(), f"{name} missing; flwr run output:\n{logs}"
    for r in (0, 1, 2):
        assert (out / "checkpoints" / f"round_{r:03d}.json").exists()
    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [0, 1, 2]
    for rnd in history["rounds"][1:]:
        assert rnd["train"]["answered"] == ["0", "1"] and rnd["train"]["failed"] == []
        assert rnd["train"]["aggregated"] is True
        assert rnd["evaluate"]["answered"] == ["0", "1"]
        assert rnd["bytes"]["up-ratio"] < 0.1  # adapters only travel
    assert history["final"] == history["rounds"][-1]["server"]
    assert 0.0 <= history["final"]["accuracy"] <= 1.0
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["data"]["preset"] == "smoke"
    assert config_json["partition"]["num-clients"] == 2
    adapter = load_file(str(out / "global_adapter.safetensors"))
    assert adapter and all(".lora_" in k or ".head." in k for k in adapter)
    # the SuperLink really was TLS + auth, and both nodes stayed registered
    argv = federation.processes[0].argv
    assert "--enable-supernode-auth" in argv and "--ssl-certfile" in argv
