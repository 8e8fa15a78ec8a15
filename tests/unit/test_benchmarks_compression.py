"""The compression benchmark's report and README headlines state what its JSON measured,
targets met/missed included, and a finished (task, mode) piece is kept on a rerun."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from rantune.compression.report import assess_targets

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
STUDENT_RATIO = {"los": 1 / 8.8, "beam-spatial": 1 / 9.5}  # distilled-int8 size / fp32


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module


def _latency(b1: float) -> dict:
    return {"b1": {"p50_ms": b1}, "b64": {"p50_ms": 10 * b1}, "threads": 1}


def _report(task: str, mode: str, static_drop: float) -> dict:
    """A compress() report of two variants plus the student, with its target checks."""
    size = 1_000_000
    details = {
        "int8-static": {"calib_source": "federated MinMax ranges", "calibration_rows": 256,
                        "calibration": {"stations": ["0", "1"], "tensors": 10,
                                        "bytes": {"ranges-up": 800, "graph-down": 2 * size}}},
        "distilled-int8": {"distill": {"mode": mode, "rounds": 4, "local_epochs": 1,
                                       "stations": ["0", "1"], "rows": {"0": 9, "1": 7},
                                       "labels": "own rows only", "bytes": {"total": 5e6}}},
    }  # fmt: skip
    variants = [
        ("int8-dynamic", 0.29 * size, 0.80, 1.0),
        ("int8-static", 0.30 * size, 0.80 - static_drop / 100, 1.5),
        ("distilled-int8", STUDENT_RATIO[task] * size, 0.79, 0.25),
    ]
    report = {
        "task": task,
        "primary_metric": "top1",
        "higher_is_better": True,
        "eval_rows": 100,
        "reference": {"variant": "torch-fp32-teacher", "top1": 0.80, "size_bytes": size,
                      "parameters": 300_000, "latency": _latency(6.0)},
        "variants": [
            {"variant": name, "top1": metric, "size_bytes": int(s), "parameters": 1000,
             "compressed_size_bytes": int(s), "latency": _latency(b1),
             "details": details.get(name, {})}
            for name, s, metric, b1 in variants
        ],
    }  # fmt: skip
    report["targets"] = assess_targets(report)
    return report


def _results() -> dict:
    tasks = {}
    for task in STUDENT_RATIO:
        modes = {}
        for mode in ("federated", "server"):
            report = _report(task, mode, static_drop=1.5 if task == "los" else 0.2)
            grid = [{"threads": t, "batch": b, "p50_ms": 1.0} for t in (1, 2) for b in (1, 64)]
            modes[mode] = {"report": report, "misses": [], "seconds": 10.0, "cpu_seconds": 5.0,
                           "edge_grid": {v["variant"]: grid for v in report["variants"]},
                           "provenance": {"command": "python benchmarks/compression.py",
                                          "commit": "abc1234"}}  # fmt: skip
        tasks[task] = {"teacher": {"kind": "given run directory", "run_dir": "r"}, "modes": modes}
    return {"versions": {"onnxruntime": "1", "torch": "2"}, "tasks": tasks, "complete": True,
            "provenance": [{"command": "python benchmarks/compression.py", "commit": "abc1234"}]}  # fmt: skip


def test_headlines_state_the_measured_span_and_targets(bench):
    # Prepare
    readme = bench("readme")
    results = {"compression": _results()}
    # Execute
    lines = readme._compression_headlines(results)
    # Assert: the student's span as measured (not rounded to "10x"), per mode, with targets
    student = [line for line in lines if "distilled int8 student" in line]
    assert len(student) == 2 and all("8.8–9.5x smaller" in line for line in student)
    assert all("24x faster" in line for line in student)  # 6.0 / 0.25 ms
    static = next(line for line in lines if line.startswith("`federated` mode: the int8-static"))
    assert "federated MinMax ranges of 2 stations" in static
    assert "target met for beam-spatial; missed for los" in static
    assert "los top1 -1.50 points" in static


def test_report_has_one_row_per_mode_and_variant_and_the_misses(bench):
    # Prepare
    report = bench("compression_report")
    # Execute
    text = report.markdown(_results())
    # Assert: every (task, mode) section; the 1.5-point static drop is a miss
    for task in STUDENT_RATIO:
        for mode in ("federated", "server"):
            assert f"### {task}, distillation `{mode}`" in text
    assert "| los | federated | int8-static | 0.3000 | +1.50 points | - | **missed** |" in text
    assert "| beam-spatial | server | distilled-int8 | 0.1053 | +1.00 points | 24.0x | met |" in text
    assert "calibration `federated MinMax ranges` (256 rows on 2 stations" in text
    assert "Incomplete" not in text


def test_a_finished_piece_is_kept_on_a_rerun(bench, tmp_path, monkeypatch):
    # Prepare: a saved piece with the settings a rerun would use; compress must not run
    compression = bench("compression")
    args = compression.argparse.Namespace(
        work=tmp_path, distill_epochs=1, distill_rounds=4, recover_rounds=2, server_rows=64,
        student_layers=2, repeats=10, grid_repeats=5,
    )  # fmt: skip
    teacher = {"run_dir": "r", "overrides": {"task": "los"}}
    saved = {"settings": compression.piece_settings("federated", teacher, args), "report": {}}
    (tmp_path / "piece-los-federated.json").write_text(json.dumps(saved))

    def refuse(*a, **k):
        raise AssertionError("compress() ran for a finished piece")

    monkeypatch.setattr(compression, "compress", refuse)
    # Execute
    kept = compression.compress_piece("los", "federated", teacher, args)
    # Assert: kept as saved; other settings would rebuild it
    assert kept == saved
    args.distill_rounds = 2
    with pytest.raises(AssertionError, match="compress\\(\\) ran"):
        compression.compress_piece("los", "federated", teacher, args)
