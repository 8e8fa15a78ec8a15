"""FFA-LoRA never changes A; FedSA-LoRA never sends B."""

from __future__ import annotations

import pytest
import torch

from rantune.aggregation.fedsa import fedsa_aggregate
from rantune.aggregation.ffa import ffa_aggregate, ffa_check_frozen, ffa_frozen_a, ffa_upload
from rantune.aggregation.lora_keys import is_lora_a, is_lora_b
from rantune.aggregation.update import ClientUpdate

P = "m.q_proj"
HEAD = "m.head.weight"


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def template(rank: int = 2, d_in: int = 4, d_out: int = 3) -> dict:
    return {
        f"{P}.lora_A.weight": torch.zeros(rank, d_in),
        f"{P}.lora_B.weight": torch.zeros(d_out, rank),
        HEAD: torch.zeros(2, d_out),
    }


# --- FFA-LoRA ---------------------------------------------------------------


def test_frozen_a_is_identical_on_every_client_and_only_depends_on_seed_and_key():
    a1 = ffa_frozen_a(template(), seed=3)
    a2 = ffa_frozen_a({f"{P}.lora_A.weight": (2, 4)}, seed=3)
    assert list(a1) == [f"{P}.lora_A.weight"]
    assert torch.equal(a1[f"{P}.lora_A.weight"], a2[f"{P}.lora_A.weight"])
    assert not torch.equal(
        a1[f"{P}.lora_A.weight"], ffa_frozen_a(template(), seed=4)[f"{P}.lora_A.weight"]
    )
    with pytest.raises(ValueError, match="no lora_A"):
        ffa_frozen_a({HEAD: torch.zeros(1)}, seed=3)


def test_ffa_never_changes_a_over_rounds():
    # Prepare: three clients start from the frozen init; each round they train B and head only
    seed = 11
    frozen = ffa_frozen_a(template(), seed)
    frozen_copy = {k: v.clone() for k, v in frozen.items()}
    global_state = {**template(), **frozen}
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        updates = []
        for n in (5, 10, 20):
            local = {k: v.clone() for k, v in global_state.items()}
            local[f"{P}.lora_B.weight"] += torch.randn(3, 2, generator=gen)
            local[HEAD] += torch.randn(2, 3, generator=gen)
            updates.append(ClientUpdate(ffa_upload(local), n))
        # Execute
        global_state = ffa_aggregate(updates, frozen_a=frozen)
        # Assert
        assert torch.equal(global_state[f"{P}.lora_A.weight"], frozen_copy[f"{P}.lora_A.weight"])
    assert torch.equal(frozen[f"{P}.lora_A.weight"], frozen_copy[f"{P}.lora_A.weight"])


def test_ffa_averages_b_and_head_by_data_and_uploads_no_a():
    u1 = ClientUpdate({f"{P}.lora_B.weight": t([[1.0], [0.0]]), HEAD: t([0.0])}, 1)
    u2 = ClientUpdate({f"{P}.lora_B.weight": t([[0.0], [4.0]]), HEAD: t([8.0])}, 3)
    out = ffa_aggregate([u1, u2])
    assert set(out) == {f"{P}.lora_B.weight", HEAD}
    assert torch.allclose(out[f"{P}.lora_B.weight"], t([[0.25], [3.0]]))
    assert torch.allclose(out[HEAD], t([6.0]))
    assert not any(is_lora_a(k) for k in ffa_upload(template()))


def test_ffa_rejects_a_trained_or_unexpected_a():
    seed = 5
    frozen = ffa_frozen_a(template(), seed)
    state = {**template(), **frozen}
    assert ffa_check_frozen(state, frozen) is None
    state[f"{P}.lora_A.weight"] = state[f"{P}.lora_A.weight"] + 1e-3
    with pytest.raises(ValueError, match="must not train lora_A"):
        ffa_aggregate([ClientUpdate(state, 1)], frozen_a=frozen)
    with pytest.raises(ValueError, match="never transmits"):
        ffa_aggregate([ClientUpdate(template(), 1)])


# --- FedSA-LoRA -------------------------------------------------------------


def test_fedsa_aggregates_the_shared_part_by_data_size():
    # Prepare: two clients' shared parts (A + head), weights 1/4 and 3/4; B stays home
    shared = [
        {f"{P}.lora_A.weight": t([[1.0, 0.0]]), HEAD: t([0.0])},
        {f"{P}.lora_A.weight": t([[0.0, 4.0]]), HEAD: t([4.0])},
    ]

    # Execute
    global_shared = fedsa_aggregate(
        [ClientUpdate(sh, n) for sh, n in zip(shared, (1, 3), strict=True)]
    )

    # Assert
    assert not any(is_lora_b(k) for k in global_shared)
    assert torch.allclose(global_shared[f"{P}.lora_A.weight"], t([[0.25, 3.0]]))
    assert torch.allclose(global_shared[HEAD], t([3.0]))


def test_fedsa_refuses_an_update_that_carries_b():
    with pytest.raises(ValueError, match="keeps them on the client"):
        fedsa_aggregate([ClientUpdate(template(), 1)])
    shared = {k: v for k, v in template().items() if not is_lora_b(k)}  # A + head
    with pytest.raises(ValueError, match="keeps them on the client"):
        fedsa_aggregate([ClientUpdate(shared, 1)], share_head=False)
