"""Update compression (int8, top-k, error feedback) and byte accounting of records."""

from __future__ import annotations

import io

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from rantune.federated.compression import (
    INDEX_KEY,
    INT8_KEY,
    SCALES_KEY,
    VALUES_KEY,
    decode_update,
    encode_update,
    settings_from_config,
    settings_to_config,
)
from rantune.federated.messages import check_update, record_bytes, state_to_record
from rantune.federated.run_config import CompressionSection


def _states(seed: int = 0):
    rng = np.random.default_rng(seed)
    reference = {
        "base_model.model.encoder.blocks.0.attn.q_proj.lora_A.weight": rng.normal(
            size=(4, 64)
        ).astype(np.float32),
        "base_model.model.encoder.blocks.0.attn.q_proj.lora_B.weight": rng.normal(
            size=(64, 4)
        ).astype(np.float32),
        "base_model.model.head.classifier.bias": rng.normal(size=(2,)).astype(np.float32),
    }
    local = {
        k: v + rng.normal(scale=0.01, size=v.shape).astype(np.float32) for k, v in reference.items()
    }
    return reference, local


def _npy_bytes(array: np.ndarray) -> int:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return len(buffer.getvalue())


def test_record_bytes_equal_serialized_tensors_plus_keys():
    # Prepare
    _, local = _states()

    # Execute
    counted = record_bytes(state_to_record(local))

    # Assert: ArrayRecord.count_bytes = npy payload (header + data) + key length, per tensor
    assert counted == sum(_npy_bytes(v) + len(k) for k, v in local.items())


def test_no_compression_sends_absolute_tensors():
    reference, local = _states()
    record, residual = encode_update(reference, local, CompressionSection())
    assert residual is None
    decoded = decode_update(reference, record, CompressionSection())
    assert all(np.array_equal(decoded[k], local[k]) for k in local)


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_int8_roundtrip_error_within_half_a_step(granularity):
    # Prepare
    reference, local = _states()
    settings = CompressionSection(method="int8", granularity=granularity)

    # Execute
    record, _ = encode_update(reference, local, settings)
    decoded = decode_update(reference, record, settings)

    # Assert
    assert set(record) == {INT8_KEY, SCALES_KEY}
    assert record[INT8_KEY].dtype == "int8"
    scales = record[SCALES_KEY].numpy()
    assert len(scales) == (3 if granularity == "tensor" else 4 + 64 + 1)
    for key in local:
        delta = local[key] - reference[key]
        step = np.abs(delta).max() / 127
        assert np.abs(decoded[key] - local[key]).max() <= step / 2 + 1e-6
    assert record_bytes(record) < record_bytes(state_to_record(local)) / 2


def test_topk_keeps_exactly_the_largest_entries():
    # Prepare
    reference, local = _states()
    settings = CompressionSection(method="topk", topk_fraction=0.1)
    delta = np.concatenate([(local[k] - reference[k]).ravel() for k in sorted(local)])
    k = int(np.ceil(0.1 * delta.size))

    # Execute
    record, _ = encode_update(reference, local, settings)
    decoded = decode_update(reference, record, settings)

    # Assert
    index = record[INDEX_KEY].numpy()
    assert index.dtype == np.uint16 and len(index) == k
    assert set(index.tolist()) == set(np.argsort(-np.abs(delta))[:k].tolist())
    sent = np.concatenate([(decoded[key] - reference[key]).ravel() for key in sorted(local)])
    assert np.count_nonzero(sent) == k
    assert np.allclose(sent[index], delta[index])
    assert np.allclose(record[VALUES_KEY].numpy(), delta[index])


def test_topk_int8_combines_both():
    reference, local = _states()
    settings = CompressionSection(method="topk-int8", topk_fraction=0.25)
    record, _ = encode_update(reference, local, settings)
    assert set(record) == {INDEX_KEY, INT8_KEY, SCALES_KEY}
    decoded = decode_update(reference, record, settings)
    assert check_update(decoded, {k: v.shape for k, v in reference.items()}) is None


def test_error_feedback_carries_what_was_dropped():
    # Prepare
    reference, local = _states()
    settings = CompressionSection(method="topk", topk_fraction=0.05, error_feedback=True)
    delta = np.concatenate([(local[k] - reference[k]).ravel() for k in sorted(local)])

    # Execute
    record, residual = encode_update(reference, local, settings)
    decoded = decode_update(reference, record, settings)
    sent = np.concatenate([(decoded[k] - reference[k]).ravel() for k in sorted(local)])

    # Assert: sent + residual reproduces the whole delta
    assert np.allclose(sent + residual, delta, atol=1e-7)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({INT8_KEY: np.zeros(5, np.int8), SCALES_KEY: np.ones(3, np.float32)}, "expected"),
        ({INT8_KEY: np.zeros(322, np.float32), SCALES_KEY: np.ones(3, np.float32)}, "int8"),
        ({VALUES_KEY: np.zeros(3, np.float32)}, "expected"),
    ],
)
def test_malformed_packets_raise(arrays, message):
    reference, _ = _states()
    record = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    method = "topk" if VALUES_KEY in arrays else "int8"
    with pytest.raises(ValueError, match=message):
        decode_update(reference, record, CompressionSection(method=method))


def test_topk_rejects_out_of_range_indices():
    reference, _ = _states()
    record = ArrayRecord(
        {
            INDEX_KEY: Array(np.array([5, 4000], np.uint16)),
            VALUES_KEY: Array(np.ones(2, np.float32)),
        }
    )
    with pytest.raises(ValueError, match="out of range"):
        decode_update(reference, record, CompressionSection(method="topk"))


def test_settings_travel_in_the_config_record():
    settings = CompressionSection(method="int8", granularity="channel", topk_fraction=0.2)
    assert settings_from_config(settings_to_config(settings)) == settings
    assert not settings_from_config({}).enabled


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"a": np.array([1.0, np.nan], np.float32)}, "non-finite"),
        ({"a": np.array([1.0, np.inf], np.float32)}, "non-finite"),
        ({"a": np.zeros(3, np.float32)}, "wrong shape"),
        ({"a": np.zeros(2, np.int64)}, "wrong dtype"),
        ({"b": np.zeros(2, np.float32)}, "wrong keys"),
        ({"a": np.zeros(2, np.float32), "c": np.zeros(1, np.float32)}, "wrong keys"),
    ],
)
def test_check_update_names_the_reason(update, reason):
    assert reason in check_update(update, {"a": (2,)})
    assert check_update({"a": np.zeros(2, np.float32)}, {"a": (2,)}) is None
