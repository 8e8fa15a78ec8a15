"""FFA-LoRA: ``lora_A`` frozen at a seeded random init shared by all clients; only B trains.

With A identical and fixed on every client, ``mean_i(B_i) A == mean_i(B_i A)``: the
average of B is the exact average of the updates, and the upload halves (A never
travels). Every client draws A from :func:`ffa_frozen_a` (same seed, same keys ->
bit-identical A everywhere; the client side is
:func:`rantune.federated.downlink.fill_seeded_a`), trains B + head and sends them;
the server averages them with :func:`ffa_aggregate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from rantune.aggregation.init import seeded_lora_a
from rantune.aggregation.lora_keys import State, is_lora_a
from rantune.aggregation.update import ClientUpdate, example_weights, weighted_average_states
from rantune.errors import InputError


def ffa_frozen_a(
    like: Mapping[str, Tensor] | Mapping[str, tuple[int, int]],
    seed: int,
    dtype: torch.dtype = torch.float32,
) -> State:
    """The frozen ``lora_A`` tensors: ``{A key: [r, d_in]}`` drawn from ``(seed, key)``.

    ``like`` is a state (only its ``lora_A`` keys are used) or ``{A key: (r, d_in)}``.
    Same ``seed`` and keys give bit-identical tensors on every machine.
    """
    out: State = {}
    for key, value in like.items():
        if not is_lora_a(key):
            continue
        shape = tuple(value.shape) if isinstance(value, Tensor) else tuple(value)
        out[key] = seeded_lora_a(
            shape, seed, key, value.dtype if isinstance(value, Tensor) else dtype
        )
    if not out:
        raise InputError("no lora_A keys to initialise: is LoRA applied to the model?")
    return out


def ffa_upload(state: Mapping[str, Tensor]) -> State:
    """What an FFA-LoRA client sends: every tensor except ``lora_A``."""
    return {k: v for k, v in state.items() if not is_lora_a(k)}


def ffa_check_frozen(state: Mapping[str, Tensor], frozen_a: Mapping[str, Tensor]) -> str | None:
    """Reason why ``state``'s A differs from the frozen init, or ``None`` when it matches exactly."""
    for key, value in state.items():
        if not is_lora_a(key):
            continue
        if key not in frozen_a:
            return f"{key} is not a frozen lora_A key"
        if tuple(value.shape) != tuple(frozen_a[key].shape) or not torch.equal(
            value.to(frozen_a[key].dtype), frozen_a[key]
        ):
            return f"{key} differs from its frozen init: FFA-LoRA must not train lora_A"
    return None


def ffa_aggregate(
    updates: Sequence[ClientUpdate], frozen_a: Mapping[str, Tensor] | None = None
) -> State:
    """Weighted mean of B and head; A stays the frozen init.

    Parameters
    ----------
    updates : client states with ``lora_B`` ``[d_out, r]`` and head tensors (identical
        keys); a state that also carries ``lora_A`` must match ``frozen_a`` exactly.
    frozen_a : ``{A key: [r, d_in]}`` from :func:`ffa_frozen_a`; when given it is
        returned unchanged (same tensor objects) alongside the averaged B.

    Returns
    -------
    ``{key: tensor}``: averaged B + head, plus ``frozen_a``'s tensors if given.
    """
    weights = example_weights(updates)
    for update in updates:
        has_a = any(is_lora_a(k) for k in update.state)
        if has_a and frozen_a is None:
            raise InputError(
                f"client {update.client_id!r} sent lora_A, which FFA-LoRA never transmits; send ffa_upload(state)"
            )
        if has_a:
            reason = ffa_check_frozen(update.state, frozen_a)
            if reason:
                raise InputError(f"client {update.client_id!r}: {reason}")
    trained = [ffa_upload(u.state) for u in updates]
    out = weighted_average_states(trained, weights)
    if frozen_a is not None:
        out = {**dict(frozen_a), **out}
    return out
