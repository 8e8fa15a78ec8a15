"""Uplink update compression: int8 quantization and top-k sparsification of the update.

The client sends ``delta = local - global`` for the keys it returns, packed into a
few flat arrays (one int8 vector for all tensors instead of one array each, so the
per-array serialization header is paid once). The server knows the keys and shapes
it sent, and the client packs them in sorted key order, so the layout needs no
extra bytes. ``decode_update`` turns the packet back into absolute tensors before
aggregation.

Methods (``update-compression.method``):

=========== ===================================================================
none        absolute float32 tensors, one array per key (the Flower default)
int8        delta quantized to int8, symmetric, per tensor or per output channel
            (``granularity = "channel"``: one scale per row of a 2-D tensor)
topk        the ``topk-fraction`` largest-magnitude entries of the flat delta:
            indices (uint16 when they fit, else uint32) + float32 values
topk-int8   top-k with the kept values quantized to int8 (one scale)
=========== ===================================================================

With ``error-feedback`` the client adds what compression dropped last round to
this round's delta (state kept on the client; not restored after a restart).

Array keys of a packet: ``update.int8``, ``update.scales``, ``update.index``,
``update.values``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

from rantune.errors import InputError
from rantune.federated.messages import record_to_state, state_to_record
from rantune.federated.run_config import CompressionSection

INT8_KEY, SCALES_KEY, INDEX_KEY, VALUES_KEY = (
    "update.int8",
    "update.scales",
    "update.index",
    "update.values",
)


def _flatten(state: Mapping[str, np.ndarray], keys: list[str]) -> np.ndarray:
    if not keys:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([np.asarray(state[k], dtype=np.float32).ravel() for k in keys])


def _unflatten(vector: np.ndarray, layout: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for key in sorted(layout):
        shape = tuple(layout[key])
        size = int(np.prod(shape, dtype=np.int64))
        out[key] = vector[start : start + size].reshape(shape).astype(np.float32)
        start += size
    return out


def _channel_groups(layout: Mapping[str, tuple[int, ...]], granularity: str) -> list[int]:
    """Sizes of the groups sharing one int8 scale, in packing order."""
    groups = []
    for key in sorted(layout):
        shape = tuple(layout[key])
        size = int(np.prod(shape, dtype=np.int64))
        if granularity == "channel" and len(shape) >= 2 and shape[0] > 0:
            groups.extend([size // shape[0]] * shape[0])
        else:
            groups.append(size)
    return groups


def _quantize(vector: np.ndarray, groups: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per group: ``q = round(x / s)``, ``s = max|x| / 127``."""
    q = np.empty(vector.shape, dtype=np.int8)
    scales = np.empty(len(groups), dtype=np.float32)
    start = 0
    for i, size in enumerate(groups):
        part = vector[start : start + size]
        peak = float(np.max(np.abs(part))) if size else 0.0
        scale = peak / 127.0 if peak > 0 else 1.0
        scales[i] = scale
        q[start : start + size] = np.clip(np.rint(part / scale), -127, 127).astype(np.int8)
        start += size
    return q, scales


def _dequantize(q: np.ndarray, scales: np.ndarray, groups: list[int]) -> np.ndarray:
    if len(scales) != len(groups):
        raise InputError(f"{len(scales)} scales for {len(groups)} quantization groups")
    return q.astype(np.float32) * np.repeat(scales.astype(np.float32), groups)


def _index_dtype(n: int):
    return np.uint16 if n <= np.iinfo(np.uint16).max + 1 else np.uint32


def encode_update(
    reference: Mapping[str, np.ndarray],
    local: Mapping[str, np.ndarray],
    settings: CompressionSection,
    residual: np.ndarray | None = None,
) -> tuple[ArrayRecord, np.ndarray | None]:
    """Pack what a client sends back.

    Parameters
    ----------
    reference : the global tensors received this round, for the returned keys.
    local : the trained tensors, same keys and shapes.
    settings : compression settings.
    residual : error-feedback memory (flat float32, same length as all tensors), or None.

    Returns
    -------
    record : the ArrayRecord to send.
    residual : the new error-feedback memory (None without error feedback).
    """
    if set(reference) != set(local):
        raise InputError("encode_update: reference and local tensors have different keys")
    if not settings.enabled:
        return state_to_record(local), None
    keys = sorted(local)
    layout = {k: tuple(np.shape(local[k])) for k in keys}
    delta = _flatten(local, keys) - _flatten(reference, keys)
    if settings.error_feedback and residual is not None and residual.shape == delta.shape:
        delta = delta + residual
    arrays: dict[str, np.ndarray] = {}
    if settings.method == "int8":
        q, scales = _quantize(delta, _channel_groups(layout, settings.granularity))
        arrays = {INT8_KEY: q, SCALES_KEY: scales}
    else:
        k = max(1, int(np.ceil(settings.topk_fraction * delta.size))) if delta.size else 0
        index = np.sort(np.argpartition(-np.abs(delta), k - 1)[:k]) if k else np.zeros(0, int)
        values = delta[index].astype(np.float32)
        arrays = {INDEX_KEY: index.astype(_index_dtype(delta.size))}
        if settings.method == "topk-int8":
            q, scales = _quantize(values, [values.size])
            arrays.update({INT8_KEY: q, SCALES_KEY: scales})
        else:
            arrays[VALUES_KEY] = values
    record = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
    new_residual = None
    if settings.error_feedback:
        sent = _decode_delta({k: v for k, v in arrays.items()}, layout, settings)
        new_residual = (delta - sent).astype(np.float32)
    return record, new_residual


def _decode_delta(
    arrays: Mapping[str, np.ndarray], layout: Mapping[str, tuple[int, ...]], settings
) -> np.ndarray:
    total = int(sum(int(np.prod(s, dtype=np.int64)) for s in layout.values()))
    method = settings.method
    expected = {
        "int8": {INT8_KEY, SCALES_KEY},
        "topk": {INDEX_KEY, VALUES_KEY},
        "topk-int8": {INDEX_KEY, INT8_KEY, SCALES_KEY},
    }[method]
    if set(arrays) != expected:
        raise InputError(
            f"{method} packet has arrays {sorted(arrays)}; expected {sorted(expected)}"
        )
    if method == "int8":
        q = arrays[INT8_KEY]
        if q.dtype != np.int8 or q.ndim != 1 or q.size != total:
            raise InputError(f"int8 packet holds {q.size} {q.dtype} values; expected {total} int8")
        return _dequantize(q, arrays[SCALES_KEY], _channel_groups(layout, settings.granularity))
    index = arrays[INDEX_KEY]
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.unsignedinteger):
        raise InputError(f"top-k index array has dtype {index.dtype}, shape {index.shape}")
    if index.size and (int(index.max()) >= total or np.any(np.diff(index.astype(np.int64)) <= 0)):
        raise InputError("top-k indices are out of range or not strictly increasing")
    if method == "topk-int8":
        q = arrays[INT8_KEY]
        if q.dtype != np.int8 or q.shape != index.shape:
            raise InputError("top-k int8 values do not match the index array")
        values = _dequantize(q, arrays[SCALES_KEY], [q.size])
    else:
        values = arrays[VALUES_KEY]
        if values.shape != index.shape:
            raise InputError("top-k values do not match the index array")
    delta = np.zeros(total, dtype=np.float32)
    delta[index.astype(np.int64)] = values.astype(np.float32)
    return delta


def decode_update(
    reference: Mapping[str, np.ndarray], record: ArrayRecord, settings: CompressionSection
) -> dict[str, np.ndarray]:
    """Absolute tensors from a packet (the inverse of :func:`encode_update`).

    ``reference`` holds the global tensors sent to this client for the keys it must
    return. Raises ``ValueError`` on a malformed packet (the server rejects it).
    """
    state = record_to_state(record)
    if not settings.enabled:
        return state
    layout = {k: tuple(np.shape(v)) for k, v in reference.items()}
    delta = _decode_delta(state, layout, settings)
    keys = sorted(reference)
    return _unflatten(_flatten(reference, keys) + delta, layout)


def settings_from_config(config: Mapping[str, object]) -> CompressionSection:
    """Compression settings carried in a train ConfigRecord (``update-compression*``)."""
    method = str(config.get("update-compression", "none"))
    if method == "none":
        return CompressionSection()
    return CompressionSection(
        method=method,
        granularity=str(config.get("update-compression.granularity", "tensor")),
        topk_fraction=float(config.get("update-compression.topk-fraction", 0.1)),
        error_feedback=bool(config.get("update-compression.error-feedback", False)),
    )


def settings_to_config(settings: CompressionSection) -> dict[str, object]:
    """The ConfigRecord entries that tell a client how to compress its update."""
    if not settings.enabled:
        return {"update-compression": "none"}
    return {
        "update-compression": settings.method,
        "update-compression.granularity": settings.granularity,
        "update-compression.topk-fraction": float(settings.topk_fraction),
        "update-compression.error-feedback": bool(settings.error_feedback),
    }
