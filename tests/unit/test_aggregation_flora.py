"""FLoRA: stacking is exact (incl. mixed ranks, against peft's own deltas); the dense
downlink is cumulative and does not grow with the number of clients."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toy_lora import Toy

from rantune.aggregation.dense import CumulativeDelta
from rantune.aggregation.flora import flora_aggregate
from rantune.aggregation.update import ClientUpdate
from rantune.lora import LoraSettings, apply_lora, load_trainable_state, trainable_state

P = "m.q_proj"
Q = "base_model.model.q_proj"


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def update(a, b, n, head=None, prefix=P) -> ClientUpdate:
    state = {
        f"{prefix}.lora_A.weight": torch.tensor(a, dtype=torch.float32),
        f"{prefix}.lora_B.weight": torch.tensor(b, dtype=torch.float32),
    }
    if head is not None:
        state["m.head.weight"] = torch.tensor(head, dtype=torch.float32)
    return ClientUpdate(state, n)


def random_update(
    rank: int, n: int, gen: torch.Generator, d_in: int = 6, d_out: int = 5
) -> ClientUpdate:
    state = {}
    for prefix in ("m.q_proj", "m.v_proj"):
        state[f"{prefix}.lora_A.weight"] = torch.randn(rank, d_in, generator=gen)
        state[f"{prefix}.lora_B.weight"] = torch.randn(d_out, rank, generator=gen)
    state["m.head.weight"] = torch.randn(2, d_out, generator=gen)
    return ClientUpdate(state, n)


def test_hand_computed_mixed_rank_stack():
    # Prepare: client 1 rank 1 (n=1), client 2 rank 2 (n=3) -> weights 1/4, 3/4
    u1 = update([[1, 0]], [[1], [2]], 1, head=[0.0])  # B1 A1 = [[1, 0], [2, 0]]
    u2 = update([[0, 1], [1, 1]], [[1, 0], [0, 1]], 3, head=[4.0])  # B2 A2 = [[0, 1], [1, 1]]
    # Execute
    agg = flora_aggregate([u1, u2])
    # Assert
    module = agg.modules[P]
    assert module.A.shape == (3, 2) and module.B.shape == (2, 3) and module.ranks == (1, 2)
    assert torch.equal(module.A, f64([[1, 0], [0, 1], [1, 1]]))
    assert torch.equal(module.B, f64([[0.25, 0.75, 0], [0.5, 0, 0.75]]))
    assert torch.allclose(agg.dense_deltas()[P], f64([[0.25, 0.75], [1.25, 0.75]]))
    assert torch.allclose(agg.other["m.head.weight"], torch.tensor([3.0]))


def test_alpha_scales_each_client_by_its_own_rank():
    u1 = update([[1, 0]], [[1], [2]], 1)  # scale 2 / 1 = 2
    u2 = update([[0, 1], [1, 1]], [[1, 0], [0, 1]], 3)  # scale 2 / 2 = 1
    agg = flora_aggregate([u1, u2], alpha=2.0)
    assert torch.allclose(agg.dense_deltas()[P], f64([[0.5, 0.75], [1.75, 0.75]]))


@pytest.mark.parametrize("ranks", [(4, 4, 4), (2, 4, 8), (1, 3, 8, 5)])
def test_stacked_product_equals_weighted_sum_within_1e5(ranks):
    # Prepare
    gen = torch.Generator().manual_seed(0)
    counts = [10, 30, 60, 7][: len(ranks)]
    updates = [random_update(r, n, gen) for r, n in zip(ranks, counts, strict=True)]
    weights = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    alpha = 16.0
    # Execute
    agg = flora_aggregate(updates, alpha=alpha)
    # Assert: the stacked product, in float64
    for prefix in ("m.q_proj", "m.v_proj"):
        expected = sum(
            w
            * (alpha / u.state[f"{prefix}.lora_A.weight"].shape[0])
            * (
                u.state[f"{prefix}.lora_B.weight"].double()
                @ u.state[f"{prefix}.lora_A.weight"].double()
            )
            for w, u in zip(weights, updates, strict=True)
        )
        assert torch.allclose(agg.dense_deltas()[prefix], expected, atol=1e-5, rtol=0)
        assert agg.modules[prefix].A.shape == (sum(ranks), 6)
        assert agg.modules[prefix].ranks == ranks
    assert set(agg.other) == {"m.head.weight"}


def test_aggregate_equals_the_weighted_sum_of_peft_deltas_of_mixed_rank_clients():
    # Prepare: two peft clients with ranks 2 and 4, same alpha, trained (random) adapters
    torch.manual_seed(0)
    base = Toy()
    clients, updates = [], []
    for rank, n in ((2, 10), (4, 30)):
        model = apply_lora(_copy(base), LoraSettings(r=rank, alpha=8.0, targets=("q_proj",)))
        state = {k: torch.randn_like(v) for k, v in trainable_state(model).items()}
        load_trainable_state(model, state)
        clients.append(model)
        updates.append(ClientUpdate(state, n))
    expected = sum(
        w * m.get_submodule(Q).get_delta_weight("default").double()
        for w, m in zip((0.25, 0.75), clients, strict=True)
    )

    # Execute
    agg = flora_aggregate(updates, alpha=8.0)

    # Assert: peft's own scale alpha / r_i is the one applied
    assert torch.allclose(agg.dense_deltas()[Q], expected, atol=1e-5)
    assert torch.allclose(
        agg.other["base_model.model.head.weight"],
        0.25 * updates[0].state["base_model.model.head.weight"]
        + 0.75 * updates[1].state["base_model.model.head.weight"],
    )


def _copy(module: nn.Module) -> nn.Module:
    clone = Toy()
    clone.load_state_dict(module.state_dict())
    return clone


def test_cumulative_delta_catches_up_a_client_that_skipped_rounds():
    gen = torch.Generator().manual_seed(1)
    acc = CumulativeDelta()
    total = torch.zeros(5, 6, dtype=torch.float64)
    for _ in range(3):
        agg = flora_aggregate([random_update(2, 1, gen), random_update(3, 1, gen)])
        acc.add(agg.dense_deltas())
        total += agg.dense_deltas()["m.q_proj"]
    assert torch.allclose(acc.total["m.q_proj"], total)


def test_dense_downlink_does_not_grow_with_the_number_of_clients():
    gen = torch.Generator().manual_seed(2)
    sizes = []
    for ranks in ((2, 4), (2, 4, 8, 8, 1)):
        acc = CumulativeDelta()
        acc.add(flora_aggregate([random_update(r, 1, gen) for r in ranks]).dense_deltas())
        sizes.append({k: v.shape for k, v in acc.downlink().items()})
    assert sizes[0] == sizes[1] == {"m.q_proj.dense_delta": (5, 6), "m.v_proj.dense_delta": (5, 6)}


def test_rejects_clients_with_different_modules_or_widths():
    u1 = update([[1, 0]], [[1], [2]], 1)
    u2 = update([[1, 0]], [[1], [2]], 1, prefix="m.v_proj")
    with pytest.raises(ValueError, match="different modules"):
        flora_aggregate([u1, u2])
    u3 = update([[1, 0, 0]], [[1], [2]], 1)
    with pytest.raises(ValueError, match="d_in, d_out"):
        flora_aggregate([u1, u3])
