"""``flwr run .`` (Ray simulation) with 2 SuperNodes on the smoke preset, and the
in-process engine on the same config giving the same final metrics."""

from __future__ import annotations

import json

import pytest

from rantune.federated.workload import resolve_checkpoint
from rantune.simulations.engine import run_simulation
from rantune.simulations.engine.flwr_cli import flwr_simulation

pytestmark = pytest.mark.e2e


def _pretrained() -> str:
    """The shipped encoder when it exists, else the seeded random one."""
    try:
        resolve_checkpoint("tiny")
        return "tiny"
    except ValueError:
        return "none"


@pytest.mark.parametrize("strategy", ["fedavg", "fed-sb", "lora-fair"])
def test_flwr_run_simulation_writes_outputs_and_matches_the_engine(tmp_path, strategy):
    # Prepare: 2 SuperNodes -> 2 clients (iid split of the smoke preset's 3 sites)
    config = {
        "strategy.name": strategy,
        "num-server-rounds": 2,
        "partition.scheme": "iid",
        "partition.num-clients": 2,
        "model.pretrained": _pretrained(),
        "out-dir": str(tmp_path / "flwr"),
    }

    # Execute
    with flwr_simulation() as sim:
        result = sim.run(config, num_supernodes=2, timeout=600)
    engine = run_simulation({**config, "out-dir": str(tmp_path / "engine")})

    # Assert
    assert result.returncode == 0, result.output[-3000:]
    out = tmp_path / "flwr"
    for name in ("config.json", "history.json", "global_adapter.safetensors"):
        assert (out / name).exists(), name
    assert (out / "checkpoints" / "round_002.safetensors").exists()
    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [0, 1, 2]
    assert history["rounds"][2]["train"]["answered"] == ["0", "1"]
    assert history["rounds"][2]["bytes"]["up-ratio"] < 0.05
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["data"]["preset"] == "smoke" and config_json["task"] == "los"
    assert history["final"] == pytest.approx(engine["final"], rel=1e-5, abs=1e-6)
    for ray_round, engine_round in zip(history["rounds"], engine["rounds"], strict=True):
        assert ray_round["server"] == pytest.approx(engine_round["server"], rel=1e-5, abs=1e-6)
