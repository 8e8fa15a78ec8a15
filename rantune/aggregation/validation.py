"""Screen a client update before aggregation: keys, shapes, dtypes, finiteness.

Every check returns a reason string (why to reject) or ``None`` (accept), so a
server can drop a bad update, log the reason and carry on with the others.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from rantune.aggregation.lora_keys import is_lora_a, is_lora_b, module_prefix

ShapeSpec = Mapping[str, tuple[int, ...]]
"""``{key: expected shape}``."""


def _shape_reason(
    key: str,
    shape: tuple[int, ...],
    expected: tuple[int, ...],
    flexible_rank: bool,
    max_rank: int | None,
) -> str | None:
    if shape == expected:
        return None
    if flexible_rank and len(shape) == 2 == len(expected):
        # A: [r, d_in] may differ in r only; B: [d_out, r] may differ in r only.
        rank, fixed_ok = (
            (shape[0], shape[1] == expected[1])
            if is_lora_a(key)
            else (shape[1], shape[0] == expected[0])
        )
        if (is_lora_a(key) or is_lora_b(key)) and fixed_ok:
            if rank < 1 or (max_rank is not None and rank > max_rank):
                return f"{key}: rank {rank} outside 1..{max_rank}"
            return None
    return f"wrong shape for {key}: shape {list(shape)}, expected {list(expected)}"


def check_keys(state: Mapping[str, object], expected: ShapeSpec) -> str | None:
    """Reason if ``state``'s keys differ from ``expected``'s, else ``None``."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) {missing[:3]}")
        if extra:
            parts.append(f"unexpected {len(extra)} key(s) {extra[:3]}")
        return "wrong keys: " + "; ".join(parts)
    return None


def check_finite(state: Mapping[str, Tensor | np.ndarray]) -> str | None:
    """Reason naming the first tensor with NaN/Inf (and how many), else ``None``."""
    for key, value in state.items():
        tensor = torch.as_tensor(value)
        if tensor.is_floating_point() or tensor.is_complex():
            bad = (~torch.isfinite(tensor)).sum().item()
            if bad:
                return f"non-finite values in {key}: {bad} non-finite value(s) (NaN/Inf)"
    return None


def check_rank_pairs(state: Mapping[str, Tensor | np.ndarray]) -> str | None:
    """Reason if a module's ``lora_A`` rows and ``lora_B`` columns disagree, else ``None``."""
    a_rank: dict[str, int] = {}
    b_rank: dict[str, int] = {}
    for key, value in state.items():
        if is_lora_a(key) and value.ndim == 2:
            a_rank[module_prefix(key)] = int(value.shape[0])
        elif is_lora_b(key) and value.ndim == 2:
            b_rank[module_prefix(key)] = int(value.shape[1])
    for prefix in sorted(set(a_rank) & set(b_rank)):
        if a_rank[prefix] != b_rank[prefix]:
            return f"{prefix}: lora_A rank {a_rank[prefix]} != lora_B rank {b_rank[prefix]}"
    return None


def validate_update(
    state: object,
    expected: ShapeSpec,
    *,
    num_examples: object = None,
    flexible_rank: bool = False,
    max_rank: int | None = None,
) -> str | None:
    """Why ``state`` must be rejected, or ``None`` when it is acceptable.

    Parameters
    ----------
    state : the received ``{key: tensor | ndarray}``.
    expected : ``{key: shape}`` it must match (e.g. the global model's trainable state).
    num_examples : when given, must be an integer >= 0 (``bool`` is rejected).
    flexible_rank : accept any LoRA rank (A ``[r, d_in]``, B ``[d_out, r]`` with the
        expected ``d_in``/``d_out``), for FLoRA/HetLoRA; A and B of one module must
        still agree.
    max_rank : largest accepted rank with ``flexible_rank``.
    """
    if not isinstance(state, Mapping) or not state:
        return "update is empty or not a mapping of key -> tensor"
    if num_examples is not None and (
        isinstance(num_examples, bool)
        or not isinstance(num_examples, int | np.integer)
        or num_examples < 0
    ):
        return f"num-examples={num_examples!r} is not an integer >= 0"
    reason = check_keys(state, expected)
    if reason:
        return reason
    for key, value in state.items():
        if not isinstance(value, Tensor | np.ndarray):
            return f"{key}: {type(value).__name__} is not a tensor"
        floating = (
            value.is_floating_point()
            if isinstance(value, Tensor)
            else np.issubdtype(value.dtype, np.floating)
        )
        if not floating:
            return f"wrong dtype for {key}: {value.dtype} is not floating point"
        reason = _shape_reason(
            key, tuple(int(s) for s in value.shape), tuple(expected[key]), flexible_rank, max_rank
        )
        if reason:
            return reason
    return check_rank_pairs(state) or check_finite(state)
