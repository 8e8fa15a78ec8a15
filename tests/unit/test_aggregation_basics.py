"""Adapter-state grouping, data weights, FedIT, seeded init, dense folding."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from rantune.aggregation.dense import (
    CumulativeDelta,
    apply_dense_deltas,
    base_weight_key,
    deltas_to_state,
    fold_deltas_into_model,
    lora_deltas,
    state_to_deltas,
)
from rantune.aggregation.fedit import fedit_aggregate
from rantune.aggregation.init import derive_seed, fresh_adapters, seeded_lora_a
from rantune.aggregation.lora_keys import (
    group_state,
    lora_scale,
    max_rank,
    module_prefix,
    module_ranks,
    split_lora_keys,
    state_nbytes,
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


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.q_proj(x))


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
    a_keys, b_keys, other = split_lora_keys(state)
    assert a_keys == [f"{P}.lora_A.weight", "m.v.lora_A.weight"]
    assert b_keys == [f"{P}.lora_B.weight", "m.v.lora_B.weight"]
    assert other == [HEAD]
    assert module_prefix(f"{P}.lora_B.weight") == P
    assert module_ranks(state) == {P: 1, "m.v": 2}
    assert max_rank([state]) == 2
    with pytest.raises(ValueError, match="one LoRA rank"):
        uniform_rank(state)
    assert state_nbytes(state) == 4 * (2 + 2 + 4 + 4 + 1)
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


def test_fresh_adapters_zero_b_seeded_a_and_keep_head():
    state = lora_state({P: ([[9, 9]], [[9], [9]])}, head=[5.0])
    fresh = fresh_adapters(state, seed=1, salt=(2, "site-a"))
    assert torch.equal(fresh[f"{P}.lora_B.weight"], torch.zeros(2, 1))
    assert torch.equal(fresh[HEAD], t([5.0]))
    assert torch.equal(
        fresh[f"{P}.lora_A.weight"], fresh_adapters(state, 1, (2, "site-a"))[f"{P}.lora_A.weight"]
    )
    assert not torch.equal(
        fresh[f"{P}.lora_A.weight"], fresh_adapters(state, 1, (3, "site-a"))[f"{P}.lora_A.weight"]
    )


def test_dense_deltas_scale_apply_and_roundtrip():
    state = lora_state({P: ([[1, 0]], [[1], [2]])})
    deltas = lora_deltas(state, alpha=2.0)  # scale 2 / 1
    assert torch.allclose(deltas[P], torch.tensor([[2.0, 0.0], [4.0, 0.0]], dtype=torch.float64))
    base = {base_weight_key(P): torch.ones(2, 2), "other": torch.zeros(1)}
    out = apply_dense_deltas(base, deltas)
    assert torch.allclose(out[base_weight_key(P)], t([[3, 1], [5, 1]]))
    assert torch.equal(base[base_weight_key(P)], torch.ones(2, 2))  # input untouched
    back, rest = state_to_deltas({**deltas_to_state(deltas), "h": t([1.0])})
    assert set(back) == {P} and set(rest) == {"h"}
    acc = CumulativeDelta()
    acc.add(deltas)
    acc.add(deltas)
    assert torch.allclose(acc.total[P], 2 * deltas[P])


def test_fold_into_model_checks_every_shape_before_changing_anything():
    torch.manual_seed(0)
    model = apply_lora(Toy(), LoraSettings(r=2, targets=("q_proj",)))
    weight = model.get_submodule("base_model.model.q_proj").base_layer.weight
    before = weight.detach().clone()
    fold_deltas_into_model(model, {"base_model.model.q_proj": torch.ones(3, 4)})
    assert torch.allclose(weight, before + 1)
    with pytest.raises(ValueError, match="does not fit"):
        fold_deltas_into_model(
            model,
            {
                "base_model.model.q_proj": torch.ones(3, 4),
                "base_model.model.head": torch.ones(9, 9),
            },
        )
    assert torch.allclose(weight, before + 1)
    with pytest.raises(ValueError, match="no module"):
        fold_deltas_into_model(model, {"base_model.model.nope": torch.ones(3, 4)})
