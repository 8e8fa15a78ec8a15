"""``rantune compare`` on the smoke preset: 5 strategies x 2 partitions x 1 seed on a
pool of 2 processes; CSV, report and plots hold every run; a rerun skips them all;
bad input fails before anything runs."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from rantune.simulations.cli import app

pytestmark = pytest.mark.e2e

STRATEGIES = ("fedavg", "ffa-lora", "flora", "fed-sb", "lora-fair")
PARTITIONS = ("natural", "dirichlet-1.0")


def _compare(out, *extra: str):
    args = [
        "compare",
        "--preset",
        "smoke",
        "--task",
        "los",
        "--strategies",
        ",".join(STRATEGIES),
        "--partitions",
        ",".join(PARTITIONS),
        "--seeds",
        "0",
        "--rounds",
        "1",
        "--out",
        str(out),
        "--run-config",
        "model.pretrained=none",
        "--run-config",
        "data.max-train-rows=32",
        *extra,
    ]
    return CliRunner().invoke(app, args)


def test_compare_writes_csv_report_and_plots_with_every_run_and_resumes(tmp_path):
    # Execute
    out = tmp_path / "cmp"
    result = _compare(out, "--workers", "2")

    # Assert: one CSV row, one report entry, one record per run
    assert result.exit_code == 0, result.output
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["strategy"], r["partition"]) for r in rows} == {
        (s, p) for s in STRATEGIES for p in PARTITIONS
    }
    assert all(r["final_metric"] and float(r["mb_up"]) > 0 for r in rows)
    report = (out / "report.md").read_text()
    for name in (*STRATEGIES, *PARTITIONS):
        assert name in report
    plots = sorted((out / "plots").glob("*.png"))
    assert {p.name for p in plots} == {
        "metric_vs_round_los.png",
        "metric_vs_mb_los.png",
        "client_spread_los.png",
    }
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)
    runs = len(STRATEGIES) * len(PARTITIONS)
    assert len(list((out / "runs" / "los").glob("*.json"))) == runs

    # Execute again: every run is recorded, nothing reruns
    again = _compare(out, "--workers", "1")
    assert again.exit_code == 0, again.output
    assert f"{runs} run(s) already recorded: skipped" in again.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--strategies", "fedavg,fedfoo"), "fedfoo' is unknown: choose one of"),
        (("--strategies", "fedavg", "--run-config", "lora.client-ranks=2,4"), "rank-aware"),
        (("--strategies", "krum", "--run-config", "strategy.num-malicious-nodes=1"), "at least"),
        (("--partitions", "dirichlet-x"), "partition scheme"),
        (("--seeds", "0,a"), "not an integer"),
        (("--run-config", "seed=3"), "may not set"),
        (("--run-config", "no.such.key=1"), "unknown run config key"),
    ],
)
def test_bad_input_fails_before_any_run(tmp_path, extra, message):
    # Execute (later options override the defaults of _compare)
    out = tmp_path / "bad"
    result = _compare(out, "--workers", "1", *extra)

    # Assert: one clear error, nothing written
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not out.exists()
