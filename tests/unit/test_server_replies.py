"""Replies are matched to the node they answer for, including the SuperLink's own
NODE_UNAVAILABLE error replies (src_node_id = the SuperLink), as built by Flower 1.41."""

from __future__ import annotations

from flwr.app import Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

from rantune.server.replies import replies_by_node
from rantune.simulations.engine.identity import assign_message_id, server_identity


def test_superlink_error_replies_are_attributed_to_the_dead_node():
    # Prepare: two train messages; node 11 answers, node 12 died (the SuperLink answers)
    with server_identity(run_id=1):
        messages = [Message(RecordDict(), dst_node_id=n, message_type="train") for n in (11, 12)]
    for message in messages:
        assign_message_id(message)
    ok = Message(RecordDict({"metrics": MetricRecord({"num-examples": 3})}), reply_to=messages[0])
    dead = create_message_error_unavailable_res_message(messages[1].metadata, "node_unavail")

    # Execute
    by_node = replies_by_node(messages, [ok, dead])

    # Assert
    assert dead.metadata.src_node_id == SUPERLINK_NODE_ID
    assert set(by_node) == {11, 12}
    assert by_node[12].error.code == ErrorCode.NODE_UNAVAILABLE
    assert "heartbeat" in by_node[12].error.reason
    assert by_node[11] is ok
