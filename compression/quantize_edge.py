"""Edge int8 with ``onnxruntime.quantization``: pre-processing, dynamic and static (QDQ).

torchao has no ONNX path, so edge artifacts are quantized here on the exported fp32
graph. Weights are int8 per output channel; dynamic quantization computes activation
scales at run time, static quantization fixes them from calibration data (never the
test set: rows the server holds, or activation ranges the stations computed on their
own rows, :mod:`rantune.compression.calibrate`) and stores QuantizeLinear/DequantizeLinear
pairs.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    TensorsData,
    quantize_dynamic,
    quantize_static,
    save_tensors_data,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from rantune.compression.export import INPUT_NAME, write_onnx
from rantune.errors import InputError

INT8_OPS = ("MatMul", "Gemm")
CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}


def preprocess(src: Path | str, dst: Path | str) -> Path:
    """``quant_pre_process``: symbolic shape inference + graph optimisation before int8.

    Falls back to ONNX shape inference alone when the symbolic pass cannot handle a
    graph (it is an optimisation aid, not a correctness step).
    """

    def build(tmp: Path) -> None:
        logging.getLogger("onnxruntime").setLevel(logging.ERROR)
        try:
            quant_pre_process(str(src), str(tmp), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - symbolic inference is best effort
            quant_pre_process(str(src), str(tmp), skip_symbolic_shape=True)

    return write_onnx(dst, build, graph_level=False)


def quantize_dynamic_int8(src: Path | str, dst: Path | str, per_channel: bool = True) -> Path:
    """Dynamic int8: per-channel int8 weights of MatMul/Gemm, activations at run time.

    ``src`` should come from :func:`preprocess`.
    """

    def build(tmp: Path) -> None:
        quantize_dynamic(
            str(src),
            str(tmp),
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(INT8_OPS),
        )

    return write_onnx(dst, build, graph_level=False)


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds calibration rows ``[N, ...]`` (float32) to onnxruntime in batches."""

    def __init__(self, x: np.ndarray, batch_size: int = 32, input_name: str = INPUT_NAME):
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.batch_size = batch_size
        self.input_name = input_name
        self.rewind()

    def rewind(self) -> None:
        self._starts = iter(range(0, len(self.x), self.batch_size))

    def get_next(self) -> dict | None:
        start = next(self._starts, None)
        if start is None:
            return None
        return {self.input_name: self.x[start : start + self.batch_size]}


def check_calibration(calibration: np.ndarray | None, expected_shape: list) -> np.ndarray:
    """Validate calibration rows against the model input shape (``"batch"`` first)."""
    if calibration is None or len(calibration) == 0:
        raise InputError(
            "static int8 quantization needs calibration data (client channel samples) and "
            "none was given: the run's clients have no training rows for this task, or "
            "pass calibration rows; otherwise use the int8-dynamic variant"
        )
    calibration = np.asarray(calibration)
    if calibration.dtype != np.float32 or not np.isfinite(calibration).all():
        raise InputError("calibration data must be finite float32 model inputs")
    want = [d for d in expected_shape[1:]]
    if list(calibration.shape[1:]) != want:
        raise InputError(
            f"calibration data has shape {list(calibration.shape)}; the model takes "
            f"[batch, {', '.join(map(str, want))}]"
        )
    return calibration


def quantize_static_int8(
    src: Path | str,
    dst: Path | str,
    calibration: np.ndarray | None,
    per_channel: bool = True,
    method: str = "minmax",
    batch_size: int = 32,
    ranges: TensorsData | None = None,
) -> Path:
    """Static int8 in QDQ format, activation ranges calibrated on ``calibration`` (or
    given as ``ranges``).

    Activations are uint8 (asymmetric) and weights int8 per channel: U8S8 is
    onnxruntime's fast x86 path (S8S8 measured 4x slower at batch 1 on this CPU
    without VNNI, at the same accuracy).

    Parameters
    ----------
    src : pre-processed fp32 model (:func:`preprocess`).
    dst : output model.
    calibration : float32 model inputs ``[N, ...]``; ignored (may be ``None``) with
        ``ranges``.
    per_channel : per-output-channel weight scales.
    method : ``minmax``, ``percentile`` or ``entropy``.
    batch_size : calibration batch size.
    ranges : MinMax activation ranges computed elsewhere (merged per-station ranges,
        :func:`rantune.compression.calibrate.federated_ranges`); onnxruntime reads them
        as its calibration cache (``calibration_cache_path``) and runs no calibration.

    Raises
    ------
    ValueError
        Without calibration rows, on rows of the wrong shape, or an unknown method.
    """
    from rantune.compression.export import describe_onnx

    if method not in CALIBRATION_METHODS:
        raise InputError(
            f"calibration method {method!r} is unknown: choose one of {sorted(CALIBRATION_METHODS)}"
        )
    if ranges is not None and method != "minmax":
        raise InputError(f"given activation ranges are MinMax ranges, not {method!r}")
    if ranges is None:
        calibration = check_calibration(calibration, describe_onnx(src)["input"]["shape"])

    def build(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="rantune-ranges-") as folder:
            cache, reader = None, None
            if ranges is not None:  # onnxruntime's calibration cache: no rows, no inference
                cache = Path(folder) / "ranges.json"
                save_tensors_data(ranges, cache)
            else:
                reader = ArrayCalibrationReader(calibration, batch_size)
            quantize_static(
                str(src),
                str(tmp),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(INT8_OPS),
                calibrate_method=CALIBRATION_METHODS[method],
                calibration_cache_path=cache,
            )

    return write_onnx(dst, build, graph_level=False)
