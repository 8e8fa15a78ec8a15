"""The one byte measure (:func:`rantune.federated.messages.record_bytes`) against Flower's."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from rantune.federated.messages import message_array_bytes, record_bytes, state_to_record

P = "base_model.model.encoder.blocks.0.attn.q_proj"


def test_record_bytes_is_flowers_count_bytes_for_every_record_kind():
    # Prepare: float32/float64/int64 tensors and arrays, a 0-d array, a long key
    arrays = state_to_record(
        {
            f"{P}.lora_A.weight": torch.randn(8, 64),
            f"{P}.lora_B.weight": np.zeros((64, 8), np.float64),
            "base_model.model.head.weight": torch.arange(5),
            "scalar": np.float32(1.5),
            "x" * 300: np.zeros((2, 3, 4, 5, 6, 7), np.float32),
        }
    )
    config = ConfigRecord({"server-round": 3, "lr": 0.1, "freeze": "lora_A", "on": True})
    metrics = MetricRecord({"num-examples": 12, "loss": 0.5, "per-class": [0.1, 0.2]})
    content = RecordDict({"arrays": arrays, "config": config, "metrics": metrics})

    # Execute
    counted = [record_bytes(r) for r in (arrays, config, metrics, None)]

    # Assert
    assert counted == [arrays.count_bytes(), config.count_bytes(), metrics.count_bytes(), 0]
    assert message_array_bytes(content) == arrays.count_bytes()


def test_record_bytes_counts_empty_values_that_flower_rejects():
    # Flower 1.41's ConfigRecord.count_bytes raises on "" and []: we count them as 0 bytes
    record = ConfigRecord({"keep-local": "", "ids": [], "n": 1})
    assert record_bytes(record) == len("keep-local") + len("ids") + len("n") + 8
