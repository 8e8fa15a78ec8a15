"""``manifest.json``: what an edge artifact is, how to feed it and how well it does.

Standard library only: devices read manifests without torch or the training stack.

Fields
------
format_version : manifest schema version (``1``).
task : task name (``los``, ``beam``, ``prediction``).
variant : compression variant that made the artifact (``fp32``, ``int8-dynamic``, ...).
input : ``{"name", "shape", "dtype"}``; ``shape`` has ``"batch"`` for the dynamic axis,
    e.g. ``["batch", 2, 16, 32]`` (snapshot) or ``["batch", 4, 2, 16, 32]`` (sequence).
output : ``{"name", "shape", "dtype", "kind"}`` of the model output; ``kind`` is
    ``"logits"`` (classification over ``label_names``), ``"csi"`` (a CSI matrix in the
    float layout, ``[batch, 2, A, S]``) or ``"position"`` (coordinates in metres,
    ``[batch, D]``). Older manifests without ``kind`` get it from the output rank (see
    :func:`output_kind`).
normalization : how complex CSI becomes the float input (see :data:`CSI_NORMALIZATION`);
    ``method`` and ``scope`` are read by :mod:`rantune_edge.io`.
label_names : class names of the output logits (empty for regression).
model : ``{"file", "sha256", "size_bytes", "opset", "parameters", "max_batch"}``.
source : ``{"run_dir", "config_hash", "pretrained", "data_preset", "lora"}``.
metrics : measured metrics of this artifact (accuracy/NMSE, latency), may be empty.
details : free-form variant details (pruned shapes, student config, quantization).
distillation : how a trained student (distilled or pruned-and-recovered) learned without
    pooled data: ``{"mode": "federated" | "server-generated", "rounds", "stations",
    "labels": "own rows only" | "none", "bytes", ...}``; ``{}`` for the quantized teacher.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rantune_edge.errors import EdgeError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
BATCH_AXIS = "batch"
OUTPUT_KINDS = ("logits", "csi", "position")
DISTILLATION_MODES = ("federated", "server-generated")
NORMALIZATION_METHODS = ("unit-frobenius", "none")
NORMALIZATION_SCOPES = ("snapshot", "first-slot")

CSI_NORMALIZATION = {
    "method": "unit-frobenius",
    "scope": "snapshot",
    "csi": "complex CSI H [antennas, subcarriers] scaled to unit Frobenius norm per sample",
    "layout": "float32 [..., 2, antennas, subcarriers]: index 0 = real part, 1 = imaginary part",
    "source_field": "csi_noisy (the noisy LS estimate); csi_sequence slots for prediction",
    "station_note": "training rows of csi_noisy were divided by their own norm, as the "
    "runtime does (the noiseless channel's norm, which a station does not know, is not used)",
}

_REQUIRED = ("format_version", "task", "variant", "input", "output", "model", "source")


SEQUENCE_NORMALIZATION = {
    **CSI_NORMALIZATION,
    "scope": "first-slot",
    "csi": "complex CSI slots [T, antennas, subcarriers], all divided by the Frobenius "
    "norm of slot 0 (slot powers relative to slot 0 are kept)",
    "layout": "float32 [..., T, 2, antennas, subcarriers]: index 0 = real, 1 = imaginary",
    "source_field": "csi_sequence slots 0 .. T-1 (the slots before the predicted one)",
    "station_note": "training sequences (noisy LS estimates) were divided by the norm of "
    "their noisy slot 0, as the runtime does; the predicted CSI is returned in the input's "
    "units",
}


def normalization_for(input_shape: list) -> dict:
    """The normalization record of a model input shape: ``[batch, 2, A, S]`` snapshots are
    scaled one by one, ``[batch, T, 2, A, S]`` sequences by the norm of their slot 0 (as
    the data sets store ``csi_sequence``, so slot powers relative to slot 0 survive)."""
    return dict(SEQUENCE_NORMALIZATION if len(input_shape) == 5 else CSI_NORMALIZATION)


def normalization_rule(manifest: Manifest) -> tuple[str, str]:
    """``(method, scope)`` to apply; manifests written before these keys existed get them
    from the input rank (:func:`normalization_for`)."""
    default = normalization_for(manifest.input["shape"])
    norm = manifest.normalization
    return norm.get("method", default["method"]), norm.get("scope", default["scope"])


def output_kind(output: dict) -> str:
    """``output["kind"]``, or for manifests written before it existed: ``"logits"`` for a
    rank-2 output ``[batch, K]``, ``"csi"`` for ``[batch, 2, A, S]``."""
    kind = output.get("kind")
    if kind is None:
        shape = list(output["shape"])
        kind = "csi" if len(shape) == 4 and shape[1] == 2 else "logits"
    if kind not in OUTPUT_KINDS:
        raise EdgeError(
            f"manifest output kind {kind!r} is unknown to this runtime (it reads "
            f"{', '.join(OUTPUT_KINDS)}): upgrade rantune-edge"
        )
    return kind


@dataclass
class Manifest:
    """An artifact's manifest (see the module docstring for the fields)."""

    task: str
    variant: str
    input: dict
    output: dict
    model: dict
    source: dict
    normalization: dict = field(default_factory=lambda: dict(CSI_NORMALIZATION))
    label_names: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    distillation: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.label_names = list(self.label_names)
        for name in ("input", "output"):
            spec = getattr(self, name)
            if not isinstance(spec, dict) or not {"name", "shape", "dtype"} <= set(spec):
                raise EdgeError(
                    f"manifest {name} spec {spec!r} is invalid: expected name, shape and dtype"
                )
            spec["shape"] = list(spec["shape"])
        if not isinstance(self.model, dict) or not {"file", "sha256", "size_bytes"} <= set(
            self.model
        ):
            raise EdgeError(
                f"manifest model entry {self.model!r} is invalid: expected file, sha256, size_bytes"
            )
        if Path(str(self.model["file"])).name != str(self.model["file"]):
            raise EdgeError(
                f"manifest model file {self.model['file']!r} is not a plain file name: "
                "the artifact is damaged"
            )
        norm = self.normalization
        if not isinstance(norm, dict):
            raise EdgeError(f"manifest normalization {norm!r} is invalid: expected an object")
        if norm.get("method", "unit-frobenius") not in NORMALIZATION_METHODS:
            raise EdgeError(
                f"manifest normalization method {norm.get('method')!r} is unknown: this "
                f"runtime applies {', '.join(NORMALIZATION_METHODS)}"
            )
        if norm.get("scope", "snapshot") not in NORMALIZATION_SCOPES:
            raise EdgeError(
                f"manifest normalization scope {norm.get('scope')!r} is unknown: this "
                f"runtime applies {', '.join(NORMALIZATION_SCOPES)}"
            )
        output_kind(self.output)
        mode = self.distillation.get("mode") if isinstance(self.distillation, dict) else None
        if self.distillation != {} and mode not in DISTILLATION_MODES:
            raise EdgeError(
                f"manifest distillation mode {mode!r} is invalid: expected one of "
                f"{', '.join(DISTILLATION_MODES)} (or an empty object)"
            )

    @property
    def model_file(self) -> str:
        return str(self.model["file"])

    @property
    def output_kind(self) -> str:
        return output_kind(self.output)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_bytes(self) -> bytes:
        """The exact bytes :func:`write_manifest` writes (and a signature covers)."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_dict(cls, payload: dict, where: str = "manifest") -> Manifest:
        """Build from a parsed ``manifest.json``; raises :class:`EdgeError` if malformed."""
        if not isinstance(payload, dict):
            raise EdgeError(f"{where} is not a JSON object")
        missing = [k for k in _REQUIRED if k not in payload]
        if missing:
            raise EdgeError(
                f"{where} lacks field(s) {missing}: regenerate it with rantune compress"
            )
        version = payload["format_version"]
        if version != FORMAT_VERSION:
            raise EdgeError(
                f"{where} has format_version {version!r}; this runtime reads {FORMAT_VERSION}: "
                "regenerate the artifact or upgrade rantune-edge"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(payload) - known)
        if unknown:
            raise EdgeError(f"{where} has unknown field(s) {unknown}")
        try:
            return cls(**payload)
        except (TypeError, AttributeError, KeyError, IndexError) as err:
            raise EdgeError(f"{where} is malformed ({err}): regenerate the artifact") from err


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(directory: Path | str, manifest: Manifest) -> Path:
    """Write ``directory/manifest.json`` atomically (temp file + rename)."""
    path = Path(directory) / MANIFEST_NAME
    atomic_write(path, manifest.to_bytes())
    return path


def read_manifest_bytes(directory: Path | str) -> tuple[bytes, Path]:
    """Raw bytes of ``directory/manifest.json`` (what a signature covers) and its path."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise EdgeError(f"artifact {directory} is not a directory: pass an artifact folder")
    if not path.is_file():
        raise EdgeError(
            f"artifact {directory} has no {MANIFEST_NAME}: pass a folder made by rantune compress"
        )
    try:
        return path.read_bytes(), path
    except OSError as err:
        raise EdgeError(f"{path} cannot be read ({err.strerror})") from err


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Parse manifest bytes; raises :class:`EdgeError` on invalid JSON or fields."""
    try:
        payload = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EdgeError(f"{where} is not valid JSON ({err}): the artifact is damaged") from err
    return Manifest.from_dict(payload, where=where)


def read_manifest(directory: Path | str) -> Manifest:
    """Read ``directory/manifest.json``.

    Raises
    ------
    EdgeError
        If the directory or its manifest is missing or malformed.
    """
    data, path = read_manifest_bytes(directory)
    return parse_manifest(data, str(path))
