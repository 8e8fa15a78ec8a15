"""Communication accounting: bytes that travel per round.

Two measures:

- :func:`rantune.aggregation.lora_keys.state_nbytes`: raw tensor data only
  (``numel * element_size``), the payload a compact wire format would need;
- :func:`record_nbytes`: exactly what Flower's ``ArrayRecord.count_bytes()`` reports
  (FlowerTune's measure): per array the ``.npy`` serialisation (data plus a header of
  about 128 bytes) plus the length of its key. Use this one next to numbers measured
  on real Flower messages so both sides agree.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib import format as npy_format
from torch import Tensor

from rantune.aggregation.lora_keys import state_nbytes
from rantune.errors import InputError

MB = 1_000_000
"""Bytes per MB in every report (decimal megabytes)."""


@dataclass(frozen=True)
class RoundBytes:
    """Payload sizes of one round in bytes.

    Attributes
    ----------
    up : uploads summed over the participating clients.
    down : downloads summed over the participating clients.
    """

    up: int
    down: int

    def __add__(self, other: RoundBytes) -> RoundBytes:
        return RoundBytes(self.up + other.up, self.down + other.down)


MEASURES = ("record", "data")


def payload_nbytes(state: Mapping[str, Tensor | np.ndarray], measure: str = "record") -> int:
    """Bytes of one payload: ``"record"`` (Flower's ``count_bytes``) or ``"data"`` (tensor data only)."""
    if measure == "record":
        return record_nbytes(state)
    if measure == "data":
        return state_nbytes(state)
    raise InputError(f"unknown byte measure {measure!r}: choose one of {list(MEASURES)}")


def round_bytes(
    uploads: Sequence[Mapping[str, Tensor]],
    downloads: Sequence[Mapping[str, Tensor]] | Mapping[str, Tensor],
    measure: str = "record",
) -> RoundBytes:
    """Bytes of one round: every client's upload; ``downloads`` per client, or one
    payload broadcast to every uploader. ``measure``: see :func:`payload_nbytes`."""
    up = sum(payload_nbytes(s, measure) for s in uploads)
    if isinstance(downloads, Mapping):
        down = payload_nbytes(downloads, measure) * len(uploads)
    else:
        down = sum(payload_nbytes(s, measure) for s in downloads)
    return RoundBytes(up=up, down=down)


def _npy_header_nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes of the header ``np.save`` writes for an array of ``shape``/``dtype`` (C order)."""
    header = {
        "descr": npy_format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(shape),
    }
    buffer = io.BytesIO()
    try:
        npy_format.write_array_header_1_0(buffer, header)
    except ValueError:  # header too long for format 1.0: np.save falls back to 2.0
        buffer = io.BytesIO()
        npy_format.write_array_header_2_0(buffer, header)
    return len(buffer.getvalue())


def _numpy_dtype(tensor: Tensor) -> np.dtype:
    try:
        return torch.empty(0, dtype=tensor.dtype).numpy().dtype
    except TypeError as err:
        raise InputError(
            f"{tensor.dtype} has no numpy equivalent: Flower cannot send it as an Array"
        ) from err


def record_nbytes(state: Mapping[str, Tensor | np.ndarray]) -> int:
    """``ArrayRecord.count_bytes()`` of ``state`` without building the record (no Flower import).

    Per key: ``len(key)`` + ``.npy`` header + ``numel * itemsize``; torch tensors count
    as the numpy arrays Flower would serialise.
    """
    total = 0
    for key, value in state.items():
        if isinstance(value, Tensor):
            shape, dtype = tuple(value.shape), _numpy_dtype(value)
            nbytes = value.numel() * value.element_size()
        else:
            array = np.asarray(value)
            shape, dtype, nbytes = array.shape, array.dtype, array.nbytes
        total += len(key) + _npy_header_nbytes(shape, dtype) + nbytes
    return total
