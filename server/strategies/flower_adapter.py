"""Flower's own strategies (``flwr.serverapp.strategy``) behind the rantune template.

:class:`FlowerRule` runs any message-API Flower strategy (FedAvg, FedProx, the FedOpt
family, robust rules, QFedAvg, the DP wrappers) as a
:class:`~rantune.server.strategies.template.Rule`:

- ``payloads``: the loop's sampler picks the nodes; the strategy's own
  ``configure_train`` / ``configure_evaluate`` builds the round's content (its
  arrays and config: ``server-round``, FedProx's ``proximal-mu``, the DP wrappers'
  clipping norm; FedOpt and QFedAvg remember the arrays for their update). It is
  given a grid that only lists the connected nodes, and the nodes it samples
  itself are not used: every Flower strategy gives all its messages one shared
  content, which each sampled node receives.
- ``combine``: the strategy's own ``aggregate_train`` on the sound replies.
- checkpoints: the strategy's array and scalar attributes, captured generically
  (``current_arrays``, ``m_t``, ``v_t``, ``momentum_vector``, ...).

This is the only module that relies on how Flower's strategies work inside (the
shared content, that ``configure_*`` only asks the grid for node ids, the
attributes holding their state); ``tests/unit/test_strategies_template.py`` pins
each of these, so a Flower upgrade that changes one fails there first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from rantune.federated.messages import record_to_state, state_to_record
from rantune.server.strategies import template
from rantune.server.strategies.template import Combined, Payload, Reply, Rule, State

SCALARS = (bool, int, float, str, type(None))


class NodeList(Grid):
    """The grid a Flower strategy's ``configure_*`` sees: the connected node ids, nothing
    else (no message goes through it)."""

    def __init__(self, node_ids: Iterable[int]) -> None:
        self._ids = list(node_ids)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._ids)

    def _refuse(self, *args, **kwargs):
        raise RuntimeError(
            "a Flower strategy tried to send messages while rantune's round loop planned "
            "a round; only get_node_ids is available here"
        )

    set_run = create_message = push_messages = pull_messages = send_and_receive = _refuse

    @property
    def run(self):
        return self._refuse()


def _single(records: Mapping) -> object | None:
    values = list(records.values())
    return values[0] if len(values) == 1 else None


def round_payload(
    strategy: Strategy, server_round: int, phase: str, node_ids: Sequence[int], state: State
) -> Payload | None:
    """The content ``strategy`` builds for this round's ``phase`` (arrays + its config
    keys), or ``None`` when it configures no node (e.g. ``fraction_train = 0``)."""
    configure = strategy.configure_train if phase == template.TRAIN else strategy.configure_evaluate
    messages = list(
        configure(server_round, state_to_record(state), ConfigRecord({}), NodeList(node_ids))
    )
    if not messages:
        return None
    if len({id(m.content) for m in messages}) != 1:
        raise RuntimeError(
            f"{type(strategy).__name__}.configure_{phase} built a different content per node; "
            "rantune's FlowerRule expects one shared content per round"
        )
    content: RecordDict = messages[0].content
    arrays, config = _single(content.array_records), _single(content.config_records)
    return Payload(
        record_to_state(arrays) if arrays is not None else {},
        dict(config) if config is not None else {},
    )


def capture_state(obj: object) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` of an object's array and scalar attributes: ``ArrayRecord``,
    ``dict[str, ndarray]``, ``list[ndarray]`` and ``ndarray`` values as arrays,
    ``bool/int/float/str/None`` values as scalars (functions and other objects are
    left alone)."""
    arrays: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    scalars: dict[str, object] = {}
    for name, value in vars(obj).items():
        if isinstance(value, ArrayRecord):
            kinds[name] = "arrayrecord"
            arrays.update({f"{name}/{k}": v.numpy() for k, v in value.items()})
        elif isinstance(value, np.ndarray):
            kinds[name] = "ndarray"
            arrays[name] = value
        elif (
            isinstance(value, dict)
            and value
            and all(isinstance(v, np.ndarray) for v in value.values())
        ):
            kinds[name] = "dict"
            arrays.update({f"{name}/{k}": v for k, v in value.items()})
        elif isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
            kinds[name] = "list"
            arrays.update({f"{name}/{i}": v for i, v in enumerate(value)})
        elif isinstance(value, SCALARS):
            scalars[name] = value
    return arrays, {"kinds": kinds, "scalars": scalars}


def restore_state(obj: object, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
    """Restore what :func:`capture_state` captured."""
    for name, value in (meta.get("scalars") or {}).items():
        setattr(obj, name, value)
    for name, kind in (meta.get("kinds") or {}).items():
        prefix = f"{name}/"
        parts = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
        if kind == "ndarray":
            setattr(obj, name, arrays[name])
        elif kind == "arrayrecord":
            setattr(obj, name, ArrayRecord({k: Array(np.asarray(v)) for k, v in parts.items()}))
        elif kind == "dict":
            setattr(obj, name, dict(parts))
        elif kind == "list":
            setattr(obj, name, [parts[str(i)] for i in range(len(parts))])


class FlowerRule(Rule):
    """A Flower strategy as a rantune rule (see the module docstring).

    Parameters
    ----------
    strategy : a ``flwr.serverapp.strategy.Strategy``.
    keep_local, freeze : optional patterns (see :class:`Rule`).
    """

    def __init__(self, strategy: Strategy, keep_local: str = "", freeze: str = "") -> None:
        self.strategy = strategy
        self.keep_local = keep_local
        self.freeze = freeze

    def __repr__(self) -> str:
        return f"FlowerRule({type(self.strategy).__name__})"

    def payloads(self, rnd: template.Round, chosen: Sequence[template.Node]) -> dict[int, Payload]:
        """The strategy's one content of the round, for each of the ``chosen`` nodes."""
        if not chosen:
            return {}
        node_ids = [n.node_id for n in rnd.nodes]
        payload = round_payload(self.strategy, rnd.number, rnd.phase, node_ids, rnd.state)
        return {} if payload is None else {n.node_id: payload for n in chosen}

    def combine(self, server_round: int, replies: Sequence[Reply], state: State) -> Combined:
        arrays, metrics = self.strategy.aggregate_train(server_round, [r.message for r in replies])
        return Combined(
            record_to_state(arrays) if arrays is not None else None, template.plain_metrics(metrics)
        )

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        return capture_state(self.strategy)

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
        restore_state(self.strategy, arrays, meta)


def as_rule(strategy: Rule | Strategy) -> Rule:
    """``strategy`` itself when it is a rule, else a bare Flower strategy as a FlowerRule."""
    return strategy if isinstance(strategy, Rule) else FlowerRule(strategy)
