"""SecAgg+ training rounds (Flower's SecAggPlusWorkflow + secaggplus_mod) on the in-process engine.

A small run completes, matches plain FedAvg within the quantization error bound,
records the protocol's stages and bytes in history.json, survives a base station
dropping out mid-protocol, and refuses what SecAgg+ cannot combine with.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, Message
from safetensors.numpy import load_file

from rantune.client.app import app as client_app
from rantune.client.secagg import legacy_fit_mod
from rantune.federated.privacy import KEYS_HASH, SecAggSettings, keys_hash
from rantune.server.secagg import STAGES, quantization_error_bound, resolved_shares
from rantune.simulations.engine import run_simulation
from rantune.simulations.engine.identity import server_identity

BASE = {
    "data.preset": "smoke",
    "task": "los",
    "model.pretrained": "none",
    "num-server-rounds": 1,
}


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


def test_secagg_round_matches_plain_fedavg_within_the_quantization_bound(tmp_path):
    # Execute: the same round with plain FedAvg and with SecAgg+
    plain = run_simulation({**BASE, "num-server-rounds": 2, "out-dir": str(tmp_path / "plain")})
    secure = run_simulation(
        {**BASE, "num-server-rounds": 2, "secagg.enabled": True, "out-dir": str(tmp_path / "sa")}
    )

    # Assert: round 1 (same inputs for both): |difference| <= the reported bound
    first = {
        name: load_file(str(tmp_path / name / "checkpoints" / "round_001.safetensors"))
        for name in ("plain", "sa")
    }
    train = secure["rounds"][1]["train"]
    bound = train["secagg"]["error-bound"]
    assert 0 < bound < 1e-4
    diff = _max_diff(first["sa"], first["plain"])
    assert diff <= bound + 1e-6  # + float32 rounding of the stored tensors
    assert diff > 0  # the values did go through quantization
    # the run finished with the usual outputs; the model still learns the same way
    assert (tmp_path / "sa" / "global_adapter.safetensors").exists()
    assert secure["final"]["accuracy"] == pytest.approx(plain["final"]["accuracy"], abs=0.05)
    assert train["answered"] == ["0", "1", "2"] and train["aggregated"] is True
    assert train["metrics"]["train-loss"] == pytest.approx(
        plain["rounds"][1]["train"]["metrics"]["train-loss"]
    )


def test_history_records_protocol_stages_and_all_bytes(tmp_path):
    history = run_simulation({**BASE, "secagg.enabled": True, "out-dir": str(tmp_path)})

    rnd = history["rounds"][1]
    secagg = rnd["train"]["secagg"]
    assert set(secagg["stages"]) == set(STAGES)
    assert secagg["num-shares"] == 3 and secagg["reconstruction-threshold"] == 2
    for stage in secagg["stages"].values():
        assert stage["bytes-down"] > 0 and stage["bytes-up"] > 0 and stage["seconds"] >= 0
    per_client_up = sum(c["bytes-up"] for c in rnd["clients"].values())
    assert per_client_up == sum(s["bytes-up"] for s in secagg["stages"].values())
    assert rnd["bytes"]["up"] == per_client_up
    # masked vectors are integers mod 2^32 held in int64: ~2x the float32 adapters
    # (down-evaluate: the float32 global adapters, once per client)
    float32_updates = rnd["bytes"]["down-evaluate"]
    assert secagg["stages"]["collect_masked_vectors"]["bytes-up"] > 1.5 * float32_updates


class DropOut:
    """The real ClientApp; one base station disappears when asked for its masked vector."""

    def __init__(self, victim: int) -> None:
        self.victim = victim

    def __call__(self, message: Message, context: Context) -> Message:
        configs = message.content.config_records.get("secaggplus_configs", {})
        if (
            context.node_config["partition-id"] == self.victim
            and configs.get("stage") == "collect_masked_vectors"
        ):
            raise RuntimeError("base station lost power")
        return client_app(message, context)


def test_a_base_station_dropping_out_mid_protocol_is_recorded_and_the_round_completes(tmp_path):
    # Prepare: 3 shares, threshold 2: one dropout can be recovered
    overrides = {
        **BASE,
        "secagg.enabled": True,
        "min-train-clients": 2,
        "out-dir": str(tmp_path / "sa"),
    }

    # Execute
    history = run_simulation(overrides, client_app=DropOut(victim=1))
    reference = run_simulation(
        {**BASE, "partition.scheme": "natural", "out-dir": str(tmp_path / "ref")},
        client_app=_Failing(1),
    )

    # Assert: the round aggregated the other two; the missing node is in history
    train = history["rounds"][1]["train"]
    assert train["aggregated"] is True
    assert train["answered"] == ["0", "2"]
    assert len(train["failed"]) == 1
    assert "collect_masked_vectors" in train["failed"][0]["reason"]
    # and equals plain FedAvg of the same two updates, within the bound
    got = load_file(str(tmp_path / "sa" / "global_adapter.safetensors"))
    want = load_file(str(tmp_path / "ref" / "global_adapter.safetensors"))
    assert _max_diff(got, want) <= train["secagg"]["error-bound"] + 1e-6
    assert reference["rounds"][1]["train"]["answered"] == ["0", "2"]


class _Failing:
    def __init__(self, victim: int) -> None:
        self.victim = victim

    def __call__(self, message: Message, context: Context) -> Message:
        if context.node_config["partition-id"] == self.victim:
            raise RuntimeError("down")
        return client_app(message, context)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dp.mode": "server-fixed"}, "not combined with dp.mode"),
        ({"update-compression.method": "int8"}, "update-compression"),
        ({"strategy.name": "fedmedian"}, "averages updates"),
        ({"strategy.name": "fedsa-lora"}, "secagg.enabled"),
        ({"min-train-clients": 1}, "at least 2 clients"),
        ({"secagg.num-shares": 3, "secagg.reconstruction-threshold": 3}, "smaller than"),
        ({"secagg.num-shares": 1.5}, "share must be in"),
    ],
)
def test_unsupported_combinations_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_simulation({**BASE, "secagg.enabled": True, **overrides, "out-dir": str(tmp_path)})
    assert not (tmp_path / "history.json").exists()


def test_share_counts_follow_the_workflow_rules():
    settings = SecAggSettings(enabled=True)
    assert resolved_shares(settings, 2) == (2, 2)
    assert resolved_shares(settings, 3) == (3, 2)
    assert resolved_shares(settings, 10) == (10, 7)
    fixed = SecAggSettings(enabled=True, num_shares=5, reconstruction_threshold=3)
    assert resolved_shares(fixed, 10) == (5, 3)
    # error bound: 1.5 n (2 r / Q) / sum of weights
    assert quantization_error_bound(settings, [1.0, 0.5]) == pytest.approx(
        1.5 * 2 * (16 / 4194304) / 1.5
    )


def test_fitins_with_other_tensor_names_is_refused():
    # Prepare: a legacy FitIns whose key hash does not match this node's model
    from flwr.app import RecordDict
    from flwr.common import FitIns, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    from rantune.federated.run_config import DEFAULTS

    fitins = FitIns(ndarrays_to_parameters([np.zeros(3, np.float32)]), {KEYS_HASH: "0" * 16})
    content = compat.fitins_to_recorddict(fitins, keep_input=True)
    with server_identity(run_id=1):
        message = Message(content, dst_node_id=1, message_type="train")
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 0, "num-partitions": 3},
        state=RecordDict(),
        run_config={**DEFAULTS, "model.pretrained": "none"},
    )

    with pytest.raises(ValueError, match="same model and LoRA config"):
        legacy_fit_mod(message, context, lambda m, c: m)
    assert keys_hash(["a", "b"]) != keys_hash(["b", "a"])
