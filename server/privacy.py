"""Central differential privacy for the rantune ServerApp: Flower's DP wrappers + accounting.

>>> strategy = with_privacy(cfg, build_strategy(cfg))   # unchanged when dp.mode = "none"

:class:`PrivateStrategy` wraps the chosen strategy with one of Flower 1.41's
``DifferentialPrivacy{Server,Client}Side{Fixed,Adaptive}Clipping`` wrappers
(``flwr.serverapp.strategy``) and adds what a federated run needs around them:

- **uniform weights**: the DP mean averages clipped updates with equal weights
  (a num-examples weighting would let one large base station exceed the
  sensitivity ``C / m`` the noise is calibrated to);
- **the real sample size**: Flower's wrapper divides the noise by
  ``num_sampled_clients``; it is set to the number of clients actually sampled
  in each round;
- **accounting**: each released aggregate is composed into an RDP accountant
  (:mod:`rantune.federated.dp_accounting`) with sampling rate ``q = n / N`` and the
  effective noise multiplier ``z m / n`` when only ``m < n`` updates arrived
  (adaptive modes: times ``C'/C``, since Flower scales the noise with the norm
  already adapted for the next round, and with the noisy clipped-count query of
  sensitivity 1 composed in). The
  round's ``dp-*`` values (epsilon at delta, noise std, clipping norm, ...) are
  returned with the aggregated train metrics, so ``history.json`` lists them
  under ``rounds[i].train.metrics``;
- **noise randomness**: fresh OS entropy for every release (Flower draws from
  numpy's global generator, which the in-process engine's clients may have
  seeded), or, with ``dp.reproducible-noise``, a seed derived from the run seed;
- **checkpoints**: the accountant ledger, the adaptive clipping norm and the
  wrapped strategy's own state are saved and restored on resume.

DP needs plain (weighted-mean) aggregation: only strategies whose
``aggregate_train`` is Flower's ``FedAvg.aggregate_train`` (fedavg, fedprox) and that
keep no parameters local qualify; robust or server-optimizer strategies change the
sensitivity or add the noise after a non-private step, and are refused.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from logging import INFO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Strategy,
)
from flwr.supercore import log

from rantune.errors import InputError
from rantune.federated import splits
from rantune.federated.dp_accounting import RdpAccountant
from rantune.federated.messages import METRICS
from rantune.federated.privacy import DPSettings
from rantune.federated.run_config import RunConfig
from rantune.seeding import derive_seed
from rantune.server.strategies.state import load_strategy_state, strategy_state

UNIT_WEIGHT = "dp-unit-weight"
INNER_PREFIX = "inner/"


def check_plain_averaging(strategy: Strategy, name: str = "", option: str = "dp.mode") -> None:
    """Raise ValueError unless ``strategy`` aggregates by Flower's plain weighted mean.

    Both DP (the noise is calibrated to the mean's sensitivity) and SecAgg+ (the
    server only ever sees a sum) need that; ``option`` names the feature in the error.
    """
    label = name or type(strategy).__name__
    plain = isinstance(strategy, FedAvg) and (
        type(strategy).aggregate_train is FedAvg.aggregate_train
    )
    if not plain:
        raise InputError(
            f"{option} needs a strategy that averages updates (fedavg, fedprox); {label!r} "
            "aggregates differently (robust rules, server optimizers or per-client "
            'LoRA-aware rules need more than a noisy/secure mean): choose strategy.name="fedavg"'
        )
    for hook in ("keep_local_pattern", "freeze_pattern"):
        if getattr(strategy, hook, None):
            raise InputError(
                f"{option} cannot be combined with {label!r}: it keeps some parameters out "
                "of the aggregate (both need every client's full update)"
            )


check_dp_compatible = check_plain_averaging


def sample_size(cfg: RunConfig, population: int) -> int:
    """How many clients Flower's FedAvg samples per round from ``population`` nodes."""
    s = cfg.sampling
    return max(1, min(population, max(int(population * s.fraction_train), s.min_train_clients)))


def _wrapper(strategy: Strategy, dp: DPSettings, num_sampled: int) -> Strategy:
    if not dp.adaptive:
        cls = (
            DifferentialPrivacyClientSideFixedClipping
            if dp.client_side
            else DifferentialPrivacyServerSideFixedClipping
        )
        return cls(strategy, dp.noise_multiplier, dp.clipping_norm, num_sampled)
    cls = (
        DifferentialPrivacyClientSideAdaptiveClipping
        if dp.client_side
        else DifferentialPrivacyServerSideAdaptiveClipping
    )
    try:
        return cls(
            strategy,
            dp.noise_multiplier,
            num_sampled,
            initial_clipping_norm=dp.clipping_norm,
            target_clipped_quantile=dp.target_quantile,
            clip_norm_lr=dp.clip_norm_lr,
            clipped_count_stddev=dp.clipped_count_stddev or None,
        )
    except ValueError as err:
        raise InputError(
            f"dp.mode={dp.mode!r}: {err} Set dp.clipped-count-stddev above "
            f"dp.noise-multiplier / 2 (= {dp.noise_multiplier / 2:g}); with few clients "
            "the adaptive norm's count query needs that much noise."
        ) from err


class PrivateStrategy(Strategy):
    """A Flower DP wrapper around ``inner`` with accounting, uniform weights and state.

    Parameters
    ----------
    inner : the strategy to protect (plain averaging, see :func:`check_dp_compatible`).
    settings : the ``dp.*`` settings.
    population : number of clients (partitions) the server samples from.
    num_sampled : expected clients per round (replaced by the real count each round).
    seed : run seed (used only with ``dp.reproducible-noise``).
    """

    def __init__(
        self,
        inner: Strategy,
        settings: DPSettings,
        population: int,
        num_sampled: int,
        seed: int = 0,
    ) -> None:
        check_dp_compatible(inner)
        super().__init__()
        self.inner = inner
        self.settings = settings
        self.population = int(population)
        self.seed = int(seed)
        self.dp = _wrapper(inner, settings, num_sampled)
        self.accountant = RdpAccountant()
        self._sampled: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"PrivateStrategy({self.dp!r}, mode={self.settings.mode})"

    def summary(self) -> None:
        log(INFO, "\t├──> rantune DP: mode %s, delta %g", self.settings.mode, self.settings.delta)
        self.dp.summary()

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        messages = list(self.dp.configure_train(server_round, arrays, config, grid))
        if messages:
            self.dp.num_sampled_clients = len(messages)
        self._sampled[server_round] = len(messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = [_with_unit_weight(r) for r in replies]
        sampled = self._sampled.pop(server_round, len(replies)) or len(replies)
        self.dp.num_sampled_clients = sampled
        clipping_norm = float(self.dp.clipping_norm)
        arrays, metrics = None, None
        with (
            _fresh_noise(self.settings, self.seed, server_round),
            _weighted_by(self.inner, UNIT_WEIGHT),
        ):
            arrays, metrics = self.dp.aggregate_train(server_round, replies)
        if metrics is not None and UNIT_WEIGHT in metrics:
            del metrics[UNIT_WEIGHT]
        if arrays is None:
            return None, metrics
        report = self._account(len(replies), sampled, clipping_norm)
        metrics = MetricRecord({**(dict(metrics) if metrics is not None else {}), **report})
        log(
            INFO,
            "round %s: DP release, epsilon = %.4g at delta = %g",
            server_round,
            report["dp-epsilon"],
            self.settings.delta,
        )
        return arrays, metrics

    def _account(self, aggregated: int, sampled: int, clipping_norm: float) -> dict:
        """Compose this round's release; return the ``dp-*`` metrics of the round.

        The sensitivity of the mean is ``C / m`` (``C``: the norm the updates were
        clipped to, ``m``: updates averaged); the noise std Flower adds is
        ``z C' / n``, where the adaptive wrappers use the norm *after* this round's
        update ``C'`` (Flower 1.41 updates the norm before adding noise). So the
        effective multiplier is ``z (C' / C) (m / n)``.
        """
        z = float(self.dp.noise_multiplier)  # adaptive: Flower's adjusted update multiplier
        noise_norm = float(self.dp.clipping_norm)  # the norm the noise was scaled with
        stddev = z * noise_norm / sampled
        z_eff = stddev / (clipping_norm / aggregated)
        if self.settings.adaptive:
            count_std = float(self.dp.clipped_count_stddev)
            if z_eff > 0 and count_std > 0:
                # the noisy clipped-update count (sensitivity 1) is released too
                z_eff = (z_eff**-2 + count_std**-2) ** -0.5
            else:
                z_eff = 0.0
        q = min(1.0, sampled / max(self.population, 1))
        self.accountant.compose(z_eff, q)
        epsilon = self.accountant.epsilon(self.settings.delta)
        return {
            "dp-epsilon": epsilon if math.isfinite(epsilon) else float("inf"),
            "dp-delta": self.settings.delta,
            "dp-noise-multiplier": z_eff,
            "dp-noise-stddev": stddev,
            "dp-clipping-norm": clipping_norm,
            "dp-sampling-rate": q,
            "dp-clients": aggregated,
            "dp-releases": self.accountant.num_releases,
        }

    def privacy_spent(self) -> tuple[float, float]:
        """``(epsilon, delta)`` spent so far."""
        return self.accountant.epsilon(self.settings.delta), self.settings.delta

    # --------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        return list(self.dp.configure_evaluate(server_round, arrays, config, grid))

    def aggregate_evaluate(self, server_round: int, replies) -> MetricRecord | None:
        return self.dp.aggregate_evaluate(server_round, replies)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays, meta = strategy_state(self.inner)
        return (
            {INNER_PREFIX + k: v for k, v in arrays.items()},
            {
                "inner": meta,
                "accountant": self.accountant.state_dict(),
                "clipping-norm": float(self.dp.clipping_norm),
                "mode": self.settings.mode,
            },
        )

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if meta.get("mode") != self.settings.mode:
            raise InputError(
                f"checkpoint was written with dp.mode={meta.get('mode')!r}, not "
                f"{self.settings.mode!r}; use another out-dir"
            )
        inner = {k.removeprefix(INNER_PREFIX): v for k, v in arrays.items()}
        load_strategy_state(self.inner, inner, meta.get("inner") or {})
        self.accountant = RdpAccountant.from_state(meta["accountant"])
        self.dp.clipping_norm = float(meta["clipping-norm"])


def _with_unit_weight(reply: Message) -> Message:
    """The reply with an extra weight of 1 in its (single) MetricRecord."""
    if reply.has_error():
        return reply
    content = reply.content
    records = {}
    for key, record in content.items():
        if isinstance(record, MetricRecord):
            record = MetricRecord({**dict(record), UNIT_WEIGHT: 1})
        records[key] = record
    if not content.metric_records:
        records[METRICS] = MetricRecord({UNIT_WEIGHT: 1})
    reply.content = RecordDict(records)
    return reply


@contextmanager
def _weighted_by(strategy: Strategy, key: str):
    """Temporarily average ``strategy``'s train replies by ``key``."""
    previous = strategy.weighted_by_key
    strategy.weighted_by_key = key
    try:
        yield
    finally:
        strategy.weighted_by_key = previous


@contextmanager
def _fresh_noise(settings: DPSettings, seed: int, server_round: int):
    """Seed numpy's global generator for one release: OS entropy, or the run seed."""
    if settings.reproducible_noise:
        np.random.seed(derive_seed(seed, "dp-noise", server_round))
    else:
        np.random.seed(np.frombuffer(os.urandom(32), dtype=np.uint32))
    try:
        yield
    finally:
        np.random.seed(np.frombuffer(os.urandom(32), dtype=np.uint32))


def with_privacy(cfg: RunConfig, strategy: Strategy) -> Strategy:
    """``strategy`` wrapped for ``dp.mode`` (unchanged when it is ``"none"``)."""
    settings = cfg.dp
    if not settings.enabled:
        return strategy
    check_dp_compatible(strategy, cfg.strategy.name)
    population = splits.num_clients(cfg.data, cfg.partition)
    return PrivateStrategy(
        strategy, settings, population, sample_size(cfg, population), seed=cfg.seed
    )
