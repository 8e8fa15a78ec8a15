"""Flower's own strategies by name, hyper-parameters from ``strategy.<param>`` keys.

=============== ================================ =====================================
name            Flower class                     ``strategy.*`` params (defaults)
=============== ================================ =====================================
fedadam         FedAdam                          eta 0.01, beta-1 0.9, beta-2 0.99, tau 1e-3
fedyogi         FedYogi                          eta, beta-1, beta-2, tau
fedadagrad      FedAdagrad                       eta, tau
fedavgm         FedAvgM                          server-learning-rate 1.0, server-momentum 0.9
fedmedian       FedMedian                        -
fedtrimmedavg   FedTrimmedAvg                    trim-beta 0.2 (fraction cut at each end)
krum            Krum                             num-malicious-nodes 0
multikrum       MultiKrum                        num-malicious-nodes, num-nodes-to-select 0 (= n - f)
bulyan          Bulyan                           num-malicious-nodes
qfedavg         QFedAvg                          q 0.1, qffl-learning-rate 0 (= the run's lr)
=============== ================================ =====================================

(``fedavg`` and ``fedprox`` are registered in ``server/strategies/__init__.py``.)
The server optimisers (FedAdam/FedYogi/FedAdagrad) step on the adapters with
learning rate ``eta``; Flower's default of 0.1 is far larger than LoRA updates,
hence 0.01 here. Byzantine-robust rules need enough sampled clients: Krum and
MultiKrum ``n >= 2f + 3``, Bulyan ``n >= 4f + 3`` (``f`` = num-malicious-nodes); this
is checked before training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedMedian,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    QFedAvg,
    Strategy,
)

from rantune.errors import InputError
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.strategies import StrategySpec, common_kwargs, register

OPT_PARAMS = ("eta", "tau")
MOMENT_PARAMS = ("beta-1", "beta-2")


def _number(params: Mapping[str, Scalar], key: str, low: float, high: float = math.inf) -> float:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"strategy.{key}={value!r} is invalid: expected a number")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise InputError(
            f"strategy.{key}={value} is invalid: expected {low:g} <= value <= {high:g}"
        )
    return value


def _count(params: Mapping[str, Scalar], key: str) -> int:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"strategy.{key}={value!r} is invalid: expected an integer >= 0")
    return int(value)


def train_sample_size(cfg: RunConfig) -> int:
    """Clients sampled per training round (Flower's rule: ``max(int(n * fraction),
    min-train-clients)``), from the run's partitioning."""
    from rantune.federated import splits

    n = splits.num_clients(cfg.data, cfg.partition)
    return max(int(n * cfg.sampling.fraction_train), cfg.sampling.min_train_clients)


def _opt(cls, moments: bool):
    def factory(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
        kwargs = {
            "eta": _number(params, "eta", 1e-12),
            "eta_l": cfg.train.lr,  # informational in Flower: clients use the run's lr
            "tau": _number(params, "tau", 1e-12),
        }
        if moments:
            kwargs["beta_1"] = _number(params, "beta-1", 0.0, 0.999999)
            kwargs["beta_2"] = _number(params, "beta-2", 0.0, 0.999999)
        return cls(**kwargs, **common_kwargs(cfg))

    return factory


def _fedavgm(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return FedAvgM(
        server_learning_rate=_number(params, "server-learning-rate", 1e-12),
        server_momentum=_number(params, "server-momentum", 0.0, 0.999999),
        **common_kwargs(cfg),
    )


def _fedmedian(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return FedMedian(**common_kwargs(cfg))


def _fedtrimmedavg(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return FedTrimmedAvg(beta=_number(params, "trim-beta", 0.0, 0.499999), **common_kwargs(cfg))


def _robust_check(minimum: Callable[[int], tuple[int, str]]):
    """Check ``n >= minimum(f)`` for the sampled training clients ``n``."""

    def check(cfg: RunConfig, params: Mapping[str, Scalar]) -> None:
        f = _count(params, "num-malicious-nodes")
        n = train_sample_size(cfg)
        need, rule = minimum(f)
        if n < need:
            raise InputError(
                f"strategy {cfg.strategy.name!r} with strategy.num-malicious-nodes={f} needs at "
                f"least {need} clients per training round ({rule}), but only {n} are sampled: "
                "lower strategy.num-malicious-nodes, raise fraction-train / min-train-clients, "
                "or partition into more clients (partition.num-clients)"
            )
        if "num-nodes-to-select" in params and cfg.strategy.name == "multikrum":
            m = _count(params, "num-nodes-to-select")
            if m > n - f:
                raise InputError(
                    f"strategy.num-nodes-to-select={m} is invalid: at most n - f = {n - f} "
                    "(0 = n - f)"
                )

    return check


def _krum(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return Krum(num_malicious_nodes=_count(params, "num-malicious-nodes"), **common_kwargs(cfg))


def _multikrum(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    f = _count(params, "num-malicious-nodes")
    m = _count(params, "num-nodes-to-select") or max(1, train_sample_size(cfg) - f)
    return MultiKrum(num_malicious_nodes=f, num_nodes_to_select=m, **common_kwargs(cfg))


def _bulyan(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return Bulyan(num_malicious_nodes=_count(params, "num-malicious-nodes"), **common_kwargs(cfg))


def _qfedavg(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    lr = _number(params, "qffl-learning-rate", 0.0) or cfg.train.lr
    return QFedAvg(
        client_learning_rate=lr,
        q=_number(params, "q", 0.0),
        train_loss_key="train-loss",
        **common_kwargs(cfg),
    )


def _krum_minimum(f: int) -> tuple[int, str]:
    return 2 * f + 3, "n >= 2f + 3"


def _bulyan_minimum(f: int) -> tuple[int, str]:
    return 4 * f + 3, "n >= 4f + 3"


register(
    StrategySpec(
        "fedadam",
        _opt(FedAdam, True),
        (*OPT_PARAMS, *MOMENT_PARAMS),
        "FedAvg pseudo-gradient + server Adam (eta, beta-1, beta-2, tau)",
    )
)
register(
    StrategySpec(
        "fedyogi",
        _opt(FedYogi, True),
        (*OPT_PARAMS, *MOMENT_PARAMS),
        "FedAvg pseudo-gradient + server Yogi (eta, beta-1, beta-2, tau)",
    )
)
register(
    StrategySpec(
        "fedadagrad",
        _opt(FedAdagrad, False),
        OPT_PARAMS,
        "FedAvg pseudo-gradient + server Adagrad (eta, tau)",
    )
)
register(
    StrategySpec(
        "fedavgm",
        _fedavgm,
        ("server-learning-rate", "server-momentum"),
        "FedAvg with server momentum",
    )
)
register(StrategySpec("fedmedian", _fedmedian, (), "coordinate-wise median (robust)"))
register(
    StrategySpec(
        "fedtrimmedavg",
        _fedtrimmedavg,
        ("trim-beta",),
        "coordinate-wise trimmed mean, trim-beta cut at each end (robust)",
    )
)
register(
    StrategySpec(
        "krum",
        _krum,
        ("num-malicious-nodes",),
        "Krum: the one update closest to its n-f-2 neighbours (robust)",
        check=_robust_check(_krum_minimum),
    )
)
register(
    StrategySpec(
        "multikrum",
        _multikrum,
        ("num-malicious-nodes", "num-nodes-to-select"),
        "Multi-Krum: average of the num-nodes-to-select best Krum scores (robust)",
        check=_robust_check(_krum_minimum),
    )
)
register(
    StrategySpec(
        "bulyan",
        _bulyan,
        ("num-malicious-nodes",),
        "Bulyan: Multi-Krum selection + coordinate-wise trimmed median (robust)",
        check=_robust_check(_bulyan_minimum),
    )
)
register(
    StrategySpec(
        "qfedavg",
        _qfedavg,
        ("q", "qffl-learning-rate"),
        "q-FedAvg: fairness-weighted by each client's train loss^q",
    )
)
