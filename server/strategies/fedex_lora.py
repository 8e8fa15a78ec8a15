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

from collections.abc import Mapping, Sequence

from rantune.aggregation import fedex_aggregate
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.strategies.registry import StrategySpec
from rantune.server.strategies.template import (
    Combined,
    DenseLoraRule,
    Node,
    Payload,
    Reply,
    State,
    float32,
    train_metrics,
)


class FedExLoRA(DenseLoraRule):
    """FedEx-LoRA with a cumulative dense residual downlink."""

    def payload(self, server_round: int, phase: str, node: Node, state: State) -> Payload:
        return Payload(float32({**state, **self.cumulative.downlink()}))

    def combine(self, server_round: int, replies: Sequence[Reply], state: State) -> Combined:
        aggregate = fedex_aggregate(self.updates(replies), alpha=self.lora.alpha)
        self.cumulative.add(aggregate.residuals)
        return Combined(float32(aggregate.state), train_metrics(replies))


def _factory(cfg: RunConfig, params: Mapping[str, Scalar]) -> FedExLoRA:
    return FedExLoRA(cfg)


SPECS = (
    StrategySpec(
        "fedex-lora",
        _factory,
        (),
        "FedEx-LoRA: FedAvg of A and B + exact residual folded into the base (dense downlink)",
        lora_aware=True,
    ),
)
