"""Static-int8 calibration without pooled rows: activation ranges are computed where the
data is.

Two sources (the manifest's ``calib_source``):

``federated MinMax ranges``   every base station runs onnxruntime's MinMax calibrator
                              (:func:`onnxruntime.quantization.create_calibrator`) on the
                              fp32 graph over its *own* training rows and sends back only
                              the lowest / highest value of each calibrated tensor; the
                              server merges them (min of the lows, max of the highs) and
                              quantizes from those ranges (``quantize_static``'s
                              ``calibration_cache_path``: no calibration rows on the server).
                              MinMax ranges merge exactly: the result equals calibrating on
                              the stations' rows pooled, which never happens.
``server-generated channels`` the server calibrates on channels it generates itself
                              (:func:`rantune.compression.data.server_channels`, the
                              ``--distill server`` drop).

Percentile and entropy calibration need each tensor's histogram over all rows in one
place, so they run on server-generated channels only.

Bytes per station: the fp32 graph down, its ranges up (two float32 per tensor, counted
with the round loop's measure, :func:`~rantune.compression.federated_distill.state_bytes`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationMethod,
    TensorData,
    TensorsData,
    create_calibrator,
)

from rantune.compression.federated_distill import Participant, StationRows, state_bytes
from rantune.compression.quantize_edge import (
    INT8_OPS,
    ArrayCalibrationReader,
    check_calibration,
    quantize_static_int8,
)
from rantune.errors import InputError
from rantune.federated.splits import FederatedData
from rantune.seeding import derive_seed
from rantune.tasks import Task

FEDERATED_RANGES = "federated MinMax ranges"
SERVER_ROWS = "server-generated channels"
CALIB_SOURCES = (FEDERATED_RANGES, SERVER_ROWS)


def calibration_stations(
    data: FederatedData, task: Task, max_rows: int, seed: int = 0
) -> tuple[Participant, ...]:
    """One participant per station that calibrates on a seeded share of its own rows.

    ``max_rows`` rows in all, each station's share in proportion to its training rows
    (at least 1; a station without training rows is left out), as one pooled sample of
    ``max_rows`` would weigh them. A participant's ``rows()`` reads only its station.
    """
    counts = {pid: len(data.rows(pid, "train")) for pid in range(data.num_clients)}
    total = sum(counts.values())
    stations = []
    for pid, count in counts.items():
        if count == 0:
            continue
        share = max(1, round(max_rows * count / total))
        rows = StationRows(data, task, pid, share, derive_seed(seed, "calibration"))
        stations.append(Participant(str(pid), rows))
    return tuple(stations)


def station_ranges(model: Path | str, x: np.ndarray, batch_size: int = 32) -> TensorsData:
    """What one station computes: onnxruntime's MinMax ranges of ``model`` on its inputs.

    The calibrated tensors are those ``quantize_static`` calibrates for the same
    operator types (:data:`~rantune.compression.quantize_edge.INT8_OPS`).
    """
    with tempfile.TemporaryDirectory(prefix="rantune-calib-") as tmp:
        calibrator = create_calibrator(
            Path(model),
            list(INT8_OPS),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.MinMax,
        )
        calibrator.collect_data(ArrayCalibrationReader(x, batch_size))
        return calibrator.compute_data()


def merge_ranges(parts: Sequence[TensorsData]) -> TensorsData:
    """The server's merge: per tensor the lowest of the lows and the highest of the highs."""
    if not parts:
        raise InputError("federated calibration needs at least one station's ranges")
    names = list(parts[0].keys())
    for part in parts[1:]:
        if list(part.keys()) != names:
            raise InputError("stations calibrated different graphs: their tensor names differ")
    merged = {}
    for name in names:
        lows = [np.asarray(p[name].range_value[0], dtype=np.float32) for p in parts]
        highs = [np.asarray(p[name].range_value[1], dtype=np.float32) for p in parts]
        merged[name] = TensorData(
            lowest=np.minimum.reduce(lows), highest=np.maximum.reduce(highs)
        )
    return TensorsData(CalibrationMethod.MinMax, merged)


def ranges_bytes(ranges: TensorsData) -> int:
    """Bytes of one station's ranges as a message carries them."""
    state = {}
    for name, data in ranges.items():
        low, high = data.range_value
        state[name] = np.stack([np.asarray(low, np.float32), np.asarray(high, np.float32)])
    return state_bytes(state)


def federated_ranges(
    model: Path | str,
    stations: Sequence[Participant],
    expected_shape: list,
    log: Callable[[str], None] | None = None,
) -> tuple[TensorsData, dict]:
    """Each station's ranges on its own rows, merged; and the manifest's record.

    Returns
    -------
    (TensorsData, dict)
        The merged ranges and ``{"stations", "rows" (per station), "tensors",
        "bytes": {"graph-down", "ranges-up", "total"}}``.
    """
    log = log or (lambda message: None)
    parts, rows, up = [], {}, 0
    for station in stations:
        x = station.rows()[0]
        x = check_calibration(np.ascontiguousarray(x.numpy(), np.float32), expected_shape)
        part = station_ranges(model, x)
        parts.append(part)
        rows[station.name] = int(len(x))
        up += ranges_bytes(part)
    merged = merge_ranges(parts)
    down = Path(model).stat().st_size * len(parts)
    log(f"calibration: {len(parts)} station(s) sent {len(merged.data)} tensor ranges")
    record = {
        "stations": [s.name for s in stations],
        "rows": rows,
        "tensors": len(merged.data),
        "bytes": {"graph-down": down, "ranges-up": up, "total": down + up},
    }
    return merged, record


def check_source(
    calib_x: np.ndarray | None,
    stations: Sequence[Participant],
    expected_shape: list,
    method: str,
) -> None:
    """Refuse, before any work, a calibration that cannot run (no rows, no stations,
    or a histogram method over federated ranges)."""
    if calib_x is not None:
        check_calibration(calib_x, expected_shape)
        return
    if not stations:
        check_calibration(None, expected_shape)  # raises: no calibration data
    if method != "minmax":
        raise InputError(
            f"calibration method {method!r} needs every row's histogram in one place; "
            "federated calibration merges each station's MinMax ranges: use --calibration "
            "minmax, or --distill server (calibrates on channels the server generates)"
        )


def calibrated_static_int8(
    src: Path | str,
    dst: Path | str,
    calib_x: np.ndarray | None,
    stations: Sequence[Participant],
    method: str = "minmax",
    log: Callable[[str], None] | None = None,
) -> tuple[Path, dict]:
    """Static int8 of ``src`` (pre-processed fp32) calibrated on server-held rows
    ``calib_x`` or, when ``None``, on federated ranges of ``stations``.

    Returns the quantized model and the manifest's calibration details
    (``calib_source``, ``calibration_rows``, ``calibration_method`` and, federated,
    ``calibration`` = :func:`federated_ranges`'s record).
    """
    from rantune.compression.export import describe_onnx

    shape = describe_onnx(src)["input"]["shape"]
    check_source(calib_x, stations, shape, method)
    if calib_x is not None:
        out = quantize_static_int8(src, dst, calib_x, method=method)
        return out, {
            "calib_source": SERVER_ROWS,
            "calibration_rows": int(len(calib_x)),
            "calibration_method": method,
        }
    ranges, record = federated_ranges(src, stations, shape, log)
    out = quantize_static_int8(src, dst, None, method=method, ranges=ranges)
    return out, {
        "calib_source": FEDERATED_RANGES,
        "calibration_rows": sum(record["rows"].values()),
        "calibration_method": method,
        "calibration": record,
    }
