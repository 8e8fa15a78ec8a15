"""Who takes part in a round: the round loop's own client samplers.

The loop owns the randomness of client sampling (no reseeding of Python's global
``random``) and hands a sampler to the strategy's ``plan`` (see
:mod:`rantune.server.strategies.template`):

- :class:`SeededSampler` (training without DP, and every evaluation round): a
  fixed-size sample without replacement, Flower's size rule ``max(int(n *
  fraction), minimum)``, drawn by a ``random.Random`` seeded from ``(run seed,
  purpose, round)``. Same seed, same clients; a resumed run re-draws exactly the
  clients of an uninterrupted one. Its draws equal those of Flower's FedAvg after
  ``random.seed(derive_seed(seed, purpose, round))`` (the rule earlier versions
  used), so results did not change.
- :class:`PoissonSampler` (training with ``dp.mode`` on): every connected node
  takes part independently with probability ``q``, drawn from the operating
  system's CSPRNG (``secrets.SystemRandom``). The run config does not determine who
  was sampled, and the sampling is the one the privacy accountant models
  (Poisson subsampling, :mod:`rantune.federated.dp_accounting`). The draws cannot be
  re-derived: each round's sampled clients are part of its committed record
  (``history.json`` ``rounds[i].train.sampled``) and the accountant's ledger is in
  the checkpoint, so a resumed run continues from them.

``history.json`` records the samplers of a run under ``"sampling"``
(:meth:`describe`).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from rantune.errors import InputError
from rantune.federated.run_config import RunConfig
from rantune.seeding import derive_seed

T = TypeVar("T")

FIXED_SIZE = "fixed-size"
POISSON = "poisson"


def sample_size(population: int, fraction: float, minimum: int) -> int:
    """Flower's FedAvg rule: ``max(int(population * fraction), minimum)``; 0 when
    ``fraction == 0`` (the phase is skipped)."""
    if fraction == 0.0:
        return 0
    return max(int(population * fraction), minimum)


class Sampler(Protocol):
    """Draws the nodes of one round (``kind``: :data:`FIXED_SIZE` or :data:`POISSON`)."""

    kind: str

    def needed(self, connected: int) -> int:
        """How many nodes must be connected before :meth:`draw` (the loop waits)."""

    def draw(self, server_round: int, nodes: Sequence[T]) -> list[T]:
        """The sampled subset of ``nodes`` (sorted by node id), in draw order."""

    def describe(self) -> dict:
        """JSON-able description for ``history.json``."""


@dataclass(frozen=True)
class SeededSampler:
    """Fixed-size sampling without replacement, seeded by ``(seed, purpose, round)``.

    Attributes
    ----------
    seed : the run seed.
    purpose : ``"sample-train"`` or ``"sample-evaluate"`` (separate streams).
    fraction, minimum, min_available : Flower's ``fraction_*``, ``min_*_nodes`` and
        ``min_available_nodes``.
    """

    seed: int
    purpose: str
    fraction: float
    minimum: int
    min_available: int
    kind: str = field(default=FIXED_SIZE, init=False)

    def needed(self, connected: int) -> int:
        size = sample_size(connected, self.fraction, self.minimum)
        return 0 if size == 0 else max(self.min_available, size)

    def draw(self, server_round: int, nodes: Sequence[T]) -> list[T]:
        size = sample_size(len(nodes), self.fraction, self.minimum)
        if size == 0:
            return []
        rng = random.Random(derive_seed(self.seed, self.purpose, server_round))
        return rng.sample(list(nodes), min(size, len(nodes)))

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "source": "seeded",
            "fraction": self.fraction,
            "minimum": self.minimum,
        }


@dataclass(frozen=True)
class PoissonSampler:
    """Each node independently with probability ``rate``, from the OS CSPRNG.

    Attributes
    ----------
    rate : inclusion probability q in [0, 1].
    fraction, minimum, min_available : as for :class:`SeededSampler`; they set how
        many nodes must be connected before drawing (the same wait as Flower's).
    rng : the random source (``secrets.SystemRandom()``: not seedable, so the run
        config does not reveal the sample).
    """

    rate: float
    fraction: float = 1.0
    minimum: int = 1
    min_available: int = 1
    rng: random.Random = field(default_factory=secrets.SystemRandom, compare=False, repr=False)
    kind: str = field(default=POISSON, init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise InputError(f"Poisson sampling rate {self.rate} must be in [0, 1]")

    def needed(self, connected: int) -> int:
        return max(self.min_available, sample_size(connected, self.fraction, self.minimum))

    def draw(self, server_round: int, nodes: Sequence[T]) -> list[T]:
        return [node for node in nodes if self.rng.random() < self.rate]

    def describe(self) -> dict:
        return {"kind": self.kind, "source": "os-csprng", "rate": self.rate}


def poisson_rate(population: int, fraction: float, minimum: int) -> float:
    """The Poisson rate whose expected sample equals Flower's fixed sample size."""
    if population < 1:
        raise InputError("cannot sample clients from an empty population")
    return min(1.0, sample_size(population, fraction, minimum) / population)


def train_sampler(cfg: RunConfig, population: int) -> Sampler:
    """The training rounds' sampler: Poisson from the OS CSPRNG when ``dp.mode`` is on
    (rate = Flower's sample size / population), else seeded fixed-size."""
    s = cfg.sampling
    if cfg.dp.enabled:
        rate = poisson_rate(population, s.fraction_train, s.min_train_clients)
        return PoissonSampler(rate, s.fraction_train, s.min_train_clients, s.min_available_clients)
    return SeededSampler(
        cfg.seed, "sample-train", s.fraction_train, s.min_train_clients, s.min_available_clients
    )


def evaluate_sampler(cfg: RunConfig) -> SeededSampler:
    """The evaluation rounds' sampler (seeded: who evaluates reveals nothing of training)."""
    s = cfg.sampling
    return SeededSampler(
        cfg.seed,
        "sample-evaluate",
        s.fraction_evaluate,
        s.min_evaluate_clients,
        s.min_available_clients,
    )
