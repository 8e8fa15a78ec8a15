"""Edge runtime: torch-free import, sha256 and input validation, predict, bench, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from compression_runs import edge_artifact, smoke_onnx
from typer.testing import CliRunner

from rantune.compression.export import run_onnx
from rantune.simulations.cli import app
from rantune_edge import EdgeModel
from rantune_edge.manifest import (
    MODEL_NAME,
    read_manifest,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return smoke_onnx(tmp_path_factory.getbasetemp() / "compression", "los")


@pytest.fixture
def artifact(exported, tmp_path):
    return edge_artifact(tmp_path / "art", exported["onnx"])


def test_edge_module_imports_and_predicts_with_torch_blocked(artifact, exported, tmp_path):
    # Prepare: inputs on disk and a script whose meta-path hook refuses torch
    x = exported["x"][:5].numpy()
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked on this device")
                return None

        sys.meta_path.insert(0, BlockTorch())
        sys.modules.pop("torch", None)
        import numpy as np
        from rantune_edge import EdgeModel
        model = EdgeModel({str(artifact)!r})
        y = model.predict(np.load({str(tmp_path / "x.npy")!r}))
        np.save({str(tmp_path / "y.npy")!r}, y)
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch-blocked", sorted(m for m in sys.modules if m.startswith("torch")))
        print("rantune", sorted(m for m in sys.modules if m.split(".")[0] == "rantune"))
        """
    )
    # Execute
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    # Assert: it ran, torch was never imported, outputs equal the in-process run
    assert result.returncode == 0, result.stderr
    assert "torch-blocked []" in result.stdout
    assert "rantune []" in result.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), run_onnx(exported["onnx"], x))


def test_predict_matches_onnxruntime(artifact, exported):
    # Prepare
    model = EdgeModel(artifact, threads=1)
    x = exported["x"].numpy()
    # Execute
    y = model.predict(x, batch_size=7)
    # Assert
    assert y.shape == (len(x), 2)
    np.testing.assert_allclose(y, run_onnx(exported["onnx"], x), atol=1e-6)
    assert model.label_names == ["nlos", "los"]


def test_tampered_model_is_refused(artifact):
    # Prepare: flip one byte in the middle of the weights (same size)
    path = artifact / MODEL_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    # Execute / Assert
    with pytest.raises(ValueError, match="fails its sha256 check"):
        EdgeModel(artifact)


def test_truncated_or_missing_model_is_refused(artifact):
    # Prepare
    path = artifact / MODEL_NAME
    path.write_bytes(path.read_bytes()[:-10])
    # Execute / Assert
    with pytest.raises(ValueError, match="truncated or replaced"):
        EdgeModel(artifact)
    path.unlink()
    with pytest.raises(ValueError, match="lacks its model file"):
        EdgeModel(artifact)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x: x[:, :, :8], "axis 2 is 8, expected 16"),
        (lambda x: x[0], r"add a batch axis"),
        (lambda x: x.astype(np.float64), "dtype float64 does not match"),
        (lambda x: x[:0], "empty batch"),
        (lambda x: np.where(x > 0, np.nan, x).astype(np.float32), "NaN"),
        (lambda x: x.tolist(), "must be a numpy array"),
    ],
)
def test_wrong_inputs_are_refused(artifact, exported, make, message):
    # Prepare
    model = EdgeModel(artifact)
    bad = make(exported["x"][:3].numpy())
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        model.predict(bad)


def test_bench_reports_p50_p95_per_batch_and_threads(artifact):
    # Prepare
    model = EdgeModel(artifact)
    # Execute
    result = model.bench(batch_sizes=(1, 64), threads=(1, 2), warmup=1, repeats=3)
    # Assert
    settings = {(r["threads"], r["batch"]) for r in result["results"]}
    assert settings == {(1, 1), (1, 64), (2, 1), (2, 64)}
    for row in result["results"]:
        assert 0 < row["p50_ms"] <= row["p95_ms"]
    json.dumps(result)


def test_manifest_round_trips(artifact):
    # Prepare
    manifest = read_manifest(artifact)
    manifest.metrics = {"accuracy": 0.9, "latency": {"b1": {"p50_ms": 0.2}}}
    # Execute
    write_manifest(artifact, manifest)
    again = read_manifest(artifact)
    # Assert
    assert again == manifest
    assert again.to_dict() == json.loads((artifact / "manifest.json").read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("model"), "lacks field"),
        (lambda m: m.update(format_version=99), "format_version 99"),
        (lambda m: m.update(surprise=1), "unknown field"),
        (lambda m: m["input"].pop("dtype"), "input spec"),
    ],
)
def test_malformed_manifest_is_refused(artifact, edit, message):
    # Prepare
    path = artifact / "manifest.json"
    payload = json.loads(path.read_text())
    edit(payload)
    path.write_text(json.dumps(payload))
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        EdgeModel(artifact)


def test_cli_predict_and_bench(artifact, exported, tmp_path):
    # Prepare
    np.save(tmp_path / "x.npy", exported["x"][:4].numpy())
    runner = CliRunner()
    # Execute
    predicted = runner.invoke(
        app,
        ["edge", "predict", "--artifact", str(artifact), "--input", str(tmp_path / "x.npy"),
         "--out", str(tmp_path / "y.npz")],
    )  # fmt: skip
    bench = runner.invoke(
        app,
        ["edge", "bench", "--artifact", str(artifact), "--json", str(tmp_path / "b.json"),
         "--repeats", "2", "--warmup", "0", "--threads", "1", "--batch", "1"],
    )  # fmt: skip
    # Assert
    assert predicted.exit_code == 0, predicted.output
    with np.load(tmp_path / "y.npz") as result:
        assert result["logits"].shape == (4, 2)
        assert set(result["labels"]) <= {"nlos", "los"}
    assert bench.exit_code == 0, bench.output
    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["batch"] == 1


def test_cli_refuses_wrong_shape_and_tampered_model(artifact, exported, tmp_path):
    # Prepare
    np.save(tmp_path / "bad.npy", exported["x"][:2, :, :8].numpy())
    runner = CliRunner()
    args = ["edge", "predict", "--artifact", str(artifact), "--out", str(tmp_path / "y.npz")]
    # Execute
    wrong_shape = runner.invoke(app, [*args, "--input", str(tmp_path / "bad.npy")])
    (artifact / MODEL_NAME).write_bytes(b"not a model")
    tampered = runner.invoke(app, [*args, "--input", str(tmp_path / "bad.npy")])
    # Assert: exit 2 with one-line errors, nothing written
    assert wrong_shape.exit_code == 2 and "does not match the model" in wrong_shape.stderr
    assert tampered.exit_code == 2 and "truncated or replaced" in tampered.stderr
    assert not (tmp_path / "y.npz").exists()
