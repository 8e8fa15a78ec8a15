"""``rantune demo --quick`` end to end: every promised file, per task the strategies'
personalized metrics next to the baseline, centralized and local-only rows, the measured
wall time, reuse of everything on a re-run, bad --out."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from rantune.simulations.cli import app

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STRATEGIES = ("fedavg", "flora", "fedsa-lora")
TASKS = ("los", "beam-spatial")
REFERENCES = ("centralized LoRA", "local-only LoRA", "classical: ")


def _run(out):
    return CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])


def _metrics(out) -> tuple[list[tuple], dict, dict]:
    with open(out / "compare" / "results.csv", newline="") as handle:
        rows = [
            (r["task"], r["strategy"], r["final_metric"], r["mb_up"])
            for r in csv.DictReader(handle)
        ]
    report = json.loads((out / "artifacts" / "los" / "report.json").read_text())
    quality = {v["variant"]: v["auc"] for v in report["variants"]}
    tables = json.loads((out / "report.json").read_text())["tasks"]
    return sorted(rows), quality, {t: table["rows"] for t, table in tables.items()}


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    first = _run(out)
    assert first.exit_code == 0, first.output
    first_metrics = _metrics(out)
    second = _run(out)
    assert second.exit_code == 0, second.output
    return out, first_metrics, (_metrics(out), second.output)


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
        "invocations.json",
        "compare/plots/metric_vs_round_los.png",
        "plots/metric_vs_round_los.png",
        "plots/metric_vs_mb_los.png",
        "plots/metric_vs_round_beam-spatial.png",
        "plots/metric_vs_mb_beam-spatial.png",
        "references/los/central/global_adapter.safetensors",
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
        assert f"| `{name}` |" in report
    for artifact in ("artifacts/los/fp32", "artifacts/los/int8-dynamic"):
        assert artifact in report
    bench = json.loads((out / "artifacts" / "los" / "edge_bench.json").read_text())
    assert {(r["threads"], r["batch"]) for r in bench["results"]} == {
        (1, 1),
        (1, 64),
        (2, 1),
        (2, 64),
    }


def test_demo_report_holds_references_and_personalized_metrics_per_task(demo_runs):
    out, (_, _, tables), _ = demo_runs
    report = (out / "report.md").read_text()
    for task in TASKS:
        rows = {r["label"]: r for r in tables[task]}
        section = report.split(f"`{task}`: ")[1].split("\n\n![")[0]
        # every strategy, and the three references, as rows of the task's one table
        for label in (*(f"`{s}`" for s in STRATEGIES), *REFERENCES):
            assert f"| {label}" in section, (task, label)
        primary = "auc" if task == "los" else "top1"
        for kind in ("baseline", "centralized", "local-only"):
            row = next(r for r in tables[task] if r["kind"] == kind)
            assert row["global"][primary] is not None and row["client_mean"][primary] is not None
        # FedSA-LoRA's client numbers are its personalized models', not its global model's
        fedsa = rows["fedsa-lora"]
        assert fedsa["personalized"] and "personalized model" in section
        history = json.loads(
            (out / "compare" / "work" / task / "fedsa-lora__natural__seed0" / "history.json").read_text()
        )
        metric = history["primary-metric"]
        personalized = history["rounds"][-1]["evaluate"]["personalized"]["mean"][metric]
        assert fedsa["client_mean"][metric] == pytest.approx(personalized)
        for row in tables[task]:
            assert row["clients_scored"] == 3, (task, row["label"])
    assert "beam-spatial" in report and "gain loss (dB) client worst" in report


def test_demo_report_states_its_wall_time_and_load(demo_runs):
    out, _, _ = demo_runs
    summary = json.loads((out / "report.json").read_text())
    timing = summary["timing"]
    assert timing["wall_s"] > 0 and len(timing["load_start"]) == 3
    assert set(timing["stages"]) >= {"data", "compare", "references", "compress", "edge"}
    assert f"This invocation: **{timing['wall_s']:.0f} s**" in (out / "report.md").read_text()
    assert len(summary["invocations"]) == 2


def test_demo_rerun_reuses_everything_and_gives_the_same_numbers(demo_runs):
    out, first_metrics, (second_metrics, output) = demo_runs
    assert "reused 6 finished run(s)" in output
    assert "0 to compute, 10 reused" in output
    assert "reusing artifacts" in output
    assert second_metrics == first_metrics
    first, second = json.loads((out / "invocations.json").read_text())
    assert (second["runs_reused"], second["stations_generated"]) == (6, 0)


def test_demo_refuses_an_out_path_that_is_a_file(tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("keep me")
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(target)])
    assert result.exit_code == 2
    assert "is a file" in result.output
    assert target.read_text() == "keep me"
