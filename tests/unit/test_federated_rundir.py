"""Run directory: commit points, checksums, resume point, config guard (no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rantune.federated.rundir import RunDir, json_safe
from rantune.simulations.engine import resolve_config


def _state(value: float) -> dict[str, np.ndarray]:
    return {"base_model.model.head.classifier.bias": np.full(2, value, np.float32)}


def _run(tmp_path, rounds: int):
    cfg = resolve_config({"out-dir": str(tmp_path)})
    rundir = RunDir(tmp_path)
    assert rundir.check_config(cfg) is False
    rundir.write_config(cfg)
    for r in range(rounds + 1):
        rundir.save_round(cfg, r, _state(float(r)), {"round": r, "server": {"accuracy": r / 10}})
    return cfg, rundir


def test_resume_point_is_the_last_intact_round(tmp_path):
    # Prepare
    cfg, rundir = _run(tmp_path, rounds=3)
    weights, _, _ = rundir.round_paths(3)
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # corrupt round 3

    # Execute
    point = rundir.resume_point(cfg)

    # Assert
    assert point.round == 2
    assert [r["round"] for r in point.rounds] == [0, 1, 2]
    assert np.array_equal(point.global_state["base_model.model.head.classifier.bias"], [2.0, 2.0])


def test_a_missing_commit_json_ends_the_resumable_prefix(tmp_path):
    cfg, rundir = _run(tmp_path, rounds=3)
    rundir.round_paths(2)[2].unlink()
    assert rundir.resume_point(cfg).round == 1


def test_strategy_state_round_trips(tmp_path):
    cfg = resolve_config({"out-dir": str(tmp_path)})
    rundir = RunDir(tmp_path)
    rundir.write_config(cfg)
    arrays = {"m_t/a": np.arange(3, dtype=np.float32)}
    rundir.save_round(cfg, 0, _state(0.0), {"round": 0}, arrays, {"scalars": {"eta": 0.1}})
    point = rundir.resume_point(cfg)
    assert np.array_equal(point.strategy_arrays["m_t/a"], arrays["m_t/a"])
    assert point.strategy_meta == {"scalars": {"eta": 0.1}}


def test_other_config_is_refused_before_anything_is_written(tmp_path):
    # Prepare
    _run(tmp_path, rounds=1)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    other = resolve_config({"out-dir": str(tmp_path), "task": "beam", "lora.r": 8})

    # Execute / Assert
    with pytest.raises(ValueError, match=r"different config \(differs in \['lora\.r', 'task'\]\)"):
        RunDir(tmp_path).check_config(other)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_checkpoints_without_config_are_not_a_run(tmp_path):
    _run(tmp_path, rounds=0)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match="no config.json"):
        RunDir(tmp_path).check_config(resolve_config({"out-dir": str(tmp_path)}))


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        RunDir(path).check_config(resolve_config({"out-dir": str(path)}))


def test_json_safe_writes_strict_json():
    payload = json_safe({"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": np.int64(3)})
    assert json.loads(json.dumps(payload, allow_nan=False)) == {"a": None, "b": [1.5, None], "c": 3}


def test_run_from_before_a_key_existed_resumes_at_that_keys_default(tmp_path):
    # Prepare: pretend config.json was written before "model.head" existed
    cfg, rundir = _run(tmp_path, rounds=1)
    stored = json.loads(rundir.config_path.read_text())
    del stored["flat"]["model.head"]
    stored["config-hash"] = "0123456789abcdef"
    rundir.config_path.write_text(json.dumps(stored))
    for r in (0, 1):
        meta = rundir.round_paths(r)[2]
        commit = json.loads(meta.read_text())
        commit["config-hash"] = "0123456789abcdef"
        meta.write_text(json.dumps(commit))

    # Execute
    same = RunDir(tmp_path)
    resumable = same.check_config(cfg)
    point = same.resume_point(cfg)

    # Assert: default value -> resumes from the old checkpoints; other value -> refused
    assert resumable and point.round == 1
    other = resolve_config({"out-dir": str(tmp_path), "model.head": "token-mlp"})
    with pytest.raises(ValueError, match=r"differs in \['model\.head'\]"):
        RunDir(tmp_path).check_config(other)
