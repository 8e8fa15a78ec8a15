"""Differential privacy in federated runs (in-process engine, smoke preset, random encoder).

Covers: the clipping bound on the update a base station actually sends
(client-side clipping, through the shipped ClientApp's mods), the bound on the
server's clipped mean (server-side, no noise), epsilon per round in history.json
(increasing, equal to an independent accountant, surviving a resume), the
effective noise when a client drops out, and refused combinations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Context, Message
from safetensors.numpy import load_file

from rantune.client.app import app as client_app
from rantune.federated.dp_accounting import RdpAccountant
from rantune.federated.messages import record_to_state
from rantune.simulations.engine import resolve_config, run_simulation

BASE = {
    "data.preset": "smoke",
    "task": "los",
    "model.pretrained": "none",
    "num-server-rounds": 1,
    "lr": 0.05,
}


class Recorder:
    """The real ClientApp (mods included); keeps each train message and reply."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.fail = fail or set()
        self.train: list[tuple[int, dict, dict, dict]] = []

    def __call__(self, message: Message, context: Context) -> Message:
        pid = context.node_config["partition-id"]
        if pid in self.fail:
            raise RuntimeError(f"base station {pid} is down")
        sent = record_to_state(message.content["arrays"])
        config = dict(message.content["config"])
        reply = client_app(message, context)
        if message.metadata.message_type == "train":
            received = record_to_state(reply.content["arrays"])
            self.train.append((pid, config, sent, received))
        return reply


def _norm(a: dict, b: dict) -> float:
    return math.sqrt(sum(float(np.sum((a[k] - b[k]) ** 2)) for k in a))


def _epsilons(history: dict) -> list[float]:
    return [r["train"]["metrics"]["dp-epsilon"] for r in history["rounds"][1:]]


def test_client_side_clipping_bounds_the_update_each_base_station_sends(tmp_path):
    # Prepare: a norm far below what one local epoch at lr 0.05 moves the adapters
    clip = 1e-3
    recorder = Recorder()
    cfg = {**BASE, "dp.mode": "client-fixed", "dp.clipping-norm": clip, "out-dir": str(tmp_path)}

    # Execute
    history = run_simulation(cfg, client_app=recorder)

    # Assert: the server put the norm in the config; every reply moved exactly up to it
    assert len(recorder.train) == 3
    for _pid, config, sent, received in recorder.train:
        assert config["clipping_norm"] == pytest.approx(clip)
        assert set(received) == set(sent)
        norm = _norm(received, sent)
        assert norm <= clip * (1 + 1e-4)
        assert norm >= 0.99 * clip  # clipping was active (the update was not tiny)
    metrics = history["rounds"][1]["train"]["metrics"]
    assert metrics["dp-clipping-norm"] == pytest.approx(clip)
    assert metrics["dp-noise-stddev"] == pytest.approx(1.0 * clip / 3)


def test_client_adaptive_clipping_reports_norm_bits(tmp_path):
    recorder = Recorder()
    cfg = {
        **BASE,
        "dp.mode": "client-adaptive",
        "dp.clipping-norm": 1e-3,
        "dp.clipped-count-stddev": 1.0,
        "out-dir": str(tmp_path),
    }

    history = run_simulation(cfg, client_app=recorder)

    for _pid, config, sent, received in recorder.train:
        assert _norm(received, sent) <= config["clipping_norm"] * (1 + 1e-4)
    metrics = history["rounds"][1]["train"]["metrics"]
    assert metrics["norm_bit"] == 1.0  # all three clipped
    assert metrics["dp-clipping-norm"] == pytest.approx(1e-3)
    # accounted multiplier: the noise actually added (Flower scales it with the norm
    # adapted for the next round) relative to C / m, composed with the count query
    z_updates = metrics["dp-noise-stddev"] / (1e-3 / 3)
    assert metrics["dp-noise-stddev"] != pytest.approx((1 - 0.25) ** -0.5 * 1e-3 / 3)
    assert metrics["dp-noise-multiplier"] == pytest.approx((z_updates**-2 + 1.0**-2) ** -0.5)


def test_server_side_clipping_bounds_the_aggregate_update(tmp_path):
    # Prepare: no noise, so the global change is exactly the mean of clipped updates
    clip = 2e-3
    cfg = {
        **BASE,
        "dp.mode": "server-fixed",
        "dp.noise-multiplier": 0.0,
        "dp.clipping-norm": clip,
        "out-dir": str(tmp_path),
    }
    recorder = Recorder()

    # Execute
    history = run_simulation(cfg, client_app=recorder)

    # Assert: clients send unclipped updates; the server's mean moved by <= C
    assert max(_norm(r, s) for _, _, s, r in recorder.train) > 10 * clip
    before = load_file(str(tmp_path / "checkpoints" / "round_000.safetensors"))
    after = load_file(str(tmp_path / "checkpoints" / "round_001.safetensors"))
    assert 0.5 * clip < _norm(after, before) <= clip * (1 + 1e-4)
    assert history["rounds"][1]["train"]["metrics"]["dp-epsilon"] is None  # inf: no noise


def test_epsilon_is_reported_per_round_increases_and_survives_resume(tmp_path):
    # Prepare
    cfg = {**BASE, "dp.mode": "server-fixed", "dp.noise-multiplier": 1.5, "lr": 0.003}

    # Execute: 3 rounds at once; and 2 rounds, then resumed to 3
    full = run_simulation({**cfg, "num-server-rounds": 3, "out-dir": str(tmp_path / "a")})
    run_simulation({**cfg, "num-server-rounds": 2, "out-dir": str(tmp_path / "b")})
    resumed = run_simulation({**cfg, "num-server-rounds": 3, "out-dir": str(tmp_path / "b")})

    # Assert: every client every round (q = 1), noise multiplier 1.5, delta 1e-5
    epsilons = _epsilons(full)
    assert all(b > a > 0 for a, b in zip(epsilons, epsilons[1:], strict=False))
    for r, epsilon in enumerate(epsilons, start=1):
        reference = RdpAccountant()
        reference.compose(1.5, 1.0, r)
        assert epsilon == pytest.approx(reference.epsilon(1e-5))
        metrics = full["rounds"][r]["train"]["metrics"]
        assert metrics["dp-delta"] == 1e-5 and metrics["dp-releases"] == r
        assert metrics["dp-sampling-rate"] == 1.0 and metrics["dp-clients"] == 3
    assert _epsilons(resumed) == pytest.approx(epsilons)


def test_a_missing_client_lowers_the_effective_noise_multiplier(tmp_path):
    # Prepare: base station 2 is down; 2 of the 3 sampled updates are averaged
    cfg = {
        **BASE,
        "dp.mode": "server-fixed",
        "dp.noise-multiplier": 1.2,
        "min-train-clients": 2,
        "min-evaluate-clients": 2,
        "out-dir": str(tmp_path),
    }

    # Execute
    history = run_simulation(cfg, client_app=Recorder(fail={2}))

    # Assert: noise std z C / n with n = 3 sampled, on a mean of m = 2 -> z m / n
    train = history["rounds"][1]["train"]
    assert [f["client"] for f in train["failed"]] == ["node-10002"]
    metrics = train["metrics"]
    assert metrics["dp-clients"] == 2
    assert metrics["dp-noise-multiplier"] == pytest.approx(1.2 * 2 / 3)
    reference = RdpAccountant()
    reference.compose(1.2 * 2 / 3, 1.0)
    assert metrics["dp-epsilon"] == pytest.approx(reference.epsilon(1e-5))


def test_reproducible_noise_repeats_and_fresh_noise_does_not(tmp_path):
    cfg = {**BASE, "dp.mode": "server-fixed", "dp.noise-multiplier": 1.0}
    runs = {}
    for name, seeded in (("a", True), ("b", True), ("c", False)):
        run_simulation({**cfg, "dp.reproducible-noise": seeded, "out-dir": str(tmp_path / name)})
        runs[name] = load_file(str(tmp_path / name / "global_adapter.safetensors"))

    assert all(np.array_equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(np.array_equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dp.mode": "server-fixed", "strategy.name": "fedmedian"}, "averages updates"),
        ({"dp.mode": "server-fixed", "strategy.name": "fedadam"}, "averages updates"),
        ({"dp.mode": "server-fixed", "strategy.name": "ffa-lora"}, "dp.mode"),
        ({"dp.mode": "client-fixed", "update-compression.method": "int8"}, "compression"),
        ({"dp.mode": "server-adaptive", "dp.noise-multiplier": 1.0}, "clipped-count-stddev"),
        ({"dp.mode": "gaussian"}, "choose one of none, server-fixed"),
        ({"dp.mode": "server-fixed", "dp.delta": 0.0}, "dp.delta"),
        ({"dp.mode": "server-fixed", "dp.noise-multiplier": -1.0}, "dp.noise-multiplier"),
    ],
)
def test_unsupported_combinations_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_simulation({**BASE, **overrides, "out-dir": str(tmp_path)})
    assert not (tmp_path / "history.json").exists()


def test_dp_off_leaves_the_strategy_untouched():
    from rantune.server.privacy import with_privacy
    from rantune.server.strategies import build_strategy

    cfg = resolve_config(BASE)
    strategy = build_strategy(cfg)

    assert with_privacy(cfg, strategy) is strategy
