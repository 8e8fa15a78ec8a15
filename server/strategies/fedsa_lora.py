"""``fedsa-lora``: FedSA-LoRA (Guo et al. 2025): A shared and averaged, B kept local.

Each client keeps its ``lora_B`` (and the head when ``strategy.fedsa-share-head`` is
false) in its node state across rounds (``keep_local``) and never sends it; the
server averages A (+ head) only and never sends B either. Evaluation is
personalized: each client reports its own model (global A + its own B) as
``personalized-<metric>`` next to the global model (A + head with B at its zero
init). Upload and download are A (+ head): about half of FedIT's.
"""

from __future__ import annotations

from collections.abc import Mapping

from rantune.aggregation import ClientUpdate, fedsa_aggregate
from rantune.federated.messages import HEAD_PREFIX, select_keys
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.strategies.registry import StrategySpec
from rantune.server.strategies.template import LoraRule, Node, Payload, Round, State

LOCAL_B = r"\.lora_B\.weight$"
LOCAL_B_AND_HEAD = r"\.lora_B\.weight$|^" + HEAD_PREFIX.replace(".", r"\.")
DESCRIPTION = "FedSA-LoRA: lora_A (+ head) averaged, lora_B kept on each client (personalized)"


class FedSALoRA(LoraRule):
    """FedSA-LoRA: only the shared part (A, + head) travels."""

    def __init__(self, cfg: RunConfig, share_head: bool = True) -> None:
        super().__init__(cfg)
        self.share_head = bool(share_head)
        self.keep_local = LOCAL_B if self.share_head else LOCAL_B_AND_HEAD

    @classmethod
    def from_config(cls, cfg: RunConfig, params: Mapping[str, Scalar]) -> FedSALoRA:
        return cls(cfg, bool(params["fedsa-share-head"]))

    def payload(self, rnd: Round, node: Node) -> Payload:
        local = select_keys(rnd.state, self.keep_local)
        return Payload({k: v for k, v in rnd.state.items() if k not in local})

    def aggregate(self, updates: list[ClientUpdate], state: State) -> Mapping[str, object]:
        return fedsa_aggregate(updates, share_head=self.share_head)


SPECS = (
    StrategySpec(
        "fedsa-lora", FedSALoRA.from_config, ("fedsa-share-head",), DESCRIPTION, lora_aware=True
    ),
)
