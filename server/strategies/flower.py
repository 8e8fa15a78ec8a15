"""Flower's own strategies by name, hyper-parameters from ``strategy.<param>`` keys.

=============== ================================ =====================================
name            Flower class                     ``strategy.*`` params (defaults)
=============== ================================ =====================================
fedavg          FedAvg                           -
fedprox         FedProx                          proximal-mu 0.01
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

Each runs through Flower's own class behind
:class:`~rantune.server.strategies.flower_adapter.FlowerRule`. Values arrive typed
and validated by the run-config schema (:class:`rantune.federated.run_config.StrategySection`).
The server optimisers (FedAdam/FedYogi/FedAdagrad) step on the adapters with
learning rate ``eta``; Flower's default of 0.1 is far larger than LoRA updates,
hence 0.01 here. FedProx only sends ``proximal-mu``: the client adds the proximal
term. Byzantine-robust rules need enough sampled clients: Krum and MultiKrum
``n >= 2f + 3``, Bulyan ``n >= 4f + 3`` (``f`` = num-malicious-nodes); this is
checked before training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    QFedAvg,
    Strategy,
)

from rantune.errors import InputError
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.strategies.flower_adapter import FlowerRule
from rantune.server.strategies.registry import StrategySpec
from rantune.server.strategies.template import aggregate_metrics

OPT_PARAMS = ("eta", "tau")
MOMENT_PARAMS = ("beta-1", "beta-2")


def common_kwargs(cfg: RunConfig) -> dict:
    """Sampling and metric-aggregation arguments every Flower FedAvg subclass takes."""
    s = cfg.sampling
    return {
        "fraction_train": s.fraction_train,
        "fraction_evaluate": s.fraction_evaluate,
        "min_train_nodes": s.min_train_clients,
        "min_evaluate_nodes": s.min_evaluate_clients,
        "min_available_nodes": s.min_available_clients,
        "train_metrics_aggr_fn": aggregate_metrics,
        "evaluate_metrics_aggr_fn": aggregate_metrics,
    }


def train_sample_size(cfg: RunConfig) -> int:
    """Clients sampled per training round (Flower's rule: ``max(int(n * fraction),
    min-train-clients)``), from the run's partitioning."""
    from rantune.federated import splits

    n = splits.num_clients(cfg.data, cfg.partition)
    return max(int(n * cfg.sampling.fraction_train), cfg.sampling.min_train_clients)


def _wrap(factory: Callable[[RunConfig, Mapping[str, Scalar]], Strategy]):
    """A factory of the Flower strategy -> a factory of its FlowerRule."""

    def build(cfg: RunConfig, params: Mapping[str, Scalar]) -> FlowerRule:
        return FlowerRule(factory(cfg, params))

    return build


def _fedavg(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return FedAvg(**common_kwargs(cfg))


def _fedprox(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return FedProx(proximal_mu=float(params["proximal-mu"]), **common_kwargs(cfg))


def _opt(cls, moments: bool):
    def factory(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
        kwargs = {
            "eta": float(params["eta"]),
            "eta_l": cfg.train.lr,  # informational in Flower: clients use the run's lr
            "tau": float(params["tau"]),
        }
        if moments:
            kwargs["beta_1"] = float(params["beta-1"])
            kwargs["beta_2"] = float(params["beta-2"])
        return cls(**kwargs, **common_kwargs(cfg))

    return factory


def _fedavgm(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return FedAvgM(
        server_learning_rate=float(params["server-learning-rate"]),
        server_momentum=float(params["server-momentum"]),
        **common_kwargs(cfg),
    )


def _fedmedian(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return FedMedian(**common_kwargs(cfg))


def _fedtrimmedavg(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return FedTrimmedAvg(beta=float(params["trim-beta"]), **common_kwargs(cfg))


def _robust_check(minimum: Callable[[int], tuple[int, str]]):
    """Check ``n >= minimum(f)`` for the sampled training clients ``n``."""

    def check(cfg: RunConfig, params: Mapping[str, Scalar]) -> None:
        f = int(params["num-malicious-nodes"])
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
            m = int(params["num-nodes-to-select"])
            if m > n - f:
                raise InputError(
                    f"strategy.num-nodes-to-select={m} is invalid: at most n - f = {n - f} "
                    "(0 = n - f)"
                )

    return check


def _krum(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return Krum(num_malicious_nodes=int(params["num-malicious-nodes"]), **common_kwargs(cfg))


def _multikrum(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    f = int(params["num-malicious-nodes"])
    m = int(params["num-nodes-to-select"]) or max(1, train_sample_size(cfg) - f)
    return MultiKrum(num_malicious_nodes=f, num_nodes_to_select=m, **common_kwargs(cfg))


def _bulyan(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return Bulyan(num_malicious_nodes=int(params["num-malicious-nodes"]), **common_kwargs(cfg))


def _qfedavg(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return QFedAvg(
        client_learning_rate=float(params["qffl-learning-rate"]) or cfg.train.lr,
        q=float(params["q"]),
        train_loss_key="train-loss",
        **common_kwargs(cfg),
    )


def _krum_minimum(f: int) -> tuple[int, str]:
    return 2 * f + 3, "n >= 2f + 3"


def _bulyan_minimum(f: int) -> tuple[int, str]:
    return 4 * f + 3, "n >= 4f + 3"


def _spec(name: str, factory, params: tuple[str, ...], description: str, **extra) -> StrategySpec:
    return StrategySpec(name, _wrap(factory), params, description, **extra)


SPECS = (
    _spec("fedavg", _fedavg, (), "FedAvg of adapters and head (FedIT)"),
    _spec(
        "fedprox",
        _fedprox,
        ("proximal-mu",),
        "FedAvg + proximal term mu/2 ||w - w_global||^2 in each client's loss",
    ),
    _spec(
        "fedadam",
        _opt(FedAdam, True),
        (*OPT_PARAMS, *MOMENT_PARAMS),
        "FedAvg pseudo-gradient + server Adam (eta, beta-1, beta-2, tau)",
    ),
    _spec(
        "fedyogi",
        _opt(FedYogi, True),
        (*OPT_PARAMS, *MOMENT_PARAMS),
        "FedAvg pseudo-gradient + server Yogi (eta, beta-1, beta-2, tau)",
    ),
    _spec(
        "fedadagrad",
        _opt(FedAdagrad, False),
        OPT_PARAMS,
        "FedAvg pseudo-gradient + server Adagrad (eta, tau)",
    ),
    _spec(
        "fedavgm",
        _fedavgm,
        ("server-learning-rate", "server-momentum"),
        "FedAvg with server momentum",
    ),
    _spec("fedmedian", _fedmedian, (), "coordinate-wise median (robust)"),
    _spec(
        "fedtrimmedavg",
        _fedtrimmedavg,
        ("trim-beta",),
        "coordinate-wise trimmed mean, trim-beta cut at each end (robust)",
    ),
    _spec(
        "krum",
        _krum,
        ("num-malicious-nodes",),
        "Krum: the one update closest to its n-f-2 neighbours (robust)",
        check=_robust_check(_krum_minimum),
    ),
    _spec(
        "multikrum",
        _multikrum,
        ("num-malicious-nodes", "num-nodes-to-select"),
        "Multi-Krum: average of the num-nodes-to-select best Krum scores (robust)",
        check=_robust_check(_krum_minimum),
    ),
    _spec(
        "bulyan",
        _bulyan,
        ("num-malicious-nodes",),
        "Bulyan: Multi-Krum selection + coordinate-wise trimmed median (robust)",
        check=_robust_check(_bulyan_minimum),
    ),
    _spec(
        "qfedavg",
        _qfedavg,
        ("q", "qffl-learning-rate"),
        "q-FedAvg: fairness-weighted by each client's train loss^q",
    ),
)
