"""What LoRA-aware strategies send beyond plain adapters, handled on the receiving side.

Two extras may arrive with the global adapters (see ``server/strategies``):

- dense weight updates ``{module prefix}.dense_delta`` ``[d_out, d_in]`` (FLoRA's
  stacked product, FedEx-LoRA's residual): the *cumulative* update since the
  pretrained base, so a model is rebuilt as ``W = W0 + delta`` on every use and a
  client that skipped rounds catches up at once;
- the config key :data:`LORA_A_SEED` (FFA-LoRA): ``lora_A`` is not sent but drawn
  from the shared seeded init (:func:`rantune.aggregation.init.seeded_lora_a`), so
  every client holds bit-identical, frozen A.

Models with dense deltas are kept apart from :func:`rantune.federated.workload.cached_model`
(their base weights change), so a plain run in the same process never sees them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import torch

from rantune.aggregation.dense import DENSE_SUFFIX
from rantune.aggregation.init import seeded_lora_a
from rantune.aggregation.lora_keys import is_lora_a
from rantune.errors import InputError
from rantune.federated import workload
from rantune.federated.run_config import RunConfig

LORA_A_SEED = "lora-a-seed"
DENSE_PATTERN = r"\.dense_delta$"

_LOCK = threading.RLock()
# key -> (model, {prefix: pristine base weight [d_out, d_in]}, prefixes currently offset)
_DENSE: dict[tuple, tuple[object, dict[str, torch.Tensor], set[str]]] = {}


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
    return state, deltas


def _adapted_modules(model) -> dict[str, torch.nn.Parameter]:
    """``{module prefix: base weight}`` of every LoRA-wrapped projection of ``model``."""
    out = {}
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", None)
        if base is not None and hasattr(module, "lora_A"):
            out[name] = base.weight
    return out


@torch.no_grad()
def model_for(cfg: RunConfig, rank: int, deltas: Mapping[str, np.ndarray] | None):
    """The model to load a trainable state into: the shared cached model without dense
    deltas, else a separate copy whose adapted base weights are set to ``W0 + delta``
    (``W0`` for modules without a delta)."""
    if deltas is None:
        return workload.cached_model(cfg, rank)
    key = (
        cfg.task,
        cfg.data.preset,
        cfg.model.pretrained,
        cfg.model.size,
        cfg.seed if cfg.model.is_random else 0,
        workload.lora_settings(cfg, rank),
    )
    with _LOCK:
        if key not in _DENSE:
            model = workload.build_model(cfg, rank)
            pristine = {p: w.detach().clone() for p, w in _adapted_modules(model).items()}
            _DENSE[key] = (model, pristine, set())
        model, pristine, offset = _DENSE[key]
        unknown = sorted(set(deltas) - set(pristine))
        if unknown:
            raise InputError(
                f"dense updates for modules this model does not adapt: {unknown[:3]} "
                f"(adapted: {sorted(pristine)[:3]}...)"
            )
        weights = _adapted_modules(model)
        for prefix in sorted(set(deltas) | offset):
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
        offset.clear()
        offset.update(deltas)
        return model


def clear_dense_models() -> None:
    """Drop the dense-delta models (tests, long-lived sweep processes)."""
    with _LOCK:
        _DENSE.clear()
