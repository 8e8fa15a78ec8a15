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

from collections.abc import Mapping

from rantune.aggregation import ClientUpdate, fedex_aggregate
from rantune.server.strategies.registry import StrategySpec
from rantune.server.strategies.template import DenseLoraRule, Node, Payload, Round, State

DESCRIPTION = "FedEx-LoRA: FedAvg of A and B + exact residual folded into the base (dense downlink)"


class FedExLoRA(DenseLoraRule):
    """FedEx-LoRA with a cumulative dense residual downlink."""

    def payload(self, rnd: Round, node: Node) -> Payload:
        return Payload({**rnd.state, **self.cumulative.downlink()})

    def aggregate(self, updates: list[ClientUpdate], state: State) -> Mapping[str, object]:
        aggregate = fedex_aggregate(updates, alpha=self.lora.alpha)
        self.cumulative.add(aggregate.residuals)
        return aggregate.state


SPECS = (StrategySpec("fedex-lora", FedExLoRA.from_config, (), DESCRIPTION, lora_aware=True),)
