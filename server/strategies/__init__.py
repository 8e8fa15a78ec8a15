"""Strategies by name: ``strategy.name`` in the run config -> a Flower ``Strategy``.

>>> from server.strategies import build_strategy, strategy_names
>>> strategy_names()[:3]
['bulyan', 'fedadagrad', 'fedadam']
>>> strategy = build_strategy(cfg)          # cfg: rantune.federated.run_config.RunConfig

Adding a strategy: write a factory ``(cfg, params) -> Strategy`` and call
:func:`register` with a :class:`StrategySpec` that names the ``strategy.<param>``
keys it reads; each is declared once, with its default and help, in
:class:`rantune.federated.run_config.StrategySection`.

Optional hooks a strategy object may define (read by ``server/loop.py``):

- ``keep_local_pattern: str`` regex of keys each client keeps between rounds and
  never sends back (personalized evaluation is then requested too);
- ``freeze_pattern: str`` regex of keys clients must not train (and not send back);
- ``state_dict() -> (arrays, meta)`` / ``load_state_dict(arrays, meta)`` for
  checkpoints (otherwise :mod:`server.strategies.state` captures array and scalar
  attributes generically);
- ``dense_deltas() -> {module prefix: [d_out, d_in]} | None``: cumulative dense
  updates of the frozen base weights (FLoRA, FedEx-LoRA), folded in for server-side
  evaluation and saved with the run (:mod:`server.strategies.hooks`).

Modules: :mod:`server.strategies.flower` (Flower's strategies by name),
``ffa_lora``, ``fedsa_lora``, ``flora``, ``hetlora``, ``fedex_lora`` (LoRA-aware,
on :mod:`rantune.aggregation`), ``lora_base`` (their shared plumbing).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedProx, Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from rantune.errors import InputError
from rantune.federated.messages import BOOKKEEPING_METRICS
from rantune.federated.run_config import RunConfig, Scalar, StrategySection
from rantune.schema import kebab

Factory = Callable[[RunConfig, Mapping[str, Scalar]], Strategy]
STRATEGY_PARAMS = {kebab(f.name) for f in fields(StrategySection)} - {"name"}


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy.

    Attributes
    ----------
    name : the ``strategy.name`` value (lower case, kebab).
    factory : builds the strategy from the run config and its ``strategy.*`` params
        (keys without the ``strategy.`` prefix, typed and validated by the schema).
    params : the ``strategy.<param>`` keys it reads; each is a field of
        :class:`rantune.federated.run_config.StrategySection` (default, help, bounds).
    description : one line for ``--help`` and error messages.
    heterogeneous_ranks : whether clients may train different LoRA ranks.
    check : optional ``(cfg, params) -> None`` raising ``InputError`` for options the
        strategy cannot run with (e.g. too few clients for Krum); called before training.
    lora_aware : aggregates LoRA factors with a LoRA-specific rule.
    """

    name: str
    factory: Factory
    params: tuple[str, ...] = ()
    description: str = ""
    heterogeneous_ranks: bool = False
    check: Callable[[RunConfig, Mapping[str, Scalar]], None] | None = None
    lora_aware: bool = False


REGISTRY: dict[str, StrategySpec] = {}


def register(spec: StrategySpec) -> StrategySpec:
    """Add a strategy; every param it reads must be declared in the run-config schema."""
    undeclared = sorted(set(spec.params) - STRATEGY_PARAMS)
    if undeclared:
        raise TypeError(
            f"strategy {spec.name!r} reads strategy.{undeclared} which the run-config schema "
            "does not declare: add a setting to rantune.federated.run_config.StrategySection"
        )
    REGISTRY[spec.name] = spec
    return spec


def strategy_names() -> list[str]:
    return sorted(REGISTRY)


def get_spec(name: str) -> StrategySpec:
    key = name.strip().lower()
    if key not in REGISTRY:
        raise InputError(
            f"strategy {name!r} is unknown: choose one of {', '.join(strategy_names())}"
        )
    return REGISTRY[key]


def strategy_params(cfg: RunConfig) -> dict[str, Scalar]:
    """The chosen strategy's params ``{kebab name: typed value}``."""
    spec = get_spec(cfg.strategy.name)
    return {name: getattr(cfg.strategy, name.replace("-", "_")) for name in spec.params}


def aggregate_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Flower's weighted metric average without the bookkeeping keys (partition-id, lora-r)."""
    result = aggregate_metricrecords(records, weighting_key)
    for key in BOOKKEEPING_METRICS:
        if key in result:
            del result[key]
    return result


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


def check_compatible(cfg: RunConfig, node_ranks: Mapping[int, int] | None = None) -> StrategySpec:
    """Fail before training on an unknown strategy or options it cannot handle."""
    spec = get_spec(cfg.strategy.name)
    params = strategy_params(cfg)
    ranks = set((node_ranks or {}).values()) | set(cfg.lora.client_ranks) | {cfg.lora.r}
    if len(ranks) > 1 and not spec.heterogeneous_ranks:
        aware = [s.name for s in REGISTRY.values() if s.heterogeneous_ranks]
        raise InputError(
            f"strategy {spec.name!r} needs every client to train the same LoRA rank, but node "
            f"configs / lora.client-ranks / lora.r ask for ranks {sorted(ranks)}; choose a "
            f"rank-aware strategy ({', '.join(sorted(aware))}) or one rank for all"
        )
    if spec.check is not None:
        spec.check(cfg, params)
    return spec


def build_strategy(cfg: RunConfig) -> Strategy:
    """The strategy named by ``cfg.strategy.name`` with its hyper-parameters."""
    spec = check_compatible(cfg)
    return spec.factory(cfg, strategy_params(cfg))


def _fedavg(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    return FedAvg(**common_kwargs(cfg))


def _fedprox(cfg: RunConfig, params: Mapping[str, Scalar]) -> Strategy:
    mu = float(params["proximal-mu"])
    if not mu >= 0:
        raise InputError(f"strategy.proximal-mu={mu} is invalid: expected >= 0")
    return FedProx(proximal_mu=mu, **common_kwargs(cfg))


register(StrategySpec("fedavg", _fedavg, (), "FedAvg of adapters and head (FedIT)"))
register(
    StrategySpec(
        "fedprox",
        _fedprox,
        ("proximal-mu",),
        "FedAvg + proximal term mu/2 ||w - w_global||^2 in each client's loss",
    )
)


# Registered on import (each module calls register): Flower's strategies, then the
# LoRA-aware ones.
from rantune.server.strategies import (  # noqa: E402,F401
    fedex_lora,
    fedsa_lora,
    ffa_lora,
    flora,
    flower,
    hetlora,
)
