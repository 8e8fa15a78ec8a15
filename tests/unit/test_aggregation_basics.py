"""Adapter-state grouping, data weights, FedIT, seeded init, dense folding."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from toy_lora import Toy

from rantune.aggregation.dense import CumulativeDelta, deltas_to_state
from rantune.aggregation.fedit import fedit_aggregate
from rantune.aggregation.init import derive_seed, fresh_adapters, seeded_lora_a
from rantune.aggregation.lora_keys import (
    group_state,
    lora_scale,
    max_rank,
    module_prefix,
    module_ranks,
    uniform_rank,
)
from rantune.aggregation.update import ClientUpdate, example_weights, normalise_weights
from rantune.lora import LoraSettings, apply_lora, trainable_state

P = "base_model.model.encoder.blocks.0.attn.q_proj"
HEAD = "base_model.model.head.weight"


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def lora_state(pairs: dict, head=None) -> dict:
    state = {}
    for prefix, (a, b) in pairs.items():
        state[f"{prefix}.lora_A.weight"] = t(a)
        state[f"{prefix}.lora_B.weight"] = t(b)
    if head is not None:
        state[HEAD] = t(head)
    return state


def test_group_state_on_a_real_peft_state():
    # Prepare
    torch.manual_seed(0)
    model = apply_lora(Toy(), LoraSettings(r=2, alpha=4.0, targets=("q_proj",)))
    state = trainable_state(model)
    # Execute
    groups = group_state(state)
    # Assert
    assert list(groups.pairs) == ["base_model.model.q_proj"]
    pair = groups.pairs["base_model.model.q_proj"]
    assert (pair.rank, pair.d_in, pair.d_out) == (2, 4, 3)
    assert set(groups.other) == {"base_model.model.head.weight", "base_model.model.head.bias"}
    assert groups.to_state().keys() == state.keys()
    assert module_ranks(state) == {"base_model.model.q_proj": 2}
    # the module prefix is the module path inside the PeftModel
    assert model.get_submodule("base_model.model.q_proj").base_layer.weight.shape == (3, 4)


def test_key_helpers_and_ranks():
    state = lora_state(
        {P: ([[1, 2]], [[1], [0]]), "m.v": ([[1, 2], [3, 4]], [[1, 0], [0, 1]])}, head=[1.0]
    )
    assert module_prefix(f"{P}.lora_B.weight") == P
    assert module_ranks(state) == {P: 1, "m.v": 2}
    assert max_rank([state]) == 2
    with pytest.raises(ValueError, match="one LoRA rank"):
        uniform_rank(state)
    assert lora_scale(16.0, 8) == 2.0 and lora_scale(None, 8) == 1.0


def test_group_state_rejects_unpaired_and_mismatched_factors():
    state = lora_state({P: ([[1, 2]], [[1], [0]])})
    del state[f"{P}.lora_B.weight"]
    with pytest.raises(ValueError, match="only one of"):
        group_state(state)
    bad = {f"{P}.lora_A.weight": torch.zeros(2, 3), f"{P}.lora_B.weight": torch.zeros(4, 1)}
    with pytest.raises(ValueError, match="ranks disagree"):
        group_state(bad)


def test_weights_are_data_proportional_and_validated():
    updates = [ClientUpdate({"x": t([1.0])}, 1), ClientUpdate({"x": t([1.0])}, 3)]
    assert example_weights(updates).tolist() == [0.25, 0.75]
    with pytest.raises(ValueError, match="num_examples"):
        ClientUpdate({"x": t([1.0])}, -1)
    with pytest.raises(ValueError, match="num_examples"):
        ClientUpdate({"x": t([1.0])}, True)
    with pytest.raises(ValueError, match="num_examples=0"):
        example_weights([ClientUpdate({"x": t([1.0])}, 0)])
    with pytest.raises(ValueError, match=">= 0"):
        normalise_weights([1.0, -1.0])
    # numpy arrays are accepted and become tensors
    assert isinstance(ClientUpdate({"x": np.ones(2, np.float32)}, 1).state["x"], torch.Tensor)


def test_fedit_averages_a_and_b_separately_by_data_size():
    # Prepare: weights 1/4 and 3/4
    u1 = ClientUpdate(lora_state({P: ([[1, 2]], [[1], [0]])}, head=[0.0]), 1)
    u2 = ClientUpdate(lora_state({P: ([[3, 4]], [[0], [2]])}, head=[4.0]), 3)
    # Execute
    out = fedit_aggregate([u1, u2])
    # Assert
    assert torch.allclose(out[f"{P}.lora_A.weight"], t([[2.5, 3.5]]))
    assert torch.allclose(out[f"{P}.lora_B.weight"], t([[0.25], [1.5]]))
    assert torch.allclose(out[HEAD], t([3.0]))
    assert out[HEAD].dtype == torch.float32


def test_fedit_rejects_mixed_ranks_with_a_hint():
    u1 = ClientUpdate(lora_state({P: ([[1, 2]], [[1], [0]])}), 1, "a")
    u2 = ClientUpdate(lora_state({P: ([[1, 2], [3, 4]], [[1, 0], [0, 1]])}), 1, "b")
    with pytest.raises(ValueError, match="flora"):
        fedit_aggregate([u1, u2])


def test_seeded_lora_a_is_deterministic_per_seed_and_key_and_peft_shaped():
    a = seeded_lora_a((4, 64), seed=7, key="k.lora_A.weight")
    assert a.shape == (4, 64) and a.dtype == torch.float32
    assert torch.equal(a, seeded_lora_a((4, 64), seed=7, key="k.lora_A.weight"))
    assert not torch.equal(a, seeded_lora_a((4, 64), seed=8, key="k.lora_A.weight"))
    assert not torch.equal(a, seeded_lora_a((4, 64), seed=7, key="j.lora_A.weight"))
    # peft's kaiming_uniform(a=sqrt(5)) bound: 1/sqrt(d_in)
    assert a.abs().max() <= 1 / 8 and a.abs().max() > 0.9 / 8


def test_derive_seed_is_stable_across_processes():
    here = derive_seed(3, "round", 5)
    code = "from rantune.aggregation.init import derive_seed; print(derive_seed(3, 'round', 5))"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(there.stdout.strip().splitlines()[-1]) == here


def test_fresh_adapters_are_seeded_a_and_zero_b_of_the_requested_rank():
    # Prepare: module P maps d_in=2 -> d_out=3
    shapes = {P: (2, 3)}

    # Execute
    fresh = fresh_adapters(shapes, rank=4, seed=1)

    # Assert
    assert torch.equal(fresh[f"{P}.lora_B.weight"], torch.zeros(3, 4))
    a = fresh[f"{P}.lora_A.weight"]
    assert a.shape == (4, 2)
    assert torch.equal(a, seeded_lora_a((4, 2), 1, f"{P}.lora_A.weight"))
    assert not torch.equal(a, fresh_adapters(shapes, rank=4, seed=2)[f"{P}.lora_A.weight"])


def test_cumulative_delta_sums_rounds_and_round_trips_a_checkpoint():
    # Prepare: two rounds' dense updates of module P
    first = {P: torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)}
    second = {P: torch.tensor([[0.5, 0.5], [0.0, -1.0]], dtype=torch.float64)}
    acc = CumulativeDelta()
    assert acc.deltas() is None and acc.downlink() == {}

    # Execute
    acc.add(first)
    acc.add(second)
    restored = CumulativeDelta()
    restored.load_state_dict(acc.state_dict())

    # Assert: the total, sent as {prefix}.dense_delta float32
    expected = np.array([[1.5, 0.5], [0.0, 1.0]], np.float32)
    np.testing.assert_array_equal(acc.downlink()[P + ".dense_delta"], expected)
    np.testing.assert_array_equal(acc.deltas()[P], expected)
    np.testing.assert_array_equal(restored.deltas()[P], expected)
    assert set(deltas_to_state(first)) == {P + ".dense_delta"}
