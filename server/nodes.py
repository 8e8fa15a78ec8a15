"""The nodes of a run as the round loop knows them: partition ids, LoRA ranks, waiting.

:class:`NodeDirectory` learns each node's partition id from its replies (and, for
rank-aware rules, asks nodes once for their partition id and LoRA rank with a Flower
``query`` message), names clients in ``history.json`` (the partition id, else
``node-<id>``) and waits until as many nodes are connected as a sampler needs.
Node ids may change after a restart, so nothing here is checkpointed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from logging import INFO, WARNING

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from rantune.federated.messages import CONFIG, LORA_RANK, PARTITION_ID
from rantune.server.replies import replies_by_node
from rantune.server.sampling import Sampler
from rantune.server.strategies.template import Node


def single(records: Mapping) -> object | None:
    """The one record of a RecordDict's records of a kind, or ``None`` unless exactly one."""
    values = list(records.values())
    return values[0] if len(values) == 1 else None


class NodeDirectory:
    """Partition ids and ranks of the nodes of one grid.

    Parameters
    ----------
    grid : the Flower grid of the run.
    timeout : seconds to wait for query replies.
    """

    def __init__(self, grid: Grid, timeout: float) -> None:
        self.grid = grid
        self.timeout = timeout
        self.partition: dict[int, int] = {}  # node id -> partition id
        self.rank: dict[int, int] = {}  # node id -> LoRA rank (query replies)

    def client_id(self, node_id: int) -> str:
        """The client's name in ``history.json``: its partition id, else ``node-<id>``."""
        return str(self.partition[node_id]) if node_id in self.partition else f"node-{node_id}"

    def learn(self, node_id: int, metrics: Mapping | None) -> None:
        """Remember the partition id a reply's metrics report."""
        if metrics is not None and PARTITION_ID in metrics:
            self.partition[node_id] = int(metrics[PARTITION_ID])

    def connected(self, sampler: Sampler) -> list[int]:
        """The connected node ids, sorted, once as many as ``sampler`` needs are there."""
        waited = False
        while True:
            ids = sorted(self.grid.get_node_ids())
            need = sampler.needed(len(ids))
            if len(ids) >= need:
                return ids
            if not waited:
                log(INFO, "waiting for nodes to connect: %d connected, %d needed", len(ids), need)
                waited = True
            time.sleep(1.0)

    def query(self, node_ids: list[int]) -> None:
        """Ask nodes without a known rank for their partition id and rank (``query``)."""
        unknown = [n for n in node_ids if n not in self.rank]
        if not unknown:
            return
        messages = [
            Message(
                content=RecordDict({CONFIG: ConfigRecord({})}),
                message_type=MessageType.QUERY,
                dst_node_id=n,
            )
            for n in unknown
        ]
        replies = self.grid.send_and_receive(messages, timeout=self.timeout)
        for node, reply in replies_by_node(messages, replies).items():
            if reply.has_error():
                log(WARNING, "node %s did not say its LoRA rank: %s", node, reply.error.reason)
                continue
            metrics = single(reply.content.metric_records)
            if metrics is None or LORA_RANK not in metrics:
                log(WARNING, "node %s answered the rank query without %s", node, LORA_RANK)
                continue
            self.learn(node, metrics)
            self.rank[node] = int(metrics[LORA_RANK])
        missing = [n for n in node_ids if n not in self.rank]
        if missing:
            log(WARNING, "left out of this round (no rank known): nodes %s", missing)

    def nodes(self, sampler: Sampler, with_ranks: bool) -> list[Node]:
        """A round's candidates, sorted by node id; ``with_ranks``: only nodes whose rank
        is known (asked first)."""
        ids = self.connected(sampler)
        if with_ranks:
            self.query(ids)
            ids = [n for n in ids if n in self.rank]
        return [Node(n, self.partition.get(n), self.rank.get(n)) for n in ids]
