"""rantune-edge as a device gets it: the wheel holds only ``rantune_edge``; a signed
artifact built by ``rantune compress --sign`` passes the device check
(``.ci/edge_device_check.py``: verify, predict from complex CSI = PyTorch within 1e-5,
int8 labels, bench, and every refusal).

The bundle the check reads goes to ``$RANTUNE_EDGE_CHECK_DIR`` when set: ``.ci/run`` sets
it, then runs the same check again in a fresh venv holding only the wheel and its deps.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from compression_runs import smoke_run

from rantune.compression.export import run_onnx
from rantune.compression.merge import load_run
from rantune.federated.splits import FederatedData
from rantune.model.encoder import csi_to_real
from rantune.tasks import predict
from rantune.tasks.observation import own_norm
from rantune_edge.manifest import read_manifest
from rantune_edge.signing import generate_keypair

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
CHECK_DIR_ENV = "RANTUNE_EDGE_CHECK_DIR"
ROWS = 48
NOISE_LINES = ("torchao", "_C_mxfp8", "_C_cutlass", "_pytree", "Failed to load")


def _bundle_dir(tmp_path_factory) -> Path:
    if os.environ.get(CHECK_DIR_ENV):
        out = Path(os.environ[CHECK_DIR_ENV]).resolve()
        shutil.rmtree(out / "keys", ignore_errors=True)  # keygen never overwrites
        return out
    return tmp_path_factory.mktemp("edge-check")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """Signed fp32 + int8 artifacts of a tiny LoS run, CSI rows and the training side's
    outputs on them (``expected.npz``)."""
    out = _bundle_dir(tmp_path_factory)
    run_dir = smoke_run(tmp_path_factory.getbasetemp() / "compression", "los")
    key, _ = generate_keypair(out / "keys" / "builder.pem")
    generate_keypair(out / "keys" / "other.pem")
    env = {**os.environ, "COLUMNS": "80"}
    env.pop("RANTUNE_VERBOSE", None)
    compress = subprocess.run(
        [sys.executable, "-m", "rantune.simulations.cli", "compress", "--run", str(run_dir),
         "--out", str(out / "ART"), "--variants", "fp32,int8-dynamic", "--sign", str(key),
         "--max-train", "128", "--max-eval", "64", "--force"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )  # fmt: skip
    assert compress.returncode == 0, compress.stdout + compress.stderr
    # Station-shaped rows: the global test set's noisy estimates at a path-loss-like gain
    run = load_run(run_dir)
    data = FederatedData.load(run.config.data, run.config.partition)
    rows = data.rows(None, "test")[:ROWS]  # sorted pooled indices
    chosen = data.take(rows)
    training = own_norm(chosen["csi_noisy"])  # [N, A, S] as the model was trained on
    gain = 10.0 ** np.random.default_rng(0).uniform(-6, -3, len(rows))
    station = (training * gain[:, None, None]).astype(np.complex64)
    np.save(out / "csi.npy", station)
    np.save(out / "csi_training.npy", training)
    # The training side: PyTorch on its own normalization, and the task's tensors
    z = torch.from_numpy(station.astype(np.complex128))
    z = z / torch.linalg.vector_norm(z, dim=(-2, -1), keepdim=True)
    x_train, _ = run.task.tensors(chosen, np.arange(len(rows)))
    names = np.asarray(read_manifest(out / "ART" / "int8-dynamic").label_names)
    int8 = run_onnx(out / "ART" / "int8-dynamic" / "model.onnx", x_train.numpy())
    np.savez(
        out / "expected.npz",
        fp32_logits=predict(run.model, csi_to_real(z.to(torch.complex64))).numpy(),
        fp32_training_logits=predict(run.model, x_train).numpy(),
        int8_labels=names[int8.argmax(axis=1)],
    )
    return out, compress.stdout + compress.stderr


def test_compress_output_fits_80_columns_and_has_no_import_noise(bundle):
    # Prepare / Execute: the compress run of the fixture (COLUMNS=80)
    _, output = bundle
    table = [line for line in output.splitlines() if line.startswith(("┃", "│", "┏", "└"))]
    # Assert: a table was printed, nothing wider than 80, no cut numbers, no torchao lines
    assert table, output
    assert max(len(line) for line in output.splitlines()) <= 80, output
    assert "…" not in output
    assert not [line for line in output.splitlines() if any(n in line for n in NOISE_LINES)]
    assert "signed every manifest" in output


def test_device_check_passes_with_this_install(bundle):
    # Prepare
    out, _ = bundle
    # Execute: the check CI runs in the isolated venv, here with rantune's own install
    result = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "edge_device_check.py"), str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    # Assert
    assert result.returncode == 0, result.stdout + result.stderr
    assert "edge device check passed" in result.stdout
    assert "fp32 logits from complex CSI: equal to the training side" in result.stdout


def test_editable_install_serves_the_edge_package_from_edge_folder():
    # Prepare / Execute
    import rantune_edge
    from rantune.compression import edge as training_side
    from rantune_edge import runtime

    # Assert: one copy of the code, the repository's edge/rantune_edge
    assert Path(rantune_edge.__file__).resolve().parent == REPO / "edge" / "rantune_edge"
    assert training_side.EdgeModel is runtime.EdgeModel
    assert shutil.which("rantune-edge", path=str(Path(sys.executable).parent))


def test_wheel_holds_only_rantune_edge(tmp_path):
    # Prepare: a copy of edge/ (the build leaves build/ and *.egg-info where it runs)
    source = shutil.copytree(
        REPO / "edge", tmp_path / "edge", ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    # Execute: build the wheel as CI does (offline: this venv's setuptools)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
         "--no-build-isolation", "-w", str(tmp_path / "dist"), "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("rantune_edge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(archive.read(meta_name))
        entry_points = archive.read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    # Assert: only rantune_edge modules, numpy + onnxruntime (+ cryptography as an extra)
    packages = {n.split("/")[0] for n in names}
    assert packages == {"rantune_edge", meta_name.split("/")[0]}, packages
    modules = {Path(n).name for n in names if n.startswith("rantune_edge/")}
    assert {"runtime.py", "manifest.py", "signing.py", "io.py", "cli.py"} <= modules
    requires = sorted(meta.get_all("Requires-Dist"))
    assert [r.split(">")[0].split(";")[0].strip() for r in requires] == [
        "cryptography", "numpy", "onnxruntime"
    ]  # fmt: skip
    assert 'extra == "verify"' in next(r for r in requires if r.startswith("cryptography"))
    assert "rantune-edge = rantune_edge.cli:main" in entry_points
