"""``hetlora``: HetLoRA (Cho et al. 2024): heterogeneous ranks by padding and truncation.

The global adapters have rank ``r_max = lora.r``; client ``i`` trains rank
``r_i <= r_max`` (node config ``lora-r`` or ``lora.client-ranks``; the loop asks each
node once, ``needs_ranks``). Each round:

1. node ``i`` receives the global adapters truncated to its rank (first ``r_i``
   components, :func:`rantune.aggregation.hetlora_downlink`);
2. the server zero-pads every reply to ``r_max`` and averages with weights
   ``p_i ∝ ||B_i A_i||_F`` (``strategy.hetlora-weight-by-examples`` multiplies by
   ``n_i``; ``strategy.hetlora-weight-scope``: per ``module`` or one ``global`` norm),
   :func:`rantune.aggregation.hetlora_aggregate`.

peft scales an adapter by ``alpha / r``, so the same factors mean different weight
updates at different ranks. B is therefore carried in the global scale: a client's
``B_i`` is multiplied by ``r_max / r_i`` before padding and the truncated global B by
``r_i / r_max`` before sending, so ``(alpha/r_i) B_i A_i`` is the client's share of
``(alpha/r_max) B A`` in weight space. Norm weights use the rescaled product.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from rantune.aggregation import ClientUpdate, hetlora_aggregate, hetlora_downlink
from rantune.aggregation.lora_keys import is_lora_b, uniform_rank
from rantune.errors import InputError
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.strategies.registry import StrategySpec
from rantune.server.strategies.template import LoraRule, Node, Payload, Round, State

DESCRIPTION = "HetLoRA: per-client ranks <= lora.r, zero-pad, norm-weighted average, truncate"


def rescale_b(state: Mapping[str, torch.Tensor], factor: float) -> dict[str, torch.Tensor]:
    """``state`` with every ``lora_B`` multiplied by ``factor`` (others unchanged)."""
    return {k: (v * factor if is_lora_b(k) else v) for k, v in state.items()}


class HetLoRA(LoraRule):
    """HetLoRA: each node gets (and sends) adapters of its own rank."""

    needs_ranks = True

    def __init__(self, cfg: RunConfig, weight_by_examples: bool, scope: str) -> None:
        super().__init__(cfg)
        self.r_max = cfg.lora.r
        self.weight_by_examples = weight_by_examples
        self.scope = scope

    @classmethod
    def from_config(cls, cfg: RunConfig, params: Mapping[str, Scalar]) -> HetLoRA:
        by_examples = bool(params["hetlora-weight-by-examples"])
        return cls(cfg, by_examples, str(params["hetlora-weight-scope"]))

    def client_state(self, state: Mapping[str, np.ndarray], rank: int) -> dict[str, torch.Tensor]:
        """The global state for a client of ``rank``: truncated, B in the client's scale."""
        if rank > self.r_max:
            raise InputError(
                f"a client trains LoRA rank {rank} but hetlora's global rank is lora.r="
                f"{self.r_max}: set lora.r to the largest client rank"
            )
        tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
        return rescale_b(hetlora_downlink(tensors, rank), rank / self.r_max)

    def payload(self, rnd: Round, node: Node) -> Payload:
        return Payload(self.client_state(rnd.state, node.rank))

    def aggregate(self, updates: list[ClientUpdate], state: State) -> Mapping[str, object]:
        rescaled = [
            ClientUpdate(
                rescale_b(u.state, self.r_max / uniform_rank(u.state)), u.num_examples, u.client_id
            )
            for u in updates
        ]
        return hetlora_aggregate(
            rescaled, r_max=self.r_max, weight_by_examples=self.weight_by_examples, scope=self.scope
        )


def _check(cfg: RunConfig, params: Mapping[str, Scalar]) -> None:
    too_big = sorted({r for r in cfg.lora.client_ranks if r > cfg.lora.r})
    if too_big:
        raise InputError(
            f"hetlora truncates the global adapters (rank lora.r={cfg.lora.r}) to each client's "
            f"rank, but lora.client-ranks asks for {too_big}: set lora.r to the largest client rank"
        )


SPECS = (
    StrategySpec(
        "hetlora",
        HetLoRA.from_config,
        ("hetlora-weight-by-examples", "hetlora-weight-scope"),
        DESCRIPTION,
        heterogeneous_ranks=True,
        check=_check,
        lora_aware=True,
    ),
)
