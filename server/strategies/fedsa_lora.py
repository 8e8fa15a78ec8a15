"""``fedsa-lora``: FedSA-LoRA (Guo et al. 2025): A shared and averaged, B kept local.

Each client keeps its ``lora_B`` (and the head when ``strategy.fedsa-share-head`` is
false) in its node state across rounds (``keep_local``) and never sends it; the
server averages A (+ head) only and never sends B either. Evaluation is
personalized: each client reports its own model (global A + its own B) as
``personalized-<metric>`` next to the global model (A + head with B at its zero
init). Upload and download are A (+ head): about half of FedIT's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rantune.aggregation import fedsa_aggregate
from rantune.federated.messages import HEAD_PREFIX, select_keys
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.strategies.registry import StrategySpec
from rantune.server.strategies.template import (
    Combined,
    LoraRule,
    Node,
    Payload,
    Reply,
    State,
    float32,
    train_metrics,
)

LOCAL_B = r"\.lora_B\.weight$"
LOCAL_B_AND_HEAD = r"\.lora_B\.weight$|^" + HEAD_PREFIX.replace(".", r"\.")


class FedSALoRA(LoraRule):
    """FedSA-LoRA: only the shared part (A, + head) travels."""

    def __init__(self, cfg: RunConfig, share_head: bool = True) -> None:
        super().__init__(cfg)
        self.share_head = bool(share_head)
        self.keep_local = LOCAL_B if self.share_head else LOCAL_B_AND_HEAD

    def payload(self, server_round: int, phase: str, node: Node, state: State) -> Payload:
        local = select_keys(state, self.keep_local)
        return Payload(float32({k: v for k, v in state.items() if k not in local}))

    def combine(self, server_round: int, replies: Sequence[Reply], state: State) -> Combined:
        shared = fedsa_aggregate(self.updates(replies), share_head=self.share_head)
        return Combined(float32(shared), train_metrics(replies))


def _factory(cfg: RunConfig, params: Mapping[str, Scalar]) -> FedSALoRA:
    return FedSALoRA(cfg, bool(params["fedsa-share-head"]))


SPECS = (
    StrategySpec(
        "fedsa-lora",
        _factory,
        ("fedsa-share-head",),
        "FedSA-LoRA: lora_A (+ head) averaged, lora_B kept on each client (personalized)",
        lora_aware=True,
    ),
)
