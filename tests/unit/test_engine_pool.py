"""The in-process engine on a pool of worker processes.

Proves: two workers give the same history (server and client metrics, every round)
and the same final adapter as the sequential path, with node state that must travel
(FedSA-LoRA keeps B on each node); a worker keeps a node's job between rounds; a
worker that dies gives that client an error reply, is replaced, and the round goes
on; a callable that cannot reach a worker fails clearly.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from flwr.app import MetricRecord
from safetensors.numpy import load_file

from rantune.client.app import app as shipped_app
from rantune.client.jobs import JOBS
from rantune.errors import InputError
from rantune.simulations.engine import run_simulation
from rantune.simulations.engine.pool import WorkerPool

BASE = {
    "data.preset": "smoke",
    "task": "los",
    "model.pretrained": "none",
    "num-server-rounds": 2,
    "local-epochs": 1,
    "data.max-train-rows": 24,
}


def tracing_app(message, context):
    """The shipped ClientApp, whose train replies also say which process served them
    and which job object it used (module level: workers import it by name)."""
    job = JOBS.job(context)
    reply = shipped_app(message, context)
    if message.metadata.message_type == "train" and not reply.has_error():
        metrics = reply.content["metrics"]
        reply.content["metrics"] = MetricRecord(
            {**dict(metrics), "worker-pid": os.getpid(), "job-id": id(job) % (1 << 31)}
        )
    return reply


def dying_app(message, context):
    """Base station 2's process dies in round 1's training."""
    config = message.content.config_records.get("config")
    if (
        context.node_config["partition-id"] == 2
        and message.metadata.message_type == "train"
        and config is not None
        and config.get("server-round") == 1
    ):
        os._exit(3)
    return shipped_app(message, context)


def _run(tmp_path, name: str, workers: int, client_app=None, **extra) -> dict:
    return run_simulation(
        {**BASE, **extra, "out-dir": str(tmp_path / name)}, workers=workers, client_app=client_app
    )


def _numbers(history: dict) -> list:
    """Everything a round computed (wall times and timestamps aside)."""
    keep = []
    for rnd in history["rounds"]:
        clients = {
            c: {k: v for k, v in entry.items() if k in ("train", "evaluate")}
            for c, entry in rnd.get("clients", {}).items()
        }
        keep.append((rnd["server"], rnd.get("evaluate"), clients, rnd.get("bytes")))
    return keep


@pytest.mark.slow
def test_two_workers_give_the_same_history_as_the_sequential_path(tmp_path):
    # Prepare: FedSA-LoRA keeps each node's B in its context state, which must travel
    extra = {"strategy.name": "fedsa-lora"}

    # Execute
    sequential = _run(tmp_path, "seq", 1, **extra)
    pooled = _run(tmp_path, "pool", 2, **extra)

    # Assert
    assert _numbers(pooled) == _numbers(sequential)
    adapters = [load_file(str(tmp_path / n / "global_adapter.safetensors")) for n in ("seq", "pool")]
    assert sorted(adapters[0]) == sorted(adapters[1])
    for key in adapters[0]:
        np.testing.assert_array_equal(adapters[0][key], adapters[1][key])


@pytest.mark.slow
def test_a_worker_keeps_each_nodes_job_between_rounds_and_both_workers_work(tmp_path):
    # Prepare / Execute
    history = _run(tmp_path, "trace", 2, client_app=tracing_app)

    # Assert: a worker prefers the nodes it served before (an idle worker may take
    # another's node, rebuilding that node's job), and a node served by the same
    # process again is served by the same job object
    first, second = (
        {c: (e["train"]["worker-pid"], e["train"]["job-id"]) for c, e in r["clients"].items()}
        for r in history["rounds"][1:3]
    )
    stayed = [c for c in first if first[c][0] == second[c][0]]
    assert stayed  # some node is served by its previous worker again
    assert all(first[c] == second[c] for c in stayed)
    assert len({pid for pid, _ in first.values()}) == 2  # both workers took clients
    assert os.getpid() not in {pid for pid, _ in first.values()}


@pytest.mark.slow
def test_a_dead_worker_fails_its_client_only_and_is_replaced(tmp_path):
    # Prepare / Execute
    history = _run(tmp_path, "dying", 2, client_app=dying_app, **{"min-train-clients": 2})

    # Assert
    first, second = history["rounds"][1]["train"], history["rounds"][2]["train"]
    assert first["aggregated"] and sorted(first["answered"]) == ["0", "1"]
    assert "died (exit code 3)" in first["failed"][0]["reason"]
    assert sorted(second["answered"]) == ["0", "1", "2"]  # a fresh worker served it again


def test_a_callable_that_cannot_reach_a_worker_fails_before_any_process_starts():
    # Prepare
    def local_app(message, context):  # not importable by a worker
        return message

    # Execute / Assert
    with pytest.raises(InputError, match="cannot be sent to worker processes"):
        WorkerPool(2, {}, client_app=local_app)
    with pytest.raises(InputError, match="workers=0 is invalid"):
        WorkerPool(0, {})


def test_cli_workers_below_one_exits_2_and_writes_nothing(tmp_path):
    # Prepare
    from typer.testing import CliRunner

    from rantune.simulations.cli import app

    # Execute
    result = CliRunner().invoke(app, ["simulate", "--workers", "0", "--out", str(tmp_path / "r")])

    # Assert
    assert result.exit_code == 2 and "--workers 0 is invalid" in result.output
    assert not (tmp_path / "r").exists()
