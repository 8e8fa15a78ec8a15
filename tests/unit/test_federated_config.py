"""Run config: pyproject defaults, strict parsing, strategy registry, config.json form."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from rantune.federated.run_config import (
    DEFAULTS,
    identity_hash,
    parse_override_pairs,
    parse_run_config,
    resolve_run_config,
)
from rantune.server.strategies import build_strategy, strategy_names, strategy_param_defaults
from rantune.simulations.engine import all_defaults, resolve_config

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_config_table_equals_the_python_defaults():
    # Prepare
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    table = pyproject["tool"]["flwr"]["app"]["config"]

    # Execute
    expected = {**DEFAULTS, **strategy_param_defaults()}

    # Assert
    assert table == expected
    assert pyproject["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "rantune.server.app:app",
        "clientapp": "rantune.client.app:app",
    }
    assert "federations" not in pyproject["tool"]["flwr"]


def test_parse_defaults_gives_typed_sections():
    # Execute
    cfg = parse_run_config(all_defaults())

    # Assert
    assert cfg.task == "los"
    assert cfg.data.preset == "smoke"
    assert cfg.lora.r == 4 and cfg.lora.targets == ("q_proj", "v_proj")
    assert cfg.strategy.name == "fedavg"
    assert cfg.compression.method == "none"
    assert cfg.partition.num_clients is None


def test_unknown_key_fails_and_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown run config key\(s\) \['lora\.rank'\].*lora\.r"):
        resolve_config({"lora.rank": 8})


def test_missing_key_fails_loudly():
    raw = dict(all_defaults())
    del raw["lr"]
    with pytest.raises(ValueError, match=r"missing key\(s\) \['lr'\]"):
        parse_run_config(raw)


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        ("task", "segmentation", "choose one of"),
        ("lora.r", 0, ">= 1"),
        ("lora.targets", "q_proj,attn", "invalid"),
        ("lr", "fast", "expected a number"),
        ("fraction-train", 1.5, r"\[0, 1\]"),
        ("partition.scheme", "dirichlet-x", "dirichlet-<alpha>"),
        ("update-compression.method", "zip", "choose one of"),
        ("update-compression.error-feedback", 1, "true or false"),
    ],
)
def test_bad_values_fail_with_a_hint(key, value, hint):
    with pytest.raises(ValueError, match=hint):
        resolve_config({key: value})


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(
        ValueError, match=r"strategy 'fedfoo' is unknown: choose one of .*fedavg, .*fedprox"
    ):
        resolve_config({"strategy.name": "fedfoo"})


def test_strategy_registry_builds_fedavg_and_fedprox_with_config():
    # Prepare
    cfg = resolve_config(
        {"strategy.name": "fedprox", "strategy.proximal-mu": 0.5, "fraction-train": 0.5}
    )

    # Execute
    strategy = build_strategy(cfg)

    # Assert
    assert {"fedavg", "fedprox"} <= set(strategy_names())
    assert type(strategy).__name__ == "FedProx"
    assert strategy.proximal_mu == 0.5
    assert strategy.fraction_train == 0.5


def test_undeclared_strategy_param_fails_before_training():
    raw = {**all_defaults(), "strategy.server-lr": 0.1}
    cfg = parse_run_config(raw)  # well-formed strategy.* keys pass the generic parser
    with pytest.raises(ValueError, match=r"unknown strategy hyper-parameter"):
        build_strategy(cfg)


def test_config_json_form_has_required_nested_keys():
    # Execute
    nested = resolve_config({"task": "beam", "lora.r": 8}).to_dict()

    # Assert
    assert nested["task"] == "beam"
    assert nested["data"]["preset"] == "smoke"
    assert nested["model"]["pretrained"] == "tiny"
    lora = {k: nested["lora"][k] for k in ("r", "alpha", "dropout", "targets")}
    assert lora == {"r": 8, "alpha": 8.0, "dropout": 0.0, "targets": ["q_proj", "v_proj"]}
    assert nested["seed"] == 0


def test_identity_ignores_rounds_and_out_dir_only():
    base = all_defaults()
    assert identity_hash(base) == identity_hash({**base, "num-server-rounds": 9, "out-dir": "x"})
    assert identity_hash(base) != identity_hash({**base, "lora.r": 8})


def test_override_pairs_parse_toml_values_and_bare_words():
    assert parse_override_pairs(
        ["lora.r=8 lr=1e-3", 'task="beam"', "partition.scheme=iid", "x=true"]
    ) == {
        "lora.r": 8,
        "lr": 1e-3,
        "task": "beam",
        "partition.scheme": "iid",
        "x": True,
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_override_pairs(["lora.r"])


def test_resolve_accepts_partial_overrides_and_rejects_unknown():
    assert resolve_run_config({"seed": 3}).seed == 3
    with pytest.raises(ValueError, match="valid keys"):
        resolve_run_config({"sede": 3})
