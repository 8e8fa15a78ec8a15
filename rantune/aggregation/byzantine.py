"""Byzantine and faulty clients for robustness experiments.

An attacked client computes its honest state, then replaces its *update*
``delta = local - reference`` (``reference`` = what it received this round) by:

- ``sign-flip``: ``-factor * delta`` (default ``factor = 1``);
- ``scaled``: ``factor * delta`` (default ``factor = 10``, a boosting attack);
- ``gaussian``: pure noise ``N(0, noise_std^2)`` element-wise (a faulty client).

and sends ``reference + delta'``. Everything is deterministic from a seed: which
clients are Byzantine (:func:`select_byzantine`) and the noise (seeded per key, so
dict order does not matter). Pass a seed that mixes in the round and client, e.g.
``derive_seed(run_seed, round, client_id)``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rantune.aggregation.init import derive_seed, generator
from rantune.aggregation.lora_keys import State
from rantune.errors import InputError

ATTACKS = ("sign-flip", "scaled", "gaussian")
DEFAULT_FACTORS = {"sign-flip": 1.0, "scaled": 10.0, "gaussian": 0.0}


@dataclass(frozen=True)
class AttackSpec:
    """How a Byzantine client corrupts its update.

    Attributes
    ----------
    kind : one of :data:`ATTACKS`.
    factor : multiplier for ``sign-flip`` (``-factor * delta``) and ``scaled``
        (``factor * delta``); ``None`` takes :data:`DEFAULT_FACTORS`. Unused by ``gaussian``.
    noise_std : standard deviation of the ``gaussian`` update (same unit as the weights).
    """

    kind: str
    factor: float | None = None
    noise_std: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise InputError(f"unknown attack {self.kind!r}: choose one of {list(ATTACKS)}")
        if self.factor is None:
            object.__setattr__(self, "factor", DEFAULT_FACTORS[self.kind])
        if not math.isfinite(self.factor) or (self.kind != "gaussian" and self.factor <= 0):
            raise InputError(
                f"attack factor={self.factor} is invalid: expected a finite number > 0"
            )
        if not math.isfinite(self.noise_std) or self.noise_std < 0:
            raise InputError(f"attack noise_std={self.noise_std} is invalid: expected >= 0")


def num_byzantine(num_clients: int, fraction: float) -> int:
    """``round(fraction * num_clients)`` with halves rounded up; ``0 <= fraction <= 1``."""
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"byzantine fraction={fraction} is invalid: expected 0 <= fraction <= 1")
    if num_clients < 0:
        raise InputError(f"num_clients={num_clients} is invalid: expected >= 0")
    return min(num_clients, math.floor(fraction * num_clients + 0.5))


def select_byzantine(client_ids: Sequence[Hashable], fraction: float, seed: int) -> list[Hashable]:
    """The Byzantine subset of ``client_ids``, deterministic in ``(sorted ids, fraction, seed)``.

    The input order does not matter; the result is returned in the sorted order of
    ``str(id)``. Raises on duplicate ids.
    """
    ordered = sorted(client_ids, key=str)
    if len({str(c) for c in ordered}) != len(ordered):
        raise InputError("client ids must be unique to select Byzantine clients")
    count = num_byzantine(len(ordered), fraction)
    rng = np.random.default_rng(derive_seed("byzantine", seed))
    chosen = sorted(rng.choice(len(ordered), size=count, replace=False).tolist()) if count else []
    return [ordered[i] for i in chosen]


def corrupt_delta(delta: Tensor, spec: AttackSpec, seed: int, key: str) -> Tensor:
    """The corrupted update for one tensor: same shape and dtype as ``delta``."""
    if spec.kind == "sign-flip":
        return -spec.factor * delta
    if spec.kind == "scaled":
        return spec.factor * delta
    noise = torch.randn(
        tuple(delta.shape), generator=generator("gaussian-attack", seed, key), dtype=torch.float64
    )
    return (spec.noise_std * noise).to(device=delta.device, dtype=delta.dtype)


def attack_update(
    local: Mapping[str, Tensor], reference: Mapping[str, Tensor], spec: AttackSpec, seed: int
) -> State:
    """``reference + corrupt(local - reference)`` for every floating tensor of ``local``.

    Parameters
    ----------
    local : the honest state the client would send ``{key: tensor}``.
    reference : the state it started the round from; must hold every floating key of
        ``local`` with the same shape (keys only in ``reference`` are ignored).
    spec : the attack.
    seed : noise seed (only ``gaussian`` draws); same seed -> same output.

    Returns
    -------
    A new state with ``local``'s keys, shapes and dtypes; non-floating tensors are copied.
    """
    out: State = {}
    for key, value in local.items():
        if not torch.is_floating_point(value):
            out[key] = value.clone()
            continue
        if key not in reference:
            raise InputError(f"cannot attack {key!r}: no reference tensor for it")
        ref = reference[key]
        if tuple(ref.shape) != tuple(value.shape):
            raise InputError(
                f"cannot attack {key!r}: reference {tuple(ref.shape)} vs local {tuple(value.shape)}"
            )
        ref64 = ref.detach().to(device=value.device, dtype=torch.float64)
        delta = value.detach().to(torch.float64) - ref64
        out[key] = (ref64 + corrupt_delta(delta, spec, seed, key).to(torch.float64)).to(value.dtype)
    return out
