"""FLoRA: stack client adapters along the rank dimension (Wang et al. 2024).

For each adapted module, with data weights ``w_i = n_i / sum n`` and adapter scales
``s_i = alpha / r_i``::

    A_stack = [A_1; A_2; ...; A_K]                      [sum r_i, d_in]   (rows)
    B_stack = [w_1 s_1 B_1, ..., w_K s_K B_K]            [d_out, sum r_i]  (columns)
    B_stack @ A_stack = sum_i w_i s_i B_i A_i            [d_out, d_in]     (exact)

so there are no FedIT cross terms and ranks may differ between clients. The
product is folded into the frozen base weights and every client starts the next
round from fresh adapters of its own rank (the paper's "merge into base and
reinit"). The server keeps a :class:`rantune.aggregation.dense.CumulativeDelta` of
``aggregate.dense_deltas()`` and sends its total (a dense ``[d_out, d_in]`` per
module, independent of K), so clients rebuild ``W = W0 + cumulative`` and one that
skipped rounds catches up at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rantune.aggregation.dense import DeltaMap
from rantune.aggregation.lora_keys import State, group_state, lora_scale, require_same_modules
from rantune.aggregation.update import ClientUpdate, example_weights, weighted_average_states


@dataclass(frozen=True)
class StackedModule:
    """One module's stacked adapters.

    Attributes
    ----------
    A : ``[R, d_in]`` client A's stacked as rows, ``R = sum_i r_i``.
    B : ``[d_out, R]`` client B's stacked as columns, block i scaled by ``w_i * s_i``.
    ranks : ``(r_1, ..., r_K)``, the block sizes along R.
    """

    A: Tensor
    B: Tensor
    ranks: tuple[int, ...]

    def delta(self) -> Tensor:
        """``B @ A`` = ``sum_i w_i s_i B_i A_i``: ``[d_out, d_in]`` float64 (no further scale)."""
        return self.B.to(torch.float64) @ self.A.to(torch.float64)


@dataclass(frozen=True)
class FloraAggregate:
    """Result of one FLoRA round.

    Attributes
    ----------
    modules : ``{prefix: StackedModule}``.
    other : data-weighted mean of the non-adapter tensors (head), client dtype.
    weights : ``[K]`` float64 data weights used.
    dtype : the clients' adapter dtype (used for the transmitted tensors).
    """

    modules: dict[str, StackedModule]
    other: State
    weights: Tensor
    dtype: torch.dtype = torch.float32

    def dense_deltas(self) -> DeltaMap:
        """``{prefix: [d_out, d_in]}`` float64: the exact weighted sum of client updates."""
        return {p: m.delta() for p, m in self.modules.items()}


def flora_aggregate(updates: Sequence[ClientUpdate], alpha: float | None = None) -> FloraAggregate:
    """Stack the clients' adapters so the product is the exact data-weighted update.

    Parameters
    ----------
    updates : K client states; every client adapts the same modules with the same
        ``d_in``/``d_out`` but may use its own rank ``r_i`` (A ``[r_i, d_in]``,
        B ``[d_out, r_i]``); non-adapter tensors must match in keys and shapes.
    alpha : LoRA alpha; each block is scaled by ``alpha / r_i`` so the product is in
        weight space. ``None`` stacks the raw factors (product ``sum w_i B_i A_i``).
    """
    weights = example_weights(updates)
    groups = [group_state(u.state) for u in updates]
    prefixes = require_same_modules(groups, [u.client_id for u in updates])
    dtype = groups[0].pairs[prefixes[0]].A.dtype
    modules: dict[str, StackedModule] = {}
    for prefix in prefixes:
        pairs = [g.pairs[prefix] for g in groups]
        a_stack = torch.cat([p.A.detach().to(torch.float64) for p in pairs], dim=0)  # [R, d_in]
        b_stack = torch.cat(
            [
                float(w) * lora_scale(alpha, p.rank) * p.B.detach().to(torch.float64)
                for w, p in zip(weights, pairs, strict=True)
            ],
            dim=1,
        )  # [d_out, R]
        modules[prefix] = StackedModule(a_stack, b_stack, tuple(p.rank for p in pairs))
    other = weighted_average_states([g.other for g in groups], weights)
    return FloraAggregate(modules, other, weights, dtype)
