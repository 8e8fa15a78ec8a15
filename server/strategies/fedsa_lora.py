"""``fedsa-lora``: FedSA-LoRA (Guo et al. 2025): A shared and averaged, B kept local.

Each client keeps its ``lora_B`` (and the head when ``strategy.fedsa-share-head`` is
false) in its node state across rounds (``keep_local_pattern``) and never sends
it; the server averages A (+ head) only and never sends B either. Evaluation is
personalized: each client reports its own model (global A + its own B) as
``personalized-<metric>`` next to the global model (A + head with B at its zero
init). Upload and download are A (+ head): about half of FedIT's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from rantune.aggregation import fedsa_aggregate
from rantune.errors import InputError
from rantune.federated.messages import HEAD_PREFIX, record_to_state, select_keys
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.strategies import StrategySpec, register
from rantune.server.strategies.lora_base import LoraStrategy, client_updates, to_record

LOCAL_B = r"\.lora_B\.weight$"
LOCAL_B_AND_HEAD = r"\.lora_B\.weight$|^" + HEAD_PREFIX.replace(".", r"\.")


class FedSALoRA(LoraStrategy):
    """FedSA-LoRA on Flower's FedAvg sampling."""

    def __init__(self, cfg: RunConfig, share_head: bool = True) -> None:
        super().__init__(cfg)
        self.share_head = bool(share_head)
        self.keep_local_pattern = LOCAL_B if self.share_head else LOCAL_B_AND_HEAD

    def _shared_only(self, messages: Iterable[Message], arrays: ArrayRecord, kind: str):
        state = record_to_state(arrays)
        local = select_keys(state, self.keep_local_pattern)
        shared = {k: v for k, v in state.items() if k not in local}
        return [
            self.message(m.metadata.dst_node_id, shared, m.content.config_records["config"], kind)
            for m in messages
        ]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = super().configure_train(server_round, arrays, config, grid)
        return self._shared_only(messages, arrays, MessageType.TRAIN)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = super().configure_evaluate(server_round, arrays, config, grid)
        return self._shared_only(messages, arrays, MessageType.EVALUATE)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        shared = fedsa_aggregate(client_updates(valid), share_head=self.share_head)
        return to_record(shared), self.aggregate_metrics(valid)


def _factory(cfg: RunConfig, params: Mapping[str, Scalar]) -> FedSALoRA:
    share = params["fedsa-share-head"]
    if not isinstance(share, bool):
        raise InputError(f"strategy.fedsa-share-head={share!r} is invalid: expected true or false")
    return FedSALoRA(cfg, share)


register(
    StrategySpec(
        "fedsa-lora",
        _factory,
        ("fedsa-share-head",),
        "FedSA-LoRA: lora_A (+ head) averaged, lora_B kept on each client (personalized)",
        lora_aware=True,
    )
)
