"""compress(): every default variant with manifest and report; bad inputs write nothing."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from compression_runs import FAST_COMPRESS, smoke_run
from typer.testing import CliRunner

from rantune.compression.edge import EdgeModel
from rantune.compression.merge import ADAPTER_NAME, load_run
from rantune.compression.pipeline import (
    DEFAULT_VARIANTS,
    compress,
    parse_variants,
)
from rantune.simulations.cli import app

FAST = replace(FAST_COMPRESS, max_train=128)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "compression"


@pytest.fixture(scope="module")
def run_dir(root):
    return smoke_run(root, "los")


@pytest.fixture(scope="module")
def compressed(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "ART"
    report = compress(run_dir, out, None, FAST)
    return out, report


def test_every_default_variant_has_a_verified_artifact(compressed):
    # Prepare
    out, report = compressed
    # Execute / Assert: one folder per variant, each loads (sha256 checked) and predicts
    assert [v["variant"] for v in report["variants"]] == list(DEFAULT_VARIANTS)
    for name in DEFAULT_VARIANTS:
        model = EdgeModel(out / name)
        assert model.manifest.variant == name and model.task == "los"
        assert model.manifest.source["config_hash"] == report["source"]["config_hash"]
        assert model.manifest.model["opset"] >= 17
        assert model.manifest.label_names == ["nlos", "los"]
        assert model.manifest.metrics["latency"]["b1"]["p50_ms"] > 0
        assert model.predict(model.example_input(2)).shape == (2, 2)
    assert {p.name for p in out.iterdir()} == {
        *DEFAULT_VARIANTS,
        "report.json",
        "report.md",
        "pareto.png",
    }
    assert not list(out.parent.glob(".ART.tmp-*"))


def test_report_compares_variants_with_the_teacher(compressed):
    # Prepare
    out, report = compressed
    stored = json.loads((out / "report.json").read_text())
    by_name = {v["variant"]: v for v in stored["variants"]}
    # Assert: sizes shrink, parameters shrink for pruned/distilled, fp32 parity kept
    fp32 = by_name["fp32"]["size_bytes"]
    assert stored["reference"]["size_bytes"] == fp32
    assert by_name["int8-dynamic"]["size_bytes"] < 0.5 * fp32
    assert by_name["pruned-int8"]["parameters"] < by_name["fp32"]["parameters"]
    assert by_name["distilled-int8"]["parameters"] < by_name["pruned-int8"]["parameters"]
    assert by_name["fp32"]["details"]["parity_max_abs"] <= 1e-4
    static = by_name["int8-static"]["details"]
    assert static["calib_source"] == "federated MinMax ranges"
    assert static["calibration_rows"] == sum(static["calibration"]["rows"].values())
    assert abs(static["calibration_rows"] - 32) <= len(static["calibration"]["stations"])
    assert stored["reference"]["variant"] == "torch-fp32-teacher"
    assert {t["variant"] for t in stored["targets"]} == {
        "int8-dynamic", "int8-static", "distilled-int8",
    }  # fmt: skip
    text = (out / "report.md").read_text()
    assert "| torch-fp32-teacher |" in text and "## Targets" in text
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_variant_names_are_parsed_and_checked():
    assert parse_variants("fp32, int8-dynamic") == ("fp32", "int8-dynamic")
    assert parse_variants("all")[-1] == "sparse-int8"
    assert "distilled-fp32" in parse_variants("all") and "distilled-fp32" not in DEFAULT_VARIANTS
    with pytest.raises(ValueError, match="unknown variant"):
        parse_variants("fp32,int3")


def test_unknown_variant_writes_nothing(run_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        compress(run_dir, tmp_path / "ART", "fp32,fp8", FAST)
    assert list(tmp_path.iterdir()) == []


def test_run_without_adapter_writes_nothing(run_dir, tmp_path):
    # Prepare: a copy of the run without its adapter
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    (broken / ADAPTER_NAME).unlink()
    # Execute / Assert
    with pytest.raises(ValueError, match="has no global_adapter.safetensors"):
        compress(broken, tmp_path / "ART", "fp32", FAST)
    assert not (tmp_path / "ART").exists()
    with pytest.raises(ValueError, match="has no config.json"):
        load_run(tmp_path)


def test_static_quantization_without_calibration_writes_nothing(run_dir, tmp_path):
    # Prepare: the run's data with no calibration rows
    from rantune.compression.data import run_data

    data = run_data(load_run(run_dir).config, max_train=16, max_calib=8, max_eval=16)
    data.calib_x, data.calib_stations = None, ()
    # Execute / Assert
    with pytest.raises(ValueError, match="needs calibration data"):
        compress(run_dir, tmp_path / "ART", "int8-static", FAST, data=data)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_forced(run_dir, tmp_path):
    # Prepare
    out = tmp_path / "ART"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    # Execute / Assert
    with pytest.raises(ValueError, match="already holds files"):
        compress(run_dir, out, "fp32", FAST)
    assert (out / "keep.txt").read_text() == "mine"


def test_failure_midway_leaves_no_partial_output(run_dir, tmp_path, monkeypatch):
    # Prepare: make the static quantizer crash after the fp32 artifact exists
    import rantune.compression.pipeline as pipeline

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "calibrated_static_int8", crash)
    # Execute / Assert
    with pytest.raises(RuntimeError, match="disk full"):
        compress(run_dir, tmp_path / "ART", "fp32,int8-static", FAST)
    assert list(tmp_path.iterdir()) == []


def test_cli_compress_bad_inputs_exit_2(run_dir, tmp_path):
    # Prepare
    runner = CliRunner()
    # Execute
    unknown = runner.invoke(app, ["compress", "--run", str(run_dir), "--out",
                                  str(tmp_path / "A"), "--variants", "int2"])  # fmt: skip
    missing = runner.invoke(app, ["compress", "--run", str(tmp_path), "--out",
                                  str(tmp_path / "B")])  # fmt: skip
    # Assert
    assert unknown.exit_code == 2 and "unknown variant" in unknown.stderr
    assert missing.exit_code == 2 and "has no config.json" in missing.stderr
    assert not (tmp_path / "A").exists() and not (tmp_path / "B").exists()


def test_cli_compress_then_edge_predict(run_dir, tmp_path):
    # Prepare
    import numpy as np

    runner = CliRunner()
    out = tmp_path / "ART"
    # Execute
    made = runner.invoke(app, ["compress", "--run", str(run_dir), "--out", str(out),
                               "--variants", "fp32,int8-dynamic", "--max-eval", "32"])  # fmt: skip
    x = EdgeModel(out / "int8-dynamic").example_input(3)
    np.save(tmp_path / "x.npy", x)
    predicted = runner.invoke(app, ["edge", "predict", "--artifact", str(out / "int8-dynamic"),
                                    "--input", str(tmp_path / "x.npy"),
                                    "--out", str(tmp_path / "y.npz")])  # fmt: skip
    # Assert
    assert made.exit_code == 0, made.output
    assert {p.name for p in out.iterdir()} == {"fp32", "int8-dynamic", "report.json",
                                               "report.md", "pareto.png"}  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    with np.load(tmp_path / "y.npz") as result:
        assert result["logits"].shape == (3, 2) and result["labels"].shape == (3,)
