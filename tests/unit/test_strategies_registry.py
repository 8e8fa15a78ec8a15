"""Strategy registry: every Flower strategy and LoRA-aware strategy builds from the run
config with its hyper-parameters, and bad or incompatible options fail before training."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedMedian,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    QFedAvg,
)

from rantune.server.strategies import (
    REGISTRY,
    RULE_MODULES,
    LoraRule,
    build_strategy,
    get_spec,
    strategy_names,
)
from rantune.server.strategies.flower_adapter import FlowerRule
from rantune.simulations.engine import resolve_config

BASE = {"data.preset": "smoke", "model.pretrained": "none"}  # smoke: 3 clients

FLOWER = {
    "fedadam": (
        FedAdam,
        {"strategy.eta": 0.05, "strategy.beta-1": 0.8},
        {"eta": 0.05, "beta_1": 0.8},
    ),
    "fedyogi": (FedYogi, {"strategy.tau": 0.01}, {"tau": 0.01}),
    "fedadagrad": (FedAdagrad, {"strategy.eta": 0.2}, {"eta": 0.2}),
    "fedavgm": (
        FedAvgM,
        {"strategy.server-momentum": 0.5, "strategy.server-learning-rate": 0.7},
        {"server_momentum": 0.5, "server_learning_rate": 0.7},
    ),
    "fedmedian": (FedMedian, {}, {}),
    "fedtrimmedavg": (FedTrimmedAvg, {"strategy.trim-beta": 0.3}, {"beta": 0.3}),
    "krum": (Krum, {"strategy.num-malicious-nodes": 0}, {"num_malicious_nodes": 0}),
    "multikrum": (
        MultiKrum,
        {"strategy.num-nodes-to-select": 2},
        {"num_nodes_to_select": 2, "num_malicious_nodes": 0},
    ),
    "bulyan": (Bulyan, {}, {"num_malicious_nodes": 0}),
    "qfedavg": (
        QFedAvg,
        {"strategy.q": 0.5, "strategy.qffl-learning-rate": 0.02},
        {"q": 0.5, "client_learning_rate": 0.02, "train_loss_key": "train-loss"},
    ),
}


@pytest.mark.parametrize("name", sorted(FLOWER))
def test_each_flower_strategy_builds_from_config_with_its_hyper_parameters(name):
    # Prepare
    cls, overrides, attributes = FLOWER[name]
    cfg = resolve_config({**BASE, "strategy.name": name, "fraction-train": 1.0, **overrides})

    # Execute
    rule = build_strategy(cfg)

    # Assert: Flower's own class runs behind the template's adapter
    assert isinstance(rule, FlowerRule)
    strategy = rule.strategy
    assert type(strategy) is cls
    for attribute, value in attributes.items():
        assert (
            getattr(strategy, attribute) == pytest.approx(value)
            if isinstance(value, float)
            else getattr(strategy, attribute) == value
        )
    assert strategy.min_train_nodes == cfg.sampling.min_train_clients


def test_registry_lists_at_least_the_issue_strategies_and_pyproject_declares_their_keys():
    # Prepare
    table = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    expected = set(FLOWER) | {
        "fedavg",
        "fedprox",
        "ffa-lora",
        "fedsa-lora",
        "flora",
        "hetlora",
        "fedex-lora",
        "fed-sb",
        "lora-fair",
    }

    # Execute
    names = set(strategy_names())

    # Assert
    assert expected <= names
    assert {f"strategy.{p}" for spec in REGISTRY.values() for p in spec.params} <= set(table)
    for key in ("lora.client-ranks", "attack.fraction", "attack.kind", "attack.factor"):
        assert key in table


@pytest.mark.parametrize(
    "name, cls_name",
    [
        ("ffa-lora", "FFALoRA"),
        ("fedsa-lora", "FedSALoRA"),
        ("flora", "FLoRA"),
        ("hetlora", "HetLoRA"),
        ("fedex-lora", "FedExLoRA"),
        ("fed-sb", "FedSB"),
        ("lora-fair", "LoraFAIR"),
    ],
)
def test_lora_aware_strategies_build_on_the_template_and_declare_what_stays_local(name, cls_name):
    cfg = resolve_config({**BASE, "strategy.name": name})
    rule = build_strategy(cfg)
    assert type(rule).__name__ == cls_name and isinstance(rule, LoraRule)
    assert get_spec(name).lora_aware
    if name == "ffa-lora":
        assert "lora_A" in rule.freeze and not rule.keep_local
    if name == "fedsa-lora":
        assert "lora_B" in rule.keep_local and rule.personalized
    if name in ("flora", "fedex-lora"):
        assert "dense_delta" in rule.freeze
    if name == "fed-sb":
        assert "lora_[AB]" in rule.freeze
    assert rule.needs_ranks == (name in ("flora", "hetlora"))


def test_fedsa_without_shared_head_keeps_the_head_local():
    cfg = resolve_config(
        {**BASE, "strategy.name": "fedsa-lora", "strategy.fedsa-share-head": False}
    )
    assert "head" in build_strategy(cfg).keep_local


def test_registration_comes_from_the_explicit_module_table():
    # every registered rule is declared in the SPECS of a module named in RULE_MODULES
    declared = [
        spec.name
        for module in RULE_MODULES
        for spec in importlib.import_module(f"rantune.server.strategies.{module}").SPECS
    ]
    assert sorted(declared) == strategy_names()
    assert len(declared) == len(set(declared))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"strategy.name": "fedfoo"}, r"unknown: choose one of .*fedavg.*flora.*hetlora"),
        ({"strategy.name": "krum", "strategy.num-malicious-nodes": 1}, r"needs at least 5 clients"),
        ({"strategy.name": "bulyan", "strategy.num-malicious-nodes": 1}, r"n >= 4f \+ 3"),
        ({"strategy.name": "multikrum", "strategy.num-nodes-to-select": 9}, r"at most n - f"),
        ({"strategy.name": "fedtrimmedavg", "strategy.trim-beta": 0.6}, r"trim-beta"),
        ({"strategy.name": "fedadam", "strategy.eta": 0.0}, r"strategy.eta"),
        (
            {"strategy.name": "fedavg", "lora.client-ranks": "2,4,8"},
            r"rank-aware strategy \(flora, hetlora\)",
        ),
        ({"strategy.name": "hetlora", "lora.client-ranks": "2,8"}, r"set lora.r to the largest"),
        ({"strategy.name": "flora", "lora.client-ranks": "2,x"}, r"not an integer"),
        ({"attack.fraction": 0.2, "attack.kind": "bitflip"}, r"choose one of sign-flip"),
        ({"attack.fraction": 1.5}, r"attack.fraction"),
        ({"strategy.name": "fedsa-lora", "strategy.fedsa-share-head": "yes"}, r"true or false"),
        ({"strategy.name": "lora-fair", "strategy.lora-fair-lambda": -1.0}, r"lora-fair-lambda"),
        (
            {"strategy.name": "flora", "update-compression.error-feedback": True},
            r"error-feedback=true cannot be used with strategy 'flora'.*freshly initialised",
        ),
        (
            {"strategy.name": "hetlora", "strategy.hetlora-weight-scope": "layer"},
            r"choose one of module, global",
        ),
    ],
)
def test_bad_or_incompatible_options_fail_before_training(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_strategy(resolve_config({**BASE, **overrides}))


@pytest.mark.parametrize("name", ["ffa-lora", "fedsa-lora", "fed-sb", "lora-fair", "fedavg"])
def test_error_feedback_is_allowed_where_adapters_persist_between_rounds(name):
    # Fed-SB keeps R and LoRA-FAIR restarts from the corrected average: residuals stay valid
    cfg = resolve_config(
        {
            **BASE,
            "strategy.name": name,
            "update-compression.method": "topk",
            "update-compression.error-feedback": True,
        }
    )
    assert not get_spec(name).reinitializes_adapters
    build_strategy(cfg)
    assert [s.name for s in REGISTRY.values() if s.reinitializes_adapters] == ["flora"]


def test_heterogeneous_ranks_pass_for_rank_aware_strategies():
    for name in ("flora", "hetlora"):
        cfg = resolve_config(
            {**BASE, "strategy.name": name, "lora.r": 8, "lora.client-ranks": "2,4,8"}
        )
        assert get_spec(name).heterogeneous_ranks
        build_strategy(cfg)
