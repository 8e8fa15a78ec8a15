"""A Flower ``Grid`` that runs the ClientApp in this process or on a worker pool: no SuperLink, no Ray.

Each node keeps its own ``Context`` (``node_config`` with ``partition-id`` /
``num-partitions``, and a persistent ``state``) for the whole run, as a SuperNode
would; a node's context is created when it receives its first message (a large
federation of which a few nodes are sampled per round costs only those), and every
context shares one copy of the run config. Messages are delivered as copies (a
client never sees the server's objects). A ClientApp that raises yields an error
reply, as in Flower's simulation runtime; a reply whose call took longer than the
``send_and_receive`` timeout is dropped (each call is timed on its own, as if all
nodes worked in parallel). With a :class:`~rantune.simulations.engine.pool.WorkerPool`
the calls of one ``send_and_receive`` run on its worker processes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from rantune.errors import InputError
from rantune.simulations.engine.identity import assign_message_id
from rantune.simulations.engine.pool import Delivery, WorkerPool, call_client

ClientCallable = Callable[[Message, Context], Message]
FIRST_NODE_ID = 10_000


def copy_content(content: RecordDict) -> RecordDict:
    """A structural copy of a RecordDict (Array payloads are immutable bytes: shared)."""
    records = {}
    for key, record in content.items():
        if isinstance(record, ArrayRecord):
            records[key] = ArrayRecord({k: v for k, v in record.items()})
        elif isinstance(record, MetricRecord):
            records[key] = MetricRecord(copy.deepcopy(dict(record)))
        elif isinstance(record, ConfigRecord):
            records[key] = ConfigRecord(copy.deepcopy(dict(record)))
        else:  # pragma: no cover - Flower has no other record types in 1.41
            records[key] = copy.deepcopy(record)
    return RecordDict(records)


class InProcessGrid(Grid):
    """Runs ``client_app(message, context)`` for every message pushed to a node.

    Parameters
    ----------
    client_app : a ``ClientApp`` (or any ``(Message, Context) -> Message`` callable).
    run_config : the flat run config every node's context carries.
    node_configs : one node config per node (``partition-id``, ``num-partitions``, ...).
    run_id : the run id used in message metadata.
    pool : run the calls on these worker processes (they load the ClientApp
        themselves; ``client_app`` is then not called here).
    """

    def __init__(
        self,
        client_app: ClientCallable,
        run_config: Mapping[str, object],
        node_configs: list[dict],
        run_id: int = 1,
        pool: WorkerPool | None = None,
    ) -> None:
        self.client_app = client_app
        self.pool = pool
        self._run = Run.create_empty(run_id)
        self._run_config = dict(run_config)
        self._node_configs = {FIRST_NODE_ID + i: c for i, c in enumerate(node_configs)}
        self.contexts: dict[int, Context] = {}
        self._pending: dict[str, Message] = {}
        self._replies: dict[str, Message] = {}
        self.client_seconds = 0.0
        self.calls = 0

    def context(self, node_id: int) -> Context:
        """The node's context, created on its first use (kept for the whole run)."""
        if node_id not in self.contexts:
            self.contexts[node_id] = Context(
                run_id=self._run.run_id,
                node_id=node_id,
                node_config=dict(self._node_configs[node_id]),
                state=RecordDict(),
                run_config=self._run_config,
            )
        return self.contexts[node_id]

    # --------------------------------------------------------------- Grid API
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._node_configs)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            if message.metadata.dst_node_id not in self._node_configs:
                raise InputError(f"no node {message.metadata.dst_node_id} in this grid")
            message_id = assign_message_id(message)
            self._pending[message_id] = message
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver each message, as if all nodes worked in parallel: a reply is kept when
        its own node answered within ``timeout`` seconds."""
        ids = list(self.push_messages(messages))
        inbound = [self._inbound(self._pending.pop(i)) for i in ids]
        if self.pool is not None and len(inbound) > 1:
            timed = self._on_pool(inbound)
        else:
            timed = [self.deliver_timed(message) for message in inbound]
        for message_id, (reply, seconds) in zip(ids, timed, strict=True):
            self.client_seconds += seconds
            self.calls += 1
            assign_message_id(reply)
            if timeout is None or seconds <= timeout:
                self._replies[message_id] = reply
        return self.pull_messages(ids)

    # --------------------------------------------------------------- delivery
    @staticmethod
    def _inbound(message: Message) -> Message:
        """The copy of a message a client receives."""
        return Message(content=copy_content(message.content), metadata=copy.copy(message.metadata))

    def deliver_timed(self, message: Message) -> tuple[Message, float]:
        """Run the ClientApp of the message's node here; returns the reply and the
        call's seconds (errors -> error reply)."""
        context = self.context(message.metadata.dst_node_id)
        start = time.monotonic()
        reply = call_client(self.client_app, message, context)
        return reply, time.monotonic() - start

    def _on_pool(self, inbound: list[Message]) -> list[tuple[Message, float]]:
        """Run the messages on the worker pool; the nodes' states come back with them."""
        deliveries = []
        for message in inbound:
            context = self.context(message.metadata.dst_node_id)
            deliveries.append(
                Delivery(context.node_id, context.node_config, context.state, message)
            )
        results = []
        for delivery, outcome in zip(deliveries, self.pool.run(deliveries), strict=True):
            self.contexts[delivery.node_id].state = outcome.state
            results.append((outcome.reply, outcome.seconds))
        return results
