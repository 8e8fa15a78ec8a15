"""``rantune demo --quick`` end to end: every promised file, reuse on re-run, bad --out."""

from __future__ import annotations

import csv
import json
import time

import pytest
from typer.testing import CliRunner

from rantune.simulations.cli import app

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STRATEGIES = ("fedavg", "fedprox", "flora", "fedsa-lora")


def _run(out) -> tuple[float, object]:
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    return time.perf_counter() - start, result


def _metrics(out) -> tuple[list[tuple], dict]:
    with open(out / "compare" / "results.csv", newline="") as handle:
        rows = [
            (r["task"], r["strategy"], r["final_metric"], r["mb_up"])
            for r in csv.DictReader(handle)
        ]
    report = json.loads((out / "artifacts" / "los" / "report.json").read_text())
    quality = {v["variant"]: v["accuracy"] for v in report["variants"]}
    return sorted(rows), quality


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    first_s, first = _run(out)
    assert first.exit_code == 0, first.output
    first_metrics = _metrics(out)
    second_s, second = _run(out)
    assert second.exit_code == 0, second.output
    return out, (first_s, first_metrics), (second_s, _metrics(out), second.output)


def test_demo_writes_every_promised_file(demo_runs):
    out, _, _ = demo_runs
    expected = [
        "report.md",
        "report.json",
        "data/summary.json",
        "data/sites.png",
        "data/partition_labels.png",
        "compare/results.csv",
        "compare/report.md",
        "compare/plots/metric_vs_round_los.png",
        "compare/plots/metric_vs_mb_los.png",
        "artifacts/los/pareto.png",
        "artifacts/los/int8-dynamic/model.onnx",
        "artifacts/los/int8-dynamic/manifest.json",
        "artifacts/los/fp32/model.onnx",
        "artifacts/los/edge_bench.json",
    ]
    missing = [name for name in expected if not (out / name).is_file()]
    assert not missing
    report = (out / "report.md").read_text()
    for name in STRATEGIES:
        assert f"| {name} |" in report
    for artifact in ("artifacts/los/fp32", "artifacts/los/int8-dynamic"):
        assert artifact in report
    bench = json.loads((out / "artifacts" / "los" / "edge_bench.json").read_text())
    assert {(r["threads"], r["batch"]) for r in bench["results"]} == {
        (1, 1),
        (1, 64),
        (2, 1),
        (2, 64),
    }


def test_demo_rerun_reuses_everything_and_gives_the_same_numbers(demo_runs):
    _, (first_s, first_metrics), (second_s, second_metrics, output) = demo_runs
    assert "reused 8 finished run(s)" in output
    assert "reusing artifacts" in output
    assert second_metrics == first_metrics
    assert second_s < first_s


def test_demo_refuses_an_out_path_that_is_a_file(tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("keep me")
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(target)])
    assert result.exit_code == 2
    assert "is a file" in result.output
    assert target.read_text() == "keep me"
