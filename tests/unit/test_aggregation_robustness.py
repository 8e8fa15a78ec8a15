"""Byzantine attacks are deterministic and do what they say; validation names the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rantune.aggregation.byzantine import AttackSpec, attack_update, num_byzantine, select_byzantine
from rantune.aggregation.validation import validate_update

P = "m.q_proj"


def _shapes(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items()}


def states():
    gen = torch.Generator().manual_seed(0)
    ref = {
        f"{P}.lora_A.weight": torch.randn(4, 50, generator=gen),
        f"{P}.lora_B.weight": torch.randn(50, 4, generator=gen),
    }
    local = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in ref.items()}
    return local, ref


# --- Byzantine --------------------------------------------------------------


def test_selection_is_deterministic_order_free_and_sized():
    ids = [f"site-{i}" for i in range(10)]
    chosen = select_byzantine(ids, 0.2, seed=3)
    assert len(chosen) == 2 and set(chosen) <= set(ids)
    assert select_byzantine(list(reversed(ids)), 0.2, seed=3) == chosen
    assert select_byzantine(ids, 0.2, seed=3) == chosen
    assert len({tuple(select_byzantine(ids, 0.2, seed=s)) for s in range(10)}) > 1
    assert select_byzantine(ids, 0.0, seed=3) == []
    assert (
        num_byzantine(3, 0.2) == 1 and num_byzantine(10, 0.25) == 3 and num_byzantine(4, 1.0) == 4
    )
    with pytest.raises(ValueError, match="fraction"):
        select_byzantine(ids, 1.5, seed=0)
    with pytest.raises(ValueError, match="unique"):
        select_byzantine(["a", "a"], 0.5, seed=0)


def test_sign_flip_and_scaled_change_the_delta_as_specified():
    local, ref = states()
    flipped = attack_update(local, ref, AttackSpec("sign-flip"), seed=0)
    flipped3 = attack_update(local, ref, AttackSpec("sign-flip", factor=3.0), seed=0)
    scaled = attack_update(local, ref, AttackSpec("scaled"), seed=0)
    for key in local:
        delta = local[key] - ref[key]
        assert torch.allclose(flipped[key] - ref[key], -delta, atol=1e-6)
        assert torch.allclose(flipped3[key] - ref[key], -3 * delta, atol=1e-6)
        assert torch.allclose(scaled[key] - ref[key], 10 * delta, atol=1e-5)
        assert flipped[key].dtype == local[key].dtype


def test_gaussian_replaces_the_update_by_seeded_noise():
    local, ref = states()
    spec = AttackSpec("gaussian", noise_std=0.5)
    a = attack_update(local, ref, spec, seed=7)
    b = attack_update(local, ref, spec, seed=7)
    c = attack_update(local, ref, spec, seed=8)
    other_local = {k: v + 1.0 for k, v in local.items()}
    d = attack_update(other_local, ref, spec, seed=7)
    for key in local:
        noise = a[key] - ref[key]
        assert torch.equal(a[key], b[key])
        assert not torch.equal(a[key], c[key])
        assert torch.allclose(d[key], a[key])  # the honest update is discarded
        assert noise.std().item() == pytest.approx(0.5, rel=0.15)
    # key order does not change the draw
    reordered = attack_update(dict(reversed(list(local.items()))), ref, spec, seed=7)
    assert all(torch.equal(reordered[k], a[k]) for k in local)


def test_attack_spec_and_reference_errors():
    with pytest.raises(ValueError, match="sign-flip"):
        AttackSpec("label-flip")
    with pytest.raises(ValueError, match="factor"):
        AttackSpec("scaled", factor=-1.0)
    local, ref = states()
    with pytest.raises(ValueError, match="no reference"):
        attack_update(local, {}, AttackSpec("scaled"), seed=0)


# --- validation -------------------------------------------------------------


def test_validation_accepts_good_and_names_each_problem():
    local, ref = states()
    spec = _shapes(ref)
    assert validate_update(local, spec, num_examples=10) is None
    assert validate_update({k: v.numpy() for k, v in local.items()}, spec) is None
    nan = {**local, f"{P}.lora_A.weight": local[f"{P}.lora_A.weight"].clone()}
    nan[f"{P}.lora_A.weight"][0, 0] = float("nan")
    assert "NaN" in validate_update(nan, spec)
    inf = {**local, f"{P}.lora_B.weight": torch.full((50, 4), float("inf"))}
    assert "200 non-finite" in validate_update(inf, spec)
    missing = {f"{P}.lora_A.weight": local[f"{P}.lora_A.weight"]}
    assert "missing" in validate_update(missing, spec)
    extra = {**local, "m.head.weight": torch.zeros(1)}
    assert "unexpected" in validate_update(extra, spec)
    wrong = {**local, f"{P}.lora_A.weight": torch.zeros(4, 49)}
    assert "shape [4, 49], expected [4, 50]" in validate_update(wrong, spec)
    assert "not a tensor" in validate_update({**local, f"{P}.lora_A.weight": [1.0]}, spec)
    assert "not floating" in validate_update(
        {**local, f"{P}.lora_A.weight": torch.zeros(4, 50, dtype=torch.int64)}, spec
    )
    assert "num-examples" in validate_update(local, spec, num_examples=-1)
    assert "num-examples" in validate_update(local, spec, num_examples=True)
    assert "empty" in validate_update({}, spec)


def test_validation_flexible_rank():
    _, ref = states()
    spec = _shapes(ref)
    r8 = {
        f"{P}.lora_A.weight": np.zeros((8, 50), np.float32),
        f"{P}.lora_B.weight": np.zeros((50, 8), np.float32),
    }
    assert "shape" in validate_update(r8, spec)
    assert validate_update(r8, spec, flexible_rank=True) is None
    assert "rank 8 outside" in validate_update(r8, spec, flexible_rank=True, max_rank=4)
    mismatch = {**r8, f"{P}.lora_B.weight": np.zeros((50, 2), np.float32)}
    assert "lora_A rank 8 != lora_B rank 2" in validate_update(mismatch, spec, flexible_rank=True)
    wrong_width = {**r8, f"{P}.lora_A.weight": np.zeros((8, 49), np.float32)}
    assert "expected [4, 50]" in validate_update(wrong_width, spec, flexible_rank=True)


def test_validation_rejects_object_arrays_without_raising():
    _, ref = states()
    spec = _shapes(ref)
    odd = {k: np.empty(v.shape, dtype=object) for k, v in ref.items()}
    assert "not floating" in validate_update(odd, spec)
