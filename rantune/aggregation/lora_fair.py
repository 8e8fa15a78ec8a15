"""LoRA-FAIR: FedAvg of A and B plus a server-side residual correction of B
(Bian et al., ICCV 2025).

Per module, with data weights ``w_i`` (equal ranks; the ``alpha / r`` scale is common
to every term and cancels)::

    A_avg = sum_i w_i A_i                               [r, d_in]
    B_avg = sum_i w_i B_i                               [d_out, r]
    ideal = sum_i w_i B_i A_i                           [d_out, d_in]
    dB    = argmin ||ideal - (B_avg + dB) A_avg||_F^2 + lam ||dB||_F^2
          = (ideal - B_avg A_avg) A_avg^T (A_avg A_avg^T + lam I)^-1     [d_out, r]
    B'    = B_avg + dB

The product ``B' A_avg`` is the regularised least-squares fit of the ideal update
within the row space of ``A_avg`` (``lam = 0``: the best fit there). The paper
scores the fit with a similarity measure and solves for ``dB`` iteratively; the
squared Frobenius distance used here gives the same kind of correction in closed
form, with ``lam`` (``strategy.lora-fair-lambda``) as its regularisation weight.
Every client starts the next round from ``(A_avg, B')`` (the paper's
"averaged-initial" start): no dense downlink, the same bytes as FedIT.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rantune.aggregation.fedit import fedit_aggregate
from rantune.aggregation.lora_keys import State, b_key, group_state
from rantune.aggregation.update import ClientUpdate, example_weights, weighted_sum
from rantune.errors import InputError


def b_correction(
    ideal: torch.Tensor, a_avg: torch.Tensor, b_avg: torch.Tensor, lam: float
) -> torch.Tensor:
    """``dB`` ``[d_out, r]`` (float64) minimising ``||ideal - (b_avg + dB) a_avg||^2 +
    lam ||dB||^2``; ``ideal`` ``[d_out, d_in]``, ``a_avg`` ``[r, d_in]``, ``b_avg``
    ``[d_out, r]``."""
    if lam < 0:
        raise InputError(f"LoRA-FAIR lambda={lam} is invalid: expected >= 0")
    a = a_avg.to(torch.float64)
    residual = ideal.to(torch.float64) - b_avg.to(torch.float64) @ a  # [d_out, d_in]
    if lam == 0:
        return residual @ torch.linalg.pinv(a)  # least squares
    gram = a @ a.T + lam * torch.eye(a.shape[0], dtype=torch.float64)  # [r, r], SPD
    return torch.linalg.solve(gram, (residual @ a.T).T).T


def lora_fair_aggregate(updates: Sequence[ClientUpdate], lam: float) -> State:
    """FedIT's average with each ``lora_B`` replaced by ``B' = B_avg + dB``.

    Parameters
    ----------
    updates : K client states with identical keys and shapes (A ``[r, d_in]``,
        B ``[d_out, r]``, head tensors).
    lam : regularisation weight of the correction (``>= 0``).

    Returns
    -------
    ``{key: tensor}`` in the clients' dtypes: ``A_avg``, ``B'`` and the averaged head.
    """
    weights = example_weights(updates)
    state = fedit_aggregate(updates)
    groups = [group_state(u.state) for u in updates]
    for prefix, pair in group_state(state).pairs.items():
        ideal = weighted_sum([g.pairs[prefix].delta(1.0) for g in groups], weights)
        correction = b_correction(ideal, pair.A, pair.B, lam)
        state[b_key(prefix)] = (pair.B.to(torch.float64) + correction).to(pair.B.dtype)
    return state
