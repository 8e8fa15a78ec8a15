"""``ffa-lora``: FFA-LoRA (Sun et al. 2024): ``lora_A`` frozen at a shared seeded init.

Every client draws the same ``lora_A`` from :func:`rantune.aggregation.init.seeded_lora_a`
(seed derived from the run seed, sent as the config key ``lora-a-seed``), never
trains it (``freeze_pattern``) and never sends it; A is not in the downlink either.
With A identical and fixed, the average of B is the exact average of the updates
``B_i A``: ``mean_i(B_i) A == mean_i(B_i A)``. Upload and download both halve
against FedIT (plus the head). The server's global state carries the same frozen A,
so server-side evaluation and the saved adapter match what clients use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from rantune.aggregation import derive_seed, ffa_aggregate, ffa_frozen_a
from rantune.aggregation.lora_keys import is_lora_a
from rantune.federated.downlink import LORA_A_SEED
from rantune.federated.messages import record_to_state
from rantune.federated.run_config import RunConfig, Scalar
from rantune.server.strategies import StrategySpec, register
from rantune.server.strategies.lora_base import LoraStrategy, client_updates, to_record

FREEZE_A = r"\.lora_A\.weight$"


class FFALoRA(LoraStrategy):
    """FFA-LoRA on Flower's FedAvg sampling."""

    freeze_pattern = FREEZE_A

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        # 31 bits: fits every ConfigRecord integer type.
        self.a_seed = derive_seed("ffa-lora", cfg.seed) & 0x7FFFFFFF
        self.frozen_a: dict[str, np.ndarray] = {}

    def _frozen(self, arrays: ArrayRecord) -> dict[str, np.ndarray]:
        if not self.frozen_a:
            shapes = {k: tuple(v.shape) for k, v in arrays.items() if is_lora_a(k)}
            self.frozen_a = {k: v.numpy() for k, v in ffa_frozen_a(shapes, self.a_seed).items()}
        return self.frozen_a

    def _without_a(self, messages: Iterable[Message], arrays: ArrayRecord, kind: str):
        state = {k: v for k, v in record_to_state(arrays).items() if not is_lora_a(k)}
        out = []
        for message in messages:
            config = ConfigRecord(dict(message.content.config_records["config"]))
            config[LORA_A_SEED] = self.a_seed
            out.append(self.message(message.metadata.dst_node_id, state, config, kind))
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._frozen(arrays)
        messages = super().configure_train(server_round, arrays, config, grid)
        return self._without_a(messages, arrays, MessageType.TRAIN)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = super().configure_evaluate(server_round, arrays, config, grid)
        return self._without_a(messages, arrays, MessageType.EVALUATE)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        averaged = ffa_aggregate(client_updates(valid))  # B + head; raises if A was sent
        return to_record({**averaged, **self.frozen_a}), self.aggregate_metrics(valid)

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        return {}, {"a_seed": self.a_seed}

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: dict) -> None:
        self.a_seed = int(meta.get("a_seed", self.a_seed))


def _factory(cfg: RunConfig, params: Mapping[str, Scalar]) -> FFALoRA:
    return FFALoRA(cfg)


register(
    StrategySpec(
        "ffa-lora",
        _factory,
        (),
        "FFA-LoRA: lora_A frozen at a shared seeded init, only B + head trained and sent",
        lora_aware=True,
    )
)
