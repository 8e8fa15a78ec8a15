"""FLoRA: stacking is exact (incl. mixed ranks), client folding and reinit, byte accounting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rantune.aggregation.dense import CumulativeDelta
from rantune.aggregation.flora import (
    downlink_deltas,
    flora_aggregate,
    flora_client_reset,
    flora_downlink,
    flora_round_bytes,
)
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


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.q_proj(x))


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
    stacked = flora_downlink(agg, "stacked")
    # Assert: both in float64 and through the float32 stacked downlink
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
        product = stacked[f"{prefix}.lora_B.weight"] @ stacked[f"{prefix}.lora_A.weight"]
        assert stacked[f"{prefix}.lora_A.weight"].shape == (sum(ranks), 6)
        assert torch.allclose(product.double(), expected, atol=1e-5, rtol=0)
        deltas, head = downlink_deltas(flora_downlink(agg, "dense"))
        assert torch.allclose(deltas[prefix].double(), expected, atol=1e-5, rtol=0)
        assert set(head) == {"m.head.weight"}


def test_client_reset_folds_exact_update_into_base_and_reinitialises_adapters():
    # Prepare: two peft clients with ranks 2 and 4, same alpha, trained (random) adapters
    torch.manual_seed(0)
    base = Toy()
    clients, updates = [], []
    for rank, n in ((2, 10), (4, 30)):
        model = apply_lora(_copy(base), LoraSettings(r=rank, alpha=8.0, targets=("q_proj",)))
        state = trainable_state(model)
        state = {k: torch.randn_like(v) for k, v in state.items()}
        load_trainable_state(model, state)
        clients.append(model)
        updates.append(ClientUpdate(state, n))
    w0 = base.q_proj.weight.detach().clone()
    expected = sum(
        w * m.get_submodule(Q).get_delta_weight("default").double()
        for w, m in zip((0.25, 0.75), clients, strict=True)
    )
    # Execute
    agg = flora_aggregate(updates, alpha=8.0)
    for mode in ("dense", "stacked"):
        model = clients[0]
        new_state = flora_client_reset(
            model, flora_downlink(agg, mode), trainable_state(model), seed=1, salt=(1, "a")
        )
        load_trainable_state(model, new_state)
        # Assert: the base now carries the exact weighted update, adapters are fresh (B = 0)
        folded = model.get_submodule(Q).base_layer.weight.double()
        assert torch.allclose(folded - w0.double(), expected, atol=1e-5)
        assert torch.equal(new_state[f"{Q}.lora_B.weight"], torch.zeros(3, 2))
        assert new_state[f"{Q}.lora_A.weight"].shape == (2, 4)
        assert torch.allclose(
            new_state["base_model.model.head.weight"], agg.other["base_model.model.head.weight"]
        )
        model.get_submodule(Q).base_layer.weight.data.copy_(w0)  # undo for the next mode


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


def test_byte_accounting_stacked_grows_with_clients_dense_does_not():
    gen = torch.Generator().manual_seed(2)
    updates = [random_update(r, 1, gen) for r in (2, 4, 8)]
    agg = flora_aggregate(updates)
    up_per_client = [4 * 2 * (r * 6 + 5 * r) + 4 * 10 for r in (2, 4, 8)]
    stacked = flora_round_bytes(updates, agg, "stacked", measure="data")
    dense = flora_round_bytes(updates, agg, "dense", measure="data")
    assert stacked.up == dense.up == sum(up_per_client)
    assert stacked.down == 3 * (4 * 2 * (14 * 6 + 5 * 14) + 4 * 10)
    assert dense.down == 3 * (4 * 2 * (5 * 6) + 4 * 10)
    with pytest.raises(ValueError, match="stacked"):
        flora_downlink(agg, "sparse")


def test_rejects_clients_with_different_modules_or_widths():
    u1 = update([[1, 0]], [[1], [2]], 1)
    u2 = update([[1, 0]], [[1], [2]], 1, prefix="m.v_proj")
    with pytest.raises(ValueError, match="different modules"):
        flora_aggregate([u1, u2])
    u3 = update([[1, 0, 0]], [[1], [2]], 1)
    with pytest.raises(ValueError, match="d_in, d_out"):
        flora_aggregate([u1, u3])
