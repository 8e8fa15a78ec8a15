"""Federated runs on the in-process engine (smoke preset, random tiny encoder).

Covers: adapter-only traffic, byte accounting, resume == uninterrupted, rejection of
NaN/Inf/wrong-shape/wrong-key updates, failing clients, strategy hooks
(keep-local/freeze, personalized evaluation), update compression, bad input.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, Context, Message
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from safetensors.numpy import load_file

from rantune.client.app import app as client_app
from rantune.federated import workload
from rantune.federated.local import node_identity
from rantune.federated.messages import HEAD_PREFIX, record_bytes, state_to_record
from rantune.federated.run_config import parse_run_config
from rantune.server.loop import run_server
from rantune.server.strategies.flower import common_kwargs
from rantune.server.strategies.flower_adapter import FlowerRule
from rantune.simulations.engine import resolve_config, run_simulation

BASE = {
    "data.preset": "smoke",
    "task": "los",
    "model.pretrained": "none",
    "num-server-rounds": 2,
}


class Recorder:
    """Wraps the real ClientApp: records traffic, optionally fails or corrupts replies."""

    def __init__(self, fail: set[int] | None = None, corrupt=None) -> None:
        self.fail = fail or set()
        self.corrupt = corrupt
        self.traffic: list[dict] = []

    def __call__(self, message: Message, context: Context) -> Message:
        pid = context.node_config["partition-id"]
        kind = message.metadata.message_type
        config = dict(message.content.config_records.get("config", {}))
        self.traffic.append(
            {"pid": pid, "dir": "down", "kind": kind, "config": config, "content": message.content}
        )
        if pid in self.fail:
            raise RuntimeError(f"base station {pid} is down")
        reply = client_app(message, context)
        if self.corrupt is not None and kind == "train":
            self.corrupt(pid, reply.content["arrays"])
        self.traffic.append(
            {"pid": pid, "dir": "up", "kind": kind, "config": config, "content": reply.content}
        )
        return reply

    def records(self, direction: str, kind: str = "train"):
        return [t for t in self.traffic if t["dir"] == direction and t["kind"] == kind]


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _npy_bytes(array: np.ndarray) -> int:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return len(buffer.getvalue())


def test_only_adapters_travel_and_bytes_are_counted_exactly(tmp_path):
    # Prepare
    recorder = Recorder()
    cfg = resolve_config({**BASE, "strategy.name": "fedprox", "out-dir": str(tmp_path / "run")})
    adapter_keys = set(workload.initial_global_state(workload.model_spec(cfg)))

    # Execute
    history = run_simulation(cfg, client_app=recorder)

    # Assert: every tensor in every message is a LoRA factor or a head tensor
    assert recorder.traffic
    for entry in recorder.traffic:
        for record in entry["content"].array_records.values():
            assert all(".lora_" in k or k.startswith(HEAD_PREFIX) for k in record), sorted(record)
            assert set(record) == adapter_keys
    assert not any("base_layer" in k or ".encoder.patch_embed" in k for k in adapter_keys)
    # FedProx's proximal term reaches the clients
    assert {t["config"]["proximal-mu"] for t in recorder.records("down")} == {0.01}
    # bytes in history == count_bytes of what was sent == serialized tensors + keys
    for rnd in history["rounds"][1:]:
        downs = [t for t in recorder.records("down") if t["config"]["server-round"] == rnd["round"]]
        ups = [t for t in recorder.records("up") if t["config"]["server-round"] == rnd["round"]]
        for pid in range(3):
            client = rnd["clients"][str(pid)]
            down = next(t for t in downs if t["pid"] == pid)["content"]["arrays"]
            up = next(t for t in ups if t["pid"] == pid)["content"]["arrays"]
            assert client["bytes-down"] == down.count_bytes()
            assert client["bytes-up"] == up.count_bytes()
            assert client["bytes-up"] == sum(_npy_bytes(v.numpy()) + len(k) for k, v in up.items())
        assert rnd["bytes"]["up"] == sum(rnd["clients"][c]["bytes-up"] for c in rnd["clients"])
    full = record_bytes(state_to_record(workload.full_model_parameters(workload.model_spec(cfg))))
    assert history["full-model-bytes"] == full
    assert history["rounds"][-1]["bytes"]["up-ratio"] < 0.05


def test_outputs_and_config_json(tmp_path):
    # Execute
    out = tmp_path / "run"
    history = run_simulation({**BASE, "num-server-rounds": 1, "out-dir": str(out)})

    # Assert
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "los" and config["seed"] == 0
    assert config["data"]["preset"] == "smoke" and config["model"]["pretrained"] == "none"
    assert {"r", "alpha", "dropout", "targets"} <= set(config["lora"])
    adapter = load_file(str(out / "global_adapter.safetensors"))
    spec = workload.model_spec(parse_run_config(config["flat"]))
    assert set(adapter) == set(workload.initial_global_state(spec))
    assert (out / "checkpoints" / "round_000.safetensors").exists()
    assert (out / "checkpoints" / "round_001.json").exists()
    rnd = history["rounds"][1]
    assert rnd["train"]["answered"] == ["0", "1", "2"]
    assert set(rnd["evaluate"]) >= {"mean", "worst", "worst-client", "weighted"}
    assert set(rnd["clients"]["0"]["evaluate"]) >= {"accuracy", "loss", "num-examples"}
    assert history["final"] == rnd["server"]


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    # Prepare
    full = {**BASE, "num-server-rounds": 3}
    uninterrupted = run_simulation({**full, "out-dir": str(tmp_path / "a")})

    # Execute: (1) stopped after round 1, rerun; (2) crashed before rounds 2-3 committed
    run_simulation({**full, "num-server-rounds": 1, "out-dir": str(tmp_path / "b")})
    resumed = run_simulation({**full, "out-dir": str(tmp_path / "b")})
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    for r in (2, 3):
        (tmp_path / "c" / "checkpoints" / f"round_{r:03d}.json").unlink()
    recovered = run_simulation({**full, "out-dir": str(tmp_path / "c")})

    # Assert
    expected = [r["server"] for r in uninterrupted["rounds"]]
    for history in (resumed, recovered):
        for got, want in zip(history["rounds"], expected, strict=True):
            assert got["server"] == pytest.approx(want, rel=1e-6)
        assert [r["round"] for r in history["rounds"]] == [0, 1, 2, 3]
    reference = load_file(str(tmp_path / "a" / "global_adapter.safetensors"))
    for name in ("b", "c"):
        adapter = load_file(str(tmp_path / name / "global_adapter.safetensors"))
        assert all(np.allclose(adapter[k], reference[k], rtol=1e-6, atol=1e-7) for k in reference)


def _nan(pid, arrays):
    key = sorted(arrays)[0]
    value = arrays[key].numpy().copy()
    value.flat[0] = np.nan if pid == 1 else np.inf
    arrays[key] = Array(value)


def _reshape(pid, arrays):
    key = sorted(arrays)[-1]
    arrays[key] = Array(np.zeros(arrays[key].numpy().size + 1, np.float32))


def _base_key(pid, arrays):
    arrays["base_model.model.encoder.patch_embed.weight"] = Array(np.zeros((64, 32), np.float32))


@pytest.mark.parametrize(
    ("corruptions", "reasons"),
    [
        ({1: _nan, 2: _reshape}, {"1": "non-finite", "2": "wrong shape"}),
        ({1: _nan, 2: _base_key}, {"1": "non-finite", "2": "wrong keys"}),
    ],
)
def test_bad_updates_are_rejected_and_never_aggregated(tmp_path, corruptions, reasons):
    # Prepare
    def corrupt(pid, arrays):
        if pid in corruptions:
            corruptions[pid](pid, arrays)

    recorder = Recorder(corrupt=corrupt)
    overrides = {**BASE, "num-server-rounds": 1, "min-train-clients": 1, "out-dir": str(tmp_path)}

    # Execute
    history = run_simulation(overrides, client_app=recorder)

    # Assert: reasons logged in history; the global model is exactly client 0's update
    train = history["rounds"][1]["train"]
    assert train["answered"] == ["0"] and train["aggregated"]
    assert {r["client"]: r["reason"] for r in train["rejected"]}.keys() == reasons.keys()
    for entry in train["rejected"]:
        assert reasons[entry["client"]] in entry["reason"]
    sent = next(t for t in recorder.records("up") if t["pid"] == 0)["content"]["arrays"]
    adapter = load_file(str(tmp_path / "global_adapter.safetensors"))
    assert all(np.array_equal(adapter[k], sent[k].numpy()) for k in sent)


def test_failing_client_is_tolerated_while_enough_answer(tmp_path):
    # Execute
    ok = run_simulation(
        {**BASE, "num-server-rounds": 1, "out-dir": str(tmp_path / "ok")},
        client_app=Recorder(fail={2}),
    )
    short = run_simulation(
        {
            **BASE,
            "num-server-rounds": 1,
            "min-train-clients": 3,
            "out-dir": str(tmp_path / "short"),
        },
        client_app=Recorder(fail={2}),
    )

    # Assert
    train = ok["rounds"][1]["train"]
    assert train["aggregated"] and train["answered"] == ["0", "1"]
    assert len(train["failed"]) == 1 and "base station 2 is down" in train["failed"][0]["reason"]
    assert len(ok["rounds"][1]["evaluate"]["failed"]) == 1
    assert not short["rounds"][1]["train"]["aggregated"]
    assert "min-train-clients=3" in short["rounds"][1]["train"]["skipped"]
    before = load_file(str(tmp_path / "short" / "checkpoints" / "round_000.safetensors"))
    after = load_file(str(tmp_path / "short" / "checkpoints" / "round_001.safetensors"))
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_int8_update_compression_cuts_uplink_and_still_aggregates(tmp_path):
    history = run_simulation(
        {
            **BASE,
            "num-server-rounds": 1,
            "update-compression.method": "int8",
            "out-dir": str(tmp_path),
        }
    )
    rnd = history["rounds"][1]
    assert rnd["train"]["aggregated"] and not rnd["train"]["rejected"]
    assert rnd["bytes"]["up-ratio"] < 0.015
    assert rnd["bytes"]["up-per-client"] < rnd["bytes"]["down-per-client"] / 3


def _split_rule(cfg) -> FlowerRule:
    """FedAvg that keeps B on the clients and freezes A: only the head travels back."""
    return FlowerRule(FedAvg(**common_kwargs(cfg)), keep_local=r"\.lora_B\.", freeze=r"\.lora_A\.")


def test_keep_local_and_freeze_hooks_and_personalized_evaluation(tmp_path):
    # Prepare
    cfg = resolve_config({**BASE, "num-server-rounds": 1, "out-dir": str(tmp_path)})
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, parse_run_config(context.run_config), _split_rule(cfg))

    recorder = Recorder()

    # Execute
    history = run_simulation(cfg, client_app=recorder, server_app=app)

    # Assert
    for entry in recorder.records("up"):
        assert all(k.startswith("base_model.model.head.") for k in entry["content"]["arrays"])
    init = load_file(str(tmp_path / "checkpoints" / "round_000.safetensors"))
    final = load_file(str(tmp_path / "global_adapter.safetensors"))
    lora = [k for k in init if ".lora_" in k]
    assert lora and all(np.array_equal(init[k], final[k]) for k in lora)
    assert any(not np.array_equal(init[k], final[k]) for k in init if ".head." in k)
    evaluation = history["rounds"][1]["evaluate"]
    assert "accuracy" in evaluation["personalized"]["mean"]


def test_run_of_another_config_in_the_out_dir_fails_and_overwrites_nothing(tmp_path):
    # Prepare
    run_simulation({**BASE, "num-server-rounds": 1, "out-dir": str(tmp_path)})
    before = _tree_digest(tmp_path)

    # Execute / Assert
    with pytest.raises(ValueError, match=r"different config \(differs in \['lora\.r'\]\)"):
        run_simulation({**BASE, "num-server-rounds": 1, "lora.r": 8, "out-dir": str(tmp_path)})
    assert _tree_digest(tmp_path) == before


def test_partition_id_out_of_range_and_node_config_errors():
    cfg = resolve_config(BASE)
    with pytest.raises(ValueError, match=r"partition-id 3 is out of range.*3 clients \(0\.\.2\)"):
        node_identity(cfg, {"partition-id": 3, "num-partitions": 3})
    with pytest.raises(ValueError, match="no partition-id"):
        node_identity(cfg, {})
    with pytest.raises(ValueError, match="num-partitions=2"):
        node_identity(cfg, {"partition-id": 0, "num-partitions": 2})
    assert node_identity(cfg, {"partition-id": 1, "num-partitions": 3, "lora-r": 8}).rank == 8


def test_more_required_clients_than_nodes_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="min-train-clients=5 but the run has 3 clients"):
        run_simulation({**BASE, "min-train-clients": 5, "out-dir": str(tmp_path)})
    assert not any(tmp_path.iterdir())


def test_client_that_times_out_is_dropped_and_the_round_goes_on(tmp_path, monkeypatch):
    # Prepare: a fake clock that jumps 1000 s whenever base station 2 works
    import rantune.simulations.engine.grid as grid_module

    real = grid_module.time.monotonic
    offset = {"s": 0.0}

    class Clock:
        @staticmethod
        def monotonic():
            return real() + offset["s"]

        perf_counter = staticmethod(grid_module.time.perf_counter)

    class Slow(Recorder):
        def __call__(self, message, context):
            if context.node_config["partition-id"] == 2:
                offset["s"] += 1000.0
            return super().__call__(message, context)

    monkeypatch.setattr(grid_module, "time", Clock)
    overrides = {**BASE, "num-server-rounds": 1, "round-timeout": 600.0, "out-dir": str(tmp_path)}

    # Execute
    history = run_simulation(overrides, client_app=Slow())

    # Assert
    train = history["rounds"][1]["train"]
    assert train["aggregated"] and train["answered"] == ["0", "1"]
    assert [f["reason"] for f in train["failed"]] == ["no reply within round-timeout"]
