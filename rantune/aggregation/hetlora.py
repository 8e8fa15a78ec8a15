"""HetLoRA: heterogeneous ranks by zero-padding, norm-weighted averaging and truncation.

Cho et al. 2024. Per adapted module, client i has rank ``r_i``:

1. pad ``A_i`` ``[r_i, d_in]`` with zero rows and ``B_i`` ``[d_out, r_i]`` with zero
   columns to ``r_max`` (:func:`pad_pair`);
2. average the padded factors with weights ``p_i = ||B_i A_i||_F / sum_j ||B_j A_j||_F``
   (sparsity-weighted aggregation: clients whose update carries more energy count
   more; optionally times ``n_i``) -> global ``[r_max, d_in]`` / ``[d_out, r_max]``;
3. send each client the first ``r_i`` rank components (:func:`truncate_state`).

Non-adapter tensors (head) are averaged with data weights ``n_i / sum n``. Norms use
the raw product ``B_i A_i`` (no ``alpha / r`` scale), as in the paper. The paper's
local rank self-pruning is a client-side training option and is not part of this
aggregation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from rantune.aggregation.lora_keys import (
    LoraGroups,
    LoraPair,
    State,
    group_state,
    max_rank,
    require_same_modules,
)
from rantune.aggregation.update import (
    ClientUpdate,
    example_weights,
    normalise_weights,
    weighted_average_states,
    weighted_sum,
)
from rantune.errors import InputError


def pad_pair(pair: LoraPair, rank: int) -> LoraPair:
    """Zero-pad ``A`` ``[r, d_in]`` -> ``[rank, d_in]`` and ``B`` ``[d_out, r]`` -> ``[d_out, rank]``.

    ``B @ A`` is unchanged. Raises if ``rank < r``.
    """
    if rank < pair.rank:
        raise InputError(f"cannot pad rank {pair.rank} down to {rank}; use truncate_pair")
    extra = rank - pair.rank
    a = torch.cat([pair.A, pair.A.new_zeros((extra, pair.d_in))], dim=0)
    b = torch.cat([pair.B, pair.B.new_zeros((pair.d_out, extra))], dim=1)
    return LoraPair(a, b)


def truncate_pair(pair: LoraPair, rank: int) -> LoraPair:
    """First ``rank`` components: ``A[:rank, :]`` ``[rank, d_in]``, ``B[:, :rank]`` ``[d_out, rank]`` (copies)."""
    if not 1 <= rank <= pair.rank:
        raise InputError(
            f"cannot truncate rank {pair.rank} to {rank}: expected 1 <= rank <= {pair.rank}"
        )
    return LoraPair(pair.A[:rank, :].clone(), pair.B[:, :rank].clone())


def truncate_state(state: Mapping[str, Tensor], rank: int | Mapping[str, int]) -> State:
    """``state`` with every adapter cut to ``rank`` (one int, or ``{prefix: rank}``)."""
    groups = group_state(state)
    pairs = {}
    for prefix, pair in groups.pairs.items():
        r = rank if isinstance(rank, int) else rank.get(prefix)
        if r is None:
            raise InputError(f"no target rank given for module {prefix!r}")
        pairs[prefix] = truncate_pair(pair, r)
    return LoraGroups(pairs, groups.other).to_state()


def hetlora_weights(
    updates: Sequence[ClientUpdate], weight_by_examples: bool = False, scope: str = "module"
) -> dict[str, Tensor]:
    """Aggregation weights ``{prefix: [K]}`` float64, each summing to 1.

    ``scope="module"``: ``p_i ∝ ||B_i A_i||_F`` of that module; ``scope="global"``: one
    norm per client over all its modules (``sqrt(sum_m ||B_im A_im||_F^2)``) used for
    every module. ``weight_by_examples`` multiplies by ``n_i``. When every norm is 0
    (e.g. untrained ``B = 0``) the data weights are used instead.
    """
    if scope not in ("module", "global"):
        raise InputError(f"unknown HetLoRA weight scope {scope!r}: choose 'module' or 'global'")
    data_w = example_weights(updates)
    groups = [group_state(u.state) for u in updates]
    prefixes = require_same_modules(groups, [u.client_id for u in updates])
    norms = {
        p: torch.stack([torch.linalg.matrix_norm(g.pairs[p].delta(1.0)) for g in groups])  # [K]
        for p in prefixes
    }
    if scope == "global":
        total = torch.sqrt(sum(n**2 for n in norms.values()))
        norms = dict.fromkeys(prefixes, total)
    out = {}
    for prefix, norm in norms.items():
        raw = norm * data_w if weight_by_examples else norm
        out[prefix] = normalise_weights(raw) if float(raw.sum()) > 0 else data_w
    return out


def hetlora_aggregate(
    updates: Sequence[ClientUpdate],
    r_max: int | None = None,
    weight_by_examples: bool = False,
    scope: str = "module",
) -> State:
    """Global adapters at rank ``r_max``: norm-weighted mean of zero-padded client factors.

    Parameters
    ----------
    updates : client states with A ``[r_i, d_in]``, B ``[d_out, r_i]`` (same modules,
        same ``d_in``/``d_out``; ranks may differ) and identical head tensors.
    r_max : global rank (default: the largest client rank); must be >= every ``r_i``.
    weight_by_examples, scope : see :func:`hetlora_weights`.

    Returns
    -------
    ``{key: tensor}``: A ``[r_max, d_in]``, B ``[d_out, r_max]``, data-weighted head;
    dtypes of the first client.
    """
    weights = hetlora_weights(updates, weight_by_examples, scope)
    groups = [group_state(u.state) for u in updates]
    prefixes = list(groups[0].pairs)  # checked by hetlora_weights
    largest = max_rank([u.state for u in updates])
    r_max = largest if r_max is None else r_max
    if r_max < largest:
        raise InputError(f"r_max={r_max} is below the largest client rank {largest}")
    pairs = {}
    for prefix in prefixes:
        padded = [pad_pair(g.pairs[prefix], r_max) for g in groups]
        w = weights[prefix]
        a = weighted_sum([p.A for p in padded], w).to(padded[0].A.dtype)  # [r_max, d_in]
        b = weighted_sum([p.B for p in padded], w).to(padded[0].B.dtype)  # [d_out, r_max]
        pairs[prefix] = LoraPair(a, b)
    other = weighted_average_states([g.other for g in groups], example_weights(updates))
    return LoraGroups(pairs, other).to_state()


def hetlora_downlink(
    global_state: Mapping[str, Tensor], client_rank: int | Mapping[str, int]
) -> State:
    """What a client of rank ``client_rank`` receives: the global adapters truncated to it."""
    return truncate_state(global_state, client_rank)
