"""``hetlora``: HetLoRA (Cho et al. 2024): heterogeneous ranks by padding and truncation.

The global adapters have rank ``r_max = lora.r``; client ``i`` trains rank
``r_i <= r_max`` (node config ``lora-r`` or ``lora.client-ranks``, asked once per node
with a ``query`` message). Each round:

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

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from rantune.aggregation import ClientUpdate, hetlora_aggregate, hetlora_downlink
from rantune.aggregation.lora_keys import is_lora_b, uniform_rank
from rantune.errors import InputError
from rantune.federated.messages import record_to_state
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.strategies import StrategySpec, register
from rantune.server.strategies.lora_base import LoraStrategy, client_updates, to_record


def rescale_b(state: Mapping[str, torch.Tensor], factor: float) -> dict[str, torch.Tensor]:
    """``state`` with every ``lora_B`` multiplied by ``factor`` (others unchanged)."""
    return {k: (v * factor if is_lora_b(k) else v) for k, v in state.items()}


class HetLoRA(LoraStrategy):
    """HetLoRA on Flower's FedAvg sampling."""

    def __init__(self, cfg: RunConfig, weight_by_examples: bool, scope: str) -> None:
        super().__init__(cfg)
        self.r_max = cfg.lora.r
        self.weight_by_examples = weight_by_examples
        self.scope = scope

    def client_state(self, state: Mapping[str, np.ndarray], rank: int) -> dict[str, torch.Tensor]:
        """The global state for a client of ``rank``: truncated, B in the client's scale."""
        if rank > self.r_max:
            raise InputError(
                f"a client trains LoRA rank {rank} but hetlora's global rank is lora.r="
                f"{self.r_max}: set lora.r to the largest client rank"
            )
        tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
        return rescale_b(hetlora_downlink(tensors, rank), rank / self.r_max)

    def _per_node(self, messages, arrays: ArrayRecord, grid: Grid, kind: str) -> list[Message]:
        state = record_to_state(arrays)
        messages = list(messages)
        info = self.query_nodes(grid, [m.metadata.dst_node_id for m in messages])
        return [
            self.message(
                m.metadata.dst_node_id,
                self.client_state(state, info[m.metadata.dst_node_id][1]),
                m.content.config_records["config"],
                kind,
            )
            for m in messages
            if m.metadata.dst_node_id in info
        ]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = super().configure_train(server_round, arrays, config, grid)
        return self._per_node(messages, arrays, grid, MessageType.TRAIN)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = super().configure_evaluate(server_round, arrays, config, grid)
        return self._per_node(messages, arrays, grid, MessageType.EVALUATE)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        updates = [
            ClientUpdate(
                rescale_b(u.state, self.r_max / uniform_rank(u.state)), u.num_examples, u.client_id
            )
            for u in client_updates(valid)
        ]
        state = hetlora_aggregate(
            updates, r_max=self.r_max, weight_by_examples=self.weight_by_examples, scope=self.scope
        )
        return to_record(state), self.aggregate_metrics(valid)


def _check(cfg: RunConfig, params: Mapping[str, Scalar]) -> None:
    too_big = sorted({r for r in cfg.lora.client_ranks if r > cfg.lora.r})
    if too_big:
        raise InputError(
            f"hetlora truncates the global adapters (rank lora.r={cfg.lora.r}) to each client's "
            f"rank, but lora.client-ranks asks for {too_big}: set lora.r to the largest client rank"
        )


def _factory(cfg: RunConfig, params: Mapping[str, Scalar]) -> HetLoRA:
    by_examples, scope = params["hetlora-weight-by-examples"], params["hetlora-weight-scope"]
    if not isinstance(by_examples, bool):
        raise InputError(
            f"strategy.hetlora-weight-by-examples={by_examples!r} is invalid: expected true or false"
        )
    if scope not in ("module", "global"):
        raise InputError(
            f"strategy.hetlora-weight-scope={scope!r} is invalid: choose module or global"
        )
    return HetLoRA(cfg, by_examples, str(scope))


register(
    StrategySpec(
        "hetlora",
        _factory,
        ("hetlora-weight-by-examples", "hetlora-weight-scope"),
        "HetLoRA: per-client ranks <= lora.r, zero-pad, norm-weighted average, truncate",
        heterogeneous_ranks=True,
        check=_check,
        lora_aware=True,
    )
)
