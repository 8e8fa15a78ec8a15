"""What LoRA-aware strategies send beyond plain adapters, handled on the receiving side.

Two extras may arrive with the global adapters (see ``server/strategies``):

- dense weight updates ``{module prefix}.dense_delta`` ``[d_out, d_in]`` (FLoRA's
  stacked product, FedEx-LoRA's residual): the *cumulative* update since the
  pretrained base, so a model is rebuilt as ``W = W0 + delta`` on every use and a
  client that skipped rounds catches up at once;
- the config key :data:`LORA_A_SEED` (FFA-LoRA): ``lora_A`` is not sent but drawn
  from the shared seeded init (:func:`rantune.aggregation.init.seeded_lora_a`), so
  every client holds bit-identical, frozen A.

:class:`ModelPool` keeps the models a process loads these states into, one per
:class:`~rantune.federated.workload.ModelSpec`; models with dense deltas are kept
apart (their base weights change), so a plain model never sees them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from rantune import lora_sb
from rantune.aggregation.dense import DENSE_SUFFIX
from rantune.aggregation.init import seeded_lora_a
from rantune.aggregation.lora_keys import is_lora_a
from rantune.errors import InputError
from rantune.federated import workload
from rantune.federated.workload import ModelSpec
from rantune.lora import trainable_state

LORA_A_SEED = "lora-a-seed"
DENSE_PATTERN = r"\.dense_delta$"


def is_dense_key(key: str) -> bool:
    return key.endswith(DENSE_SUFFIX)


def split_dense(
    state: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """``(adapter/head tensors, {prefix: dense delta})``; ``None`` when no dense key came."""
    rest = {k: v for k, v in state.items() if not is_dense_key(k)}
    deltas = {k[: -len(DENSE_SUFFIX)]: v for k, v in state.items() if is_dense_key(k)}
    return rest, (deltas or None)


def fill_seeded_a(
    state: Mapping[str, np.ndarray], like: Mapping[str, np.ndarray], seed: int
) -> dict[str, np.ndarray]:
    """``state`` plus every ``lora_A`` of ``like`` it lacks, drawn from ``(seed, key)``."""
    out = dict(state)
    for key, value in like.items():
        if is_lora_a(key) and key not in out:
            shape = tuple(int(s) for s in value.shape)
            out[key] = seeded_lora_a(shape, int(seed), key).numpy().astype(value.dtype)
    return out


def unpack(
    received: Mapping[str, np.ndarray],
    config: Mapping[str, object],
    like: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Client side of a message: ``(state to compose, dense deltas or None)``.

    ``like``: the client's own initial trainable state (keys and shapes at its rank).
    """
    state, deltas = split_dense(received)
    if LORA_A_SEED in config:
        state = fill_seeded_a(state, like, int(config[LORA_A_SEED]))
    if lora_sb.SB_SEED in config:  # Fed-SB: R [r, r] -> lora_A = A, lora_B = B R
        state = lora_sb.expand_received(state, like, int(config[lora_sb.SB_SEED]))
    return state, deltas


def _adapted_modules(model) -> dict[str, torch.nn.Parameter]:
    """``{module prefix: base weight}`` of every LoRA-wrapped projection of ``model``."""
    out = {}
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", None)
        if base is not None and hasattr(module, "lora_A"):
            out[name] = base.weight
    return out


@dataclass
class _Kept:
    """One kept model: the model, its initial trainable state and, for dense deltas,
    the pristine base weights and the prefixes currently offset."""

    model: object
    init_state: dict[str, np.ndarray]
    pristine: dict[str, torch.Tensor] = field(default_factory=dict)
    offset: set[str] = field(default_factory=set)


class ModelPool:
    """The models one process keeps between rounds, one per :class:`ModelSpec`.

    Every base station of a process with the same spec shares one model (its
    trainable state is loaded before every use), so memory does not grow with the
    number of stations a process serves. A model receiving dense deltas is a separate
    copy (its base weights change), so a plain model never sees them. Keys are whole
    specs: a model of another head, rank or encoder is never reused.
    """

    def __init__(self) -> None:
        self._plain: dict[ModelSpec, _Kept] = {}
        self._dense: dict[ModelSpec, _Kept] = {}
        self._lock = threading.RLock()

    def _kept(self, spec: ModelSpec, dense: bool) -> _Kept:
        table = self._dense if dense else self._plain
        with self._lock:
            if spec not in table:
                model = workload.build_model(spec)
                init = {k: v.detach().cpu().numpy() for k, v in trainable_state(model).items()}
                kept = _Kept(model, init)
                if dense:
                    kept.pristine = {
                        p: w.detach().clone() for p, w in _adapted_modules(model).items()
                    }
                table[spec] = kept
            return table[spec]

    def init_state(self, spec: ModelSpec) -> dict[str, np.ndarray]:
        """The model's trainable state as built (seeded init): ``{key: ndarray}``."""
        return self._kept(spec, dense=False).init_state

    def model(self, spec: ModelSpec, deltas: Mapping[str, np.ndarray] | None = None):
        """The model to load a trainable state into: the plain one without dense deltas,
        else the dense copy with its adapted base weights set to ``W0 + delta`` (``W0``
        for modules without a delta).

        ``deltas``: ``{module prefix: [d_out, d_in] array}``.
        """
        if deltas is None:
            return self._kept(spec, dense=False).model
        kept = self._kept(spec, dense=True)
        with self._lock:
            _set_dense(kept, deltas)
        return kept.model


@torch.no_grad()
def _set_dense(kept: _Kept, deltas: Mapping[str, np.ndarray]) -> None:
    pristine = kept.pristine
    unknown = sorted(set(deltas) - set(pristine))
    if unknown:
        raise InputError(
            f"dense updates for modules this model does not adapt: {unknown[:3]} "
            f"(adapted: {sorted(pristine)[:3]}...)"
        )
    weights = _adapted_modules(kept.model)
    for prefix in sorted(set(deltas) | kept.offset):
        base = pristine[prefix]
        if prefix in deltas:
            delta = torch.as_tensor(np.asarray(deltas[prefix]))
            if tuple(delta.shape) != tuple(base.shape):
                raise InputError(
                    f"dense update for {prefix} has shape {tuple(delta.shape)}, "
                    f"the base weight {tuple(base.shape)}"
                )
            weights[prefix].copy_((base.double() + delta.double()).to(base.dtype))
        else:
            weights[prefix].copy_(base)
    kept.offset.clear()
    kept.offset.update(deltas)
