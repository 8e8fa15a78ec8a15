"""Dense per-module weight updates and folding them into the frozen base weights.

FLoRA and FedEx-LoRA send a dense ``[d_out, d_in]`` update per adapted projection
that the client adds to the frozen base weight ``W0`` of that projection. In a
peft model, the base weight of module ``prefix`` is ``{prefix}.base_layer.weight``
(``model.get_submodule(prefix).base_layer.weight``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rantune.aggregation.lora_keys import State, group_state, lora_scale
from rantune.errors import InputError

DeltaMap = dict[str, Tensor]
"""``{module prefix: [d_out, d_in] dense update}``."""


def base_weight_key(prefix: str) -> str:
    """Full-model state key of the frozen base weight of adapted module ``prefix``."""
    return prefix + ".base_layer.weight"


def lora_deltas(state: Mapping[str, Tensor], alpha: float | None = None) -> DeltaMap:
    """``{prefix: scale * B @ A}`` (``[d_out, d_in]``, float64), ``scale = alpha / r`` (1 if ``alpha`` is None)."""
    groups = group_state(state)
    return {p: pair.delta(lora_scale(alpha, pair.rank)) for p, pair in groups.pairs.items()}


def apply_dense_delta(weight: Tensor, delta: Tensor) -> Tensor:
    """``weight + delta`` in ``weight``'s dtype/device (a new tensor).

    ``weight``: ``[d_out, d_in]`` frozen base weight; ``delta``: same shape.
    """
    if tuple(weight.shape) != tuple(delta.shape):
        raise InputError(
            f"dense delta {tuple(delta.shape)} does not fit base weight {tuple(weight.shape)}"
        )
    return (weight.to(torch.float64) + delta.to(device=weight.device, dtype=torch.float64)).to(
        weight.dtype
    )


def apply_dense_deltas(base_state: Mapping[str, Tensor], deltas: Mapping[str, Tensor]) -> State:
    """A copy of a full-model ``base_state`` with each delta added to ``base_weight_key(prefix)``.

    Raises if a delta's base weight is missing from ``base_state``.
    """
    out = dict(base_state)
    for prefix, delta in deltas.items():
        key = base_weight_key(prefix)
        if key not in out:
            raise InputError(f"no base weight {key!r} for dense delta of module {prefix!r}")
        out[key] = apply_dense_delta(out[key], delta)
    return out


def _base_weight(model: nn.Module, prefix: str) -> Tensor:
    try:
        module = model.get_submodule(prefix)
    except AttributeError as err:
        raise InputError(f"model has no module {prefix!r} to fold a dense delta into") from err
    base = getattr(module, "base_layer", module)
    weight = getattr(base, "weight", None)
    if not isinstance(weight, Tensor):
        raise InputError(f"module {prefix!r} has no weight tensor")
    return weight


@torch.no_grad()
def fold_deltas_into_model(model: nn.Module, deltas: Mapping[str, Tensor]) -> None:
    """Add each ``[d_out, d_in]`` delta to the frozen base weight of module ``prefix`` in place.

    Works on a ``PeftModel`` (``prefix`` is the adapter key prefix, the weight is the
    LoRA layer's ``base_layer.weight``) and on plain modules. All shapes are checked
    before any weight changes, so a bad delta leaves the model untouched.
    """
    targets = []
    for prefix, delta in deltas.items():
        weight = _base_weight(model, prefix)
        if tuple(weight.shape) != tuple(delta.shape):
            raise InputError(
                f"dense delta {tuple(delta.shape)} does not fit {prefix} weight {tuple(weight.shape)}"
            )
        targets.append((weight, delta))
    for weight, delta in targets:
        weight.copy_(apply_dense_delta(weight, delta))


def sum_deltas(*maps: Mapping[str, Tensor]) -> DeltaMap:
    """Key-wise sum of delta maps (float64); a key missing in a map counts as zero."""
    out: DeltaMap = {}
    for deltas in maps:
        for prefix, delta in deltas.items():
            d = delta.to(torch.float64)
            out[prefix] = out[prefix] + d if prefix in out else d.clone()
    return out


DENSE_SUFFIX = ".dense_delta"
"""Message key suffix for a dense update: ``{prefix}.dense_delta`` -> ``[d_out, d_in]``."""


def deltas_to_state(deltas: Mapping[str, Tensor], dtype: torch.dtype = torch.float32) -> State:
    """``{prefix + DENSE_SUFFIX: delta}`` in ``dtype``, ready to travel in a record."""
    return {prefix + DENSE_SUFFIX: delta.to(dtype) for prefix, delta in deltas.items()}


def state_to_deltas(state: Mapping[str, Tensor]) -> tuple[DeltaMap, State]:
    """Inverse of :func:`deltas_to_state`: ``(deltas, every other tensor)``."""
    deltas = {k[: -len(DENSE_SUFFIX)]: v for k, v in state.items() if k.endswith(DENSE_SUFFIX)}
    rest = {k: v for k, v in state.items() if not k.endswith(DENSE_SUFFIX)}
    return deltas, rest


def fold_dense_downlink(model: nn.Module, downlink: Mapping[str, Tensor]) -> State:
    """Client side: fold every ``{prefix}.dense_delta`` of ``downlink`` into ``model``'s base
    weights (in place) and return the remaining tensors (adapters, head) to load."""
    deltas, rest = state_to_deltas(downlink)
    fold_deltas_into_model(model, deltas)
    return rest


@dataclass
class CumulativeDelta:
    """Server bookkeeping: the sum of all dense updates so far, ``{prefix: [d_out, d_in]}`` float64.

    A client (or the server's evaluation model) that starts from the pretrained base
    folds ``total`` once to catch up with every round, including rounds it skipped.
    """

    total: DeltaMap = field(default_factory=dict)

    def add(self, deltas: Mapping[str, Tensor]) -> None:
        self.total = sum_deltas(self.total, deltas)
