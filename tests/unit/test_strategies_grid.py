"""The comparison grid's bookkeeping without running federated rounds: argument
parsing, planning (fails before anything runs), history -> record conversion with
personalized client metrics, the skip rule and stale work directories."""

from __future__ import annotations

import json

import pytest

from rantune.simulations.compare.grid import (
    GridSpec,
    RunJob,
    history_to_record,
    is_done,
    parse_list,
    parse_metric,
    parse_seeds,
    plan,
    set_aside_stale,
)
from rantune.simulations.compare.records import run_from_dict, save_run
from rantune.simulations.engine import resolve_config

SPEC = GridSpec(
    preset="smoke",
    tasks=("los",),
    strategies=("fedavg", "fedsa-lora"),
    partitions=("natural", "dirichlet-1.0"),
    seeds=(0, 1),
    rounds=2,
    overrides={"model.pretrained": "none"},
)


def _history(personalized: bool = False) -> dict:
    rounds = [{"round": 0, "server": {"accuracy": 0.5}, "wall-time-s": 0.1}]
    for r in (1, 2):
        clients = {}
        for cid in ("0", "1"):
            evaluation = {"accuracy": 0.6 + 0.1 * r, "num-examples": 10}
            if personalized:
                evaluation["personalized-accuracy"] = 0.9
            clients[cid] = {"bytes-up": 100, "bytes-down": 200, "evaluate": evaluation}
        rounds.append(
            {
                "round": r,
                "server": {"accuracy": 0.6 + 0.1 * r, "auc": 0.7},
                "clients": clients,
                "bytes": {"up": 200, "down": 400, "down-evaluate": 400},
                "wall-time-s": 1.5,
            }
        )
    return {
        "primary-metric": "accuracy",
        "higher-is-better": True,
        "rounds": rounds,
        "num-clients": 2,
        "final": rounds[-1]["server"],
    }


def test_argument_parsers_reject_empty_duplicate_and_malformed_lists():
    assert parse_list(" a, b ,c", "x") == ("a", "b", "c")
    assert parse_seeds("0,2") == (0, 2)
    assert parse_metric("auc") == "auc"
    assert parse_metric("los=auc, beam=top1") == {"los": "auc", "beam": "top1"}
    assert parse_metric(None) is None
    for call in (
        lambda: parse_list(",", "strategies"),
        lambda: parse_list("a,a", "strategies"),
        lambda: parse_seeds("0,x"),
        lambda: parse_metric("los="),
    ):
        with pytest.raises(ValueError):
            call()


def test_plan_expands_every_combination_with_its_own_work_directory(tmp_path):
    jobs = plan(SPEC, tmp_path)
    assert len(jobs) == 1 * 2 * 2 * 2
    assert len({job.work_dir(tmp_path) for job, _ in jobs}) == len(jobs)
    job, cfg = jobs[-1]
    assert (cfg.strategy.name, cfg.partition.scheme, cfg.seed) == (
        job.strategy,
        job.partition,
        job.seed,
    )
    assert cfg.num_server_rounds == 2 and cfg.model.is_random


@pytest.mark.parametrize(
    "change, message",
    [
        ({"strategies": ("fedavg", "nope")}, "unknown: choose one of"),
        ({"overrides": {"task": "beam"}}, "may not set"),
        ({"rounds": 0}, "--rounds"),
        ({"partitions": ("natural", "bogus")}, "partition scheme"),
    ],
)
def test_plan_fails_before_anything_runs(tmp_path, change, message):
    spec = GridSpec(**{**SPEC.__dict__, **change})
    with pytest.raises(ValueError, match=message):
        plan(spec, tmp_path)
    assert not any(tmp_path.iterdir())


def test_history_becomes_a_record_with_personalized_client_metrics():
    job = RunJob("los", "fedsa-lora", "natural", 0, ())
    cfg = resolve_config({"data.preset": "smoke", "model.pretrained": "none"})

    record = history_to_record(_history(personalized=True), job, cfg, None)
    by_auc = history_to_record(_history(), job, cfg, "auc")

    run = run_from_dict(record)  # valid for the report
    assert [r.round for r in run.history] == [1, 2]  # round 0 (no training) left out
    assert run.history[-1].client_metrics == {"0": 0.9, "1": 0.9}
    assert record["personalized"] and record["bytes-down-evaluate"] == 800
    assert run.history[0].bytes_up == 200 and run.history[0].bytes_down == 400
    assert by_auc["metric"] == "auc" and by_auc["history"][-1]["global_metric"] == 0.7


def test_is_done_needs_the_same_hash_rounds_and_metric(tmp_path):
    job, cfg = plan(SPEC, tmp_path)[0]
    record = history_to_record(_history(), job, cfg, None)
    assert not is_done(tmp_path, job, cfg)
    save_run(tmp_path, record)
    assert is_done(tmp_path, job, cfg)
    assert not is_done(tmp_path, job, cfg, metric="auc")
    assert not is_done(tmp_path, job, cfg.with_overrides(**{"num-server-rounds": 5}))
    assert not is_done(tmp_path, job, cfg.with_overrides(lr=0.1))


def test_a_work_directory_of_another_config_is_set_aside_not_deleted(tmp_path):
    job, cfg = plan(SPEC, tmp_path)[0]
    work = job.work_dir(tmp_path)
    work.mkdir(parents=True)
    (work / "config.json").write_text(json.dumps({"config-hash": cfg.identity_hash()}))
    assert set_aside_stale(work, cfg) is None and work.exists()
    (work / "config.json").write_text(json.dumps({"config-hash": "old"}))
    moved = set_aside_stale(work, cfg)
    assert moved is not None and moved.name.endswith(".stale-old")
    assert not work.exists() and (moved / "config.json").exists()
