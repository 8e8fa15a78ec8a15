"""A Flower ``Grid`` that runs the ClientApp in this process: no SuperLink, no Ray.

Each node keeps its own ``Context`` (``node_config`` with ``partition-id`` /
``num-partitions``, and a persistent ``state``) for the whole run, as a SuperNode
would. Messages are delivered as copies (a client never sees the server's
objects). A ClientApp that raises yields an error reply, as in Flower's
simulation runtime; a reply that arrives after the ``send_and_receive`` timeout is
dropped (clients run sequentially, so the timeout is checked after each call).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from rantune.errors import InputError
from rantune.simulations.engine.identity import assign_message_id

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
    """

    def __init__(
        self,
        client_app: ClientCallable,
        run_config: Mapping[str, object],
        node_configs: list[dict],
        run_id: int = 1,
    ) -> None:
        self.client_app = client_app
        self._run = Run.create_empty(run_id)
        self.contexts: dict[int, Context] = {
            FIRST_NODE_ID + i: Context(
                run_id=run_id,
                node_id=FIRST_NODE_ID + i,
                node_config=dict(node_config),
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i, node_config in enumerate(node_configs)
        }
        self._pending: dict[str, Message] = {}
        self._replies: dict[str, Message] = {}
        self.client_seconds = 0.0
        self.calls = 0

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
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            if message.metadata.dst_node_id not in self.contexts:
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
        for message_id in ids:
            message = self._pending.pop(message_id)
            start = time.monotonic()
            reply = self.deliver(message)
            if timeout is None or time.monotonic() - start <= timeout:
                self._replies[message_id] = reply
        return self.pull_messages(ids)

    # --------------------------------------------------------------- delivery
    def deliver(self, message: Message) -> Message:
        """Run the ClientApp of the message's node on a copy of it; errors -> error reply."""
        context = self.contexts[message.metadata.dst_node_id]
        inbound = Message(
            content=copy_content(message.content), metadata=copy.copy(message.metadata)
        )
        start = time.perf_counter()
        try:
            reply = self.client_app(inbound, context)
            if not isinstance(reply, Message):
                raise TypeError(f"ClientApp returned {type(reply).__name__}, not a Message")
        except Exception as err:  # noqa: BLE001 - reported to the server like Flower does
            reason = f"{type(err)}:<'{err}'>"
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=inbound
            )
        finally:
            self.client_seconds += time.perf_counter() - start
            self.calls += 1
        assign_message_id(reply)
        return reply
