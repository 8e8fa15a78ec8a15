"""Aggregation strategies: one template, one short module per rule.

>>> from rantune.server.strategies import build_strategy, strategy_names
>>> strategy_names()[:3]
['bulyan', 'fed-sb', 'fedadagrad']
>>> rule = build_strategy(cfg)          # cfg: rantune.federated.run_config.RunConfig

Modules:

- :mod:`~rantune.server.strategies.template`: the :class:`Rule` template (plan,
  combine, keep-local/freeze, checkpoint state, dense deltas) and :class:`LoraRule`;
- :mod:`~rantune.server.strategies.registry`: specs by name, compatibility checks,
  the explicit table of rule modules;
- :mod:`~rantune.server.strategies.flower_adapter`: Flower's own strategies behind the
  template (the only module that relies on how Flower's strategies work inside);
- :mod:`~rantune.server.strategies.flower`: Flower's strategies by name (FedAvg,
  FedProx, FedAdam, ..., Krum, Bulyan, QFedAvg);
- one module per LoRA-aware rule: ``ffa_lora``, ``fedsa_lora``, ``flora``,
  ``hetlora``, ``fedex_lora``, ``fed_sb``, ``lora_fair`` (math in
  :mod:`rantune.aggregation`);
- :mod:`~rantune.server.strategies.hooks`: server-side use of dense deltas.
"""

from rantune.server.strategies.registry import (
    REGISTRY,
    RULE_MODULES,
    StrategySpec,
    build_strategy,
    check_compatible,
    get_spec,
    strategy_names,
    strategy_params,
)
from rantune.server.strategies.template import (
    Combined,
    LoraRule,
    Node,
    Payload,
    Reply,
    Rule,
    aggregate_metrics,
)

__all__ = [
    "REGISTRY",
    "RULE_MODULES",
    "Combined",
    "LoraRule",
    "Node",
    "Payload",
    "Reply",
    "Rule",
    "StrategySpec",
    "aggregate_metrics",
    "build_strategy",
    "check_compatible",
    "get_spec",
    "strategy_names",
    "strategy_params",
]
