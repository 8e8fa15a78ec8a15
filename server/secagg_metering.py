"""Byte and time metering of every message a Grid carries, per node and protocol stage.

:class:`MeteringGrid` wraps any Flower ``Grid``; the SecAgg+ round runner uses it
to report bytes and seconds per SecAgg+ stage (``setup``, ``share_keys``,
``collect_masked_vectors``, ``unmask``; other messages by their message type), and
the privacy benchmark wraps plain and SecAgg+ runs alike so both are counted the
same way: every record of every message (arrays, configs, metrics), both directions.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

from flwr.app import Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.serverapp import Grid

from rantune.federated.messages import record_bytes
from rantune.server.replies import replies_by_node


def message_bytes(message: Message) -> int:
    """Bytes of every record of a message (arrays, metrics, configs; each by
    :func:`rantune.federated.messages.record_bytes`); 0 for an error."""
    if not message.has_content():
        return 0
    return sum(record_bytes(record) for record in message.content.values())


def _stage(message: Message) -> str:
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is not None and Key.STAGE in configs:
        return str(configs[Key.STAGE])
    return message.metadata.message_type


class MeteringGrid(Grid):
    """Delegates to a Grid and counts, per node and stage, the bytes of every message.

    ``down[node]``/``up[node]``: bytes sent to / received from a node since
    :meth:`reset`; ``stages[stage]``: ``{"bytes-down", "bytes-up", "seconds"}``;
    ``errors[node]``: the last error reply's reason, with its stage.
    """

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.reset()

    def reset(self) -> None:
        self.down: dict[int, int] = defaultdict(int)
        self.up: dict[int, int] = defaultdict(int)
        self.stages: dict[str, dict[str, float]] = {}
        self.errors: dict[int, str] = {}
        self.replied: dict[int, list[str]] = defaultdict(list)

    def set_run(self, run) -> None:
        self._grid.set_run(run)

    @property
    def run(self):
        return self._grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def push_messages(self, messages):
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if not messages:
            return []
        stage = _stage(messages[0])
        totals = self.stages.setdefault(stage, {"bytes-down": 0, "bytes-up": 0, "seconds": 0.0})
        for message in messages:
            size = message_bytes(message)
            self.down[message.metadata.dst_node_id] += size
            totals["bytes-down"] += size
        start = time.perf_counter()
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        totals["seconds"] += time.perf_counter() - start
        by_node = replies_by_node(messages, replies)
        for message in messages:
            node = message.metadata.dst_node_id
            reply = by_node.get(node)
            if reply is None:
                self.errors.setdefault(
                    node, f"SecAgg+ stage {stage}: no reply within round-timeout"
                )
            elif reply.has_error():
                self.errors[node] = f"SecAgg+ stage {stage}: {reply.error.reason}"
            else:
                size = message_bytes(reply)
                self.up[node] += size
                totals["bytes-up"] += size
                self.replied[node].append(stage)
        return replies
