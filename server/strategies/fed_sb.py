"""``fed-sb``: Fed-SB (Singhal et al. 2025, LoRA-SB): only an ``r x r`` matrix travels.

Every client and the server derive the same frozen bases ``B`` ``[d_out, r]`` and
``A`` ``[r, d_in]`` per adapted module from a seed (config key ``fed-sb-seed``,
:func:`rantune.aggregation.fed_sb.sb_bases`); clients train only ``R`` ``[r, r]``
(:mod:`rantune.lora_sb`) and send it as ``{prefix}.lora_R.weight``; the server
averages ``R`` by data size, which is exact because the bases are shared
(``mean_i B R_i A = B mean_i(R_i) A``). Upload and download are ``r^2`` numbers per
module plus the head, whatever the number of clients. The global state is the
ordinary LoRA state it stands for (``lora_A = A``, ``lora_B = B R``), so server-side
evaluation, the saved adapter and compression need nothing new; the averaged ``R``
is this rule's checkpointed state.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from rantune.aggregation import ClientUpdate, derive_seed, expand, fed_sb_aggregate
from rantune.aggregation.fed_sb import is_lora_r, shapes_of, zero_r
from rantune.aggregation.lora_keys import is_lora
from rantune.federated.run_config import RunConfig
from rantune.lora_sb import FROZEN_BASES, SB_SEED
from rantune.server.strategies.registry import StrategySpec
from rantune.server.strategies.template import LoraRule, Node, Payload, Round, State, float32

R_PREFIX = "R/"
DESCRIPTION = (
    "Fed-SB: frozen shared B and A, only the r x r matrix R (+ head) trained, sent and "
    "averaged (exact; upload r^2 per module)"
)


def _shapes(state: State) -> dict[str, tuple[int, int, int]]:
    return shapes_of({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})


class FedSB(LoraRule):
    """Fed-SB: the shared bases stay frozen, ``R`` (+ head) travels and is averaged."""

    freeze = FROZEN_BASES

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        # 31 bits: fits every ConfigRecord integer type.
        self.basis_seed = derive_seed("fed-sb", cfg.seed) & 0x7FFFFFFF
        self.r: State = {}  # {prefix}.lora_R.weight -> the global R [r, r]

    def payload(self, rnd: Round, node: Node) -> Payload:
        if not self.r:
            self.r = float32(zero_r(_shapes(rnd.state)))
        head = {k: v for k, v in rnd.state.items() if not is_lora(k)}
        return Payload({**head, **self.r}, {SB_SEED: self.basis_seed})

    def aggregate(self, updates: list[ClientUpdate], state: State) -> Mapping[str, object]:
        averaged = fed_sb_aggregate(updates)  # R + head, exact
        self.r = float32({k: v for k, v in averaged.items() if is_lora_r(k)})
        return expand(averaged, _shapes(state), self.basis_seed)  # A, B R, head

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        return {R_PREFIX + k: v for k, v in self.r.items()}, {"basis-seed": self.basis_seed}

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
        self.basis_seed = int(meta.get("basis-seed", self.basis_seed))
        self.r = {k.removeprefix(R_PREFIX): np.asarray(v) for k, v in arrays.items()}


SPECS = (StrategySpec("fed-sb", FedSB.from_config, (), DESCRIPTION, lora_aware=True),)
