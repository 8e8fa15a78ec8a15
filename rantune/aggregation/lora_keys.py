"""Group a peft adapter state into per-module (A, B) pairs and the other (head) tensors.

Key format (``rantune.lora.trainable_state``)::

    base_model.model.encoder.blocks.0.attn.q_proj.lora_A.weight   [r, d_in]
    base_model.model.encoder.blocks.0.attn.q_proj.lora_B.weight   [d_out, r]
    base_model.model.head.classifier.weight                        (anything else)

The *module prefix* of an adapter key is the key without ``.lora_A.weight`` /
``.lora_B.weight`` (``base_model.model.encoder.blocks.0.attn.q_proj``); it is also
the module path inside the ``PeftModel``. A module's weight-space update is
``scale * B @ A`` (``[d_out, d_in]``) with ``scale = alpha / r`` (peft default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rantune.errors import InputError

LORA_A_SUFFIX = ".lora_A.weight"
LORA_B_SUFFIX = ".lora_B.weight"

State = dict[str, Tensor]
"""A flat adapter state ``{peft key: tensor}``."""


def is_lora_a(key: str) -> bool:
    return key.endswith(LORA_A_SUFFIX)


def is_lora_b(key: str) -> bool:
    return key.endswith(LORA_B_SUFFIX)


def is_lora(key: str) -> bool:
    return is_lora_a(key) or is_lora_b(key)


def module_prefix(key: str) -> str:
    """``...q_proj.lora_A.weight`` -> ``...q_proj``; raises for a non-adapter key."""
    for suffix in (LORA_A_SUFFIX, LORA_B_SUFFIX):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    raise InputError(
        f"{key!r} is not a LoRA adapter key (expected a '{LORA_A_SUFFIX}' or '{LORA_B_SUFFIX}' suffix)"
    )


def a_key(prefix: str) -> str:
    return prefix + LORA_A_SUFFIX


def b_key(prefix: str) -> str:
    return prefix + LORA_B_SUFFIX


def lora_scale(alpha: float | None, rank: int) -> float:
    """peft's adapter scale ``alpha / r``; ``alpha=None`` means scale 1 (raw ``B @ A``)."""
    if alpha is None:
        return 1.0
    if rank < 1:
        raise InputError(f"LoRA rank {rank} is invalid: expected >= 1")
    return float(alpha) / rank


def as_tensor(value: Tensor | np.ndarray) -> Tensor:
    """A torch tensor view of a tensor or numpy array (no copy when possible)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise InputError(f"expected a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


@dataclass(frozen=True)
class LoraPair:
    """One adapted projection.

    Attributes
    ----------
    A : ``[r, d_in]`` down-projection.
    B : ``[d_out, r]`` up-projection.
    """

    A: Tensor
    B: Tensor

    def __post_init__(self) -> None:
        if self.A.dim() != 2 or self.B.dim() != 2:
            raise InputError(
                f"LoRA A and B must be 2-D, got A {tuple(self.A.shape)} and B {tuple(self.B.shape)}"
            )
        if self.A.shape[0] != self.B.shape[1]:
            raise InputError(
                f"LoRA ranks disagree: A {tuple(self.A.shape)} has rank {self.A.shape[0]}, "
                f"B {tuple(self.B.shape)} has rank {self.B.shape[1]}"
            )

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.A.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.B.shape[0])

    def delta(self, scale: float = 1.0, dtype: torch.dtype = torch.float64) -> Tensor:
        """Weight-space update ``scale * B @ A``: ``[d_out, d_in]`` in ``dtype``."""
        return scale * (self.B.to(dtype) @ self.A.to(dtype))


@dataclass(frozen=True)
class LoraGroups:
    """An adapter state split by concept.

    Attributes
    ----------
    pairs : ``{module prefix: LoraPair}`` in the state's key order.
    other : every non-adapter tensor (head, biases, ...) ``{key: tensor}``.
    """

    pairs: dict[str, LoraPair]
    other: State

    def ranks(self) -> dict[str, int]:
        return {prefix: pair.rank for prefix, pair in self.pairs.items()}

    def to_state(self) -> State:
        """Flatten back to ``{key: tensor}`` (A, B of each module, then the others)."""
        state: State = {}
        for prefix, pair in self.pairs.items():
            state[a_key(prefix)] = pair.A
            state[b_key(prefix)] = pair.B
        state.update(self.other)
        return state


def group_state(state: Mapping[str, Tensor | np.ndarray]) -> LoraGroups:
    """Split ``state`` into per-module (A, B) pairs and other tensors.

    Raises ``ValueError`` when a module has only one of A/B or their ranks disagree.
    """
    a_parts: dict[str, Tensor] = {}
    b_parts: dict[str, Tensor] = {}
    other: State = {}
    order: list[str] = []
    for key, value in state.items():
        tensor = as_tensor(value)
        if is_lora_a(key) or is_lora_b(key):
            prefix = module_prefix(key)
            if prefix not in a_parts and prefix not in b_parts:
                order.append(prefix)
            (a_parts if is_lora_a(key) else b_parts)[prefix] = tensor
        else:
            other[key] = tensor
    unpaired = sorted(set(a_parts) ^ set(b_parts))
    if unpaired:
        raise InputError(
            f"LoRA modules with only one of lora_A/lora_B: {unpaired[:4]}; send both or neither"
        )
    return LoraGroups({p: LoraPair(a_parts[p], b_parts[p]) for p in order}, other)


def module_ranks(state: Mapping[str, Tensor | np.ndarray]) -> dict[str, int]:
    """``{module prefix: rank}`` read from the ``lora_A`` rows (or ``lora_B`` columns)."""
    ranks: dict[str, int] = {}
    for key, value in state.items():
        shape = tuple(value.shape)
        if is_lora_a(key):
            ranks[module_prefix(key)] = int(shape[0])
        elif is_lora_b(key):
            ranks.setdefault(module_prefix(key), int(shape[1]))
    return ranks


def uniform_rank(state: Mapping[str, Tensor | np.ndarray]) -> int:
    """The single rank used by every module of ``state``; raises if modules differ or none exist."""
    ranks = set(module_ranks(state).values())
    if len(ranks) != 1:
        raise InputError(f"expected one LoRA rank across modules, found {sorted(ranks) or 'none'}")
    return ranks.pop()


def max_rank(states: list[Mapping[str, Tensor | np.ndarray]]) -> int:
    """Largest module rank across ``states`` (0 when none holds an adapter)."""
    return max((r for s in states for r in module_ranks(s).values()), default=0)


def require_same_modules(groups: list[LoraGroups], names: list[object]) -> list[str]:
    """The module prefixes shared by every client, in the first client's order.

    Raises ``ValueError`` when a client adapts other modules or a module's ``(d_in,
    d_out)`` differs between clients (ranks may differ). ``names`` label the clients.
    """
    if not groups:
        raise InputError("nothing to aggregate: no client updates")
    prefixes = list(groups[0].pairs)
    if not prefixes:
        raise InputError("the updates hold no LoRA adapters (lora_A/lora_B keys)")
    for name, group in zip(names, groups, strict=True):
        if set(group.pairs) != set(prefixes):
            diff = sorted(set(group.pairs) ^ set(prefixes))
            raise InputError(
                f"client {name!r} adapts different modules than client {names[0]!r}: {diff[:3]}"
            )
    for prefix in prefixes:
        shapes = {(g.pairs[prefix].d_in, g.pairs[prefix].d_out) for g in groups}
        if len(shapes) != 1:
            raise InputError(
                f"module {prefix}: clients disagree on (d_in, d_out): {sorted(shapes)}"
            )
    return prefixes
