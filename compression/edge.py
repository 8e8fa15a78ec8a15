"""Edge runtime: run a compressed artifact with numpy and onnxruntime only.

A device has neither torch nor the training stack, so this module imports nothing
but the standard library, numpy, onnxruntime and :mod:`compression.manifest`
(itself standard library only). A test imports it with ``torch`` blocked.

>>> model = EdgeModel("ART/int8-dynamic")        # checks the model's sha256
>>> y = model.predict(x)                          # x: float32 [B, 2, A, S] (see manifest)
>>> stats = model.bench()                         # p50/p95 ms at batch 1/64, 1/2 threads
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rantune.compression.manifest import BATCH_AXIS, Manifest, read_manifest
from rantune.errors import InputError

DEFAULT_MAX_BATCH = 4096


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def session_options(threads: int | None) -> ort.SessionOptions:
    """CPU session options: ``threads`` intra-op threads (None = onnxruntime's default)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise InputError(f"threads={threads!r} is invalid: expected an integer >= 1")
        options.intra_op_num_threads = threads
    return options


def summarize_latencies(seconds: list[float]) -> dict[str, float]:
    """``p50_ms``, ``p95_ms``, ``mean_ms`` and ``runs`` of per-call wall times (seconds)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "runs": int(len(ms)),
    }


def time_calls(call, warmup: int, repeats: int) -> dict[str, float]:
    """Run ``call()`` ``warmup`` times, then time ``repeats`` calls one by one."""
    if repeats < 1 or warmup < 0:
        raise InputError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return summarize_latencies(times)


def prepare_csi(csi: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Complex CSI ``[..., A, S]`` -> float32 model input ``[..., 2, A, S]``.

    Parameters
    ----------
    csi : complex array, last two axes (antennas, subcarriers).
    normalize : scale every ``[A, S]`` matrix to unit Frobenius norm (as in training).
    """
    csi = np.asarray(csi)
    if not np.iscomplexobj(csi) or csi.ndim < 2:
        raise InputError("prepare_csi expects complex CSI with axes [..., antennas, subcarriers]")
    csi = csi.astype(np.complex64)
    if normalize:
        norm = np.sqrt((np.abs(csi) ** 2).sum(axis=(-2, -1), keepdims=True))
        csi = csi / np.maximum(norm, 1e-30)
    return np.stack([csi.real, csi.imag], axis=-3).astype(np.float32)


class EdgeModel:
    """A loaded, verified artifact.

    Parameters
    ----------
    artifact : directory with ``manifest.json`` and the model file it names.
    threads : onnxruntime intra-op threads (None = onnxruntime's default).
    verify : check the model file's sha256 and size against the manifest (keep on).

    Raises
    ------
    ValueError
        If the manifest is missing/malformed or the model file is missing or does not
        match its recorded sha256 (tampered or corrupted).
    """

    def __init__(self, artifact: Path | str, threads: int | None = None, verify: bool = True):
        self.directory = Path(artifact)
        self.manifest: Manifest = read_manifest(self.directory)
        self.model_path = self.directory / self.manifest.model_file
        if not self.model_path.is_file():
            raise InputError(
                f"artifact {self.directory} lacks its model file {self.manifest.model_file}"
            )
        if verify:
            self.verify()
        self.threads = threads
        self.session = ort.InferenceSession(
            str(self.model_path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        spec = self.manifest.input
        self.input_name = str(spec["name"])
        self.input_dtype = np.dtype(spec["dtype"])
        # None marks the dynamic batch axis.
        self.input_shape = tuple(None if d == BATCH_AXIS else int(d) for d in spec["shape"])
        self.max_batch = int(self.manifest.model.get("max_batch", DEFAULT_MAX_BATCH))

    def verify(self) -> None:
        """Raise ``ValueError`` unless the model file's size and sha256 match the manifest."""
        expected = str(self.manifest.model["sha256"])
        size = self.model_path.stat().st_size
        if size != int(self.manifest.model["size_bytes"]):
            raise InputError(
                f"{self.model_path} has {size} bytes, the manifest records "
                f"{self.manifest.model['size_bytes']}: the file is truncated or replaced; "
                "copy the artifact again"
            )
        actual = sha256_of(self.model_path)
        if actual != expected:
            raise InputError(
                f"{self.model_path} fails its sha256 check ({actual[:12]}... != manifest "
                f"{expected[:12]}...): the model was tampered with or corrupted; refusing to "
                "load it (copy the artifact again)"
            )

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest.label_names)

    def expected_shape(self) -> str:
        return "[" + ", ".join("batch" if d is None else str(d) for d in self.input_shape) + "]"

    def validate(self, x: np.ndarray) -> np.ndarray:
        """Check ``x`` against the manifest's input spec; returns it C-contiguous.

        Raises
        ------
        ValueError
            On a non-array, wrong dtype, wrong rank or axis sizes, an empty batch or
            non-finite values.
        """
        if not isinstance(x, np.ndarray):
            raise InputError(f"input must be a numpy array, got {type(x).__name__}")
        if x.dtype != self.input_dtype:
            raise InputError(
                f"input dtype {x.dtype} does not match the model's {self.input_dtype}: "
                f"convert with x.astype(np.{self.input_dtype.name})"
                + (" (complex CSI: use prepare_csi)" if np.iscomplexobj(x) else "")
            )
        if x.ndim != len(self.input_shape):
            hint = " (add a batch axis: x[None])" if x.ndim == len(self.input_shape) - 1 else ""
            raise InputError(
                f"input shape {list(x.shape)} does not match the model's "
                f"{self.expected_shape()}: expected {len(self.input_shape)} axes{hint}"
            )
        for axis, (got, want) in enumerate(zip(x.shape, self.input_shape, strict=True)):
            if want is not None and got != want:
                raise InputError(
                    f"input shape {list(x.shape)} does not match the model's "
                    f"{self.expected_shape()}: axis {axis} is {got}, expected {want}"
                )
        if x.shape[0] < 1:
            raise InputError("input has an empty batch: give at least one sample")
        if not np.isfinite(x).all():
            raise InputError("input has NaN or infinite values: clean the CSI first")
        return np.ascontiguousarray(x)

    def run(self, x: np.ndarray) -> np.ndarray:
        """One onnxruntime call without validation (``x`` already validated)."""
        return self.session.run(None, {self.input_name: x})[0]

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Model output for ``x`` (validated), in chunks of ``batch_size`` rows.

        Returns the output array; its shape is the manifest's ``output.shape`` with the
        batch axis equal to ``len(x)``.
        """
        x = self.validate(x)
        step = min(batch_size or self.max_batch, self.max_batch)
        if step < 1:
            raise InputError(f"batch_size={batch_size} is invalid: expected >= 1")
        parts = [self.run(x[i : i + step]) for i in range(0, len(x), step)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def example_input(self, batch: int, seed: int = 0) -> np.ndarray:
        """Random unit-norm-like input of the manifest's shape with ``batch`` rows."""
        shape = tuple(batch if d is None else d for d in self.input_shape)
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(shape) / np.sqrt(2.0 * np.prod(shape[-2:]))
        return x.astype(self.input_dtype)

    def bench(
        self,
        batch_sizes: tuple[int, ...] = (1, 64),
        threads: tuple[int, ...] = (1, 2),
        warmup: int = 10,
        repeats: int = 100,
    ) -> dict:
        """Latency of ``predict``-free raw runs for every (threads, batch) pair.

        Returns
        -------
        dict
            ``{"artifact", "task", "variant", "results": [{"threads", "batch", "p50_ms",
            "p95_ms", "mean_ms", "runs", "samples_per_s"}, ...]}``.
        """
        results = []
        for count in threads:
            session = ort.InferenceSession(
                str(self.model_path), session_options(count), providers=["CPUExecutionProvider"]
            )
            for batch in batch_sizes:
                x = self.example_input(batch)
                stats = time_calls(
                    lambda s=session, v=x: s.run(None, {self.input_name: v}), warmup, repeats
                )
                stats.update(
                    threads=count,
                    batch=batch,
                    samples_per_s=batch / max(stats["p50_ms"] / 1e3, 1e-12),
                )
                results.append(stats)
        return {
            "artifact": str(self.directory),
            "task": self.task,
            "variant": self.manifest.variant,
            "size_bytes": int(self.manifest.model["size_bytes"]),
            "onnxruntime": ort.__version__,
            "results": results,
        }
