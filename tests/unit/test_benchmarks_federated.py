"""The federated benchmark's references go through the library's centralized trainer.

Centralized LoRA pools every client's training rows; a local-only reference pools one
client's rows (``clients=[c]``) and is also scored on that client's own test rows.
Tiny sizes: the ``smoke`` preset and a miniature seeded encoder, one epoch.
"""

from __future__ import annotations

import importlib
import statistics
from pathlib import Path

import pytest
from compression_runs import mini_checkpoint

from rantune.compression.data import pooled_split
from rantune.compression.merge import train_centralized_run
from rantune.federated.run_config import resolve_run_config
from rantune.tasks import get_task
from rantune.training import TrainSettings

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def overrides(tmp_path_factory):
    checkpoint = mini_checkpoint(tmp_path_factory.mktemp("enc") / "mini.safetensors")
    return {"task": "los", "seed": 0, "data.preset": "smoke", "model.pretrained": str(checkpoint)}


def test_local_only_run_trains_and_scores_one_client(overrides, tmp_path):
    # Prepare
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


def test_benchmark_references_cover_every_client(overrides, tmp_path, monkeypatch):
    # Prepare: the flat keys a run directory's config.json holds, as the benchmark reads them
    monkeypatch.syspath_prepend(str(BENCH))
    federated = importlib.import_module("federated")
    flat = {**overrides, "batch-size": 32, "lr": 3e-3, "weight-decay": 0.0, "max-grad-norm": 1.0}
    clients = 2

    # Execute
    result = federated.references(tmp_path, flat, epochs=1, num_clients=clients)

    # Assert
    assert sorted(result["local"]) == ["0", "1"]
    primary = get_task(flat["task"]).primary_metric
    own = [v["own-test"][primary] for v in result["local"].values()]
    assert result["local-mean-own-test"] == pytest.approx(statistics.mean(own))
    assert 0.0 <= result["centralized"][primary] <= 1.0
    assert (tmp_path / "central" / "config.json").exists()
    assert (tmp_path / "local-1" / "global_adapter.safetensors").exists()
