"""A client's contribution to one round and the data-size weights that combine them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from rantune.aggregation.lora_keys import State, as_tensor
from rantune.errors import InputError


@dataclass(frozen=True)
class ClientUpdate:
    """What one client returned after local training.

    Attributes
    ----------
    state : ``{peft key: tensor}`` adapter (and head) tensors the client sent; numpy
        arrays are converted to torch tensors (shared memory, no copy).
    num_examples : local training examples (the FedAvg weight), ``>= 0``.
    client_id : optional identifier (node id, site name) for error messages.
    """

    state: State
    num_examples: int
    client_id: str | int | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.state, Mapping):
            raise InputError(f"client {self.client_id!r}: state must be a mapping of key -> tensor")
        object.__setattr__(self, "state", {k: as_tensor(v) for k, v in self.state.items()})
        n = self.num_examples
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise InputError(
                f"client {self.client_id!r}: num_examples={n!r} is invalid: expected an integer >= 0"
            )
        object.__setattr__(self, "num_examples", int(n))


def example_weights(updates: Sequence[ClientUpdate]) -> Tensor:
    """Normalised data-size weights ``n_i / sum n``: ``[K]`` float64, summing to 1."""
    if not updates:
        raise InputError("nothing to aggregate: no client updates")
    counts = torch.tensor([u.num_examples for u in updates], dtype=torch.float64)
    total = counts.sum()
    if total <= 0:
        raise InputError(
            "every client reported num_examples=0; cannot weight the aggregate by data size"
        )
    return counts / total


def normalise_weights(weights: Sequence[float] | Tensor) -> Tensor:
    """``w / sum(w)`` as ``[K]`` float64; raises on negative, non-finite or all-zero weights."""
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if w.numel() == 0:
        raise InputError("nothing to aggregate: empty weight vector")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise InputError(f"aggregation weights must be finite and >= 0, got {w.tolist()}")
    total = w.sum()
    if total <= 0:
        raise InputError("aggregation weights sum to 0")
    return w / total


def weighted_sum(tensors: Sequence[Tensor], weights: Tensor) -> Tensor:
    """``sum_i weights[i] * tensors[i]`` computed in float64.

    ``tensors``: K tensors of one shape; ``weights``: ``[K]``. Returns float64 of that shape.
    """
    if len(tensors) != len(weights):
        raise InputError(f"{len(tensors)} tensors but {len(weights)} weights")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise InputError(f"cannot average tensors of different shapes {sorted(shapes)}")
    stacked = torch.stack([t.detach().to(torch.float64) for t in tensors])  # [K, ...]
    return torch.tensordot(weights.to(torch.float64), stacked, dims=1)


def weighted_average_states(
    states: Sequence[Mapping[str, Tensor]], weights: Tensor, keys: Sequence[str] | None = None
) -> State:
    """Key-by-key weighted average of ``states`` (all must hold ``keys``, same shapes).

    ``keys`` defaults to the first state's keys, which every state must then hold
    exactly. Results keep the first state's dtype.
    """
    if not states:
        raise InputError("nothing to aggregate: no client states")
    if keys is None:
        keys = list(states[0])
        for i, state in enumerate(states[1:], start=1):
            if set(state) != set(keys):
                missing, extra = sorted(set(keys) - set(state)), sorted(set(state) - set(keys))
                raise InputError(
                    f"client {i} sends different keys than client 0: missing {missing[:4]}, extra {extra[:4]}"
                )
    out: State = {}
    for key in keys:
        tensors = []
        for i, state in enumerate(states):
            if key not in state:
                raise InputError(f"client {i} lacks {key!r}")
            tensors.append(state[key])
        out[key] = weighted_sum(tensors, weights).to(tensors[0].dtype)
    return out
