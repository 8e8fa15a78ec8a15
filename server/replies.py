"""Match replies to the nodes they answer for, including the SuperLink's error replies.

When a SuperNode stops sending heartbeats, Flower 1.41's SuperLink answers the
messages still addressed to it with an error reply of its own
(``NODE_UNAVAILABLE``), whose ``src_node_id`` is the SuperLink's id, not the
node's. Keying replies by ``src_node_id`` would then report the node as "no reply"
and lose the reason. Every reply carries ``reply_to_message_id``: the id the Grid
gave the message it answers (set on the message object by ``push_messages``).
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message


def replies_by_node(messages: Iterable[Message], replies: Iterable[Message]) -> dict[int, Message]:
    """``{destination node id: its reply}`` for the messages that got one."""
    node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
    by_node: dict[int, Message] = {}
    for reply in replies:
        node = node_of.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        by_node[node] = reply
    return by_node
