"""Station-shaped inputs and outputs: complex CSI in, labels / probabilities / CSI out.

A base station holds complex CSI estimates ``[N, A, S]`` (``[N, T, A, S]`` slots for
sequence tasks) in its own units. :func:`model_input` turns them into the model's float
layout exactly as the manifest records (``normalization.method`` / ``scope``, real and
imaginary parts stacked on the axis before ``[A, S]``); the float layout itself is still
accepted and used as is. :func:`decode_output` turns the raw output into what the task
means: class names, probabilities and top-k for classification, complex CSI (back in
the input's units) for prediction, coordinates in metres for positioning. :func:`save_npz` and :func:`json_lines` write them.
"""

from __future__ import annotations

import io as _io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rantune_edge.errors import EdgeError
from rantune_edge.manifest import Manifest, atomic_write, normalization_rule

DEFAULT_TOP_K = 3


def _shape_text(shape: tuple) -> str:
    return "[" + ", ".join("batch" if d is None else str(d) for d in shape) + "]"


def _check_shape(x: np.ndarray, shape: tuple, what: str, layout: str) -> None:
    if x.ndim != len(shape):
        hint = " (add a batch axis: x[None])" if x.ndim == len(shape) - 1 else ""
        raise EdgeError(
            f"{what} shape {list(x.shape)} does not match the model's {layout} "
            f"{_shape_text(shape)}: expected {len(shape)} axes{hint}"
        )
    for axis, (got, want) in enumerate(zip(x.shape, shape, strict=True)):
        if want is not None and got != want:
            raise EdgeError(
                f"{what} shape {list(x.shape)} does not match the model's {layout} "
                f"{_shape_text(shape)}: axis {axis} is {got}, expected {want}"
            )
    if x.shape[0] < 1:
        raise EdgeError(f"{what} has an empty batch: give at least one sample")


def _check_finite(x: np.ndarray, what: str) -> None:
    finite = np.isfinite(x)
    if not finite.all():
        rows = np.flatnonzero(~finite.reshape(len(x), -1).all(axis=1))
        raise EdgeError(
            f"{what} has NaN or infinite values in {len(rows)} row(s) (first: {rows[:5].tolist()}): "
            "clean the CSI first"
        )


def check_array(x, shape: tuple, dtype: np.dtype, what: str = "input") -> np.ndarray:
    """Validate float model input ``x`` against ``shape`` (None = any batch) and ``dtype``.

    Returns ``x`` C-contiguous. Raises :class:`EdgeError` on a non-array, a wrong dtype,
    rank or axis size, an empty batch or non-finite values.
    """
    if not isinstance(x, np.ndarray):
        raise EdgeError(f"{what} must be a numpy array, got {type(x).__name__}")
    if x.dtype != dtype:
        raise EdgeError(
            f"{what} dtype {x.dtype} does not match the model's {dtype}: convert with "
            f"x.astype(np.{dtype.name})"
        )
    _check_shape(x, shape, what, "float input")
    _check_finite(x, what)
    return np.ascontiguousarray(x)


def complex_shape(input_shape: tuple) -> tuple:
    """The complex CSI shape a float input shape stands for: the ``2`` (real, imaginary)
    axis before ``[A, S]`` removed, e.g. ``[batch, 2, 16, 32]`` -> ``[batch, 16, 32]``."""
    if len(input_shape) < 4 or input_shape[-3] != 2:
        raise EdgeError(
            f"model input {_shape_text(input_shape)} has no (real, imaginary) axis before "
            "[antennas, subcarriers]: give the float layout the manifest names"
        )
    return tuple(input_shape[:-3]) + tuple(input_shape[-2:])


def csi_scale(csi: np.ndarray, method: str, scope: str) -> np.ndarray:
    """Per-row factor ``[N]`` (float64) that :func:`model_input` divides complex CSI by.

    ``unit-frobenius``/``snapshot``: the Frobenius norm of each ``[A, S]`` row;
    ``unit-frobenius``/``first-slot``: the norm of slot 0 of each ``[T, A, S]`` row (all
    slots share it); ``none``: ones.
    """
    if method == "none":
        return np.ones(len(csi))
    first = csi if scope == "snapshot" else csi[:, 0]
    norm = np.sqrt((np.abs(first.astype(np.complex128)) ** 2).reshape(len(csi), -1).sum(axis=1))
    zero = np.flatnonzero(norm == 0)
    if len(zero):
        raise EdgeError(
            f"CSI row(s) {zero[:5].tolist()} are all zeros: there is nothing to normalize; "
            "drop them"
        )
    return norm


def model_input(
    x, manifest: Manifest, input_shape: tuple, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Complex CSI or the float layout -> ``(float model input, scale [N])``.

    Complex ``x`` (``[N, A, S]`` / ``[N, T, A, S]``) is divided by :func:`csi_scale`
    (unless ``normalize`` is off) and its real and imaginary parts are stacked on the
    axis before ``[A, S]``; float ``x`` must already be the model input (scale 1).
    """
    if not isinstance(x, np.ndarray):
        raise EdgeError(f"input must be a numpy array, got {type(x).__name__}")
    dtype = np.dtype(manifest.input["dtype"])
    if not np.iscomplexobj(x):
        if x.ndim == len(input_shape) - 1:
            raise EdgeError(
                f"input shape {list(x.shape)} with dtype {x.dtype} looks like CSI without its "
                f"imaginary part: give complex CSI {_shape_text(complex_shape(input_shape))} "
                f"(complex64) or the float layout {_shape_text(input_shape)}"
            )
        x = check_array(x, input_shape, dtype)
        return x, np.ones(len(x))
    _check_shape(x, complex_shape(input_shape), "input", "complex CSI")
    _check_finite(x, "input")
    method, scope = normalization_rule(manifest)
    scale = csi_scale(x, method if normalize else "none", scope)
    z = x.astype(np.complex128) / scale.reshape((-1,) + (1,) * (x.ndim - 1))
    stacked = np.stack([z.real, z.imag], axis=-3).astype(dtype)
    return np.ascontiguousarray(stacked), scale


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax ``[N, K]`` computed in float64, returned as float32."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def class_names(manifest: Manifest, num_classes: int) -> list[str]:
    names = list(manifest.label_names) or [f"class-{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise EdgeError(
            f"manifest names {len(names)} labels but the model outputs {num_classes} classes: "
            "the artifact is inconsistent; rebuild it"
        )
    return names


def decode_output(
    output: np.ndarray, manifest: Manifest, scale: np.ndarray, top_k: int = DEFAULT_TOP_K
) -> dict[str, np.ndarray]:
    """Raw model output -> the task's result (see :meth:`EdgeModel.predict_csi`)."""
    if manifest.output_kind == "csi":
        csi = (output[:, 0].astype(np.float64) + 1j * output[:, 1]) * scale[:, None, None]
        return {"csi": csi.astype(np.complex64), "output": output}
    if manifest.output_kind == "position":
        return {"position_m": output}
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise EdgeError(f"top_k={top_k!r} is invalid: expected an integer >= 1")
    names = class_names(manifest, output.shape[1])
    probabilities = softmax(output)
    k = min(top_k, output.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return {
        "logits": output,
        "probabilities": probabilities,
        "top_k": top.astype(np.int64),
        "top_k_probabilities": np.take_along_axis(probabilities, top, axis=1),
        "labels": np.asarray(names)[top[:, 0]],
        "label_names": np.asarray(names),
    }


def load_array(path: Path | str) -> np.ndarray:
    """A ``.npy`` array (complex CSI or the float layout); no pickles."""
    path = Path(path)
    if not path.is_file():
        raise EdgeError(f"--input {path} does not exist: give a .npy file of CSI or model input")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise EdgeError(f"--input {path} is not a readable .npy array ({err})") from err
    if not isinstance(array, np.ndarray):
        raise EdgeError(f"--input {path} holds several arrays (.npz): give one .npy array")
    return array


def check_out_path(path: Path | str, suffix: str) -> Path:
    """Refuse an output path that is a directory or lacks ``suffix`` (before any work)."""
    path = Path(path)
    if path.is_dir():
        raise EdgeError(f"--out {path} is a directory; give a file path ending in {suffix}")
    if path.suffix != suffix:
        raise EdgeError(f"--out {path} must end in {suffix}")
    return path


def save_npz(path: Path | str, result: dict[str, np.ndarray]) -> Path:
    """Write ``result`` as an uncompressed ``.npz`` atomically (readable without pickles)."""
    path = check_out_path(path, ".npz")
    buffer = _io.BytesIO()
    np.savez(buffer, **result)
    atomic_write(path, buffer.getvalue())
    return path


def json_lines(result: dict[str, np.ndarray]) -> Iterator[str]:
    """One JSON object per row: ``{"row", "label", "top_k", "probabilities"}`` for
    classification, ``{"row", "csi": {"real", "imag"}}`` ([A, S] lists) for prediction,
    ``{"row", "position_m"}`` for positioning."""
    if "position_m" in result:
        for row, position in enumerate(result["position_m"]):
            yield json.dumps({"row": row, "position_m": position.tolist()})
        return
    if "csi" in result:
        for row, csi in enumerate(result["csi"]):
            yield json.dumps(
                {"row": row, "csi": {"real": csi.real.tolist(), "imag": csi.imag.tolist()}}
            )
        return
    names = result["label_names"].tolist()
    for row, probs in enumerate(result["probabilities"]):
        top = [{"label": names[i], "probability": float(probs[i])} for i in result["top_k"][row]]
        yield json.dumps(
            {
                "row": row,
                "label": str(result["labels"][row]),
                "top_k": top,
                "probabilities": dict(zip(names, map(float, probs), strict=True)),
            }
        )
