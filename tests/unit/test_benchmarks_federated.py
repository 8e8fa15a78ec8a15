"""The federated benchmark: references through the library's trainer, pieces, summary, report.

Centralized LoRA pools every client's training rows; a local-only reference pools one
client's rows (``clients=[c]``) and is also scored on that client's own test rows. The
benchmark itself runs end to end on tiny data (the ``smoke`` preset for beam-spatial,
``rt-smoke`` for positioning, a miniature seeded encoder, one round).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
from pathlib import Path

import pytest
from compression_runs import mini_checkpoint

from rantune.compression.data import pooled_split
from rantune.compression.merge import train_centralized_run
from rantune.federated.run_config import resolve_run_config
from rantune.federated.splits import FederatedData
from rantune.training import TrainSettings

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return mini_checkpoint(tmp_path_factory.mktemp("enc") / "mini.safetensors")


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return {
        name: importlib.import_module(name)
        for name in ("federated", "federated_summary", "federated_report")
    }


def test_local_only_run_trains_and_scores_one_client(checkpoint, tmp_path):
    # Prepare
    overrides = {"task": "los", "seed": 0, "data.preset": "smoke", "model.pretrained": str(checkpoint)}
    cfg = resolve_run_config(overrides)
    pooled, _ = pooled_split(cfg, "train")
    own_train, _ = pooled_split(cfg, "train", clients=[1])
    own_test, _ = pooled_split(cfg, "test", clients=[1])
    settings = TrainSettings(epochs=1, batch_size=32, lr=3e-3, seed=0)

    # Execute
    local = train_centralized_run(tmp_path / "local", overrides, settings, clients=[1])
    central = train_centralized_run(tmp_path / "central", overrides, settings)

    # Assert
    assert 0 < local["num_examples"] == len(own_train) < len(pooled) == central["num_examples"]
    assert local["own-test"]["num_examples"] == len(own_test) > 0
    assert local["test"]["num_examples"] == central["test"]["num_examples"]
    assert "own-test" not in central


def test_scores_are_direction_aware(bench):
    # Prepare
    summary = bench["federated_summary"]

    # Execute / Assert: an error of 10 m vs centralized 9 m is 0.9 of it, 1 m worse
    assert summary.ratio(10.0, 9.0, higher=False) == pytest.approx(0.9)
    assert summary.gain(10.0, 9.0, higher=False) == pytest.approx(-1.0)
    assert summary.ratio(0.45, 0.5, higher=True) == pytest.approx(0.9)
    assert summary.gain(0.55, 0.5, higher=True) == pytest.approx(0.05)
    flat = {"knn_error_p90_m": 3.0, "los_geometry_error_p90_m": 5.0, "error_p90_m": 3.0}
    assert summary.baseline_methods(flat, "error_p90_m") == ["knn", "los_geometry"]
    assert summary.best_baseline(flat, "error_p90_m") == "knn"


@pytest.mark.slow
def test_benchmark_runs_every_method_on_the_same_rows(bench, checkpoint, tmp_path):
    # Prepare
    federated = bench["federated"]
    work, out = tmp_path / "work", tmp_path / "out"
    argv = [
        "accuracy", "--tasks", "beam-spatial,positioning", "--seeds", "0,1", "--rounds", "1",
        "--preset", "smoke", "--rt-preset", "rt-smoke", "--pretrained", str(checkpoint),
        "--work", str(work), "--out", str(out),
    ]

    # Execute: the run, then a rerun that must find every piece done
    federated.main(argv)
    folder = work / checkpoint.stem / "accuracy" / "beam-spatial-s0"
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    federated.main(argv)
    summary = bench["federated_summary"].summarize(
        work / checkpoint.stem, preset="smoke", pretrained=str(checkpoint)
    )
    markdown = (out / "federated.md").read_text()

    # Assert: every (task, seed, method) piece exists and is reused
    assert sorted(stamps) == sorted(
        ["fedavg.json", "config.json", "centralized.json", "baselines.json"]
        + [f"local-{c}.json" for c in range(3)]
    )
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")} == stamps
    beam, pos = summary["accuracy"]["beam-spatial"], summary["accuracy"]["positioning"]
    assert beam["seeds"] == pos["seeds"] == [0, 1]
    assert len(beam["stations"]) == 3 and len(pos["stations"]) == 2
    # the seed redraws the split: the two seeds' global test rows differ
    rows = []
    for seed in (0, 1):
        args = argparse.Namespace(
            preset="smoke", rt_preset="rt-smoke", rounds=1, local_epochs=1,
            pretrained=str(checkpoint),
        )
        cfg = resolve_run_config(federated._base(args, "beam-spatial", seed))
        rows.append(FederatedData.load(cfg.data, cfg.partition).rows(None, "test"))
    assert len(rows[0]) == len(rows[1]) and (rows[0] != rows[1]).any()
    # FedAvg, centralized and local-only are scored on the same rows, per station too
    fed = common_piece(folder, "fedavg")
    central = common_piece(folder, "centralized")
    assert fed["global"]["num-examples"] == central["global"]["num_examples"]
    for c, metrics in fed["clients"].items():
        local = common_piece(folder, f"local-{c}")
        assert metrics["num-examples"] == central["clients"][c]["num_examples"]
        assert metrics["num-examples"] == local["own"]["num_examples"]
    # positioning is an error: the ratio is centralized / FedAvg, per seed
    pieces = [common_piece(work / checkpoint.stem / "accuracy" / f"positioning-s{s}", m)
              for s in (0, 1) for m in ("fedavg", "centralized")]
    per_seed = [c["global"]["error_p90_m"] / f["global"]["error_p90_m"]
                for f, c in zip(pieces[::2], pieces[1::2], strict=True)]
    assert not pos["higher-is-better"] and all(math.isfinite(r) for r in per_seed)
    assert pos["fed-over-central-per-seed"] == pytest.approx(per_seed)
    assert {"baseline: knn", "baseline: los_geometry"} <= set(pos["global"])
    assert "`positioning` (error_p90_m, lower is better): centralized / FedAvg =" in markdown
    assert "scale.py" in markdown


def common_piece(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text())
