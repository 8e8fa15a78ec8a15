"""Strategies by name: ``strategy.name`` -> a :class:`~rantune.server.strategies.template.Rule`.

Each rule module declares its :class:`StrategySpec` s in a module-level ``SPECS``
tuple; :data:`RULE_MODULES` lists those modules explicitly, and they are imported on
the first look-up (nothing depends on import order or on a package ``__init__``).
Adding a rule: write its module (one :class:`Rule` subclass + ``SPECS``), add the
module name here, and declare every ``strategy.<param>`` it reads as a setting of
:class:`rantune.federated.run_config.StrategySection` (and in ``pyproject.toml``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from functools import cache
from typing import TYPE_CHECKING

from rantune.errors import InputError
from rantune.federated.run_config import RunConfig, Scalar, StrategySection
from rantune.schema import kebab

if TYPE_CHECKING:
    from rantune.server.strategies.template import Rule

RULE_MODULES = (
    "flower",
    "ffa_lora",
    "fedsa_lora",
    "flora",
    "hetlora",
    "fedex_lora",
    "fed_sb",
    "lora_fair",
)
"""Modules of :mod:`rantune.server.strategies` whose ``SPECS`` are registered."""

Factory = Callable[[RunConfig, Mapping[str, Scalar]], "Rule"]
STRATEGY_PARAMS = {kebab(f.name) for f in fields(StrategySection)} - {"name"}


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy.

    Attributes
    ----------
    name : the ``strategy.name`` value (lower case, kebab).
    factory : builds the rule from the run config and its ``strategy.*`` params (keys
        without the prefix, typed and validated by the schema).
    params : the ``strategy.<param>`` keys it reads; each a field of ``StrategySection``.
    description : one line for ``--help`` and error messages.
    heterogeneous_ranks : clients may train different LoRA ranks.
    check : optional ``(cfg, params) -> None`` raising ``InputError`` for options the
        rule cannot run with; called before training.
    lora_aware : aggregates LoRA factors with a LoRA-specific rule.
    reinitializes_adapters : clients start every round from freshly initialised
        adapters (error feedback of compressed updates is then meaningless).
    """

    name: str
    factory: Factory
    params: tuple[str, ...] = ()
    description: str = ""
    heterogeneous_ranks: bool = False
    check: Callable[[RunConfig, Mapping[str, Scalar]], None] | None = None
    lora_aware: bool = False
    reinitializes_adapters: bool = False

    def __post_init__(self) -> None:
        undeclared = sorted(set(self.params) - STRATEGY_PARAMS)
        if undeclared:
            raise TypeError(
                f"strategy {self.name!r} reads strategy.{undeclared} which the run-config "
                "schema does not declare: add a setting to "
                "rantune.federated.run_config.StrategySection"
            )


@cache
def _load() -> dict[str, StrategySpec]:
    specs: dict[str, StrategySpec] = {}
    for module in RULE_MODULES:
        for spec in importlib.import_module(f"rantune.server.strategies.{module}").SPECS:
            if spec.name in specs:
                raise TypeError(f"strategy {spec.name!r} is registered twice ({module})")
            specs[spec.name] = spec
    return specs


class _Registry(Mapping[str, StrategySpec]):
    """Read-only ``{name: StrategySpec}`` over :data:`RULE_MODULES` (loaded on first use)."""

    def __getitem__(self, name: str) -> StrategySpec:
        return _load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_load())

    def __len__(self) -> int:
        return len(_load())


REGISTRY: Mapping[str, StrategySpec] = _Registry()


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
    if spec.reinitializes_adapters and cfg.compression.error_feedback:
        raise InputError(
            f"update-compression.error-feedback=true cannot be used with strategy "
            f"{spec.name!r}: its clients start every round from freshly initialised adapters, "
            "so the residual carried over from the previous round belongs to adapters that no "
            "longer exist and adding it makes the update error larger; set "
            "update-compression.error-feedback=false or choose another strategy"
        )
    if spec.check is not None:
        spec.check(cfg, params)
    return spec


def build_strategy(cfg: RunConfig) -> Rule:
    """The rule named by ``cfg.strategy.name`` with its hyper-parameters."""
    spec = check_compatible(cfg)
    return spec.factory(cfg, strategy_params(cfg))
