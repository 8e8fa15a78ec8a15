"""Client side of central DP with client-side clipping: Flower's clipping mods, on demand.

``dp.mode = "client-fixed"`` runs Flower's ``fixedclipping_mod`` and
``"client-adaptive"`` its ``adaptiveclipping_mod`` around the train handler: the
update (reply minus the arrays received) is clipped to the L2 norm the server's
DP wrapper put in the train config (``clipping_norm``) *before* it leaves the base
station; the adaptive mod also reports whether it clipped (``norm_bit``). Any other
mode, and every evaluate/query message, passes through untouched, so the shipped
ClientApp serves DP and non-DP runs alike.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

DP_MODE_KEY = "dp.mode"


def is_train(message: Message) -> bool:
    """Whether a message asks for training (``train`` or ``train.<action>``)."""
    return message.metadata.message_type.split(".")[0] == MessageType.TRAIN


def dp_clipping_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Clip the outgoing update when the run config asks for client-side DP clipping."""
    if not is_train(message):
        return call_next(message, context)
    mode = str(context.run_config.get(DP_MODE_KEY, "none")).strip().lower()
    if mode == "client-fixed":
        return fixedclipping_mod(message, context, call_next)
    if mode == "client-adaptive":
        return adaptiveclipping_mod(message, context, call_next)
    return call_next(message, context)
