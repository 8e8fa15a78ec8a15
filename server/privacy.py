"""Central differential privacy for the rantune ServerApp: Flower's DP wrappers + accounting.

>>> rule = with_privacy(cfg, build_strategy(cfg))   # unchanged when dp.mode = "none"

:class:`PrivateRule` runs the chosen Flower strategy inside one of Flower 1.41's
``DifferentialPrivacy{Server,Client}Side{Fixed,Adaptive}Clipping`` wrappers
(``flwr.serverapp.strategy``) and adds what a federated run needs around them:

- **private client sampling**: with DP on, the round loop draws each round's clients
  by Poisson sampling from the OS CSPRNG (:class:`rantune.server.sampling.PoissonSampler`):
  the run config does not reveal who took part, and the accountant is credited with
  the subsampling that actually happened, at the sampler's rate ``q``;
- **uniform weights**: the DP mean averages clipped updates with equal weights (a
  num-examples weighting would let one large base station exceed the sensitivity
  ``C / m`` the noise is calibrated to): the replies handed to Flower's wrapper
  carry ``num-examples = 1``; the reported train metrics stay weighted by examples;
- **the real sample size**: Flower's wrapper divides the noise by
  ``num_sampled_clients``; it is set to the number of clients sampled in the round;
- **accounting**: each released aggregate is composed into an RDP accountant
  (:mod:`rantune.federated.dp_accounting`, Poisson subsampled Gaussian) with the
  effective noise multiplier ``z m / n`` when only ``m < n`` sampled updates arrived
  (adaptive modes: times ``C'/C``, since Flower scales the noise with the norm
  already adapted for the next round, and with the noisy clipped-count query of
  sensitivity 1 composed in). A training round that releases nothing (too few
  sound updates) is composed too, at the configured multiplier: the bound stays an
  upper bound whatever the sample turned out to be. The round's ``dp-*`` values
  (epsilon at delta, noise std, clipping norm, sampling rate, ...) are in
  ``history.json`` under ``rounds[i].train.metrics``;
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
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from logging import INFO

import numpy as np
from flwr.app import MetricRecord, RecordDict
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
from rantune.federated.messages import NUM_EXAMPLES, record_to_state
from rantune.federated.privacy import DPSettings
from rantune.federated.run_config import RunConfig
from rantune.seeding import derive_seed
from rantune.server.sampling import Sampler, sample_size
from rantune.server.strategies import template
from rantune.server.strategies.flower_adapter import FlowerRule, capture_state, restore_state
from rantune.server.strategies.template import Combined, Reply, Rule, State

INNER_PREFIX = "inner/"


def check_plain_averaging(rule: Rule, name: str = "", option: str = "dp.mode") -> None:
    """Raise InputError unless ``rule`` is Flower's plain weighted mean.

    Both DP (the noise is calibrated to the mean's sensitivity) and SecAgg+ (the
    server only ever sees a sum) need that; ``option`` names the feature in the error.
    """
    strategy = rule.strategy if isinstance(rule, FlowerRule) else None
    label = name or (type(strategy).__name__ if strategy is not None else repr(rule))
    plain = isinstance(strategy, FedAvg) and (
        type(strategy).aggregate_train is FedAvg.aggregate_train
    )
    if not plain:
        raise InputError(
            f"{option} needs a strategy that averages updates (fedavg, fedprox); {label!r} "
            "aggregates differently (robust rules, server optimizers or per-client "
            'LoRA-aware rules need more than a noisy/secure mean): choose strategy.name="fedavg"'
        )
    if rule.keep_local or rule.freeze:
        raise InputError(
            f"{option} cannot be combined with {label!r}: it keeps some parameters out "
            "of the aggregate (both need every client's full update)"
        )


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


def _unit_weights(replies: Sequence[Reply]) -> list:
    """The reply messages with ``num-examples = 1`` (their content is replaced)."""
    messages = []
    for reply in replies:
        message = reply.message
        content = message.content
        records = {}
        for key, record in content.items():
            if isinstance(record, MetricRecord):
                record = MetricRecord({**dict(record), NUM_EXAMPLES: 1})
            records[key] = record
        message.content = RecordDict(records)
        messages.append(message)
    return messages


class PrivateRule(FlowerRule):
    """A Flower DP wrapper around a plain-averaging FlowerRule, with accounting.

    Parameters
    ----------
    inner : the rule to protect (plain averaging, see :func:`check_plain_averaging`).
    settings : the ``dp.*`` settings.
    num_sampled : expected clients per round (replaced by the real count each round).
    seed : run seed (used only with ``dp.reproducible-noise``).
    """

    def __init__(
        self, inner: FlowerRule, settings: DPSettings, num_sampled: int, seed: int = 0
    ) -> None:
        check_plain_averaging(inner)
        self.dp = _wrapper(inner.strategy, settings, max(1, num_sampled))
        super().__init__(self.dp)
        self.inner = inner
        self.settings = settings
        self.seed = int(seed)
        self.accountant = RdpAccountant()
        self._planned: dict[int, tuple[int, float]] = {}  # round -> (sampled, rate)

    def __repr__(self) -> str:
        return f"PrivateRule({self.dp!r}, mode={self.settings.mode})"

    def draw(self, rnd: template.Round, sampler: Sampler) -> list[template.Node]:
        """The loop's draw; a training round's must be the sampling the accountant
        models, and its size and rate are kept for the round's accounting."""
        chosen = sampler.draw(rnd.number, rnd.nodes)
        if rnd.phase == template.TRAIN:
            if sampler.kind != self.accountant.sampling:
                raise RuntimeError(
                    f"DP training rounds must be sampled as the accountant assumes "
                    f"({self.accountant.sampling}), not {sampler.kind}"
                )
            self._planned[rnd.number] = (len(chosen), float(sampler.rate))
            if chosen:
                self.dp.num_sampled_clients = len(chosen)
        return chosen

    def combine(self, server_round: int, replies: Sequence[Reply], state: State) -> Combined:
        sampled, rate = self._planned.pop(server_round)
        metrics = template.train_metrics(replies)  # weighted by examples, as without DP
        clipping_norm = float(self.dp.clipping_norm)
        with _fresh_noise(self.settings, self.seed, server_round):
            arrays, dp_metrics = self.dp.aggregate_train(server_round, _unit_weights(replies))
        if dp_metrics is not None and "norm_bit" in dp_metrics:
            # adaptive client-side clipping: the share of clipped updates (uniform mean)
            metrics["norm_bit"] = float(dp_metrics["norm_bit"])
        if arrays is None:
            return Combined(None, metrics)
        z = float(self.dp.noise_multiplier)  # adaptive: Flower's adjusted update multiplier
        noise_norm = float(self.dp.clipping_norm)  # the norm the noise was scaled with
        report = self._account(z * noise_norm / sampled, clipping_norm, len(replies), rate)
        log(
            INFO,
            "round %s: DP release, epsilon = %.4g at delta = %g",
            server_round,
            report["dp-epsilon"],
            self.settings.delta,
        )
        return Combined(record_to_state(arrays), {**metrics, **report})

    def round_skipped(self, server_round: int, num_sampled: int) -> dict:
        """No release this round; composed at the configured multiplier all the same."""
        sampled, rate = self._planned.pop(server_round)
        clipping_norm = float(self.dp.clipping_norm)
        n = max(1, sampled)
        stddev = float(self.dp.noise_multiplier) * clipping_norm / n
        return self._account(stddev, clipping_norm, n, rate)

    def _account(self, stddev: float, clipping_norm: float, aggregated: int, q: float) -> dict:
        """Compose one round; return its ``dp-*`` metrics.

        The sensitivity of the mean is ``C / m`` (``C``: the norm the updates were
        clipped to, ``m``: updates averaged) and the noise std is ``stddev`` (Flower:
        ``z C' / n``, the adaptive wrappers using the norm *after* this round's
        update ``C'``), so the effective multiplier is ``stddev / (C / m)``.
        """
        z_eff = stddev / (clipping_norm / aggregated)
        if self.settings.adaptive:
            count_std = float(self.dp.clipped_count_stddev)
            if z_eff > 0 and count_std > 0:
                # the noisy clipped-update count (sensitivity 1) is released too
                z_eff = (z_eff**-2 + count_std**-2) ** -0.5
            else:
                z_eff = 0.0
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

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays, meta = capture_state(self.inner.strategy)
        return (
            {INNER_PREFIX + k: v for k, v in arrays.items()},
            {
                "inner": meta,
                "accountant": self.accountant.state_dict(),
                "clipping-norm": float(self.dp.clipping_norm),
                "mode": self.settings.mode,
            },
        )

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
        if meta.get("mode") != self.settings.mode:
            raise InputError(
                f"checkpoint was written with dp.mode={meta.get('mode')!r}, not "
                f"{self.settings.mode!r}; use another out-dir"
            )
        inner = {k.removeprefix(INNER_PREFIX): v for k, v in arrays.items()}
        restore_state(self.inner.strategy, inner, meta.get("inner") or {})
        self.accountant = RdpAccountant.from_state(meta["accountant"])
        self.dp.clipping_norm = float(meta["clipping-norm"])


@contextmanager
def _fresh_noise(settings: DPSettings, seed: int, server_round: int):
    """Seed numpy's global generator for one release (Flower's wrappers draw their noise
    from it): OS entropy, or the run seed with ``dp.reproducible-noise``."""
    if settings.reproducible_noise:
        np.random.seed(derive_seed(seed, "dp-noise", server_round))
    else:
        np.random.seed(np.frombuffer(os.urandom(32), dtype=np.uint32))
    try:
        yield
    finally:
        np.random.seed(np.frombuffer(os.urandom(32), dtype=np.uint32))


def with_privacy(cfg: RunConfig, rule: Rule) -> Rule:
    """``rule`` wrapped for ``dp.mode`` (unchanged when it is ``"none"``)."""
    settings = cfg.dp
    if not settings.enabled:
        return rule
    check_plain_averaging(rule, cfg.strategy.name)
    population = splits.num_clients(cfg.data, cfg.partition)
    s = cfg.sampling
    expected = min(population, sample_size(population, s.fraction_train, s.min_train_clients))
    return PrivateRule(rule, settings, expected, seed=cfg.seed)
