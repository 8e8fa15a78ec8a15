"""``lora-fair``: LoRA-FAIR (Bian et al., ICCV 2025): FedAvg of A and B plus a
server-side residual correction of B.

The server averages A and B (FedIT), then corrects the averaged B so that
``B' A_avg`` best matches the ideal update ``mean_i(B_i A_i)`` (regularised least
squares, weight ``strategy.lora-fair-lambda``;
:func:`rantune.aggregation.lora_fair_aggregate`). Every client starts the next round
from the same ``(A_avg, B')`` (the paper's averaged-initial start): nothing but the
adapters and the head travels, as in FedIT, and no dense update is needed. Needs one
rank for all clients.
"""

from __future__ import annotations

from collections.abc import Mapping

from rantune.aggregation import ClientUpdate, lora_fair_aggregate
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.strategies.registry import StrategySpec
from rantune.server.strategies.template import LoraRule, State

DESCRIPTION = (
    "LoRA-FAIR: FedAvg of A and B + server-side residual correction of B "
    "(B' A_avg ~ mean B_i A_i), clients start from (A_avg, B')"
)


class LoraFAIR(LoraRule):
    """LoRA-FAIR: FedIT's average with the residual correction of B."""

    def __init__(self, cfg: RunConfig, lam: float) -> None:
        super().__init__(cfg)
        self.lam = float(lam)

    @classmethod
    def from_config(cls, cfg: RunConfig, params: Mapping[str, Scalar]) -> LoraFAIR:
        return cls(cfg, float(params["lora-fair-lambda"]))

    def aggregate(self, updates: list[ClientUpdate], state: State) -> Mapping[str, object]:
        return lora_fair_aggregate(updates, self.lam)


SPECS = (
    StrategySpec(
        "lora-fair", LoraFAIR.from_config, ("lora-fair-lambda",), DESCRIPTION, lora_aware=True
    ),
)
