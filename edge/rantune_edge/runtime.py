"""Edge runtime: run a compressed artifact with numpy and onnxruntime only.

A device has neither torch nor the training stack, so this module imports nothing
but the standard library, numpy, onnxruntime and the rest of :mod:`rantune_edge`
(``cryptography`` only when a public key is given). A test imports it with ``torch``
blocked and CI runs it in a venv that holds nothing else.

>>> model = EdgeModel("ART/int8-dynamic", public_key="builder.pub.pem")  # signature + sha256
>>> result = model.predict_csi(csi)      # complex [N, A, S] -> labels, probabilities, top-k
>>> y = model.predict(x)                 # float32 [N, 2, A, S] model input -> raw output
>>> stats = model.bench()                # p50/p95 ms at batch 1/64, 1/2 threads

The model file is read once: its bytes are checked against the manifest's size and
sha256 and then handed to onnxruntime, so the checked bytes are the ones that run.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rantune_edge import io, signing
from rantune_edge.errors import EdgeError
from rantune_edge.manifest import BATCH_AXIS, Manifest, parse_manifest, read_manifest_bytes

DEFAULT_MAX_BATCH = 4096
BENCH_BATCHES = (1, 64)
BENCH_THREADS = (1, 2)
BENCH_WARMUP = 10
BENCH_REPEATS = 100
_ORT = ort.capi.onnxruntime_pybind11_state
_LOAD_ERRORS = (_ORT.InvalidProtobuf, _ORT.InvalidGraph, _ORT.NotImplemented, _ORT.Fail)
SIGNATURE_STATES = ("verified", "unchecked", "unsigned")


def session_options(threads: int | None) -> ort.SessionOptions:
    """CPU session options: ``threads`` intra-op threads (None = onnxruntime's default)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise EdgeError(f"threads={threads!r} is invalid: expected an integer >= 1")
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
        raise EdgeError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return summarize_latencies(times)


def _check_model_bytes(path: Path, data: bytes, manifest: Manifest) -> None:
    if len(data) != int(manifest.model["size_bytes"]):
        raise EdgeError(
            f"{path} has {len(data)} bytes, the manifest records "
            f"{manifest.model['size_bytes']}: the file is truncated or replaced; "
            "copy the artifact again"
        )
    actual = hashlib.sha256(data).hexdigest()
    expected = str(manifest.model["sha256"])
    if actual != expected:
        raise EdgeError(
            f"{path} fails its sha256 check ({actual[:12]}... != manifest "
            f"{expected[:12]}...): the model was tampered with or corrupted; refusing to "
            "load it (copy the artifact again)"
        )


class EdgeModel:
    """A loaded, verified artifact.

    Parameters
    ----------
    artifact : directory with ``manifest.json`` and the model file it names.
    threads : onnxruntime intra-op threads (None = onnxruntime's default).
    verify : check the model file's size and sha256 against the manifest (keep on).
    public_key : PEM file (or loaded key) of the builder's Ed25519 public key: the
        artifact must carry a valid ``signature.json`` over its manifest. Without it the
        signature is not checked (``signature`` says ``"unchecked"`` or ``"unsigned"``;
        the CLI warns).

    Raises
    ------
    EdgeError
        If the manifest is missing/malformed, the signature is missing or does not verify
        with ``public_key``, or the model file is missing or does not match its recorded
        size and sha256 (tampered or corrupted).
    """

    def __init__(
        self,
        artifact: Path | str,
        threads: int | None = None,
        verify: bool = True,
        public_key=None,
    ):
        self.directory = Path(artifact)
        data, path = read_manifest_bytes(self.directory)
        if public_key is not None:
            if isinstance(public_key, str | Path):
                public_key = signing.load_public_key(public_key)
            self.key_id: str | None = signing.verify_manifest_signature(
                self.directory, public_key, data
            )
            self.signature = "verified"
        else:
            self.key_id = None
            self.signature = "unchecked" if signing.is_signed(self.directory) else "unsigned"
        self.manifest: Manifest = parse_manifest(data, str(path))
        self.model_path = self.directory / self.manifest.model_file
        if not self.model_path.is_file():
            raise EdgeError(
                f"artifact {self.directory} lacks its model file {self.manifest.model_file}"
            )
        self._model_bytes = self.model_path.read_bytes()
        if verify:
            _check_model_bytes(self.model_path, self._model_bytes, self.manifest)
        self.threads = threads
        self.session = self._session(threads)
        spec = self.manifest.input
        self.input_name = str(spec["name"])
        self.input_dtype = np.dtype(spec["dtype"])
        # None marks the dynamic batch axis.
        self.input_shape = tuple(None if d == BATCH_AXIS else int(d) for d in spec["shape"])
        self.max_batch = int(self.manifest.model.get("max_batch", DEFAULT_MAX_BATCH))

    def _session(self, threads: int | None) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(
                self._model_bytes, session_options(threads), providers=["CPUExecutionProvider"]
            )
        except _LOAD_ERRORS as err:
            raise EdgeError(
                f"onnxruntime {ort.__version__} cannot load {self.model_path} (opset "
                f"{self.manifest.model.get('opset')}): {err}; if the sha256 check was on, the "
                "file is what was built: upgrade onnxruntime"
            ) from err

    def verify(self) -> None:
        """Raise :class:`EdgeError` unless the model file on disk still matches the manifest."""
        _check_model_bytes(self.model_path, self.model_path.read_bytes(), self.manifest)

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest.label_names)

    def expected_shape(self) -> str:
        return "[" + ", ".join("batch" if d is None else str(d) for d in self.input_shape) + "]"

    def validate(self, x: np.ndarray) -> np.ndarray:
        """Check float model input ``x`` against the manifest's input spec; returns it
        C-contiguous (complex CSI goes through :meth:`predict_csi`).

        Raises
        ------
        EdgeError
            On a non-array, wrong dtype, wrong rank or axis sizes, an empty batch or
            non-finite values.
        """
        return io.check_array(x, self.input_shape, self.input_dtype, "input")

    def run(self, x: np.ndarray) -> np.ndarray:
        """One onnxruntime call without validation (``x`` already validated)."""
        return self.session.run(None, {self.input_name: x})[0]

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Raw model output for float model input ``x`` (validated), in chunks of
        ``batch_size`` rows: the manifest's ``output.shape`` with batch ``len(x)``."""
        x = self.validate(x)
        step = min(batch_size or self.max_batch, self.max_batch)
        if step < 1:
            raise EdgeError(f"batch_size={batch_size} is invalid: expected >= 1")
        parts = [self.run(x[i : i + step]) for i in range(0, len(x), step)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def predict_csi(
        self,
        x: np.ndarray,
        top_k: int = io.DEFAULT_TOP_K,
        normalize: bool = True,
        batch_size: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Decoded prediction for complex CSI or the float layout (see :mod:`rantune_edge.io`).

        Parameters
        ----------
        x : complex CSI ``[N, A, S]`` (``[N, T, A, S]`` for sequence tasks), normalized
            here as the manifest says; or the float model input ``[N, 2, A, S]`` /
            ``[N, T, 2, A, S]``, used as is.
        top_k : classes kept per row for classification.
        normalize : apply the manifest's normalization to complex input (off: the CSI is
            already scaled as the training data was).

        Returns
        -------
        dict
            Classification: ``logits [N, K]``, ``probabilities [N, K]``, ``top_k [N, k]``,
            ``top_k_probabilities [N, k]``, ``labels [N]`` and ``label_names [K]``.
            Prediction: ``csi [N, A, S]`` complex64 in the input's units and ``output``.
            Positioning: ``position_m [N, D]`` metres.
        """
        model_input, scale = io.model_input(x, self.manifest, self.input_shape, normalize)
        output = self.predict(model_input, batch_size)
        return io.decode_output(output, self.manifest, scale, top_k)

    def example_input(self, batch: int, seed: int = 0) -> np.ndarray:
        """Random unit-norm-like input of the manifest's shape with ``batch`` rows."""
        shape = tuple(batch if d is None else d for d in self.input_shape)
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(shape) / np.sqrt(2.0 * np.prod(shape[-2:]))
        return x.astype(self.input_dtype)

    def bench(
        self,
        batch_sizes: tuple[int, ...] = BENCH_BATCHES,
        threads: tuple[int, ...] = BENCH_THREADS,
        warmup: int = BENCH_WARMUP,
        repeats: int = BENCH_REPEATS,
    ) -> dict:
        """Latency of raw onnxruntime runs for every (threads, batch) pair.

        Returns
        -------
        dict
            ``{"artifact", "task", "variant", "size_bytes", "onnxruntime", "results":
            [{"threads", "batch", "p50_ms", "p95_ms", "mean_ms", "runs", "samples_per_s"}]}``.
        """
        for batch in batch_sizes:
            if batch < 1 or batch > self.max_batch:
                raise EdgeError(
                    f"batch {batch} is invalid: expected 1 <= batch <= {self.max_batch}"
                )
        results = []
        for count in threads:
            session = self._session(count)
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
