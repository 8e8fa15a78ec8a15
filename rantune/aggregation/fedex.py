"""FedEx-LoRA: FedAvg of A and B plus the exact residual folded into the frozen weights.

Singhal et al. 2025. Per module, with data weights ``w_i`` and scale ``s = alpha / r``
(equal ranks)::

    A_avg = sum_i w_i A_i                      [r, d_in]
    B_avg = sum_i w_i B_i                      [d_out, r]
    residual = s * (sum_i w_i B_i A_i - B_avg A_avg)          [d_out, d_in]

Every client adds ``residual`` to its frozen base weight and loads ``A_avg``/``B_avg``,
so its effective weight becomes ``W0 + s sum_i w_i B_i A_i``: the exact average of the
client models (the cross terms that FedIT drops are carried in ``residual``). The
downlink is dense (``d_out x d_in`` per module) on top of the adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rantune.aggregation.dense import DeltaMap
from rantune.aggregation.fedit import require_equal_ranks
from rantune.aggregation.lora_keys import State, group_state, lora_scale
from rantune.aggregation.update import (
    ClientUpdate,
    example_weights,
    weighted_average_states,
    weighted_sum,
)


@dataclass(frozen=True)
class FedExAggregate:
    """Result of one FedEx-LoRA round.

    Attributes
    ----------
    state : averaged adapters (A ``[r, d_in]``, B ``[d_out, r]``) and head, client dtypes.
    residuals : ``{prefix: [d_out, d_in]}`` float64 to add to the frozen base weights.
    """

    state: State
    residuals: DeltaMap


def fedex_aggregate(updates: Sequence[ClientUpdate], alpha: float | None = None) -> FedExAggregate:
    """FedAvg of A and B plus the residual ``s (mean(B_i A_i) - mean(B) mean(A))``.

    Parameters
    ----------
    updates : K client states with identical keys and shapes (equal ranks).
    alpha : LoRA alpha (residual scaled by ``alpha / r`` so it lives in weight space);
        ``None`` gives the raw-product residual.
    """
    weights = example_weights(updates)
    require_equal_ranks(updates, "fedex-lora")
    state = weighted_average_states([u.state for u in updates], weights)
    groups = [group_state(u.state) for u in updates]
    averaged = group_state(state)
    residuals: DeltaMap = {}
    for prefix, avg in averaged.pairs.items():
        products = [g.pairs[prefix].delta(1.0) for g in groups]  # K x [d_out, d_in]
        mean_product = weighted_sum(products, weights)
        # Product of the factors as transmitted (client dtype), so the client's effective
        # update is exact even after the averages were cast from float64.
        sent_product = avg.delta(1.0)
        residuals[prefix] = lora_scale(alpha, avg.rank) * (mean_product - sent_product)
    return FedExAggregate(state, residuals)
