"""The demo's per-task tables: what each row reports, from hand-built histories and references.

Personalized strategies report the personalized client metrics (what their stations use),
"worst" follows each metric's direction, clients without scored rows are left out, and
the compressed model is never one that no station uses.
"""

from __future__ import annotations

import math

import pytest

from rantune.federated.evaluation import lower_is_better
from rantune.simulations.demo.pipeline import best_run
from rantune.simulations.demo.references import best_method, method_metrics
from rantune.simulations.demo.tables import client_summary, curves, reference_lines, task_table
from rantune.tasks import TASKS, get_task


def _history(server: dict, clients: dict, up: int = 1000) -> dict:
    """A two-round history.json with the given last-round server and client metrics."""
    first = {"round": 1, "server": {k: v / 2 for k, v in server.items()}, "bytes": {"up": up},
             "clients": {c: {"evaluate": {k: v / 2 for k, v in m.items()}} for c, m in clients.items()}}
    last = {"round": 2, "server": server, "bytes": {"up": up},
            "clients": {c: {"evaluate": m} for c, m in clients.items()}}
    return {"rounds": [{"round": 0, "server": {}}, first, last]}


REFS = {
    "epochs": 4,
    "central": {"global": {"top1": 0.6, "gain_loss_db": 1.0},
                "clients": {"0": {"top1": 0.7, "gain_loss_db": 0.5}, "1": {"top1": 0.5, "gain_loss_db": 2.0}}},
    "local": {"0": {"global": {"top1": 0.3, "gain_loss_db": 4.0}, "own": {"top1": 0.8, "gain_loss_db": 0.2}},
              "1": {"global": {"top1": 0.1, "gain_loss_db": 6.0}, "own": None}},
    "baseline": {"method": "lmmse", "global": {"top1": 0.9, "gain_loss_db": 0.1},
                 "clients": {"0": {"top1": 0.95, "gain_loss_db": 0.05}}},
}


def _table() -> dict:
    fedavg = _history({"top1": 0.5, "gain_loss_db": 2.0},
                      {"0": {"top1": 0.6, "gain_loss_db": 1.0}, "1": {"top1": 0.4, "gain_loss_db": 3.0}})
    fedsa = _history(
        {"top1": 0.1, "gain_loss_db": 9.0},
        {c: {"top1": 0.1, "gain_loss_db": 9.0, "personalized-top1": p, "personalized-gain_loss_db": g}
         for c, p, g in (("0", 0.8, 0.4), ("1", 0.7, 0.6))},
    )
    csv = {"mb_up": "0.5", "mb_down": "0.5"}
    return task_table("beam-spatial", "top1", True, {"fedavg": (fedavg, csv), "fedsa-lora": (fedsa, csv)}, REFS)


def test_rows_report_what_each_station_uses():
    # Execute
    rows = {r["label"]: r for r in _table()["rows"]}

    # Assert: FedSA-LoRA's client numbers are the personalized ones, its global stays global
    fedsa = rows["fedsa-lora"]
    assert fedsa["personalized"] and not rows["fedavg"]["personalized"]
    assert fedsa["client_mean"]["top1"] == pytest.approx(0.75)
    assert fedsa["global"]["top1"] == pytest.approx(0.1)
    # worst follows the direction: lowest top-1, highest gain loss
    assert rows["fedavg"]["client_worst"] == {"top1": 0.4, "gain_loss_db": 3.0}
    # every reference is a row, scored the same way
    assert rows["centralized LoRA"]["client_worst"] == {"top1": 0.5, "gain_loss_db": 2.0}
    assert rows["classical: lmmse"]["global"]["top1"] == 0.9


def test_local_only_scores_clients_with_rows_and_averages_global_models():
    # Execute
    local = next(r for r in _table()["rows"] if r["kind"] == "local-only")

    # Assert: client 1 has no scored own rows (None) and is left out
    assert local["clients_scored"] == 1
    assert local["client_mean"]["top1"] == 0.8
    assert local["global"]["top1"] == pytest.approx(0.2)


def test_reference_lines_and_curves_for_the_plots():
    # Prepare
    table = _table()
    fedsa = _history({"top1": 0.1}, {"0": {"top1": 0.1, "personalized-top1": 0.8}}, up=2 * 1024 * 1024)

    # Execute
    lines = reference_lines(table)
    curve = curves(fedsa, "top1")

    # Assert
    assert lines["global"] == {"centralized LoRA": 0.6, "local-only LoRA": pytest.approx(0.2),
                               "classical: lmmse": 0.9}
    assert lines["clients"]["local-only LoRA"] == 0.8
    assert curve["round"] == [1, 2]
    assert curve["clients"] == [0.4, 0.8]  # personalized, not the global model's 0.05 / 0.1
    assert curve["mb_up"] == pytest.approx([2.0, 4.0], rel=0.05)


def test_client_summary_skips_nan_and_missing_clients():
    # Execute
    mean, worst, scored = client_summary(
        {"0": {"error_p90_m": 3.0}, "1": {"error_p90_m": math.nan}, "2": None, "3": {"error_p90_m": 5.0}},
        ("error_p90_m",),
    )

    # Assert: positioning errors are lower-is-better, so the worst is the largest
    assert (mean["error_p90_m"], worst["error_p90_m"], scored) == (4.0, 5.0, 2)


def test_the_compressed_model_is_a_global_model_stations_use():
    # Prepare: FedSA-LoRA has the best final metric in results.csv, but its stations keep B
    table = _table()
    table["rows"][1]["global"]["top1"] = 0.99
    rows = [
        {"task": "beam-spatial", "strategy": "fedavg", "final_metric": "0.5"},
        {"task": "beam-spatial", "strategy": "fedsa-lora", "final_metric": "0.99"},
    ]

    # Execute / Assert
    assert best_run(rows, table)["strategy"] == "fedavg"


def test_baseline_method_is_the_one_best_of_picked():
    # Prepare: Task.baseline's flat form, lmmse best on top1 (plain keys = its metrics)
    flat = {"best_of_set_b_top1": 0.4, "best_of_set_b_gain_loss_db": 3.0,
            "lmmse_top1": 0.7, "lmmse_gain_loss_db": 1.0, "top1": 0.7, "gain_loss_db": 1.0}

    # Execute / Assert
    assert best_method(flat, "top1") == "lmmse"
    assert method_metrics(flat, "best_of_set_b") == {"top1": 0.4, "gain_loss_db": 3.0}


@pytest.mark.parametrize("name", TASKS)
def test_metric_direction_matches_each_task(name):
    # Prepare
    task = get_task(name)

    # Execute / Assert: the client "worst" uses lower_is_better; it must agree with the task
    assert lower_is_better(task.primary_metric) is (not task.higher_is_better)
    assert lower_is_better("gain_loss_db") and not lower_is_better("top1")
