"""The Flower internals the in-process engine relies on, and the Grid it implements."""

from __future__ import annotations

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from rantune.simulations.engine.grid import FIRST_NODE_ID, InProcessGrid
from rantune.simulations.engine.identity import assign_message_id, server_identity


def test_message_creation_needs_the_task_identity_the_engine_sets():
    # Prepare
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)

    # Execute
    with server_identity(run_id=7):
        message = Message(RecordDict(), dst_node_id=3, message_type=MessageType.TRAIN)
        message_id = assign_message_id(message)

    # Assert: metadata comes from TaskIdentity; the identity is restored afterwards
    assert message.metadata.run_id == 7
    assert message.metadata.src_node_id == SUPERLINK_NODE_ID
    assert message.metadata.message_id == message_id and len(message_id) == 36
    assert (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id) == saved


def _echo(message: Message, context) -> Message:
    config = message.content["config"]
    if config.get("fail"):
        raise RuntimeError("base station offline")
    config["mutated"] = True  # must not leak back into the server's message
    metrics = MetricRecord({"num-examples": 1, "partition-id": context.node_config["partition-id"]})
    context.state["seen"] = ConfigRecord(
        {"count": context.state.get("seen", {"count": 0})["count"] + 1}
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=message)


def test_in_process_grid_delivers_copies_keeps_node_state_and_reports_errors():
    # Prepare
    grid = InProcessGrid(_echo, {}, [{"partition-id": 0}, {"partition-id": 1}], run_id=3)
    with server_identity(3):
        content = RecordDict({"arrays": ArrayRecord(), "config": ConfigRecord({"fail": False})})
        ok = [grid.create_message(content, MessageType.TRAIN, n, "1") for n in grid.get_node_ids()]
        bad = grid.create_message(
            RecordDict({"config": ConfigRecord({"fail": True})}),
            MessageType.TRAIN,
            FIRST_NODE_ID,
            "1",
        )

        # Execute
        replies = list(grid.send_and_receive(ok))
        replies += list(
            grid.send_and_receive([ok[0].__class__(content, FIRST_NODE_ID, MessageType.TRAIN)])
        )
        failed = list(grid.send_and_receive([bad]))

    # Assert
    assert sorted(r.content["metrics"]["partition-id"] for r in replies) == [0, 0, 1]
    assert all(r.metadata.src_node_id in grid.get_node_ids() for r in replies)
    assert "mutated" not in content["config"]
    assert grid.contexts[FIRST_NODE_ID].state["seen"]["count"] == 2
    assert failed[0].has_error()
    assert failed[0].error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "base station offline" in failed[0].error.reason


def test_push_to_unknown_node_fails():
    grid = InProcessGrid(_echo, {}, [{"partition-id": 0}])
    with server_identity(1), pytest.raises(ValueError, match="no node"):
        grid.push_messages([Message(RecordDict(), dst_node_id=99, message_type=MessageType.TRAIN)])
