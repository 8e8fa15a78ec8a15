"""LoRA-aware strategies through Flower on the in-process engine (smoke preset, 2 rounds),
Fed-SB and LoRA-FAIR included.

The aggregation math has its own hand-computed tests (``test_aggregation_*.py``);
these check the wiring: what travels in each direction, what the server keeps, and
that the aggregate reaching the global model is the rule's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, Message
from safetensors.numpy import load_file

from rantune.aggregation import (
    ClientUpdate,
    derive_seed,
    fedit_aggregate,
    ffa_frozen_a,
    lora_fair_aggregate,
    sb_bases,
)
from rantune.aggregation.lora_keys import group_state, lora_scale
from rantune.client.app import app as client_app
from rantune.federated.messages import record_bytes, state_to_record
from rantune.server.strategies.hooks import DENSE_FILE
from rantune.simulations.engine import run_simulation

BASE = {
    "data.preset": "smoke",
    "task": "los",
    "model.pretrained": "none",
    "num-server-rounds": 2,
}


class Recorder:
    """The real ClientApp, recording each train message and its reply."""

    def __init__(self) -> None:
        self.train: list[dict] = []
        self.evaluate: list[dict] = []

    def __call__(self, message: Message, context: Context) -> Message:
        reply = client_app(message, context)
        kind = message.metadata.message_type
        if kind in ("train", "evaluate"):
            assert not reply.has_error(), reply.error.reason
            entry = {
                "round": int(message.content.config_records["config"]["server-round"]),
                "pid": context.node_config["partition-id"],
                "down": {k: v.numpy() for k, v in message.content.array_records["arrays"].items()},
                "metrics": dict(reply.content.metric_records["metrics"]),
            }
            if kind == "train":
                entry["up"] = {
                    k: v.numpy() for k, v in reply.content.array_records["arrays"].items()
                }
            (self.train if kind == "train" else self.evaluate).append(entry)
        return reply


def _run(tmp_path, name: str, **overrides):
    recorder = Recorder()
    out = tmp_path / name
    history = run_simulation(
        {**BASE, "strategy.name": name, **overrides, "out-dir": str(out)}, client_app=recorder
    )
    return history, recorder, out


def _keys(entries, direction: str, part: str) -> set[str]:
    return {k for e in entries for k in e[direction] if part in k}


def test_ffa_lora_never_sends_or_changes_lora_a(tmp_path):
    # Execute
    history, rec, out = _run(tmp_path, "ffa-lora")

    # Assert: A never travels, B + head do; the global A is the shared seeded init
    assert not _keys(rec.train, "up", ".lora_A.") and not _keys(rec.train, "down", ".lora_A.")
    assert _keys(rec.train, "up", ".lora_B.")
    adapter = load_file(out / "global_adapter.safetensors")
    a_keys = {k: v.shape for k, v in adapter.items() if ".lora_A." in k}
    frozen = ffa_frozen_a(a_keys, derive_seed("ffa-lora", 0) & 0x7FFFFFFF)
    for key, value in frozen.items():
        np.testing.assert_array_equal(adapter[key], value.numpy())
    assert all(r["train"]["aggregated"] for r in history["rounds"][1:])
    a_bytes = sum(v.nbytes for k, v in adapter.items() if ".lora_A." in k)
    up = history["rounds"][1]["bytes"]["up-per-client"]
    assert up < history["adapter-bytes"] - a_bytes  # B + head only


def test_fedsa_lora_keeps_b_on_the_clients_and_reports_personalized_metrics(tmp_path):
    # Execute
    history, rec, _ = _run(tmp_path, "fedsa-lora")

    # Assert: B never travels in either direction; A does
    assert not _keys(rec.train, "up", ".lora_B.") and not _keys(rec.train, "down", ".lora_B.")
    assert not _keys(rec.evaluate, "down", ".lora_B.")
    assert _keys(rec.train, "up", ".lora_A.")
    last = history["rounds"][-1]["evaluate"]
    assert "personalized" in last and "accuracy" in last["personalized"]["mean"]
    assert all("personalized-accuracy" in e["metrics"] for e in rec.evaluate)


def test_flora_with_mixed_ranks_aggregates_the_exact_weighted_sum_of_b_a(tmp_path):
    # Execute: partitions train ranks 2, 4, 8
    history, rec, out = _run(tmp_path, "flora", **{"lora.client-ranks": "2,4,8"})

    # Assert: each client trained (and sent) its own rank
    ranks = {
        e["pid"]: {v.shape[0] for k, v in e["up"].items() if ".lora_A." in k} for e in rec.train
    }
    assert ranks == {0: {2}, 1: {4}, 2: {8}}
    # the stored cumulative update = sum over rounds of sum_i w_i (alpha/r_i) B_i A_i
    expected: dict[str, np.ndarray] = {}
    for rnd in (1, 2):
        replies = [e for e in rec.train if e["round"] == rnd]
        total = sum(e["metrics"]["num-examples"] for e in replies)
        for e in replies:
            groups = group_state({k: torch.from_numpy(v) for k, v in e["up"].items()})
            weight = e["metrics"]["num-examples"] / total
            for prefix, pair in groups.pairs.items():
                delta = weight * lora_scale(8.0, pair.rank) * pair.delta(1.0).numpy()
                expected[prefix] = expected.get(prefix, 0.0) + delta
    dense = load_file(out / DENSE_FILE)
    assert set(dense) == {p + ".dense_delta" for p in expected}
    for prefix, value in expected.items():
        np.testing.assert_allclose(dense[prefix + ".dense_delta"], value, atol=1e-5)
    # round 2's downlink carries the round-1 aggregate (dense, cumulative)
    round2 = next(e for e in rec.train if e["round"] == 2)
    assert _keys([round2], "down", ".dense_delta")
    assert not _keys(rec.train, "up", ".dense_delta")


def test_hetlora_sends_each_client_its_rank_and_keeps_the_global_rank(tmp_path):
    # Execute
    history, rec, out = _run(tmp_path, "hetlora", **{"lora.r": 8, "lora.client-ranks": "2,4,8"})

    # Assert
    for e in rec.train:
        rank = [2, 4, 8][e["pid"]]
        for direction in ("down", "up"):
            shapes = {v.shape[0] for k, v in e[direction].items() if ".lora_A." in k}
            assert shapes == {rank}, (e["pid"], direction, shapes)
    adapter = load_file(out / "global_adapter.safetensors")
    assert {v.shape[0] for k, v in adapter.items() if ".lora_A." in k} == {8}
    assert all(r["train"]["aggregated"] for r in history["rounds"][1:])


def test_fedex_lora_sends_the_residual_downlink_and_saves_it(tmp_path):
    history, rec, out = _run(tmp_path, "fedex-lora")
    round2 = [e for e in rec.train if e["round"] == 2]
    assert round2 and all(_keys([e], "down", ".dense_delta") for e in round2)
    assert not _keys(rec.train, "up", ".dense_delta")
    assert (out / DENSE_FILE).exists()
    last = history["rounds"][-1]["bytes"]
    assert last["down-per-client"] > 2 * last["up-per-client"]  # dense downlink


def test_flora_resumes_with_its_cumulative_update(tmp_path):
    # Prepare: 1 round, then extend the same run to 2 rounds (resume)
    name = "flora"
    out = tmp_path / "resumed"
    run_simulation({**BASE, "strategy.name": name, "num-server-rounds": 1, "out-dir": str(out)})
    resumed = run_simulation({**BASE, "strategy.name": name, "out-dir": str(out)})
    straight = run_simulation(
        {**BASE, "strategy.name": name, "out-dir": str(tmp_path / "straight")}
    )

    # Assert: the resumed run equals the uninterrupted one
    assert resumed["final"] == pytest.approx(straight["final"])
    a, b = load_file(out / DENSE_FILE), load_file(tmp_path / "straight" / DENSE_FILE)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6)


def test_byzantine_clients_corrupt_only_their_own_uploads(tmp_path):
    # Execute: one round with and without a 1-of-3 sign-flip attacker
    _, honest, _ = _run(tmp_path, "fedavg", **{"num-server-rounds": 1})
    _, attacked, _ = _run(
        tmp_path / "a",
        "fedavg",
        **{"num-server-rounds": 1, "attack.fraction": 0.34, "attack.kind": "sign-flip"},
    )

    # Assert: round 1 (same global model) differs only for the attacker, as -delta
    first = {e["pid"]: e for e in honest.train if e["round"] == 1}
    changed = []
    for e in (e for e in attacked.train if e["round"] == 1):
        h = first[e["pid"]]
        if any(not np.array_equal(e["up"][k], h["up"][k]) for k in h["up"]):
            changed.append(e["pid"])
            key = next(iter(h["up"]))
            np.testing.assert_allclose(
                e["up"][key] - e["down"][key], -(h["up"][key] - h["down"][key]), atol=1e-6
            )
    assert len(changed) == 1


def test_fed_sb_sends_only_r_and_head_and_averages_r_exactly(tmp_path):
    # Execute
    history, rec, out = _run(tmp_path, "fed-sb")

    # Assert: R [r, r] + head travel, never the bases; the upload is r^2 per module
    r = history["rounds"][1]["clients"]["0"]
    adapter = load_file(out / "global_adapter.safetensors")
    rank, modules = 4, sum(".lora_A." in k for k in adapter)  # lora.r; adapted projections
    for e in rec.train:
        for direction in ("down", "up"):
            assert not _keys([e], direction, ".lora_A.") and not _keys([e], direction, ".lora_B.")
        cores = {k: v for k, v in e["up"].items() if k.endswith(".lora_R.weight")}
        assert {v.shape for v in cores.values()} == {(rank, rank)}
        assert sum(v.nbytes for v in cores.values()) == rank * rank * 4 * len(cores)
    assert len(cores) == modules
    up = {k: v for k, v in rec.train[0]["up"].items()}
    assert r["bytes-up"] == record_bytes(state_to_record(up))  # R + head, nothing else
    assert r["bytes-up"] < 0.3 * history["adapter-bytes"]
    # the global adapter is LoRA with lora_A = A and lora_B = B mean(R)
    replies = [e for e in rec.train if e["round"] == 2]
    total = sum(e["metrics"]["num-examples"] for e in replies)
    seed = derive_seed("fed-sb", 0) & 0x7FFFFFFF
    for key in cores:
        prefix = key.removesuffix(".lora_R.weight")
        mean_r = sum(e["metrics"]["num-examples"] / total * e["up"][key] for e in replies)
        a_key, b_key = f"{prefix}.lora_A.weight", f"{prefix}.lora_B.weight"
        d_out, d_in = adapter[b_key].shape[0], adapter[a_key].shape[1]
        a, b = sb_bases(prefix, d_in, d_out, rank, seed)
        np.testing.assert_array_equal(adapter[a_key], a.numpy())
        np.testing.assert_allclose(adapter[b_key], b.numpy() @ mean_r, atol=1e-6)
    assert all(rnd["train"]["aggregated"] for rnd in history["rounds"][1:])


def test_fed_sb_upload_does_not_grow_with_the_number_of_clients(tmp_path):
    two, _, _ = _run(
        tmp_path / "two",
        "fed-sb",
        **{"partition.scheme": "iid", "partition.num-clients": 2, "num-server-rounds": 1},
    )
    three, _, _ = _run(tmp_path / "three", "fed-sb", **{"num-server-rounds": 1})
    assert (
        two["rounds"][1]["bytes"]["up-per-client"] == three["rounds"][1]["bytes"]["up-per-client"]
    )


def test_fed_sb_resumes_with_its_averaged_r(tmp_path):
    out = tmp_path / "resumed"
    run_simulation({**BASE, "strategy.name": "fed-sb", "num-server-rounds": 1, "out-dir": str(out)})
    resumed = run_simulation({**BASE, "strategy.name": "fed-sb", "out-dir": str(out)})
    straight = run_simulation(
        {**BASE, "strategy.name": "fed-sb", "out-dir": str(tmp_path / "straight")}
    )
    assert resumed["final"] == pytest.approx(straight["final"])


def test_lora_fair_global_b_is_the_corrected_average_of_the_replies(tmp_path):
    # Execute
    history, rec, out = _run(tmp_path, "lora-fair", **{"strategy.lora-fair-lambda": 0.05})

    # Assert: the saved global adapter = LoRA-FAIR of the round-2 replies; clients get it all
    replies = [e for e in rec.train if e["round"] == 2]
    updates = [
        ClientUpdate(
            {k: torch.from_numpy(v) for k, v in e["up"].items()}, e["metrics"]["num-examples"]
        )
        for e in replies
    ]
    expected = lora_fair_aggregate(updates, 0.05)
    adapter = load_file(out / "global_adapter.safetensors")
    for key, value in expected.items():
        np.testing.assert_allclose(adapter[key], value.numpy(), atol=1e-6)
    fedit = fedit_aggregate(updates)
    b_keys = [k for k in expected if ".lora_B." in k]
    assert any(not torch.allclose(expected[k], fedit[k]) for k in b_keys)  # B was corrected
    round2 = next(e for e in rec.train if e["round"] == 2)
    assert _keys([round2], "down", ".lora_A.") and _keys([round2], "down", ".lora_B.")
    assert not _keys(rec.train, "down", ".dense_delta")
