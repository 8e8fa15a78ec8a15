"""LoRA-aware federated aggregation rules as pure torch functions (no Flower).

Modules, one concept each:

- ``lora_keys``: split an adapter state into per-module (A, B) pairs and head tensors.
- ``update``: :class:`ClientUpdate` and data-size weights.
- ``fedit``: FedAvg of A and B separately (baseline).
- ``init``: seeded peft-style adapter initialisation, seed derivation.
- ``ffa``: FFA-LoRA (A frozen at a shared seeded init, B averaged).
- ``fedsa``: FedSA-LoRA (A shared, B local).
- ``dense``: dense per-module updates and folding them into base weights.
- ``flora``: FLoRA stacking (exact, heterogeneous ranks).
- ``hetlora``: HetLoRA padding, norm-weighted averaging, truncation.
- ``fedex``: FedEx-LoRA averaging plus the exact residual.
- ``byzantine``: attacks for robustness experiments.
- ``validation``: reject malformed updates with a reason.
- ``comm``: bytes per round.
"""

from rantune.aggregation.byzantine import ATTACKS, AttackSpec, attack_update, select_byzantine
from rantune.aggregation.comm import MB, RoundBytes, payload_nbytes, record_nbytes, round_bytes
from rantune.aggregation.dense import (
    CumulativeDelta,
    apply_dense_delta,
    apply_dense_deltas,
    fold_deltas_into_model,
    fold_dense_downlink,
    lora_deltas,
)
from rantune.aggregation.fedex import FedExAggregate, fedex_aggregate
from rantune.aggregation.fedit import fedit_aggregate
from rantune.aggregation.fedsa import fedsa_aggregate, merge_shared_local, split_shared_local
from rantune.aggregation.ffa import (
    ffa_aggregate,
    ffa_frozen_a,
    ffa_init_state,
    ffa_upload,
    freeze_lora_a,
)
from rantune.aggregation.flora import (
    FloraAggregate,
    flora_aggregate,
    flora_client_reset,
    flora_downlink,
)
from rantune.aggregation.hetlora import (
    hetlora_aggregate,
    hetlora_downlink,
    pad_state,
    truncate_state,
)
from rantune.aggregation.init import derive_seed, fresh_adapters, seeded_lora_a
from rantune.aggregation.lora_keys import (
    LoraGroups,
    LoraPair,
    group_state,
    module_ranks,
    state_nbytes,
)
from rantune.aggregation.update import ClientUpdate, example_weights
from rantune.aggregation.validation import expected_shapes, validate_update

__all__ = [
    "ATTACKS",
    "MB",
    "AttackSpec",
    "ClientUpdate",
    "CumulativeDelta",
    "FedExAggregate",
    "FloraAggregate",
    "LoraGroups",
    "LoraPair",
    "RoundBytes",
    "apply_dense_delta",
    "apply_dense_deltas",
    "attack_update",
    "derive_seed",
    "example_weights",
    "expected_shapes",
    "fedex_aggregate",
    "fedit_aggregate",
    "fedsa_aggregate",
    "ffa_aggregate",
    "ffa_frozen_a",
    "ffa_init_state",
    "ffa_upload",
    "flora_aggregate",
    "flora_client_reset",
    "flora_downlink",
    "fold_deltas_into_model",
    "fold_dense_downlink",
    "freeze_lora_a",
    "fresh_adapters",
    "group_state",
    "hetlora_aggregate",
    "hetlora_downlink",
    "lora_deltas",
    "merge_shared_local",
    "module_ranks",
    "pad_state",
    "payload_nbytes",
    "record_nbytes",
    "round_bytes",
    "seeded_lora_a",
    "select_byzantine",
    "split_shared_local",
    "state_nbytes",
    "truncate_state",
    "validate_update",
]
