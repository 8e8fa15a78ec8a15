"""Client side of the strategy experiments: rank schedules, Byzantine clients, dense
downlinks folded into a separate model, seeded FFA-LoRA ``lora_A``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rantune.aggregation import ffa_frozen_a
from rantune.federated import downlink, workload
from rantune.federated.attacks import byzantine_partitions, maybe_attack
from rantune.federated.local import node_identity
from rantune.federated.ranks import client_ranks
from rantune.lora import trainable_state
from rantune.simulations.engine import resolve_config

BASE = {"data.preset": "smoke", "model.pretrained": "none"}


def test_rank_schedule_cycles_over_partitions_and_node_config_wins():
    cfg = resolve_config({**BASE, "strategy.name": "flora", "lora.client-ranks": "2, 8"})
    assert cfg.lora.client_ranks == (2, 8)
    assert client_ranks(cfg, 3) == {0: 2, 1: 8, 2: 2}
    assert node_identity(cfg, {"partition-id": 1}).rank == 8
    assert node_identity(cfg, {"partition-id": 1, "lora-r": 3}).rank == 3
    plain = resolve_config(BASE)
    assert node_identity(plain, {"partition-id": 2}).rank == plain.lora.r


def test_byzantine_selection_is_deterministic_and_only_attackers_change_their_update():
    # Prepare
    cfg = resolve_config({**BASE, "attack.fraction": 0.34, "attack.kind": "sign-flip"})
    chosen = byzantine_partitions(cfg, 3)
    reference = {"w": np.zeros(4, np.float32)}
    upload = {"w": np.array([1, -2, 3, 0.5], np.float32)}

    # Execute
    results = {pid: maybe_attack(cfg, pid, 3, 1, reference, upload)["w"] for pid in range(3)}

    # Assert
    assert len(chosen) == 1 and chosen == byzantine_partitions(cfg, 3)
    assert byzantine_partitions(resolve_config({**BASE, "attack.fraction": 0.34, "seed": 1}), 3)
    for pid, sent in results.items():
        expected = -upload["w"] if pid in chosen else upload["w"]
        np.testing.assert_allclose(sent, expected)
    assert byzantine_partitions(resolve_config(BASE), 3) == frozenset()


def test_gaussian_attack_sends_seeded_noise_of_the_given_std():
    cfg = resolve_config(
        {**BASE, "attack.fraction": 1.0, "attack.kind": "gaussian", "attack.factor": 0.5}
    )
    reference = {"w": np.zeros(20_000, np.float32)}
    first = maybe_attack(cfg, 0, 3, 1, reference, {"w": np.ones(20_000, np.float32)})["w"]
    again = maybe_attack(cfg, 0, 3, 1, reference, {"w": np.ones(20_000, np.float32)})["w"]
    np.testing.assert_array_equal(first, again)
    assert first.std() == pytest.approx(0.5, rel=0.05)


def test_dense_deltas_fold_into_a_separate_model_and_are_undone_next_time():
    # Prepare
    spec = workload.model_spec(resolve_config(BASE))
    pool = downlink.ModelPool()
    shared = pool.model(spec)
    prefix = next(k for k in trainable_state(shared) if ".lora_A." in k).removesuffix(
        ".lora_A.weight"
    )
    base = shared.get_submodule(prefix).base_layer.weight.detach().clone()
    delta = np.full(tuple(base.shape), 0.25, np.float32)

    # Execute
    folded = pool.model(spec, {prefix: delta})
    after_fold = folded.get_submodule(prefix).base_layer.weight.detach().clone()
    again = pool.model(spec, {})
    after_reset = again.get_submodule(prefix).base_layer.weight.detach().clone()

    # Assert
    assert folded is not shared and again is folded
    torch.testing.assert_close(after_fold, base + 0.25)
    torch.testing.assert_close(after_reset, base)
    torch.testing.assert_close(shared.get_submodule(prefix).base_layer.weight, base)
    assert pool.model(spec, None) is shared
    with pytest.raises(ValueError, match="does not adapt"):
        pool.model(spec, {"no.such.module": delta})


def test_unpack_fills_the_shared_seeded_lora_a_and_splits_dense_keys():
    like = {
        "m.lora_A.weight": np.zeros((4, 8), np.float32),
        "m.lora_B.weight": np.zeros((8, 4), np.float32),
    }
    received = {"m.lora_B.weight": np.ones((8, 4), np.float32), "m.dense_delta": np.eye(8)}
    state, deltas = downlink.unpack(received, {downlink.LORA_A_SEED: 7}, like)
    np.testing.assert_array_equal(
        state["m.lora_A.weight"], ffa_frozen_a({"m.lora_A.weight": (4, 8)}, 7)["m.lora_A.weight"]
    )
    assert set(deltas) == {"m"} and "m.dense_delta" not in state
