"""Private client sampling: with DP on, each training round's clients are Poisson-sampled
from the OS CSPRNG (not reproducible from the run config), the accountant composes that
sampling at its rate, history.json says so, and a resumed run reports the same epsilon
as an uninterrupted one. Without DP, sampling stays seeded and reproducible."""

from __future__ import annotations

import json
import secrets

import numpy as np
import pytest

from rantune.federated.dp_accounting import POISSON, RdpAccountant
from rantune.server.privacy import PrivateRule
from rantune.server.sampling import PoissonSampler, SeededSampler, train_sampler
from rantune.server.strategies import Node, build_strategy
from rantune.server.strategies.template import TRAIN, Round
from rantune.simulations.engine import resolve_config, run_simulation

BASE = {"data.preset": "smoke", "task": "los", "model.pretrained": "none"}
DP = {"dp.mode": "server-fixed", "dp.noise-multiplier": 1.3}
NODES = list(range(1, 65))


def test_without_dp_training_clients_are_seeded_and_reproducible():
    cfg = resolve_config({**BASE, "fraction-train": 0.5})
    first, again = train_sampler(cfg, 64), train_sampler(cfg, 64)
    other = train_sampler(resolve_config({**BASE, "fraction-train": 0.5, "seed": 1}), 64)
    assert isinstance(first, SeededSampler)
    assert first.draw(3, NODES) == again.draw(3, NODES)
    assert len(first.draw(3, NODES)) == 32
    assert first.draw(3, NODES) != other.draw(3, NODES)


def test_with_dp_the_sampled_clients_cannot_be_reproduced_from_the_run_config():
    # Prepare: two servers built from the very same run config
    cfg = resolve_config({**BASE, **DP, "fraction-train": 0.5})
    first, second = train_sampler(cfg, 64), train_sampler(cfg, 64)

    # Execute
    draws = [first.draw(1, NODES), second.draw(1, NODES)]

    # Assert: OS entropy, not the seed (64 independent coins: equal with prob 2^-64)
    assert isinstance(first, PoissonSampler) and isinstance(first.rng, secrets.SystemRandom)
    assert first.kind == POISSON and first.rate == 0.5
    assert draws[0] != draws[1]


def test_poisson_sampling_includes_each_client_at_its_rate_with_a_varying_sample_size():
    # Prepare
    sampler = PoissonSampler(0.3)

    # Execute: 200 rounds over 64 nodes
    sizes = [len(sampler.draw(r, NODES)) for r in range(200)]

    # Assert: Binomial(12800, 0.3): mean 3840, sd 51.8 (6 sd bound); sizes are not fixed
    assert abs(sum(sizes) - 3840) < 6 * 51.8
    assert len(set(sizes)) > 5
    assert sampler.describe() == {"kind": "poisson", "source": "os-csprng", "rate": 0.3}


def test_the_private_rule_refuses_rounds_not_sampled_as_the_accountant_assumes():
    cfg = resolve_config({**BASE, **DP})
    rule = PrivateRule(build_strategy(cfg), cfg.dp, num_sampled=3)
    seeded = SeededSampler(0, "sample-train", 1.0, 1, 1)
    with pytest.raises(RuntimeError, match="poisson"):
        rule.plan(Round(1, TRAIN, [Node(1), Node(2)], {"w": np.zeros(1, np.float32)}), seeded)
    with pytest.raises(ValueError, match="fixed-size"):
        RdpAccountant.from_state({"sampling": "fixed-size", "orders": [2.0], "releases": []})


def _epsilons(history: dict) -> list[float]:
    return [r["train"]["metrics"]["dp-epsilon"] for r in history["rounds"][1:]]


# q = 2/3: Flower's sample size max(int(3 * 0.67), 1) = 2 of the smoke preset's 3 clients
SUBSAMPLED = {**BASE, **DP, "fraction-train": 0.67, "min-train-clients": 1, "lr": 0.003}


def test_a_dp_run_records_poisson_sampling_and_is_accounted_at_its_rate(tmp_path):
    # Execute
    history = run_simulation({**SUBSAMPLED, "num-server-rounds": 3, "out-dir": str(tmp_path)})

    # Assert: history.json and the checkpointed accountant name the sampling performed
    q = 2 / 3
    assert history["sampling"]["train"] == {"kind": "poisson", "source": "os-csprng", "rate": q}
    assert history["sampling"]["evaluate"]["kind"] == "fixed-size"
    commit = json.loads((tmp_path / "checkpoints" / "round_003.json").read_text())
    assert commit["strategy-meta"]["accountant"]["sampling"] == POISSON
    for r, record in enumerate(history["rounds"][1:], start=1):
        metrics = record["train"]["metrics"]
        assert metrics["dp-sampling-rate"] == pytest.approx(q)
        assert metrics["dp-releases"] == r
        reference = RdpAccountant()
        reference.compose(1.3, q, r)  # every sampled client answered: z_eff = z
        assert metrics["dp-epsilon"] == pytest.approx(reference.epsilon(1e-5))
        if record["train"]["aggregated"]:
            assert metrics["dp-clients"] == len(record["train"]["sampled"])
    full = RdpAccountant()
    full.compose(1.3, 1.0, 3)
    assert _epsilons(history)[-1] < full.epsilon(1e-5)  # amplification by subsampling


def test_resume_after_round_k_gives_the_epsilon_of_an_uninterrupted_run(tmp_path):
    # Execute: 3 rounds at once; 2 rounds, then resumed to 3 (fresh CSPRNG draws)
    straight = run_simulation(
        {**SUBSAMPLED, "num-server-rounds": 3, "out-dir": str(tmp_path / "a")}
    )
    run_simulation({**SUBSAMPLED, "num-server-rounds": 2, "out-dir": str(tmp_path / "b")})
    resumed = run_simulation({**SUBSAMPLED, "num-server-rounds": 3, "out-dir": str(tmp_path / "b")})

    # Assert
    assert _epsilons(resumed) == pytest.approx(_epsilons(straight))
    assert [r["train"]["metrics"]["dp-releases"] for r in resumed["rounds"][1:]] == [1, 2, 3]
