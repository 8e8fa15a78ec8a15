"""Dense per-module weight updates: what FLoRA and FedEx-LoRA send next to the adapters.

FLoRA and FedEx-LoRA send a dense ``[d_out, d_in]`` update per adapted projection
that the client adds to the frozen base weight ``W0`` of that projection
(:func:`rantune.federated.downlink.model_for`). The server keeps their sum over all
rounds in a :class:`CumulativeDelta` and sends the total, so a client that starts
from the pretrained base (``W = W0 + total``) catches up with every round at once,
including rounds it skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from rantune.aggregation.lora_keys import State

DeltaMap = dict[str, Tensor]
"""``{module prefix: [d_out, d_in] dense update}``."""

DENSE_SUFFIX = ".dense_delta"
"""Message key suffix for a dense update: ``{prefix}.dense_delta`` -> ``[d_out, d_in]``."""
DENSE_FILE = "global_dense_deltas.safetensors"
"""A run directory's cumulative dense updates (``{prefix}.dense_delta`` float32 keys) of a
rule that has them; the run's model is the base plus these, plus its global adapter."""

CHECKPOINT_PREFIX = "cumulative/"


def sum_deltas(*maps: Mapping[str, Tensor]) -> DeltaMap:
    """Key-wise sum of delta maps (float64); a key missing in a map counts as zero."""
    out: DeltaMap = {}
    for deltas in maps:
        for prefix, delta in deltas.items():
            d = delta.to(torch.float64)
            out[prefix] = out[prefix] + d if prefix in out else d.clone()
    return out


def deltas_to_state(deltas: Mapping[str, Tensor], dtype: torch.dtype = torch.float32) -> State:
    """``{prefix + DENSE_SUFFIX: delta}`` in ``dtype``, ready to travel in a record."""
    return {prefix + DENSE_SUFFIX: delta.to(dtype) for prefix, delta in deltas.items()}


@dataclass
class CumulativeDelta:
    """Server bookkeeping: the sum of all dense updates so far, ``{prefix: [d_out, d_in]}``
    float64 (empty before the first update)."""

    total: DeltaMap = field(default_factory=dict)

    def add(self, deltas: Mapping[str, Tensor]) -> None:
        self.total = sum_deltas(self.total, deltas)

    def downlink(self) -> dict[str, np.ndarray]:
        """What travels: ``{prefix}.dense_delta`` float32 (empty before the first update)."""
        return {k: v.numpy() for k, v in deltas_to_state(self.total).items()}

    def deltas(self) -> dict[str, np.ndarray] | None:
        """``{prefix: [d_out, d_in]}`` float32, as the clients get it; ``None`` when empty."""
        if not self.total:
            return None
        return {p: v.to(torch.float32).numpy() for p, v in self.total.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{"cumulative/<prefix>": float64 array}`` for a checkpoint."""
        return {CHECKPOINT_PREFIX + p: v.numpy() for p, v in self.total.items()}

    def load_state_dict(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.total = {
            k.removeprefix(CHECKPOINT_PREFIX): torch.from_numpy(np.array(v, dtype=np.float64))
            for k, v in arrays.items()
            if k.startswith(CHECKPOINT_PREFIX)
        }
