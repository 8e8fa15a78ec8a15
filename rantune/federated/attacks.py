"""Byzantine clients for robustness experiments, applied on the client to what it sends.

Run config: ``attack.fraction`` of the partitions (chosen deterministically from the
run seed by :func:`rantune.aggregation.select_byzantine`) replace their update
``delta = trained - received`` by ``attack.kind``:

- ``sign-flip``: ``-factor * delta`` (factor 0 -> 1);
- ``scaled``: ``factor * delta`` (factor 0 -> 10, a boosting attack);
- ``gaussian``: noise ``N(0, factor^2)`` instead of the update (factor 0 -> 1).

Attackers train and evaluate honestly; only the uploaded tensors are corrupted, so
the server sees a well-formed update and must rely on its aggregation rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch

from rantune.aggregation.byzantine import ATTACKS, AttackSpec, attack_update, select_byzantine
from rantune.aggregation.init import derive_seed
from rantune.schema import setting

if TYPE_CHECKING:
    from rantune.federated.run_config import RunConfig


@dataclass(frozen=True)
class AttackSettings:
    """``attack.*`` of a run: who attacks and how."""

    fraction: float = setting(0.0, "share of partitions that attack (Byzantine)", low=0.0, high=1.0)
    kind: str = setting("sign-flip", "attack: " + "|".join(ATTACKS), choices=tuple(ATTACKS))
    factor: float = setting(0.0, "attack strength (0 = the kind's default)", low=0.0)

    def __post_init__(self) -> None:
        self.spec()  # the aggregation module's own checks

    @property
    def enabled(self) -> bool:
        return self.fraction > 0

    def spec(self) -> AttackSpec:
        if self.kind == "gaussian":
            return AttackSpec("gaussian", noise_std=self.factor or 1.0)
        return AttackSpec(self.kind, self.factor or None)


@lru_cache(maxsize=64)
def _byzantine(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    return frozenset(int(c) for c in select_byzantine(list(range(num_clients)), fraction, seed))


def byzantine_partitions(cfg: RunConfig, num_clients: int) -> frozenset[int]:
    """Partition ids that attack (deterministic in ``seed``, ``attack.fraction``)."""
    settings = cfg.attack
    if not settings.enabled:
        return frozenset()
    return _byzantine(num_clients, settings.fraction, cfg.seed)


def maybe_attack(
    cfg: RunConfig,
    partition_id: int,
    num_clients: int,
    server_round: int,
    reference: Mapping[str, np.ndarray],
    upload: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """``upload`` unchanged for honest clients; the corrupted update for attackers.

    ``reference``: what the client received for the uploaded keys (same shapes).
    """
    if partition_id not in byzantine_partitions(cfg, num_clients):
        return dict(upload)
    settings = cfg.attack
    seed = derive_seed("attack", cfg.seed, server_round, partition_id)
    attacked = attack_update(
        {k: torch.from_numpy(np.asarray(v)) for k, v in upload.items()},
        {k: torch.from_numpy(np.asarray(v)) for k, v in reference.items()},
        settings.spec(),
        seed,
    )
    return {k: v.numpy() for k, v in attacked.items()}
