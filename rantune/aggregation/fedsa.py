"""FedSA-LoRA: ``lora_A`` (and optionally the head) shared and averaged; ``lora_B`` stays local.

A captures general knowledge, B the client-specific part (Guo et al. 2025), so each
client keeps its own B across rounds (its node state, the ``keep-local`` pattern) and
is evaluated with its own B: a personalised model. The server averages the shared
part with :func:`fedsa_aggregate`.
"""

from __future__ import annotations

from collections.abc import Sequence

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
                "client"
            )
    return weighted_average_states([u.state for u in updates], weights)
