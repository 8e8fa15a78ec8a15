"""Shared plumbing of the LoRA-aware strategies (``ffa-lora``, ``fedsa-lora``,
``flora``, ``hetlora``, ``fedex-lora``).

They subclass Flower's ``FedAvg`` for sampling, reply checks and metric
aggregation, and replace what travels and how it is combined with the pure math of
:mod:`rantune.aggregation`. This module gives them:

- :meth:`LoraStrategy.query_nodes`: ask sampled nodes (Flower ``query`` message,
  no arrays) for their partition id and LoRA rank, once per node, so rank-aware
  strategies can send each node tensors of its own rank;
- :meth:`LoraStrategy.message`: one message per node with its own arrays;
- :func:`client_updates` / :func:`to_record`: Flower records <-> ``ClientUpdate``;
- dense-delta bookkeeping (:class:`DenseDeltaMixin`): the cumulative update of the
  frozen base weights that FLoRA and FedEx-LoRA send as ``{prefix}.dense_delta``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import WARNING

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from rantune.aggregation import ClientUpdate
from rantune.aggregation.dense import DENSE_SUFFIX
from rantune.federated.downlink import DENSE_PATTERN
from rantune.federated.messages import (
    ARRAYS,
    CONFIG,
    LORA_RANK,
    NUM_EXAMPLES,
    PARTITION_ID,
    record_to_state,
    state_to_record,
)
from rantune.federated.run_config import RunConfig
from rantune.server.strategies import common_kwargs


def to_record(state: Mapping[str, torch.Tensor | np.ndarray]) -> ArrayRecord:
    """A state of tensors/arrays -> ArrayRecord of float32 numpy arrays (keys sorted)."""
    out = {}
    for key, value in state.items():
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        out[key] = np.asarray(array, dtype=np.float32)
    return state_to_record(out)


def client_updates(replies: Iterable[Message]) -> list[ClientUpdate]:
    """Each reply's ArrayRecord and ``num-examples`` as a :class:`ClientUpdate`
    (client id = its ``partition-id`` when reported, else the node id)."""
    updates = []
    for reply in replies:
        arrays = next(iter(reply.content.array_records.values()))
        metrics = next(iter(reply.content.metric_records.values()))
        cid = metrics.get(PARTITION_ID, reply.metadata.src_node_id)
        state = {
            k: torch.from_numpy(np.array(v, copy=True)) for k, v in record_to_state(arrays).items()
        }
        updates.append(ClientUpdate(state, int(metrics[NUM_EXAMPLES]), int(cid)))
    return updates


class LoraStrategy(FedAvg):
    """FedAvg's sampling and reply handling with per-node payloads.

    Parameters
    ----------
    cfg : the run config (sampling, LoRA settings, seed).
    """

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(**common_kwargs(cfg))
        self.cfg = cfg
        # node id -> (partition id, LoRA rank), from query replies (not checkpointed:
        # node ids may change after a restart, so they are asked again).
        self.node_info: dict[int, tuple[int, int]] = {}

    # ------------------------------------------------------------ messages
    @staticmethod
    def message(
        node_id: int,
        state: Mapping[str, torch.Tensor | np.ndarray],
        config: ConfigRecord,
        message_type: str,
    ) -> Message:
        """A message to one node carrying its own arrays and a copy of ``config``."""
        content = RecordDict({ARRAYS: to_record(state), CONFIG: ConfigRecord(dict(config))})
        return Message(content=content, message_type=message_type, dst_node_id=node_id)

    def query_nodes(self, grid: Grid, node_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        """``{node id: (partition id, rank)}`` for ``node_ids``; unknown nodes are asked
        with a ``query`` message. Nodes that do not answer are left out (logged)."""
        node_ids = list(node_ids)
        unknown = [n for n in node_ids if n not in self.node_info]
        if unknown:
            messages = [
                Message(
                    content=RecordDict({CONFIG: ConfigRecord({})}),
                    message_type=MessageType.QUERY,
                    dst_node_id=n,
                )
                for n in unknown
            ]
            for reply in grid.send_and_receive(messages, timeout=self.cfg.round_timeout):
                node = reply.metadata.src_node_id
                if reply.has_error():
                    log(WARNING, "node %s did not say its LoRA rank: %s", node, reply.error.reason)
                    continue
                metrics = next(iter(reply.content.metric_records.values()), None)
                if metrics is None or LORA_RANK not in metrics:
                    log(WARNING, "node %s answered the rank query without %s", node, LORA_RANK)
                    continue
                self.node_info[node] = (int(metrics[PARTITION_ID]), int(metrics[LORA_RANK]))
        missing = [n for n in node_ids if n not in self.node_info]
        if missing:
            log(WARNING, "left out of this round (no rank known): nodes %s", missing)
        return {n: self.node_info[n] for n in node_ids if n in self.node_info}

    def aggregate_metrics(self, replies: list[Message]) -> MetricRecord:
        return self.train_metrics_aggr_fn([m.content for m in replies], self.weighted_by_key)


class DenseDeltaMixin:
    """Cumulative dense updates of the frozen base weights, ``{prefix: [d_out, d_in]}``
    float64, sent as ``{prefix}.dense_delta`` (float32) and never sent back
    (``freeze_pattern``)."""

    freeze_pattern = DENSE_PATTERN

    def _init_dense(self) -> None:
        self.cumulative: dict[str, np.ndarray] = {}

    def add_dense(self, deltas: Mapping[str, torch.Tensor]) -> None:
        for prefix, delta in deltas.items():
            value = delta.detach().to(torch.float64).numpy()
            self.cumulative[prefix] = (
                self.cumulative[prefix] + value if prefix in self.cumulative else value.copy()
            )

    def dense_state(self) -> dict[str, np.ndarray]:
        """What travels: ``{prefix}.dense_delta`` float32 (empty before the first update)."""
        return {p + DENSE_SUFFIX: v.astype(np.float32) for p, v in self.cumulative.items()}

    def dense_deltas(self) -> dict[str, np.ndarray] | None:
        """The hook read by :mod:`server.strategies.hooks` (float32, as the clients get it)."""
        if not self.cumulative:
            return None
        return {p: v.astype(np.float32) for p, v in self.cumulative.items()}

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        return {f"cumulative/{p}": v for p, v in self.cumulative.items()}, {}

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: dict) -> None:
        self.cumulative = {
            k.removeprefix("cumulative/"): np.asarray(v, dtype=np.float64)
            for k, v in arrays.items()
            if k.startswith("cumulative/")
        }
