"""The strategy template and the one Flower adapter.

Pins what :mod:`rantune.server.strategies.flower_adapter` relies on inside Flower 1.41
(every ``configure_*`` builds one shared content and asks the grid for node ids only;
the attributes holding a strategy's state), that the loop's seeded sampler draws the
clients Flower drew after the old reseeding of Python's ``random``, and the template's
defaults on a rule written from scratch.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg

from rantune.federated.messages import state_to_record
from rantune.seeding import derive_seed
from rantune.server.sampling import SeededSampler, sample_size
from rantune.server.strategies import Combined, Node, Rule, build_strategy, strategy_names
from rantune.server.strategies.flower_adapter import (
    FlowerRule,
    NodeList,
    capture_state,
    restore_state,
    round_payload,
)
from rantune.server.strategies.template import EVALUATE, TRAIN, Reply, Round
from rantune.simulations.engine import resolve_config
from rantune.simulations.engine.identity import server_identity

BASE = {"data.preset": "smoke", "model.pretrained": "none"}
STATE = {"w": np.array([1.0, 2.0], np.float32), "b": np.zeros((2, 2), np.float32)}


@pytest.fixture(autouse=True)
def _server_process():
    """Flower's strategies build Messages, which needs the identity of a server process."""
    with server_identity(run_id=1):
        yield


def _flower(name: str, **overrides) -> FlowerRule:
    return build_strategy(resolve_config({**BASE, "strategy.name": name, **overrides}))


FLOWER = [n for n in strategy_names() if isinstance(_flower(n), FlowerRule)]


@pytest.mark.parametrize("name", FLOWER)
@pytest.mark.parametrize("phase", [TRAIN, EVALUATE])
def test_every_flower_strategy_builds_one_shared_content_from_node_ids_alone(name, phase):
    # Prepare: NodeList refuses everything but get_node_ids
    rule = _flower(name)

    # Execute
    payload = round_payload(rule.strategy, 3, phase, [11, 12, 13], STATE)

    # Assert: the round's arrays unchanged, Flower's own config keys
    assert payload is not None
    assert set(payload.arrays) == set(STATE)
    assert all(np.array_equal(payload.arrays[k], STATE[k]) for k in STATE)
    assert payload.config["server-round"] == 3
    if name == "fedprox" and phase == TRAIN:
        assert payload.config["proximal-mu"] == pytest.approx(0.01)


def test_node_list_is_only_a_list_of_nodes():
    grid = NodeList([3, 1])
    assert list(grid.get_node_ids()) == [3, 1]
    with pytest.raises(RuntimeError, match="only get_node_ids"):
        grid.send_and_receive([])
    with pytest.raises(RuntimeError, match="only get_node_ids"):
        grid.run  # noqa: B018


def test_a_strategy_that_configures_nobody_gives_no_payload():
    strategy = FedAvg(fraction_train=0.0, fraction_evaluate=0.0)
    assert round_payload(strategy, 1, TRAIN, [1, 2], STATE) is None
    assert round_payload(strategy, 1, EVALUATE, [1, 2], STATE) is None


def test_flower_rule_plans_the_shared_content_for_the_nodes_the_sampler_draws():
    # Prepare: 2 of 4 nodes
    rule = _flower("fedprox")
    nodes = [Node(n) for n in (1, 2, 3, 4)]
    sampler = SeededSampler(
        seed=5, purpose="sample-train", fraction=0.5, minimum=1, min_available=1
    )

    # Execute
    payloads = rule.plan(Round(2, TRAIN, nodes, STATE), sampler)

    # Assert
    expected = [n.node_id for n in sampler.draw(2, nodes)]
    assert list(payloads) == expected and len(expected) == 2
    assert len({id(p) for p in payloads.values()}) == 1
    assert payloads[expected[0]].config["proximal-mu"] == pytest.approx(0.01)


@pytest.mark.parametrize("num_nodes, fraction, minimum", [(3, 1.0, 2), (8, 0.5, 2), (10, 0.3, 4)])
def test_seeded_sampler_draws_what_flower_drew_after_reseeding_global_random(
    num_nodes, fraction, minimum
):
    # Prepare: the old loop reseeded `random` and let Flower's sample_nodes draw
    ids = list(range(100, 100 + num_nodes))
    sampler = SeededSampler(7, "sample-train", fraction, minimum, 2)
    for server_round in (1, 2, 3):
        random.seed(derive_seed(7, "sample-train", server_round))
        flower = random.sample(ids, sample_size(num_nodes, fraction, minimum))

        # Execute
        drawn = sampler.draw(server_round, ids)

        # Assert
        assert drawn == flower
    assert sampler.needed(num_nodes) == max(2, sample_size(num_nodes, fraction, minimum))


def test_flower_state_attributes_are_captured_and_restored():
    # Prepare: FedAdam's moments and current arrays after a step
    strategy = FedAdam(eta=0.1)
    strategy.current_arrays = {"w": np.ones(3, np.float32)}
    strategy.m_t = {"w": np.full(3, 0.5, np.float32)}
    strategy.v_t = {"w": np.full(3, 0.25, np.float32)}
    strategy.eta = 0.2

    # Execute
    arrays, meta = capture_state(strategy)
    fresh = FedAdam(eta=0.1)
    restore_state(fresh, arrays, meta)

    # Assert
    assert fresh.eta == 0.2
    for name in ("current_arrays", "m_t", "v_t"):
        assert np.array_equal(getattr(fresh, name)["w"], getattr(strategy, name)["w"])


def _reply(node_id: int, value: float, examples: int) -> Reply:
    state = {"w": np.array([value], np.float32)}
    content = RecordDict(
        {
            "arrays": state_to_record(state),
            "metrics": MetricRecord({"num-examples": examples, "train-loss": value}),
        }
    )
    message = Message(content=content, dst_node_id=node_id, message_type=TRAIN)
    return Reply(node_id, node_id, state, {"num-examples": examples}, message)


def test_flower_rule_combines_with_flowers_weighted_mean():
    # Prepare: w = 1 (1 example) and w = 5 (3 examples): mean 4
    rule = FlowerRule(FedAvg())

    # Execute
    combined = rule.combine(1, [_reply(1, 1.0, 1), _reply(2, 5.0, 3)], {"w": np.zeros(1)})

    # Assert
    assert combined.state["w"].tolist() == [4.0]
    assert combined.metrics["train-loss"] == pytest.approx(4.0)


class _Median(Rule):
    """A rule from scratch: the coordinate-wise median of the replies."""

    def combine(self, server_round, replies, state):
        return Combined({"w": np.median([r.state["w"] for r in replies], axis=0)})


def test_a_rule_from_scratch_gets_the_template_defaults():
    # Prepare
    rule = _Median()
    nodes = [Node(1), Node(2)]
    sampler = SeededSampler(0, "sample-train", 1.0, 1, 1)

    # Execute
    payloads = rule.plan(Round(1, TRAIN, nodes, STATE), sampler)
    combined = rule.combine(1, [_reply(1, 1.0, 1), _reply(2, 9.0, 1), _reply(3, 2.0, 5)], STATE)

    # Assert: the whole state to every node, nothing local, no state, no dense deltas
    assert set(payloads) == {1, 2}
    assert all(set(p.arrays) == set(STATE) and p.config == {} for p in payloads.values())
    assert not rule.personalized and not rule.needs_ranks
    assert rule.state_dict() == ({}, {}) and rule.dense_deltas() is None
    assert rule.round_skipped(1, 2) == {}
    assert combined.state["w"].tolist() == [2.0]


def test_an_evaluation_phase_with_zero_fraction_plans_nobody():
    rule = FlowerRule(FedAvg(fraction_evaluate=0.0))
    sampler = SeededSampler(0, "sample-evaluate", 0.0, 2, 1)
    assert rule.plan(Round(1, EVALUATE, [Node(1), Node(2)], STATE), sampler) == {}
    assert sampler.needed(2) == 0
