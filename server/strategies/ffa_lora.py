"""``ffa-lora``: FFA-LoRA (Sun et al. 2024): ``lora_A`` frozen at a shared seeded init.

Every client draws the same ``lora_A`` from :func:`rantune.aggregation.init.seeded_lora_a`
(seed derived from the run seed, sent as the config key ``lora-a-seed``), never
trains it (``freeze``) and never sends it; A is not in the downlink either. With A
identical and fixed, the average of B is the exact average of the updates
``B_i A``: ``mean_i(B_i) A == mean_i(B_i A)``. Upload and download both halve
against FedIT (plus the head). The server's global state carries the same frozen A,
so server-side evaluation and the saved adapter match what clients use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rantune.aggregation import derive_seed, ffa_aggregate, ffa_frozen_a
from rantune.aggregation.lora_keys import is_lora_a
from rantune.federated.downlink import LORA_A_SEED
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

FREEZE_A = r"\.lora_A\.weight$"


class FFALoRA(LoraRule):
    """FFA-LoRA: B + head travel, A is the shared seeded init."""

    freeze = FREEZE_A

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        # 31 bits: fits every ConfigRecord integer type.
        self.a_seed = derive_seed("ffa-lora", cfg.seed) & 0x7FFFFFFF
        self.frozen_a: State = {}

    def payload(self, server_round: int, phase: str, node: Node, state: State) -> Payload:
        if not self.frozen_a:
            shapes = {k: tuple(v.shape) for k, v in state.items() if is_lora_a(k)}
            self.frozen_a = float32(ffa_frozen_a(shapes, self.a_seed))
        sent = {k: v for k, v in state.items() if not is_lora_a(k)}
        return Payload(float32(sent), {LORA_A_SEED: self.a_seed})

    def combine(self, server_round: int, replies: Sequence[Reply], state: State) -> Combined:
        averaged = ffa_aggregate(self.updates(replies))  # B + head; raises if A was sent
        return Combined(float32({**averaged, **self.frozen_a}), train_metrics(replies))

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        return {}, {"a_seed": self.a_seed}

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
        self.a_seed = int(meta.get("a_seed", self.a_seed))


def _factory(cfg: RunConfig, params: Mapping[str, Scalar]) -> FFALoRA:
    return FFALoRA(cfg)


SPECS = (
    StrategySpec(
        "ffa-lora",
        _factory,
        (),
        "FFA-LoRA: lora_A frozen at a shared seeded init, only B + head trained and sent",
        lora_aware=True,
    ),
)
