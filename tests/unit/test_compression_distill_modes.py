"""compress()'s distillation modes: federated without pooled rows (the default), server-side
on generated channels that never touches client rows, off; the manifest says which."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import replace

import numpy as np
import pytest
from compression_runs import FAST_COMPRESS, smoke_run
from typer.testing import CliRunner

import rantune.compression.data as compression_data
from rantune.compression import federated_distill, pipeline
from rantune.compression.data import CompressionData, server_channels
from rantune.compression.merge import load_run
from rantune.compression.pipeline import CompressSettings, compress, resolve_variants
from rantune.federated.splits import FederatedData
from rantune.simulations.cli import app
from rantune_edge.errors import EdgeError
from rantune_edge.manifest import Manifest, read_manifest

FAST = replace(FAST_COMPRESS, recover_rounds=1, distill_rounds=2, server_rows=96)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return smoke_run(tmp_path_factory.getbasetemp() / "compression", "los")


def _refuse_pooled(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pooled client rows requested")

    monkeypatch.setattr(compression_data, "pooled_split", refuse)


def test_no_pooled_train_helper_feeds_a_student():
    # CompressionData carries no pooled training rows, and no student code asks for them
    assert not {"train_x", "train_y"} & {f.name for f in dataclasses.fields(CompressionData)}
    for module in (pipeline, federated_distill):
        assert "pooled_split" not in inspect.getsource(module)


@pytest.mark.slow
def test_federated_is_the_default_and_the_manifest_says_so(run_dir, tmp_path, monkeypatch):
    # Prepare: any request for pooled client rows fails
    _refuse_pooled(monkeypatch)
    assert CompressSettings().distill_mode == "federated"
    # Execute
    report = compress(run_dir, tmp_path / "ART", "fp32,pruned-int8,distilled-int8", FAST)
    # Assert
    distilled = read_manifest(tmp_path / "ART" / "distilled-int8").distillation
    assert distilled["mode"] == "federated" and distilled["labels"] == "own rows only"
    assert distilled["rounds"] == 2 and distilled["stations"] == ["0", "1", "2"]
    assert distilled["bytes"]["total"] == sum(
        distilled["bytes"][k] for k in ("teacher-down", "student-down", "student-up")
    )
    assert distilled["bytes"]["student-up"] > 0 and distilled["bytes"]["teacher-down"] > 0
    pruned = read_manifest(tmp_path / "ART" / "pruned-int8")
    assert pruned.distillation["mode"] == "federated" and pruned.distillation["rounds"] == 1
    assert pruned.details["importance"] == "taylor"  # each station's own labels
    assert read_manifest(tmp_path / "ART" / "fp32").distillation == {}
    assert report["settings"]["distillation"]["mode"] == "federated"


@pytest.mark.slow
def test_server_generated_mode_never_touches_client_rows(run_dir, tmp_path, monkeypatch):
    # Prepare: client rows (a client's split, pooled rows) are refused; global test allowed
    cfg = load_run(run_dir).config
    data = FederatedData.load(cfg.data, cfg.partition)
    global_test = set(data.rows(None, "test").tolist())
    original_rows, original_take = FederatedData.rows, FederatedData.take

    def rows(self, client, split):
        assert client is None, f"client {client} rows requested"
        return original_rows(self, client, split)

    def take(self, index):
        assert set(np.asarray(index).tolist()) <= global_test, "client rows taken"
        return original_take(self, index)

    monkeypatch.setattr(FederatedData, "rows", rows)
    monkeypatch.setattr(FederatedData, "take", take)
    _refuse_pooled(monkeypatch)
    settings = replace(FAST, distill_mode="server")
    # Execute
    compress(run_dir, tmp_path / "ART", "int8-static,pruned-int8,distilled-int8", settings)
    # Assert: teacher outputs on the server's own drop, nothing moved
    record = read_manifest(tmp_path / "ART" / "distilled-int8").distillation
    assert record["mode"] == "server-generated" and record["labels"] == "none"
    assert record["stations"] == [] and record["bytes"]["total"] == 0
    assert record["rows"] == {"server": 96} and record["server_data"]["preset"] == "server-distill"
    static = read_manifest(tmp_path / "ART" / "int8-static")
    assert static.details["calib_source"] == "server-generated channels"
    assert static.details["calibration_rows"] == FAST.max_calib
    assert read_manifest(tmp_path / "ART" / "pruned-int8").details["importance"] == "activation"


def test_server_channels_are_new_users_even_for_the_runs_own_preset(run_dir):
    # Prepare: every input row the run's stations hold
    cfg = load_run(run_dir).config
    data = FederatedData.load(cfg.data, cfg.partition)
    task = load_run(run_dir).task
    all_rows = np.arange(data.offsets[-1])
    client_x, _ = data.tensors_of(task, all_rows)
    known = {row.numpy().tobytes() for row in client_x}
    # Execute: the generic drop twice, and the run's own preset under the server's seed
    drop, info = server_channels(cfg, 48)
    again, _ = server_channels(cfg, 48)
    own, own_info = server_channels(cfg, 48, preset_name=cfg.data.preset)
    # Assert: seeded, shaped like the model input, and none of them a client's row
    assert drop.shape[1:] == client_x.shape[1:] and len(drop) == 48
    assert np.array_equal(drop.numpy(), again.numpy())
    assert info["sites"] == ["server-umi", "server-uma", "server-rma"]
    assert own_info["seed_offset"] != cfg.data.seed
    for x in (drop, own):
        assert not {row.numpy().tobytes() for row in x} & known


def test_off_leaves_the_students_out():
    assert resolve_variants(None, "off") == ("fp32", "int8-dynamic", "int8-static")
    with pytest.raises(ValueError, match="distillation is off"):
        resolve_variants("fp32,distilled-int8", "off")
    with pytest.raises(ValueError, match="distill mode 'pooled' is unknown"):
        CompressSettings(distill_mode="pooled")


def test_cli_distill_option_is_checked_before_any_work(run_dir, tmp_path):
    # Prepare
    runner = CliRunner()
    base = ["compress", "--run", str(run_dir), "--out", str(tmp_path / "A")]
    # Execute
    off = runner.invoke(app, [*base, "--distill", "off", "--variants", "distilled-int8"])
    bad = runner.invoke(app, [*base, "--distill", "pooled"])
    # Assert
    assert off.exit_code == 2 and "distillation is off" in off.stderr
    assert bad.exit_code == 2 and "unknown" in bad.stderr
    assert not (tmp_path / "A").exists()


def test_manifest_distillation_mode_is_validated():
    # Prepare: a minimal manifest
    fields = {
        "task": "los",
        "variant": "distilled-int8",
        "input": {"name": "csi", "shape": ["batch", 2, 16, 32], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", 2], "dtype": "float32"},
        "model": {"file": "model.onnx", "sha256": "0" * 64, "size_bytes": 1},
        "source": {},
    }
    # Execute / Assert
    record = {"mode": "federated", "rounds": 2, "stations": ["0"], "labels": "own rows only"}
    assert Manifest.from_dict({**Manifest(**fields).to_dict(), "distillation": record})
    with pytest.raises(EdgeError, match="distillation mode 'pooled'"):
        Manifest(**fields, distillation={"mode": "pooled"})
