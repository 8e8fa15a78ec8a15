"""FedSA-LoRA: ``lora_A`` (and optionally the head) shared and averaged; ``lora_B`` stays local.

A captures general knowledge, B the client-specific part (Guo et al. 2025), so each
client keeps its own B across rounds (client state) and is evaluated with its own
B: a personalised model. Round flow:

1. client: ``shared, local = split_shared_local(state, share_head)``; store ``local``
   in its persistent state; send ``shared``;
2. server: ``fedsa_aggregate(updates, share_head)`` -> averaged shared part;
3. client: ``merge_shared_local(global_shared, stored_local)`` and load it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from rantune.aggregation.lora_keys import State, is_lora_a, is_lora_b
from rantune.aggregation.update import ClientUpdate, example_weights, weighted_average_states
from rantune.errors import InputError


def is_shared_key(key: str, share_head: bool = True) -> bool:
    """Whether ``key`` travels under FedSA-LoRA: ``lora_A`` always, non-adapter tensors iff ``share_head``."""
    if is_lora_a(key):
        return True
    if is_lora_b(key):
        return False
    return share_head


def split_shared_local(state: Mapping[str, Tensor], share_head: bool = True) -> tuple[State, State]:
    """``(shared, local)``: shared holds ``lora_A`` (+ head), local holds ``lora_B`` (+ head if not shared).

    The two parts are disjoint and together hold every key of ``state``.
    """
    shared = {k: v for k, v in state.items() if is_shared_key(k, share_head)}
    local = {k: v for k, v in state.items() if not is_shared_key(k, share_head)}
    return shared, local


def merge_shared_local(shared: Mapping[str, Tensor], local: Mapping[str, Tensor]) -> State:
    """Union of the two parts; raises if they overlap (a key cannot be both global and local)."""
    overlap = sorted(set(shared) & set(local))
    if overlap:
        raise InputError(
            f"shared and local parts overlap on {overlap[:4]}; split with split_shared_local"
        )
    return {**dict(shared), **dict(local)}


def fedsa_aggregate(updates: Sequence[ClientUpdate], share_head: bool = True) -> State:
    """Weighted mean of the shared part (``lora_A`` ``[r, d_in]`` + head if ``share_head``).

    Raises when any update carries ``lora_B`` (B never leaves a client) or, with
    ``share_head=False``, a head tensor.
    """
    weights = example_weights(updates)
    for update in updates:
        leaked = [k for k in update.state if not is_shared_key(k, share_head)]
        if leaked:
            raise InputError(
                f"client {update.client_id!r} sent local tensors {leaked[:3]}; FedSA-LoRA keeps them on the "
                "client: send split_shared_local(state)[0]"
            )
    return weighted_average_states([u.state for u in updates], weights)
