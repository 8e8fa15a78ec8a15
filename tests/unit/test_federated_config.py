"""Run config: pyproject defaults, strict parsing, strategy registry, config.json form."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from rantune.federated.run_config import (
    DEFAULTS,
    RunConfig,
    identity_hash,
    parse_override_pairs,
    parse_run_config,
    resolve_run_config,
)
from rantune.schema import keys_of
from rantune.server.strategies import REGISTRY, build_strategy, strategy_names
from rantune.simulations.engine import resolve_config

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_config_table_equals_the_python_defaults():
    # Prepare
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    table = pyproject["tool"]["flwr"]["app"]["config"]

    # Assert
    assert table == DEFAULTS
    assert {k: type(v) for k, v in table.items()} == {k: type(v) for k, v in DEFAULTS.items()}
    assert pyproject["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "rantune.server.app:app",
        "clientapp": "rantune.client.app:app",
    }
    assert "federations" not in pyproject["tool"]["flwr"]


STRING_VALUES = {
    "data.preset": "default",
    "data.cache": "/tmp/rantune-cache",
    "model.pretrained": "none",
    "partition.scheme": "iid",
    "strategy.name": "fedprox",
    "out-dir": "runs/other",
    "lora.client-ranks": "4,8",
    "lora.targets": "k_proj",
    "model.encoder": "my_pkg.encoders:build",
    "model.checkpoint": "mixer.safetensors",
}


def _changed(key, value):
    """A valid value other than the default, of the same flat type."""
    k = next(k for k in keys_of(RunConfig) if k.key == key)
    if key in STRING_VALUES:
        return STRING_VALUES[key]
    if k.setting.choices:
        return next(c for c in k.setting.choices if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1 if k.setting.high is None or value + 1 <= k.setting.high else value - 1
    high = k.setting.high
    new = value / 2 if value > 0 else 0.5
    return new if high is None or new <= high else high / 2


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_every_key_reaches_a_typed_field(key):
    # Prepare
    value = _changed(key, DEFAULTS[key])
    overrides = {key: value}
    if key == "dp.mode" and value.startswith("client"):
        overrides["dp.mode"] = "server-fixed"
    if key == "model.checkpoint":  # a custom encoder's weights: needs model.encoder
        overrides["model.encoder"] = STRING_VALUES["model.encoder"]

    # Execute
    cfg = resolve_run_config(overrides)
    k = next(k for k in keys_of(RunConfig) if k.key == key)
    field_value = cfg
    for name in k.path:
        field_value = getattr(field_value, name)

    # Assert: the typed field holds the new value, and the flat form round-trips
    assert cfg.flat_dict()[key] == overrides[key]
    assert field_value != k.default
    assert resolve_run_config(cfg.flat_dict()) == cfg


def test_secagg_enabled_reaches_its_section_and_checks_its_constraints():
    assert resolve_run_config({"secagg.enabled": True}).secagg.enabled is True
    with pytest.raises(ValueError, match="SecAgg"):
        resolve_run_config({"secagg.enabled": True, "dp.mode": "server-fixed"})


def test_defaults_come_from_the_schema_only():
    # Assert: RunConfig() is the default tree; lora defaults equal the run defaults
    from rantune.lora import LoraSettings

    assert RunConfig().flat_dict() == DEFAULTS
    assert LoraSettings().r == DEFAULTS["lora.r"] and LoraSettings().alpha == DEFAULTS["lora.alpha"]
    declared = {f"strategy.{p}" for spec in REGISTRY.values() for p in spec.params}
    assert declared <= set(DEFAULTS)


def test_parse_defaults_gives_typed_sections():
    # Execute
    cfg = parse_run_config(DEFAULTS)

    # Assert
    assert cfg.task == "los"
    assert cfg.data.preset == "smoke"
    assert cfg.lora.r == 4 and cfg.lora.targets == ("q_proj", "v_proj")
    assert cfg.strategy.name == "fedavg"
    assert cfg.compression.method == "none"
    assert cfg.partition.num_clients == 0
    assert cfg.dp.mode == "none" and cfg.attack.fraction == 0.0


def test_unknown_key_fails_and_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown run config key\(s\) \['lora\.rank'\].*lora\.r"):
        resolve_config({"lora.rank": 8})


def test_missing_key_fails_loudly():
    raw = dict(DEFAULTS)
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
        ("fraction-train", 1.5, r"0 <= value <= 1"),
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
    strategy = build_strategy(cfg).strategy  # the Flower class behind the FlowerRule

    # Assert
    assert {"fedavg", "fedprox"} <= set(strategy_names())
    assert type(strategy).__name__ == "FedProx"
    assert strategy.proximal_mu == 0.5
    assert strategy.fraction_train == 0.5


def test_undeclared_strategy_param_fails_at_parse_time():
    raw = {**DEFAULTS, "strategy.server-lr": 0.1}
    with pytest.raises(ValueError, match=r"unknown run config key\(s\) \['strategy.server-lr'\]"):
        parse_run_config(raw)


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
    base = dict(DEFAULTS)
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
