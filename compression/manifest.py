"""``manifest.json``: what an edge artifact is, how to feed it and how well it does.

This module uses the standard library only: the edge runtime (:mod:`compression.edge`)
reads manifests on devices that have neither torch nor the training stack.

Fields
------
format_version : manifest schema version (``1``).
task : task name (``los``, ``beam``, ``prediction``).
variant : compression variant that made the artifact (``fp32``, ``int8-dynamic``, ...).
input : ``{"name", "shape", "dtype"}``; ``shape`` has ``"batch"`` for the dynamic axis,
    e.g. ``["batch", 2, 16, 32]``.
output : ``{"name", "shape", "dtype"}`` of the model output.
normalization : how raw CSI becomes the input tensor (see :data:`CSI_NORMALIZATION`).
label_names : class names of the output logits (empty for regression).
model : ``{"file", "sha256", "size_bytes", "opset", "parameters", "max_batch"}``.
source : ``{"run_dir", "config_hash", "pretrained", "data_preset", "lora"}``.
metrics : measured metrics of this artifact (accuracy/NMSE, latency), may be empty.
details : free-form variant details (pruned shapes, student config, quantization).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rantune.errors import InputError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
BATCH_AXIS = "batch"

CSI_NORMALIZATION = {
    "csi": "complex CSI H [antennas, subcarriers] scaled to unit Frobenius norm per sample",
    "layout": "float32 [..., 2, antennas, subcarriers]: index 0 = real part, 1 = imaginary part",
    "source_field": "csi_noisy (the noisy LS estimate); csi_sequence slots for prediction",
}

_REQUIRED = ("format_version", "task", "variant", "input", "output", "model", "source")


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
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.label_names = list(self.label_names)
        for name in ("input", "output"):
            spec = getattr(self, name)
            if not isinstance(spec, dict) or not {"name", "shape", "dtype"} <= set(spec):
                raise InputError(
                    f"manifest {name} spec {spec!r} is invalid: expected name, shape and dtype"
                )
            spec["shape"] = list(spec["shape"])
        if not {"file", "sha256", "size_bytes"} <= set(self.model):
            raise InputError(
                f"manifest model entry {self.model!r} is invalid: expected file, sha256, size_bytes"
            )

    @property
    def model_file(self) -> str:
        return str(self.model["file"])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict, where: str = "manifest") -> Manifest:
        """Build from a parsed ``manifest.json``; raises ``ValueError`` if it is malformed."""
        if not isinstance(payload, dict):
            raise InputError(f"{where} is not a JSON object")
        missing = [k for k in _REQUIRED if k not in payload]
        if missing:
            raise InputError(
                f"{where} lacks field(s) {missing}: regenerate it with rantune compress"
            )
        version = payload["format_version"]
        if version != FORMAT_VERSION:
            raise InputError(
                f"{where} has format_version {version!r}; this runtime reads {FORMAT_VERSION}: "
                "regenerate the artifact or upgrade rantune"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(payload) - known)
        if unknown:
            raise InputError(f"{where} has unknown field(s) {unknown}")
        return cls(**payload)


def write_manifest(directory: Path | str, manifest: Manifest) -> Path:
    """Write ``directory/manifest.json`` atomically (temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST_NAME
    data = (json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n").encode()
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{MANIFEST_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(directory: Path | str) -> Manifest:
    """Read ``directory/manifest.json``.

    Raises
    ------
    ValueError
        If the directory or its manifest is missing or malformed.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise InputError(f"artifact {directory} is not a directory: pass an artifact folder")
    if not path.exists():
        raise InputError(
            f"artifact {directory} has no {MANIFEST_NAME}: pass a folder made by rantune compress"
        )
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({err}): the artifact is damaged") from err
    return Manifest.from_dict(payload, where=str(path))
