"""FLoRA: stack client adapters along the rank dimension (Wang et al. 2024).

For each adapted module, with data weights ``w_i = n_i / sum n`` and adapter scales
``s_i = alpha / r_i``::

    A_stack = [A_1; A_2; ...; A_K]                      [sum r_i, d_in]   (rows)
    B_stack = [w_1 s_1 B_1, ..., w_K s_K B_K]            [d_out, sum r_i]  (columns)
    B_stack @ A_stack = sum_i w_i s_i B_i A_i            [d_out, d_in]     (exact)

so there are no FedIT cross terms and ranks may differ between clients. The client
folds the product into its frozen base weight and re-initialises fresh adapters of
its own rank for the next round (the paper's "merge into base and reinit").

Downlink options (:func:`flora_downlink`): ``"stacked"`` sends ``A_stack``/``B_stack``
(grows with K), ``"dense"`` sends ``[d_out, d_in]`` per module (fixed size). Either
is *this round's* update: a client that skipped a round misses it. For partial
participation, keep a :class:`rantune.aggregation.dense.CumulativeDelta` of
``aggregate.dense_deltas()`` on the server and send its total (``deltas_to_state``)
to clients that rebuild their model from the pretrained base each round
(``W = W0 + cumulative``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rantune.aggregation.comm import RoundBytes, round_bytes
from rantune.aggregation.dense import (
    DeltaMap,
    deltas_to_state,
    fold_deltas_into_model,
    state_to_deltas,
    sum_deltas,
)
from rantune.aggregation.init import fresh_adapters
from rantune.aggregation.lora_keys import (
    State,
    a_key,
    b_key,
    group_state,
    is_lora,
    lora_scale,
    require_same_modules,
)
from rantune.aggregation.update import ClientUpdate, example_weights, weighted_average_states
from rantune.errors import InputError


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

    def stacked_state(self) -> State:
        """Stacked adapters as a state: ``lora_A`` ``[R, d_in]``, ``lora_B`` ``[d_out, R]`` + head."""
        state: State = {}
        for prefix, module in self.modules.items():
            state[a_key(prefix)] = module.A.to(self.dtype)
            state[b_key(prefix)] = module.B.to(self.dtype)
        state.update(self.other)
        return state


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


def flora_downlink(aggregate: FloraAggregate, mode: str = "dense") -> State:
    """The server -> client payload: ``"stacked"`` adapters or ``"dense"`` deltas, plus the head.

    ``"stacked"``: ``lora_A`` ``[R, d_in]`` / ``lora_B`` ``[d_out, R]`` keys (R = sum of
    ranks, grows with clients). ``"dense"``: ``{prefix}.dense_delta`` ``[d_out, d_in]``.
    """
    if mode == "stacked":
        return aggregate.stacked_state()
    if mode == "dense":
        return {**deltas_to_state(aggregate.dense_deltas(), aggregate.dtype), **aggregate.other}
    raise InputError(f"unknown FLoRA downlink mode {mode!r}: choose 'stacked' or 'dense'")


def downlink_deltas(downlink: Mapping[str, Tensor]) -> tuple[DeltaMap, State]:
    """Client side: ``(dense deltas, head tensors)`` from either downlink mode.

    Stacked adapters are multiplied out (``B @ A``; their scales are already folded in).
    """
    deltas, rest = state_to_deltas(downlink)
    adapters = {k: v for k, v in rest.items() if is_lora(k)}
    head = {k: v for k, v in rest.items() if not is_lora(k)}
    if adapters:
        stacked = group_state(adapters)
        deltas = sum_deltas(deltas, {p: pair.delta(1.0) for p, pair in stacked.pairs.items()})
    return deltas, head


def flora_client_reset(
    model: nn.Module,
    downlink: Mapping[str, Tensor],
    local_state: Mapping[str, Tensor],
    seed: int,
    salt: object = None,
) -> State:
    """Client start of round: fold the global update into the base, then fresh adapters.

    Parameters
    ----------
    model : the client's ``PeftModel``; its frozen base weights change in place.
    downlink : output of :func:`flora_downlink`.
    local_state : the client's current trainable state (gives its own ranks/keys).
    seed, salt : seed of the fresh ``lora_A`` (pass e.g. ``salt=(round, client_id)``).

    Returns
    -------
    The state to load with ``rantune.lora.load_trainable_state``: fresh adapters of the
    client's ranks (seeded A, zero B) and the global head.
    """
    deltas, head = downlink_deltas(downlink)
    fold_deltas_into_model(model, deltas)
    fresh = fresh_adapters(local_state, seed, salt)
    unknown = sorted(set(head) - set(fresh))
    if unknown:
        raise InputError(f"FLoRA downlink carries tensors the client does not have: {unknown[:4]}")
    fresh.update({k: v.to(fresh[k].dtype) for k, v in head.items()})
    return fresh


def flora_round_bytes(
    updates: Sequence[ClientUpdate],
    aggregate: FloraAggregate,
    mode: str = "dense",
    measure: str = "record",
) -> RoundBytes:
    """Communication of a FLoRA round: clients upload A_i, B_i, head; each receives the
    downlink (``mode``). ``measure``: ``"record"`` (Flower's count) or ``"data"``."""
    return round_bytes([u.state for u in updates], flora_downlink(aggregate, mode), measure)
