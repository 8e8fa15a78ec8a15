"""The Flower internals the in-process engine touches, kept in this one module.

Flower 1.41 builds a ``Message``'s metadata from ``TaskIdentity`` (``run_id``,
``node_id``, ``task_id``), which only Flower's own processes set; and message ids
are assigned by the SuperLink through ``metadata.__dict__["_message_id"]`` (as the
simulation runtime in ``flwr.server.superlink.fleet.vce.vce_api`` does). A unit test
(tests/unit/test_engine_identity.py) pins both behaviours, so a Flower upgrade that
changes them fails there first.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

SERVER_TASK_ID = 1


@contextmanager
def server_identity(run_id: int) -> Iterator[None]:
    """Let this process create server-side messages of run ``run_id``; restores the
    previous identity on exit."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id = SERVER_TASK_ID
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def assign_message_id(message: Message) -> str:
    """Give a message the id a SuperLink would (a fresh uuid4); returns it."""
    message_id = str(uuid.uuid4())
    message.metadata.__dict__["_message_id"] = message_id
    return message_id
