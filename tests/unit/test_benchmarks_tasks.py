"""The downstream-task benchmark: its targets are computed from the pieces, and a run is
resumable piece by piece (``benchmarks/tasks.py``, ``benchmarks/tasks_report.py``)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module


def piece(method: str, budget: float, seed: int, metrics: dict) -> dict:
    learned = method != "baselines"
    return {
        "task": "beam-spatial", "group": "rt", "method": method, "budget": budget, "seed": seed,
        "metrics": metrics, "subset_metrics": {}, "num_train": 10, "num_val": 2, "num_test": 5,
        "commit": "abc1234", "piece_seconds": 1.0,
        **({"epochs": 3, "best_epoch": 2, "stopped_early": True} if learned else {}),
    }


def beam_pieces(lora: float, scratch: float, lmmse: float) -> list[dict]:
    """Three seeds at 1% and 10%: LoRA, scratch and two baselines with known top-1."""
    out = []
    for budget in (0.01, 0.1):
        for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
            out.append(piece("lora", budget, seed, {"top1": lora + jitter}))
            out.append(piece("scratch", budget, seed, {"top1": scratch + jitter}))
            out.append(piece("probe", budget, seed, {"top1": 0.1}))
            base = {"lmmse_top1": lmmse + jitter, "best_of_set_b_top1": 0.2, "top1": lmmse + jitter}
            out.append(piece("baselines", budget, seed, base))
    return out


def test_targets_are_computed_from_the_pieces(bench):
    # Prepare: LoRA 0.6 beats the LMMSE baseline 0.5 but not scratch 0.7
    report = bench("tasks_report")
    cells = report.Cells(beam_pieces(lora=0.6, scratch=0.7, lmmse=0.5), "top1", True)

    # Execute
    lines = report.targets("beam-spatial", "rt", cells, ["0.01", "0.1"])

    # Assert: the best baseline is found by its mean, each verdict follows the numbers
    assert cells.baselines == ["best_of_set_b", "lmmse"]
    assert cells.best_baseline("0.1") == "lmmse"
    assert cells.cell("lora", "0.1", "top1")[0] == pytest.approx(0.6)
    assert any("best baseline at 10% labels: **met**" in line and "lmmse" in line for line in lines)
    assert any("from-scratch at 1% labels: **MISSED**" in line for line in lines)
    assert not any("100%" in line for line in lines)  # no 100% pieces: no verdict invented


def test_los_matches_within_the_interval(bench):
    # Prepare: LoRA AUC below the angle-delay ratio's mean but inside the intervals
    report = bench("tasks_report")
    pieces = []
    for seed, (a, b) in enumerate(((0.90, 0.97), (0.96, 0.93), (0.93, 0.95))):
        pieces.append({**piece("lora", 0.1, seed, {"auc": a}), "task": "los"})
        pieces.append({**piece("baselines", 0.1, seed, {"angle_delay_auc": b, "auc": b}), "task": "los"})

    # Execute
    lines = report.targets("los", "rt", report.Cells(pieces, "auc", True), ["0.1"])

    # Assert
    assert len(lines) == 1 and "**met**" in lines[0]


@pytest.mark.slow
def test_smoke_run_writes_every_piece_and_a_rerun_skips_them(bench, tmp_path, capsys):
    # Prepare
    tasks = bench("tasks")
    args = ["--smoke", "--preset", "rt-smoke", "--tasks", "los,positioning",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]

    # Execute
    tasks.main(args)
    first = capsys.readouterr().out
    pieces = sorted((tmp_path / "work-smoke").rglob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in pieces}
    tasks.main(args)
    second = capsys.readouterr().out

    # Assert: one piece per (task, method) of the ray-traced group (rt-smoke has no TR
    # 38.901 station), all scored on the same test rows; the rerun measures nothing
    assert len(pieces) == 2 * 4 and "los/rt/lora/0.01/seed 0" in first
    assert "seed 0:" not in second and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    report = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert len(report["pieces"]) == 8 and len({p["num_test"] for p in report["pieces"]}) == 1
    assert report["provenance"]["torch"]["threads"] == 1
    markdown = (tmp_path / "out" / "tasks.md").read_text()
    assert "## positioning, ray-traced stations" in markdown and "TR 38.901 stations\n" not in markdown
