"""Message conventions of the rantune apps and the one way bytes are counted.

Records in every message: ``"arrays"`` (ArrayRecord), ``"metrics"`` (MetricRecord,
``"num-examples"`` in it) and ``"config"`` (ConfigRecord). Only adapter and head
tensors travel (keys as :func:`rantune.lora.trainable_state` names them); a key of
the frozen base never appears in a message.

Train config keys (server -> client): ``server-round``, ``local-epochs``,
``batch-size``, ``lr``, ``weight-decay``, ``max-grad-norm``, ``proximal-mu``
(FedProx), ``update-compression`` (+ ``.granularity``, ``.topk-fraction``,
``.error-feedback``), and the strategy hooks ``keep-local`` (regex: keys kept on
the client between rounds and never sent back, e.g. FedSA-LoRA's B) and
``freeze`` (regex: keys not trained and not sent back, e.g. FFA-LoRA's A).
Evaluate config keys: ``server-round``, ``personalized``.

Bytes: :func:`record_bytes` is the measure of every count in rantune (round history,
SecAgg+ metering, benchmarks): Flower's ``count_bytes`` as FlowerTune reports it, per
array the ``.npy`` serialisation (data plus a header of about 128 bytes) plus the
length of its key. :data:`MB` is the unit of every report (decimal megabytes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, RecordDict

from rantune.aggregation.validation import validate_update

ARRAYS, METRICS, CONFIG = "arrays", "metrics", "config"
NUM_EXAMPLES = "num-examples"
PARTITION_ID = "partition-id"
LORA_RANK = "lora-r"
# Metric keys that identify a reply rather than measure it: never averaged.
BOOKKEEPING_METRICS = (PARTITION_ID, LORA_RANK)
KEEP_LOCAL = "keep-local"
FREEZE = "freeze"
PERSONALIZED = "personalized"
PERSONALIZED_PREFIX = "personalized-"
HEAD_PREFIX = "base_model.model.head."
MB = 1_000_000
"""Bytes per MB in every report (decimal megabytes)."""


def to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def state_to_record(state: Mapping[str, object]) -> ArrayRecord:
    """``{key: tensor/ndarray}`` -> ArrayRecord (keys sorted, float32 kept as is)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(to_numpy(state[k]))) for k in sorted(state)})


def record_to_state(record: ArrayRecord) -> dict[str, np.ndarray]:
    """ArrayRecord -> ``{key: ndarray}``."""
    return {k: v.numpy() for k, v in record.items()}


def _value_bytes(value) -> int:
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, str | bytes):
        return len(value)
    return 8  # int/float: 64 bit on the wire


def record_bytes(record) -> int:
    """Bytes of one record (``None``: 0) as Flower's ``count_bytes`` counts them.

    An ArrayRecord: its ``count_bytes()`` (FlowerTune's measure). A ConfigRecord or
    MetricRecord: the same rule as Flower's (key length plus 1 byte per bool, 8 per
    int/float, the length of a str/bytes, summed over lists), which also counts the
    empty strings and lists that ``ConfigRecord.count_bytes`` of Flower 1.41 rejects.
    """
    if record is None:
        return 0
    if isinstance(record, ArrayRecord):
        return int(record.count_bytes())
    return int(sum(len(k) + _value_bytes(v) for k, v in record.items()))


def message_array_bytes(content: RecordDict) -> int:
    """Bytes of every ArrayRecord of a message's content (what the round history counts)."""
    return sum(record_bytes(r) for r in content.array_records.values())


def select_keys(keys, pattern: str | None) -> set[str]:
    """Keys matching a regex (``re.search``); none for an empty pattern."""
    if not pattern:
        return set()
    regex = re.compile(pattern)
    return {k for k in keys if regex.search(k)}


def expected_reply_keys(sent_keys, config: Mapping[str, object]) -> list[str]:
    """Keys a client must send back: what it received minus ``keep-local``/``freeze``."""
    sent = set(sent_keys)
    held = select_keys(sent, str(config.get(KEEP_LOCAL, "") or ""))
    frozen = select_keys(sent, str(config.get(FREEZE, "") or ""))
    return sorted(sent - held - frozen)


def check_update(
    update: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]]
) -> str | None:
    """Why an update must not be aggregated, or ``None`` if it is sound.

    Checks: exactly the expected keys, the expected shapes, a floating dtype, and
    only finite values. One implementation with the aggregation layer:
    :func:`rantune.aggregation.validation.validate_update` (which also offers
    flexible LoRA ranks).
    """
    if not update and not expected:
        return None
    return validate_update(update, expected)
