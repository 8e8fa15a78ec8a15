"""FedIT: FedAvg of the LoRA factors, A and B averaged separately (the baseline).

The aggregate ``(sum w_i B_i)(sum w_i A_i)`` is *not* ``sum w_i B_i A_i``: the cross
terms are the error that FLoRA and FedEx-LoRA remove. Weights are ``n_i / sum n``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rantune.aggregation.lora_keys import State, module_ranks
from rantune.aggregation.update import ClientUpdate, example_weights, weighted_average_states
from rantune.errors import InputError


def require_equal_ranks(updates: Sequence[ClientUpdate], strategy: str) -> dict[str, int]:
    """The shared ``{module: rank}`` of all clients; raises when ranks differ between clients."""
    reference = module_ranks(updates[0].state)
    for update in updates[1:]:
        ranks = module_ranks(update.state)
        if ranks != reference:
            diff = sorted(
                p for p in set(ranks) | set(reference) if ranks.get(p) != reference.get(p)
            )
            raise InputError(
                f"{strategy} needs the same LoRA rank on every client, but client "
                f"{update.client_id!r} differs from client {updates[0].client_id!r} on {diff[:3]} "
                f"(ranks {[ranks.get(p) for p in diff[:3]]} vs {[reference.get(p) for p in diff[:3]]}); "
                "use 'flora' or 'hetlora' for heterogeneous ranks"
            )
    return reference


def fedit_aggregate(updates: Sequence[ClientUpdate]) -> State:
    """Data-weighted average of every tensor, A and B separately.

    Parameters
    ----------
    updates : K client updates with identical keys and shapes (A ``[r, d_in]``,
        B ``[d_out, r]``, head tensors).

    Returns
    -------
    ``{key: tensor}`` with the same keys, shapes and dtypes: ``sum_i w_i x_i``.
    """
    weights = example_weights(updates)
    require_equal_ranks(updates, "fedit")
    return weighted_average_states([u.state for u in updates], weights)
