"""Fed-SB (average R between frozen shared bases; a client trains only R) and LoRA-FAIR
(FedIT + a regularised residual correction of B), on hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from toy_lora import Toy

from rantune.aggregation.fed_sb import expand, fed_sb_aggregate, r_key, sb_bases, shapes_of
from rantune.aggregation.fedit import fedit_aggregate
from rantune.aggregation.lora_fair import b_correction, lora_fair_aggregate
from rantune.aggregation.update import ClientUpdate
from rantune.lora import LoraSettings, apply_lora, load_trainable_state, trainable_state
from rantune.lora_sb import SB_SEED, RCore, expand_received, only_r_trains

P = "m.q_proj"
HEAD = "m.head.weight"


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# --- Fed-SB -------------------------------------------------------------------


def test_fed_sb_averages_r_and_head_by_data_size():
    # Prepare: weights 1/4 and 3/4
    u1 = ClientUpdate({r_key(P): t([[1, 0], [0, 2]]), HEAD: t([0.0])}, 1)
    u2 = ClientUpdate({r_key(P): t([[3, 2], [0, 0]]), HEAD: t([4.0])}, 3)

    # Execute
    out = fed_sb_aggregate([u1, u2])

    # Assert: 0.25 R1 + 0.75 R2
    assert torch.allclose(out[r_key(P)], t([[2.5, 1.5], [0.0, 0.5]]))
    assert torch.allclose(out[HEAD], t([3.0]))


def test_fed_sb_averaging_is_the_exact_average_of_the_client_updates():
    # Prepare: three clients' R between the shared bases of one 6 -> 5 module, rank 3
    a, b = sb_bases(P, d_in=6, d_out=5, rank=3, seed=11)
    gen = torch.Generator().manual_seed(0)
    counts = (2, 5, 13)
    updates = [ClientUpdate({r_key(P): torch.randn(3, 3, generator=gen)}, n) for n in counts]
    weights = [n / sum(counts) for n in counts]

    # Execute
    mean_r = fed_sb_aggregate(updates)[r_key(P)].double()

    # Assert: B mean(R) A == mean(B R_i A)
    a64, b64 = a.double(), b.double()
    exact = sum(
        w * b64 @ u.state[r_key(P)].double() @ a64 for w, u in zip(weights, updates, strict=True)
    )
    assert torch.allclose(b64 @ mean_r @ a64, exact, atol=1e-6)


def test_shared_bases_are_orthonormal_deterministic_and_per_module():
    a, b = sb_bases(P, d_in=8, d_out=6, rank=3, seed=1)
    assert a.shape == (3, 8) and b.shape == (6, 3) and a.dtype == torch.float32
    assert torch.allclose(a @ a.T, torch.eye(3), atol=1e-6)
    assert torch.allclose(b.T @ b, torch.eye(3), atol=1e-6)
    again = sb_bases(P, d_in=8, d_out=6, rank=3, seed=1)
    assert torch.equal(a, again[0]) and torch.equal(b, again[1])
    assert not torch.equal(a, sb_bases("m.v_proj", 8, 6, 3, seed=1)[0])
    assert not torch.equal(b, sb_bases(P, 8, 6, 3, seed=2)[1])
    with pytest.raises(ValueError, match="rank 7 is invalid"):
        sb_bases(P, d_in=8, d_out=6, rank=7, seed=1)


def test_expand_gives_the_lora_state_of_b_r_a():
    # Prepare
    like = {f"{P}.lora_A.weight": torch.zeros(2, 4), f"{P}.lora_B.weight": torch.zeros(3, 2)}
    shapes = shapes_of(like)
    r = t([[1, 2], [3, 4]])

    # Execute
    full = expand({r_key(P): r, HEAD: t([7.0])}, shapes, seed=5)

    # Assert
    a, b = sb_bases(P, 4, 3, 2, seed=5)
    assert shapes == {P: (4, 3, 2)}
    assert set(full) == {f"{P}.lora_A.weight", f"{P}.lora_B.weight", HEAD}
    assert torch.equal(full[f"{P}.lora_A.weight"], a)
    assert torch.equal(full[f"{P}.lora_B.weight"], b @ r)
    assert torch.equal(full[HEAD], t([7.0]))
    with pytest.raises(ValueError, match="expected \\(2, 2\\)"):
        expand({r_key(P): torch.zeros(3, 3)}, shapes, seed=5)


def test_fed_sb_refuses_updates_that_carry_the_bases():
    update = ClientUpdate({f"{P}.lora_B.weight": torch.zeros(3, 2)}, 1, "a")
    with pytest.raises(ValueError, match="send only R"):
        fed_sb_aggregate([update])


def test_a_client_trains_only_r_and_keeps_the_bases():
    # Prepare: a peft model holding the expanded Fed-SB state, bases frozen
    torch.manual_seed(0)
    model = apply_lora(Toy(), LoraSettings(r=2, alpha=4.0, targets=("q_proj",)))
    prefix = "base_model.model.q_proj"
    like = {k: v.numpy() for k, v in trainable_state(model).items()}
    r0 = np.array([[0.5, -1.0], [2.0, 0.0]], np.float32)
    received = {r_key(prefix): r0}
    state = {**like, **expand_received(received, like, seed=3)}
    load_trainable_state(model, {k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    for name, param in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            param.requires_grad_(False)
    a, b = sb_bases(prefix, 4, 3, 2, seed=3)

    # Execute: a few SGD steps inside the context
    with only_r_trains(model, received, {SB_SEED: 3}) as sb:
        layer = model.get_submodule(prefix)
        assert isinstance(layer.lora_B["default"], RCore)
        trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()

    # Assert: only R (and the head) trained; lora_B holds B R_trained again, A is A
    assert [n for n in trainable if ".lora_" in n] == [f"{prefix}.lora_B.default.core"]
    after = trainable_state(model)
    r1 = torch.from_numpy(sb.trained[r_key(prefix)])
    assert not torch.allclose(r1, torch.from_numpy(r0))
    np.testing.assert_array_equal(sb.received[r_key(prefix)], r0)
    assert torch.equal(after[f"{prefix}.lora_A.weight"], a)
    assert torch.equal(after[f"{prefix}.lora_B.weight"], b @ r1)
    assert isinstance(model.get_submodule(prefix).lora_B["default"], nn.Linear)


def test_without_the_fed_sb_seed_nothing_changes():
    model = apply_lora(Toy(), LoraSettings(r=2, targets=("q_proj",)))
    before = model.get_submodule("base_model.model.q_proj").lora_B["default"]
    with only_r_trains(model, {r_key("base_model.model.q_proj"): np.zeros((2, 2))}, {}) as sb:
        assert model.get_submodule("base_model.model.q_proj").lora_B["default"] is before
    assert sb.trained == {} and sb.received == {}


# --- LoRA-FAIR ----------------------------------------------------------------


def _fair_clients() -> list[ClientUpdate]:
    # B1 A1 = [[2, 0], [0, 0]], B2 A2 = [[0, 0], [2, 2]]; equal weights
    u1 = {f"{P}.lora_A.weight": t([[1, 0]]), f"{P}.lora_B.weight": t([[2], [0]]), HEAD: t([0.0])}
    u2 = {f"{P}.lora_A.weight": t([[1, 1]]), f"{P}.lora_B.weight": t([[0], [2]]), HEAD: t([2.0])}
    return [ClientUpdate(u1, 5), ClientUpdate(u2, 5)]


@pytest.mark.parametrize(
    "lam, b_prime",
    [
        # ideal [[1, 0], [1, 1]], A_avg [[1, .5]], B_avg [[1], [1]]:
        # residual [[0, -.5], [0, .5]], residual A_avg^T = [[-.25], [.25]], A_avg A_avg^T = 1.25
        (0.0, [[0.8], [1.2]]),  # dB = [[-.25], [.25]] / 1.25
        (0.25, [[5 / 6], [7 / 6]]),  # dB = [[-.25], [.25]] / 1.5
    ],
)
def test_lora_fair_corrects_b_by_hand(lam, b_prime):
    # Execute
    out = lora_fair_aggregate(_fair_clients(), lam)

    # Assert: A and head are FedIT's averages, B is corrected
    assert torch.allclose(out[f"{P}.lora_A.weight"], t([[1.0, 0.5]]))
    assert torch.allclose(out[f"{P}.lora_B.weight"], t(b_prime), atol=1e-6)
    assert torch.allclose(out[HEAD], t([1.0]))


def test_lora_fair_fits_the_ideal_update_at_least_as_well_as_fedit():
    # Prepare: random rank-3 clients
    gen = torch.Generator().manual_seed(4)
    updates = [
        ClientUpdate(
            {
                f"{P}.lora_A.weight": torch.randn(3, 7, generator=gen),
                f"{P}.lora_B.weight": torch.randn(6, 3, generator=gen),
            },
            n,
        )
        for n in (1, 4, 9)
    ]
    w = [n / 14 for n in (1, 4, 9)]
    ideal = sum(
        wi * u.state[f"{P}.lora_B.weight"].double() @ u.state[f"{P}.lora_A.weight"].double()
        for wi, u in zip(w, updates, strict=True)
    )

    # Execute
    fedit = fedit_aggregate(updates)
    fair = lora_fair_aggregate(updates, 0.0)
    heavy = lora_fair_aggregate(updates, 1e9)

    # Assert
    def error(state):
        b, a = state[f"{P}.lora_B.weight"].double(), state[f"{P}.lora_A.weight"].double()
        return float(torch.linalg.matrix_norm(ideal - b @ a))

    assert error(fair) < error(fedit)
    assert torch.equal(fair[f"{P}.lora_A.weight"], fedit[f"{P}.lora_A.weight"])
    assert torch.allclose(heavy[f"{P}.lora_B.weight"], fedit[f"{P}.lora_B.weight"], atol=1e-6)
    with pytest.raises(ValueError, match="lambda"):
        b_correction(ideal, fedit[f"{P}.lora_A.weight"], fedit[f"{P}.lora_B.weight"], -1.0)
