"""A FLoRA / FedEx-LoRA run's model is the base plus its cumulative dense update plus its
adapters: compression loads all three, so the merged teacher scores what the server did."""

from __future__ import annotations

import pytest

from rantune.compression.merge import load_dense_deltas, load_run
from rantune.federated.splits import FederatedData
from rantune.simulations.engine import run_simulation
from rantune.training import evaluate


@pytest.mark.parametrize("strategy", ["flora", "fedex-lora"])
def test_merged_model_of_a_dense_run_scores_the_servers_global_metrics(tmp_path, strategy):
    # Prepare: two rounds, so the base already carries a dense update
    out = tmp_path / strategy
    history = run_simulation(
        {
            "data.preset": "smoke",
            "task": "los",
            "model.pretrained": "none",
            "strategy.name": strategy,
            "num-server-rounds": 2,
            "out-dir": str(out),
        }
    )

    # Execute
    run = load_run(out)
    data = FederatedData.load(run.config.data, run.config.partition)
    metrics = evaluate(run.model, run.task, *data.tensors(run.task, None, "test"))

    # Assert
    assert load_dense_deltas(out)
    assert metrics["loss"] == pytest.approx(history["final"]["loss"], abs=1e-4)
    assert metrics["auc"] == pytest.approx(history["final"]["auc"], abs=1e-6)


def test_a_run_without_dense_updates_has_none(tmp_path):
    assert load_dense_deltas(tmp_path) is None
