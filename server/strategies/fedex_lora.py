"""``fedex-lora``: FedEx-LoRA (Singhal et al. 2025): FedAvg of A and B plus the exact residual.

The server averages A and B (FedIT) and computes the residual
``(alpha / r) (mean_i B_i A_i - mean(B) mean(A))`` per module
(:func:`rantune.aggregation.fedex_aggregate`), adds it to a cumulative dense update
and sends it as ``{prefix}.dense_delta`` with the averaged adapters. Clients rebuild
``W0 + cumulative`` and load the averaged adapters, so every client's effective
weights equal the exact average of the client models. Needs one rank for all
clients; the dense downlink (``d_out x d_in`` per adapted module) is the price.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from rantune.aggregation import fedex_aggregate
from rantune.federated.messages import record_to_state
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.strategies import StrategySpec, register
from rantune.server.strategies.lora_base import (
    DenseDeltaMixin,
    LoraStrategy,
    client_updates,
    to_record,
)


class FedExLoRA(DenseDeltaMixin, LoraStrategy):
    """FedEx-LoRA with a cumulative dense residual downlink."""

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self._init_dense()

    def _with_residual(self, messages, arrays: ArrayRecord, kind: str) -> list[Message]:
        payload = {**record_to_state(arrays), **self.dense_state()}
        return [
            self.message(m.metadata.dst_node_id, payload, m.content.config_records["config"], kind)
            for m in messages
        ]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = super().configure_train(server_round, arrays, config, grid)
        return self._with_residual(messages, arrays, MessageType.TRAIN)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = super().configure_evaluate(server_round, arrays, config, grid)
        return self._with_residual(messages, arrays, MessageType.EVALUATE)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        aggregate = fedex_aggregate(client_updates(valid), alpha=self.cfg.lora.alpha)
        self.add_dense(aggregate.residuals)
        return to_record(aggregate.state), self.aggregate_metrics(valid)


def _factory(cfg: RunConfig, params: Mapping[str, Scalar]) -> FedExLoRA:
    return FedExLoRA(cfg)


register(
    StrategySpec(
        "fedex-lora",
        _factory,
        (),
        "FedEx-LoRA: FedAvg of A and B + exact residual folded into the base (dense downlink)",
        lora_aware=True,
    )
)
