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

from collections.abc import Mapping

import numpy as np

from rantune.aggregation import ClientUpdate, derive_seed, ffa_aggregate, ffa_frozen_a
from rantune.aggregation.lora_keys import is_lora_a
from rantune.federated.downlink import LORA_A_SEED
from rantune.federated.run_config import RunConfig
from rantune.server.strategies.registry import StrategySpec
from rantune.server.strategies.template import LoraRule, Node, Payload, Round, State, float32

FREEZE_A = r"\.lora_A\.weight$"
DESCRIPTION = "FFA-LoRA: lora_A frozen at a shared seeded init, only B + head trained and sent"


class FFALoRA(LoraRule):
    """FFA-LoRA: B + head travel, A is the shared seeded init."""

    freeze = FREEZE_A

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        # 31 bits: fits every ConfigRecord integer type.
        self.a_seed = derive_seed("ffa-lora", cfg.seed) & 0x7FFFFFFF
        self.frozen_a: State = {}

    def payload(self, rnd: Round, node: Node) -> Payload:
        if not self.frozen_a:
            shapes = {k: tuple(v.shape) for k, v in rnd.state.items() if is_lora_a(k)}
            self.frozen_a = float32(ffa_frozen_a(shapes, self.a_seed))
        sent = {k: v for k, v in rnd.state.items() if not is_lora_a(k)}
        return Payload(sent, {LORA_A_SEED: self.a_seed})

    def aggregate(self, updates: list[ClientUpdate], state: State) -> Mapping[str, object]:
        return {**ffa_aggregate(updates), **self.frozen_a}  # B + head; raises if A was sent

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        return {}, {"a_seed": self.a_seed}

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
        self.a_seed = int(meta.get("a_seed", self.a_seed))


SPECS = (StrategySpec("ffa-lora", FFALoRA.from_config, (), DESCRIPTION, lora_aware=True),)
