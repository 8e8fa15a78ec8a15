"""The strategy benchmark's lr choice, targets and generated report (no federated runs).

The choice uses validation metrics only; the report ranks a strategy that keeps
parameters local by its personalized client mean, fills rounds-to-target and lists
every cell below chance.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("strategies"), importlib.import_module("strategies_report")


def test_lr_is_chosen_on_validation_only_ties_to_the_smaller_lr(bench):
    strategies, _ = bench
    # the best test metric (final) never decides; a missing validation value is skipped
    grid = {
        "0.003": {"val": 0.70, "final": 0.99},
        "0.01": {"val": 0.80, "final": 0.50},
        "0.03": {"val": 0.80, "final": 0.60},
        "0.1": {"val": None, "final": 0.99},
    }
    assert strategies.select_lr(grid) == "0.01"
    assert strategies.select_lr({"0.01": {"val": None, "final": 1.0}}) is None


def test_target_is_a_fraction_of_fedavgs_mean_final_metric(bench):
    strategies, _ = bench
    rows = [
        {"task": "los", "strategy": "fedavg", "final_metric": 0.8},
        {"task": "los", "strategy": "fedavg", "final_metric": 0.9},
        {"task": "los", "strategy": "flora", "final_metric": 0.1},
        {"task": "los", "strategy": "fedavg", "final_metric": None},
    ]
    assert strategies.targets_from(rows) == {"los": pytest.approx(0.95 * 0.85)}


def _row(strategy, seed, final, client, personalized=False, reached=3):
    return {
        "task": "los", "strategy": strategy, "partition": "natural", "seed": seed,
        "metric": "auc", "final_metric": final, "mean_client_metric": client,
        "worst_client_metric": client - 0.1, "rank_metric": client if personalized else final,
        "personalized": personalized, "rounds_to_target": reached, "mb_up": 1.0, "mb_down": 2.0,
    }


def _summary():
    main = [
        *(_row("fedavg", s, 0.80 + 0.01 * s, 0.82) for s in range(3)),
        *(_row("fedsa-lora", s, 0.20, 0.90, personalized=True) for s in range(3)),
        *(_row("qfedavg", s, 0.45, 0.47, reached=None) for s in range(3)),
        *(_row("qfedavg (L = 1)", s, 0.79, 0.80) for s in range(3)),
    ]
    return {
        "settings": {
            "preset": "smoke", "partition": "natural", "tasks": ["los"], "rounds": 4,
            "tune-seed": 0, "main-seeds": [1, 2], "split-seed": "partition.seed = seed",
            "local-epochs": 1, "data.max-train-rows": 8, "data.max-eval-rows": 8,
            "data.max-global-test-rows": 8, "batch-size": 4,
            "lr-grid": {"fedavg": [0.01, 0.03]}, "model.pretrained": "none", "lora": {},
            "metrics": {"los": "auc"}, "target-fraction": 0.95, "target-base": "fedavg",
            "workers": 1,
            "variants": {"qfedavg (L = 1)": {"strategy": "qfedavg", "why": "a smaller L",
                                             "params": {"strategy.qffl-learning-rate": 1.0}}},
        },
        "chance": {"los": 0.5},
        "targets": {"los": 0.77},
        "tuning": {"los": {"fedavg": {"grid": {"0.01": {"val": 0.7}, "0.03": {"val": 0.6}},
                                      "lr": "0.01", "complete": True, "at-edge": True}}},
        "main": main,
        "curves": {"los": {"fedavg": [0.6, 0.7, 0.8, 0.81]}},
        "diagnostics": {
            **{f"los/fedavg/{s}": {"init": 0.42, "drift": 2.0} for s in range(3)},
            **{f"los/qfedavg/{s}": {"init": 0.42, "drift": 0.02} for s in range(3)},
            **{f"los/qfedavg (L = 1)/{s}": {"init": 0.42, "drift": 1.5} for s in range(3)},
        },
        "provenance": [{"command": "python benchmarks/strategies.py all", "commit": "abc"}],
    }


def test_report_ranks_personalized_by_client_mean_and_names_what_is_below_chance(bench):
    _, report = bench
    # Execute
    text = report.markdown(_summary())
    # Assert: FedSA-LoRA (client mean 0.90) above FedAvg (global 0.81), both values shown
    ranking = text.split("### Task `los`")[1].split("##")[0]
    assert ranking.index("fedsa-lora") < ranking.index("fedavg") < ranking.index("qfedavg")
    fedsa = next(line for line in ranking.splitlines() if "fedsa-lora" in line)
    assert "personalized client mean" in fedsa and "0.900" in fedsa and "0.200" in fedsa
    assert "never (0/3)" in ranking and "3.0 ± 0.0 (3/3)" in ranking
    # below chance: QFedAvg's global AUC, FedSA-LoRA's unused global model (not its own)
    below = text.split("## Below chance")[1].split("##")[0]
    assert "qfedavg: global auc 0.450 < chance 0.5 (mean; 3 of 3 seeds below chance)" in below and "fedsa-lora: global auc 0.200" in below
    assert " fedavg:" not in below and "fedsa-lora: personalized" not in below
    # with the measured reason: QFedAvg's global model hardly moved from its initialization
    assert "scores 0.420 at round 0" in below and "||w_R - w_0|| = 0.02 (fedavg: 2)" in below
    assert "stations' own models score 0.900" in below
    assert "with strategy.qffl-learning-rate = 1.0 (`qfedavg (L = 1)`) its global auc is 0.790" in below
    assert "variant `qfedavg (L = 1)`: qfedavg with `strategy.qffl-learning-rate = 1.0`" in text
    # tuning: the chosen lr bold, flagged at the grid edge; convergence over the last rounds
    assert "**0.700**" in text and "0.01 (grid edge)" in text
    assert "change over the last 1 rounds" in text and "0.010" in text
    assert not math.isnan(report._num("0.5"))


def test_readme_headline_names_the_best_ranked_strategy_and_fedavg(bench, monkeypatch):
    readme = importlib.import_module("readme")
    (line,) = readme._strategies_headlines({"strategies": _summary()})
    assert line.startswith("strategy comparison, `los` auc after 4 rounds")
    assert "best fedsa-lora 0.900 ± 0.000 (personalized client mean) of 4" in line
    assert "FedAvg 0.810 ± 0.025" in line
    assert readme._strategies_headlines({"strategies": {"main": []}}) == []
