"""LoRA-aware federated aggregation rules as pure torch functions (no Flower).

Modules, one concept each:

- ``lora_keys``: split an adapter state into per-module (A, B) pairs and head tensors.
- ``update``: :class:`ClientUpdate` and data-size weights.
- ``fedit``: FedAvg of A and B separately (the baseline; LoRA-FAIR starts from it).
- ``init``: seeded peft-style adapter initialisation, seed derivation.
- ``ffa``: FFA-LoRA (A frozen at a shared seeded init, B averaged).
- ``fedsa``: FedSA-LoRA (A shared, B local).
- ``dense``: dense per-module updates and their cumulative sum.
- ``flora``: FLoRA stacking (exact, heterogeneous ranks).
- ``hetlora``: HetLoRA padding, norm-weighted averaging, truncation.
- ``fedex``: FedEx-LoRA averaging plus the exact residual.
- ``fed_sb``: Fed-SB (only R between frozen shared bases; exact averaging).
- ``lora_fair``: LoRA-FAIR (FedIT + a residual correction of B).
- ``byzantine``: attacks for robustness experiments.
- ``validation``: reject malformed updates with a reason.
"""

from rantune.aggregation.byzantine import ATTACKS, AttackSpec, attack_update, select_byzantine
from rantune.aggregation.dense import CumulativeDelta, deltas_to_state
from rantune.aggregation.fed_sb import expand, fed_sb_aggregate, sb_bases
from rantune.aggregation.fedex import FedExAggregate, fedex_aggregate
from rantune.aggregation.fedit import fedit_aggregate
from rantune.aggregation.fedsa import fedsa_aggregate
from rantune.aggregation.ffa import ffa_aggregate, ffa_frozen_a, ffa_upload
from rantune.aggregation.flora import FloraAggregate, flora_aggregate
from rantune.aggregation.hetlora import hetlora_aggregate, hetlora_downlink, truncate_state
from rantune.aggregation.init import derive_seed, fresh_adapters, seeded_lora_a
from rantune.aggregation.lora_fair import lora_fair_aggregate
from rantune.aggregation.lora_keys import (
    LoraGroups,
    LoraPair,
    group_state,
    module_ranks,
)
from rantune.aggregation.update import ClientUpdate, example_weights
from rantune.aggregation.validation import validate_update

__all__ = [
    "ATTACKS",
    "AttackSpec",
    "ClientUpdate",
    "CumulativeDelta",
    "FedExAggregate",
    "FloraAggregate",
    "LoraGroups",
    "LoraPair",
    "attack_update",
    "deltas_to_state",
    "derive_seed",
    "example_weights",
    "expand",
    "fed_sb_aggregate",
    "fedex_aggregate",
    "fedit_aggregate",
    "fedsa_aggregate",
    "ffa_aggregate",
    "ffa_frozen_a",
    "ffa_upload",
    "flora_aggregate",
    "fresh_adapters",
    "group_state",
    "hetlora_aggregate",
    "hetlora_downlink",
    "lora_fair_aggregate",
    "module_ranks",
    "sb_bases",
    "seeded_lora_a",
    "select_byzantine",
    "truncate_state",
    "validate_update",
]
