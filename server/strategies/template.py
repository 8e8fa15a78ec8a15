"""The one template every aggregation rule implements (Flower's own strategies through
:class:`rantune.server.strategies.flower_adapter.FlowerRule`).

A rule answers four questions for the round loop (:mod:`rantune.server.loop`), with
typed methods instead of optional attributes:

=========================  ==============================================================
what each node receives    :meth:`Rule.plan` ``(Round, sampler) -> {node id: Payload}``:
                           the nodes the loop's sampler draws (:meth:`Rule.draw`; seeded,
                           or the OS CSPRNG under DP), each with :meth:`Rule.payload`
how replies combine        :meth:`Rule.combine` ``(round, replies, state) -> Combined``
                           (pure math in :mod:`rantune.aggregation`)
what stays on the clients  :attr:`Rule.keep_local` (regex: kept between rounds, never
                           sent back; evaluation is then personalized) and
                           :attr:`Rule.freeze` (regex: not trained, not sent back)
what is checkpointed       :meth:`Rule.state_dict` / :meth:`Rule.load_state_dict`
=========================  ==============================================================

plus :meth:`Rule.dense_deltas` (cumulative dense updates of the frozen base weights,
folded in for server-side evaluation and saved with the run) and
:meth:`Rule.round_skipped` (a training round that produced no aggregate).
:class:`LoraRule` adds what the LoRA-aware rules share: the run's LoRA settings, the
replies as data-weighted :class:`rantune.aggregation.ClientUpdate` s and
:meth:`LoraRule.aggregate` (the rule's math); :class:`DenseLoraRule` the cumulative
dense update (FLoRA, FedEx-LoRA).

States are ``{trainable_state key: ndarray}`` (numpy on the wire side; the math
converts to torch). A rule never builds Flower messages: the loop does, with the
payload's arrays and config merged over the round's train/evaluate config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from rantune.aggregation import ClientUpdate, CumulativeDelta
from rantune.federated.downlink import DENSE_PATTERN
from rantune.federated.messages import BOOKKEEPING_METRICS, NUM_EXAMPLES
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.sampling import Sampler

State = dict[str, np.ndarray]
TRAIN, EVALUATE = MessageType.TRAIN, MessageType.EVALUATE


@dataclass(frozen=True)
class Node:
    """A connected node as the loop knows it.

    Attributes
    ----------
    node_id : Flower's node id.
    partition_id : the base station (partition) it serves, once known (``None`` before
        its first reply, unless the rule asked: :attr:`Rule.needs_ranks`).
    rank : its LoRA rank (only filled for rules with :attr:`Rule.needs_ranks`).
    """

    node_id: int
    partition_id: int | None = None
    rank: int | None = None


@dataclass(frozen=True)
class Round:
    """What a rule plans from.

    Attributes
    ----------
    number : the server round (1-based).
    phase : ``"train"`` or ``"evaluate"``.
    nodes : the candidate nodes (connected; sorted by node id).
    state : the global state ``{key: ndarray}``.
    """

    number: int
    phase: str
    nodes: Sequence[Node]
    state: State


@dataclass(frozen=True)
class Payload:
    """What one node receives.

    Attributes
    ----------
    arrays : ``{key: ndarray}`` that travel (adapters, head, ``{prefix}.dense_delta``, R).
    config : the rule's own config keys (e.g. ``lora-a-seed``), merged over the round's
        config by the loop.
    """

    arrays: State
    config: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """One sound training reply (after decoding and the loop's gate).

    Attributes
    ----------
    node_id : the node that answered.
    client_id : its partition id (the node id when it did not report one).
    state : the decoded update ``{key: ndarray}`` (exactly the keys expected back).
    metrics : the reply's metrics (``num-examples`` > 0 among them).
    message : the reply itself, content replaced by ``state`` + ``metrics`` (what
        Flower's strategies aggregate).
    """

    node_id: int
    client_id: int
    state: State
    metrics: Mapping[str, Scalar]
    message: Message

    @property
    def num_examples(self) -> int:
        return int(self.metrics[NUM_EXAMPLES])


@dataclass(frozen=True)
class Combined:
    """A rule's aggregate: the new global tensors (a subset of the global state's keys,
    same shapes; ``None`` keeps the global state) and the round's train metrics."""

    state: State | None = None
    metrics: dict[str, Scalar] | None = None


def aggregate_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Flower's weighted metric average without the bookkeeping keys (partition-id, lora-r)."""
    result = aggregate_metricrecords(records, weighting_key)
    for key in BOOKKEEPING_METRICS:
        if key in result:
            del result[key]
    return result


def plain_metrics(metrics: Mapping | None) -> dict | None:
    """A MetricRecord as a JSON-able dict (lists for array metrics); ``None`` stays ``None``."""
    if metrics is None:
        return None
    return {k: (v if isinstance(v, int | float) else list(v)) for k, v in dict(metrics).items()}


def train_metrics(replies: Sequence[Reply]) -> dict[str, Scalar]:
    """The replies' train metrics averaged by ``num-examples`` (bookkeeping keys dropped)."""
    return plain_metrics(aggregate_metrics([r.message.content for r in replies], NUM_EXAMPLES))


def float32(state: Mapping[str, np.ndarray | torch.Tensor]) -> State:
    """``{key: float32 ndarray}`` (torch tensors detached and converted)."""
    out = {}
    for key, value in state.items():
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        out[key] = np.asarray(array, dtype=np.float32)
    return out


class Rule(ABC):
    """An aggregation rule (see the module docstring).

    Class attributes
    ----------------
    keep_local : regex of keys clients keep between rounds and never send back.
    freeze : regex of keys clients must not train (and do not send back).
    needs_ranks : the loop asks nodes their partition id and LoRA rank before
        :meth:`plan` (rank-aware rules: payloads of each node's rank).
    """

    keep_local: str = ""
    freeze: str = ""
    needs_ranks: bool = False

    @property
    def personalized(self) -> bool:
        """Clients evaluate their own kept tensors too (``personalized-<metric>``)."""
        return bool(self.keep_local)

    def plan(self, rnd: Round, sampler: Sampler) -> dict[int, Payload]:
        """``{node id: payload}`` for the round's phase: :meth:`payloads` of the nodes
        :meth:`draw` picks."""
        return self.payloads(rnd, self.draw(rnd, sampler))

    def draw(self, rnd: Round, sampler: Sampler) -> list[Node]:
        """The nodes taking part: the loop's ``sampler`` draws them from ``rnd.nodes``."""
        return sampler.draw(rnd.number, rnd.nodes)

    def payloads(self, rnd: Round, chosen: Sequence[Node]) -> dict[int, Payload]:
        """``{node id: payload}`` of the ``chosen`` nodes (default: :meth:`payload` each)."""
        return {n.node_id: self.payload(rnd, n) for n in chosen}

    def payload(self, rnd: Round, node: Node) -> Payload:
        """What ``node`` receives (default: the whole global state, as FedIT)."""
        return Payload(dict(rnd.state))

    @abstractmethod
    def combine(self, server_round: int, replies: Sequence[Reply], state: State) -> Combined:
        """The round's aggregate from the sound replies (at least ``min-train-clients``)."""

    def aggregate_evaluate(self, server_round: int, replies: Sequence[Message]) -> dict | None:
        """Weighted (``num-examples``) mean of the evaluation metrics."""
        if not replies:
            return None
        return plain_metrics(aggregate_metrics([m.content for m in replies], NUM_EXAMPLES))

    def round_skipped(self, server_round: int, num_sampled: int) -> dict[str, Scalar]:
        """Called when a training round produced no aggregate (too few sound updates);
        returns extra train metrics for the round's record (default none)."""
        return {}

    def dense_deltas(self) -> dict[str, np.ndarray] | None:
        """``{module prefix: [d_out, d_in]}`` cumulative dense update of the frozen base
        weights (float32), or ``None`` when the rule has none."""
        return None

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(arrays, JSON-able meta)`` to checkpoint (default: nothing)."""
        return {}, {}

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
        """Restore what :meth:`state_dict` returned (default: nothing to restore)."""
        del arrays, meta


class LoraRule(Rule):
    """Base of the LoRA-aware rules: the run's LoRA settings and seed; :meth:`combine`
    is :meth:`aggregate` of the replies as :class:`ClientUpdate` s (torch tensors,
    data-size weights), sent on as float32 with the examples-weighted train metrics."""

    def __init__(self, cfg: RunConfig) -> None:
        self.lora = cfg.lora
        self.seed = cfg.seed

    @classmethod
    def from_config(cls, cfg: RunConfig, params: Mapping[str, Scalar]) -> LoraRule:
        """The factory of its :class:`StrategySpec` (rules with params override it)."""
        return cls(cfg)

    @abstractmethod
    def aggregate(self, updates: list[ClientUpdate], state: State) -> Mapping[str, object]:
        """The new global tensors (``{key: tensor}``) from the round's client updates."""

    def combine(self, server_round: int, replies: Sequence[Reply], state: State) -> Combined:
        updates = [
            ClientUpdate(
                {k: torch.from_numpy(np.array(v, copy=True)) for k, v in r.state.items()},
                r.num_examples,
                r.client_id,
            )
            for r in replies
        ]
        return Combined(float32(self.aggregate(updates, state)), train_metrics(replies))


class DenseLoraRule(LoraRule):
    """A LoRA rule that also folds a cumulative dense update into the frozen base weights
    (FLoRA, FedEx-LoRA): :attr:`cumulative` travels as ``{prefix}.dense_delta``, is never
    sent back (``freeze``), is folded in for server-side evaluation and checkpointed."""

    freeze = DENSE_PATTERN

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.cumulative = CumulativeDelta()

    def dense_deltas(self) -> dict[str, np.ndarray] | None:
        return self.cumulative.deltas()

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        return self.cumulative.state_dict(), {}

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
        self.cumulative.load_state_dict(arrays)
