"""HetLoRA pads, norm-weights and truncates; FedEx-LoRA's residual makes the update exact."""

from __future__ import annotations

import pytest
import torch
from toy_lora import Toy

from rantune.aggregation.fedex import fedex_aggregate
from rantune.aggregation.hetlora import (
    hetlora_aggregate,
    hetlora_downlink,
    hetlora_weights,
    pad_pair,
    truncate_state,
)
from rantune.aggregation.lora_keys import group_state
from rantune.aggregation.update import ClientUpdate
from rantune.lora import LoraSettings, apply_lora, load_trainable_state, trainable_state

P = "m.q_proj"
HEAD = "m.head.weight"
Q = "base_model.model.q_proj"


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def state(a, b, head=None, prefix=P) -> dict:
    out = {f"{prefix}.lora_A.weight": t(a), f"{prefix}.lora_B.weight": t(b)}
    if head is not None:
        out[HEAD] = t(head)
    return out


# --- HetLoRA ----------------------------------------------------------------


def test_pad_and_truncate_shapes_values_and_product():
    s = state([[1, 2]], [[3], [4]], head=[1.0])
    pair = pad_pair(group_state(s).pairs[P], 3)
    assert torch.equal(pair.A, t([[1, 2], [0, 0], [0, 0]]))
    assert torch.equal(pair.B, t([[3, 0, 0], [4, 0, 0]]))
    assert torch.equal(pair.B @ pair.A, s[f"{P}.lora_B.weight"] @ s[f"{P}.lora_A.weight"])
    padded = {f"{P}.lora_A.weight": pair.A, f"{P}.lora_B.weight": pair.B, HEAD: s[HEAD]}
    back = truncate_state(padded, 1)
    assert all(torch.equal(back[k], s[k]) for k in s)
    big = state([[1, 2], [3, 4], [5, 6]], [[1, 2, 3], [4, 5, 6]])
    cut = truncate_state(big, {P: 2})
    assert torch.equal(cut[f"{P}.lora_A.weight"], t([[1, 2], [3, 4]]))
    assert torch.equal(cut[f"{P}.lora_B.weight"], t([[1, 2], [4, 5]]))
    with pytest.raises(ValueError, match="truncate"):
        truncate_state(big, 4)
    with pytest.raises(ValueError, match="pad"):
        pad_pair(group_state(big).pairs[P], 2)


def test_hand_computed_norm_weighted_aggregate_and_truncated_downlink():
    # Prepare: ||B1 A1||_F = 1 (rank 1, n=100); ||B2 A2||_F = 3 (rank 2, n=1) -> weights 1/4, 3/4
    u1 = ClientUpdate(state([[1, 0]], [[1], [0]], head=[0.0]), 100)
    u2 = ClientUpdate(state([[0, 1], [0, 0]], [[0, 0], [3, 0]], head=[101.0]), 1)
    # Execute
    weights = hetlora_weights([u1, u2])
    global_state = hetlora_aggregate([u1, u2])
    # Assert: norm weights ignore the example counts
    assert torch.allclose(weights[P], torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert torch.allclose(global_state[f"{P}.lora_A.weight"], t([[0.25, 0.75], [0, 0]]))
    assert torch.allclose(global_state[f"{P}.lora_B.weight"], t([[0.25, 0], [2.25, 0]]))
    assert torch.allclose(global_state[HEAD], t([1.0]))  # head: data weights 100/101, 1/101
    down1 = hetlora_downlink(global_state, 1)
    assert torch.allclose(down1[f"{P}.lora_A.weight"], t([[0.25, 0.75]]))
    assert torch.allclose(down1[f"{P}.lora_B.weight"], t([[0.25], [2.25]]))
    assert hetlora_downlink(global_state, 2)[f"{P}.lora_A.weight"].shape == (2, 2)


def test_hetlora_weight_options_and_fallback():
    u1 = ClientUpdate(state([[1, 0]], [[1], [0]]), 100)
    u2 = ClientUpdate(state([[0, 1], [0, 0]], [[0, 0], [3, 0]]), 1)
    by_data = hetlora_weights([u1, u2], weight_by_examples=True)[P]
    assert torch.allclose(by_data, torch.tensor([100 / 103, 3 / 103], dtype=torch.float64))
    zero = [
        ClientUpdate(state([[1, 0]], [[0], [0]]), 1),
        ClientUpdate(state([[0, 1]], [[0], [0]]), 3),
    ]
    assert torch.allclose(hetlora_weights(zero)[P], torch.tensor([0.25, 0.75], dtype=torch.float64))
    # global scope: one norm per client over all modules
    two = [
        ClientUpdate(
            {**state([[1, 0]], [[1], [0]]), **state([[1, 0]], [[0], [0]], prefix="m.v")}, 1
        ),
        ClientUpdate(
            {**state([[1, 0]], [[0], [0]]), **state([[1, 0]], [[3], [0]], prefix="m.v")}, 1
        ),
    ]
    g = hetlora_weights(two, scope="global")
    assert torch.allclose(g[P], g["m.v"]) and torch.allclose(
        g[P], torch.tensor([0.25, 0.75], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="r_max"):
        hetlora_aggregate([u1, u2], r_max=1)
    assert hetlora_aggregate([u1, u2], r_max=4)[f"{P}.lora_A.weight"].shape == (4, 2)


# --- FedEx-LoRA -------------------------------------------------------------


def test_hand_computed_residual():
    u1 = ClientUpdate(state([[1, 0]], [[1], [0]]), 1)
    u2 = ClientUpdate(state([[0, 1]], [[0], [1]]), 1)
    agg = fedex_aggregate([u1, u2])
    assert torch.allclose(agg.state[f"{P}.lora_A.weight"], t([[0.5, 0.5]]))
    assert torch.allclose(agg.state[f"{P}.lora_B.weight"], t([[0.5], [0.5]]))
    assert torch.allclose(
        agg.residuals[P], torch.tensor([[0.25, -0.25], [-0.25, 0.25]], dtype=torch.float64)
    )
    assert float(torch.linalg.matrix_norm(agg.residuals[P])) == pytest.approx(0.5)


def test_effective_update_equals_mean_of_client_products():
    gen = torch.Generator().manual_seed(0)
    counts, alpha, r = (3, 5, 12), 16.0, 4
    updates = [
        ClientUpdate(
            {
                f"{P}.lora_A.weight": torch.randn(r, 6, generator=gen),
                f"{P}.lora_B.weight": torch.randn(5, r, generator=gen),
            },
            n,
        )
        for n in counts
    ]
    agg = fedex_aggregate(updates, alpha=alpha)
    w = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    expected = sum(
        wi
        * (alpha / r)
        * (u.state[f"{P}.lora_B.weight"].double() @ u.state[f"{P}.lora_A.weight"].double())
        for wi, u in zip(w, updates, strict=True)
    )
    sent = group_state(agg.state).pairs[P]  # the averaged factors as transmitted
    effective = agg.residuals[P] + (alpha / r) * sent.delta(1.0)
    assert torch.allclose(effective, expected, atol=1e-10)
    assert float(torch.linalg.matrix_norm(agg.residuals[P])) > 0.1


def test_fedex_on_peft_clients_matches_the_average_model():
    # Prepare: two peft clients from one base with different trained adapters
    torch.manual_seed(0)
    base = Toy()
    clients, updates = [], []
    for n in (1, 3):
        clone = Toy()
        clone.load_state_dict(base.state_dict())
        model = apply_lora(clone, LoraSettings(r=2, alpha=4.0, targets=("q_proj",)))
        st = {k: torch.randn_like(v) for k, v in trainable_state(model).items()}
        load_trainable_state(model, st)
        clients.append(model)
        updates.append(ClientUpdate(st, n))
    effective = [
        m.get_submodule(Q).base_layer.weight.double()
        + m.get_submodule(Q).get_delta_weight("default").double()
        for m in clients
    ]
    expected = 0.25 * effective[0] + 0.75 * effective[1]
    # Execute
    agg = fedex_aggregate(updates, alpha=4.0)
    model = clients[0]
    with torch.no_grad():  # the client folds the residual into its base, loads the average
        weight = model.get_submodule(Q).base_layer.weight
        weight.copy_((weight.double() + agg.residuals[Q]).to(weight.dtype))
    load_trainable_state(model, agg.state)
    # Assert
    got = (
        model.get_submodule(Q).base_layer.weight.double()
        + model.get_submodule(Q).get_delta_weight("default").double()
    )
    assert torch.allclose(got, expected, atol=1e-5)


def test_fedex_rejects_mixed_ranks():
    u1 = ClientUpdate(state([[1, 0]], [[1], [0]]), 1)
    u2 = ClientUpdate(state([[1, 0], [0, 1]], [[1, 0], [0, 1]]), 1)
    with pytest.raises(ValueError, match="same LoRA rank"):
        fedex_aggregate([u1, u2])


def test_hetlora_rejects_clients_with_other_modules():
    u1 = ClientUpdate(state([[1, 0]], [[1], [0]]), 1, "a")
    u2 = ClientUpdate(state([[1, 0]], [[1], [0]], prefix="m.v"), 1, "b")
    with pytest.raises(ValueError, match="different modules"):
        hetlora_aggregate([u1, u2])
