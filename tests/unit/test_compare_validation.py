"""Validation metrics for lr tuning and seeds that draw their own split.

``client-validation`` (run config) makes each client also score the model its station
uses on its own validation split (``val-<m>``; ``personalized-val-<m>`` where the
strategy keeps parameters local) without changing any trained number; the grid carries
those into its records, and ``GridSpec.split_seed`` gives every seed its own
``partition.seed``. Real runs on the ``smoke`` preset with a random tiny encoder.
"""

from __future__ import annotations

import pytest

from rantune.simulations.compare.grid import GridSpec, RunJob, history_to_record, plan
from rantune.simulations.compare.records import run_from_dict
from rantune.simulations.engine import resolve_config, run_simulation

BASE = {
    "data.preset": "smoke",
    "task": "los",
    "model.pretrained": "none",
    "num-server-rounds": 1,
    "data.max-train-rows": 16,
}


def _last_clients(history: dict) -> dict:
    return history["rounds"][-1]["clients"]


def test_client_validation_adds_validation_metrics_and_changes_no_trained_number(tmp_path):
    # Prepare / Execute: the same run with and without client validation
    off = run_simulation({**BASE, "out-dir": str(tmp_path / "off")})
    on = run_simulation({**BASE, "client-validation": True, "out-dir": str(tmp_path / "on")})
    # Assert: the server's global metrics and each client's test metrics are identical
    assert on["rounds"][-1]["server"] == off["rounds"][-1]["server"]
    for cid, entry in _last_clients(on).items():
        evaluation = entry["evaluate"]
        plain = _last_clients(off)[cid]["evaluate"]
        assert {k: v for k, v in evaluation.items() if not k.startswith("val-")} == plain
        assert {"val-auc", "val-accuracy", "val-loss"} <= set(evaluation)
        assert not any(k.startswith("val-") for k in plain)
    # the validation rows are other rows than the test rows: some client's loss differs
    assert any(
        e["evaluate"]["val-loss"] != e["evaluate"]["loss"] for e in _last_clients(on).values()
    )


def test_a_personalized_strategy_reports_its_personalized_validation_metric(tmp_path):
    # Prepare
    flat = {**BASE, "strategy.name": "fedsa-lora", "client-validation": True,
            "out-dir": str(tmp_path / "run")}
    cfg = resolve_config(flat)
    # Execute
    history = run_simulation(flat)
    record = history_to_record(history, RunJob("los", "fedsa-lora", "natural", 0, ()), cfg, "loss")
    # Assert: the record's validation metric is each station's personalized model's
    clients = _last_clients(history)
    assert all("personalized-val-loss" in e["evaluate"] for e in clients.values())
    run = run_from_dict(record)
    assert run.history[-1].client_val_metrics == {
        cid: pytest.approx(e["evaluate"]["personalized-val-loss"]) for cid, e in clients.items()
    }


def test_split_seed_gives_every_seed_its_own_partition_seed(tmp_path):
    spec = GridSpec(preset="smoke", tasks=("los",), strategies=("fedavg",),
                    partitions=("natural",), seeds=(0, 3), rounds=1,
                    overrides={"model.pretrained": "none"}, split_seed=True)
    jobs = plan(spec, tmp_path)
    assert [cfg.partition.seed for _, cfg in jobs] == [0, 3]
    shared = plan(GridSpec(**{**spec.__dict__, "split_seed": False}), tmp_path)
    assert [cfg.partition.seed for _, cfg in shared] == [0, 0]
    with pytest.raises(ValueError, match="partition.seed"):
        plan(GridSpec(**{**spec.__dict__, "overrides": {"partition.seed": 1}}), tmp_path)
