"""The federated run configuration: Flower's flat ``run_config`` -> frozen dataclasses.

Every key lives in ``[tool.flwr.app.config]`` of ``pyproject.toml`` (dotted kebab
keys, e.g. ``lora.r``). :data:`DEFAULTS` mirrors that table (a unit test keeps
them equal) so the in-process engine and the Flower apps read the same defaults.
Strategy hyper-parameters (``strategy.<name>``) are declared by the strategy
registry in ``server/strategies`` and only checked for shape here.

>>> cfg = parse_run_config({**DEFAULTS, "lora.r": 8})
>>> cfg.lora.r
8
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from rantune.errors import InputError
from rantune.lora import LoraSettings
from rantune.partition import PartitionConfig
from rantune.tasks import TASKS
from rantune.tasks.classification import CLASSIFICATION_HEADS

Scalar = bool | int | float | str

# Every run default, as in [tool.flwr.app.config] (strategy.* params excluded: the
# strategy registry owns them).
DEFAULTS: dict[str, Scalar] = {
    "task": "los",
    "seed": 0,
    "num-server-rounds": 3,
    "out-dir": "runs/federated",
    "data.preset": "smoke",
    "data.seed": 0,
    "data.cache": "",
    "partition.scheme": "natural",
    "partition.label": "beam",
    "partition.num-clients": 0,
    "partition.seed": 0,
    "model.pretrained": "tiny",
    "model.size": "tiny",
    "model.head": "pooled-linear",
    "lora.r": 4,
    "lora.alpha": 8.0,
    "lora.dropout": 0.0,
    "lora.targets": "q_proj,v_proj",
    "strategy.name": "fedavg",
    # Privacy (rantune.federated.privacy): dp.mode none|server-fixed|client-fixed|
    # server-adaptive|client-adaptive; SecAgg+ training rounds with secagg.enabled.
    "dp.mode": "none",
    "dp.noise-multiplier": 1.0,
    "dp.clipping-norm": 1.0,
    "dp.delta": 1e-5,
    "dp.target-quantile": 0.5,
    "dp.clip-norm-lr": 0.2,
    "dp.clipped-count-stddev": 0.0,
    "dp.reproducible-noise": False,
    "secagg.enabled": False,
    "secagg.num-shares": 1.0,
    "secagg.reconstruction-threshold": 0.67,
    "secagg.clipping-range": 8.0,
    "secagg.quantization-range": 4194304,
    "secagg.max-weight": 0.0,
    "fraction-train": 1.0,
    "fraction-evaluate": 1.0,
    "min-available-clients": 2,
    "min-train-clients": 2,
    "min-evaluate-clients": 2,
    "local-epochs": 1,
    "batch-size": 32,
    "lr": 0.003,
    "weight-decay": 0.0,
    "max-grad-norm": 1.0,
    "round-timeout": 3600.0,
    "torch-threads": 1,
    "update-compression.method": "none",
    "update-compression.granularity": "tensor",
    "update-compression.topk-fraction": 0.1,
    "update-compression.error-feedback": False,
    # Experiment options of the strategy comparison (rantune.federated.ranks/attacks):
    # per-partition LoRA ranks cycled over partition ids ("4,8,16"; "" = lora.r for all),
    # Byzantine clients (fraction of partitions, sign-flip|scaled|gaussian, factor;
    # factor 0 = the kind's default), and row caps per client split and for the global
    # test set (seeded subsets; 0 = all rows).
    "lora.client-ranks": "",
    "attack.fraction": 0.0,
    "attack.kind": "sign-flip",
    "attack.factor": 0.0,
    "data.max-train-rows": 0,
    "data.max-eval-rows": 0,
    "data.max-global-test-rows": 0,
}

# Keys that do not change the numbers a run produces: a run may be resumed (or
# extended by more rounds) when only these differ.
NON_IDENTITY_KEYS = (
    "num-server-rounds",
    "out-dir",
    "data.cache",
    "round-timeout",
    "torch-threads",
)
COMPRESSION_METHODS = ("none", "int8", "topk", "topk-int8")
GRANULARITIES = ("tensor", "channel")
PRETRAINED_NONE = ("", "none")
_STRATEGY_PARAM = re.compile(r"^strategy\.[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class DataSection:
    """``data.*``: which preset and data seed, and where the cache is ('' = default)."""

    preset: str
    seed: int
    cache: str


@dataclass(frozen=True)
class ModelSection:
    """``model.*``: ``pretrained`` = shipped checkpoint name, a .safetensors path, or
    ``"none"`` for a seeded random encoder of size ``size`` (tests, ablations);
    ``head`` = classification head of the LoS/beam tasks (``pooled-linear``: LayerNorm +
    linear, ~2K parameters; ``token-mlp``: ~9-12K parameters, 3% more uplink)."""

    pretrained: str
    size: str
    head: str = "pooled-linear"

    @property
    def is_random(self) -> bool:
        return self.pretrained.strip().lower() in PRETRAINED_NONE


@dataclass(frozen=True)
class StrategySection:
    """``strategy.name`` and its hyper-parameters ``strategy.<param>`` (kebab keys)."""

    name: str
    params: tuple[tuple[str, Scalar], ...] = ()

    def get(self, key: str, default: Scalar | None = None) -> Scalar | None:
        return dict(self.params).get(key, default)


@dataclass(frozen=True)
class SamplingSection:
    """Client sampling per round (Flower's ``fraction_*``/``min_*_nodes``)."""

    fraction_train: float
    fraction_evaluate: float
    min_available_clients: int
    min_train_clients: int
    min_evaluate_clients: int


@dataclass(frozen=True)
class LocalTrainSection:
    """Local optimisation on each base station."""

    local_epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    max_grad_norm: float


@dataclass(frozen=True)
class CompressionSection:
    """Uplink update compression: ``none``, ``int8``, ``topk`` or ``topk-int8``."""

    method: str = "none"
    granularity: str = "tensor"
    topk_fraction: float = 0.1
    error_feedback: bool = False

    def __post_init__(self) -> None:
        if self.method not in COMPRESSION_METHODS:
            _fail(
                "update-compression.method",
                self.method,
                f"choose one of {', '.join(COMPRESSION_METHODS)}",
            )
        if self.granularity not in GRANULARITIES:
            _fail(
                "update-compression.granularity",
                self.granularity,
                f"choose one of {', '.join(GRANULARITIES)}",
            )
        if not 0.0 < self.topk_fraction <= 1.0:
            _fail(
                "update-compression.topk-fraction", self.topk_fraction, "expected 0 < fraction <= 1"
            )

    @property
    def enabled(self) -> bool:
        return self.method != "none"


@dataclass(frozen=True)
class RunConfig:
    """The whole resolved run configuration (see :data:`DEFAULTS` for the keys)."""

    task: str
    seed: int
    num_server_rounds: int
    out_dir: str
    data: DataSection
    partition: PartitionConfig
    model: ModelSection
    lora: LoraSettings
    strategy: StrategySection
    sampling: SamplingSection
    train: LocalTrainSection
    compression: CompressionSection
    round_timeout: float
    torch_threads: int
    flat: tuple[tuple[str, Scalar], ...] = ()

    def flat_dict(self) -> dict[str, Scalar]:
        """The flat ``run_config`` this was parsed from (kebab dotted keys)."""
        return dict(self.flat)

    def to_dict(self) -> dict:
        """Nested JSON-able form written to ``OUT/config.json``."""
        nested: dict = {}
        for key, value in sorted(self.flat):
            parts = key.split(".")
            node = nested
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        nested["lora"]["targets"] = list(self.lora.targets)
        return nested

    def identity_hash(self) -> str:
        """Hash of every key that changes the numbers (see :data:`NON_IDENTITY_KEYS`)."""
        return identity_hash(self.flat_dict())

    def with_overrides(self, **flat: Scalar) -> RunConfig:
        """A copy with some flat keys replaced (``with_overrides(**{"lora.r": 8})``)."""
        return parse_run_config({**self.flat_dict(), **flat})


def identity_hash(flat: Mapping[str, Scalar]) -> str:
    payload = {k: v for k, v in flat.items() if k not in NON_IDENTITY_KEYS}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def identity_diff(a: Mapping[str, Scalar], b: Mapping[str, Scalar]) -> list[str]:
    """Identity keys whose values differ between two flat configs."""
    keys = (set(a) | set(b)) - set(NON_IDENTITY_KEYS)
    return sorted(k for k in keys if a.get(k) != b.get(k))


def compatible_diff(stored: Mapping[str, Scalar], current: Mapping[str, Scalar]) -> list[str]:
    """Like :func:`identity_diff` for a run written by an older rantune: a key the stored
    config lacks (added since) counts as its default, or as unchanged when it has none
    here (strategy params), so adding keys whose default keeps the old behaviour does not
    orphan existing runs."""
    filled = dict(stored)
    for key, value in current.items():
        filled.setdefault(key, DEFAULTS.get(key, value))
    return identity_diff(filled, current)


def _fail(key: str, value: object, hint: str) -> None:
    raise InputError(f"run config {key}={value!r} is invalid: {hint}")


class _Reader:
    """Typed access to a flat run config; every read checks the type."""

    def __init__(self, raw: Mapping[str, Scalar]) -> None:
        self.raw = raw

    def str(self, key: str, choices: tuple[str, ...] | None = None) -> str:
        value = self.raw[key]
        if not isinstance(value, str):
            _fail(key, value, 'expected a string (quote it: key="value")')
        if choices is not None and value not in choices:
            _fail(key, value, f"choose one of {', '.join(choices)}")
        return value

    def int(self, key: str, minimum: int | None = None) -> int:
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                _fail(key, value, "expected an integer")
        if minimum is not None and value < minimum:
            _fail(key, value, f"expected an integer >= {minimum}")
        return value

    def float(self, key: str, low: float = -math.inf, high: float = math.inf) -> float:
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(key, value, "expected a number")
        value = float(value)
        if not (math.isfinite(value) and low <= value <= high):
            _fail(key, value, f"expected a finite number in [{low:g}, {high:g}]")
        return value

    def bool(self, key: str) -> bool:
        value = self.raw[key]
        if not isinstance(value, bool):
            _fail(key, value, "expected true or false")
        return value


def check_keys(raw: Mapping[str, Scalar]) -> None:
    """Fail on unknown or missing keys, listing the valid ones.

    ``strategy.<param>`` keys pass here when well formed; the strategy registry
    checks them against the chosen strategy.
    """
    strategy_keys = {k for k in raw if _STRATEGY_PARAM.match(k)}
    unknown = sorted(set(raw) - set(DEFAULTS) - strategy_keys)
    if unknown:
        raise InputError(
            f"unknown run config key(s) {unknown}; valid keys are {sorted(DEFAULTS)} "
            "plus strategy.<param> hyper-parameters of the chosen strategy"
        )
    missing = sorted(set(DEFAULTS) - set(raw))
    if missing:
        raise InputError(
            f"run config is missing key(s) {missing}: add them to [tool.flwr.app.config] "
            "in pyproject.toml (see rantune.federated.run_config.DEFAULTS)"
        )
    for key, value in raw.items():
        if not isinstance(value, bool | int | float | str):
            _fail(key, value, "values must be bool, int, float or str")


def parse_run_config(raw: Mapping[str, Scalar]) -> RunConfig:
    """Turn Flower's flat ``context.run_config`` into a validated :class:`RunConfig`.

    Raises
    ------
    ValueError
        On unknown or missing keys (the message lists the valid ones) and on any
        invalid value (the message names the key and the expected form).
    """
    raw = dict(raw)
    check_keys(raw)
    r = _Reader(raw)
    task = r.str("task", TASKS)
    targets = tuple(t.strip() for t in r.str("lora.targets").split(",") if t.strip())
    try:
        lora = LoraSettings(
            r=r.int("lora.r", 1),
            alpha=r.float("lora.alpha", 1e-9),
            dropout=r.float("lora.dropout", 0.0, 0.999),
            targets=targets,
        )
        num_clients = r.int("partition.num-clients", 0)
        partition = PartitionConfig(
            scheme=r.str("partition.scheme"),
            num_clients=num_clients or None,
            label=r.str("partition.label"),
            seed=r.int("partition.seed", 0),
        )
    except ValueError as err:
        raise InputError(f"run config: {err}") from err
    sampling = SamplingSection(
        fraction_train=r.float("fraction-train", 0.0, 1.0),
        fraction_evaluate=r.float("fraction-evaluate", 0.0, 1.0),
        min_available_clients=r.int("min-available-clients", 1),
        min_train_clients=r.int("min-train-clients", 1),
        min_evaluate_clients=r.int("min-evaluate-clients", 0),
    )
    train = LocalTrainSection(
        local_epochs=r.int("local-epochs", 1),
        batch_size=r.int("batch-size", 1),
        lr=r.float("lr", 1e-12, 10.0),
        weight_decay=r.float("weight-decay", 0.0),
        max_grad_norm=r.float("max-grad-norm", 0.0),
    )
    compression = CompressionSection(
        method=r.str("update-compression.method", COMPRESSION_METHODS),
        granularity=r.str("update-compression.granularity", GRANULARITIES),
        topk_fraction=r.float("update-compression.topk-fraction", 1e-6, 1.0),
        error_feedback=r.bool("update-compression.error-feedback"),
    )
    strategy_name = r.str("strategy.name").strip().lower()
    params = tuple(
        sorted(
            (k.removeprefix("strategy."), v)
            for k, v in raw.items()
            if k.startswith("strategy.") and k != "strategy.name"
        )
    )
    out_dir = r.str("out-dir")
    if not out_dir.strip():
        _fail("out-dir", out_dir, "give a directory path")
    return RunConfig(
        task=task,
        seed=r.int("seed", 0),
        num_server_rounds=r.int("num-server-rounds", 1),
        out_dir=out_dir,
        data=DataSection(
            preset=r.str("data.preset"), seed=r.int("data.seed", 0), cache=r.str("data.cache")
        ),
        partition=partition,
        model=ModelSection(
            pretrained=r.str("model.pretrained"),
            size=r.str("model.size"),
            head=r.str("model.head", tuple(CLASSIFICATION_HEADS)),
        ),
        lora=lora,
        strategy=StrategySection(name=strategy_name, params=params),
        sampling=sampling,
        train=train,
        compression=compression,
        round_timeout=r.float("round-timeout", 1e-3),
        torch_threads=r.int("torch-threads", 0),
        flat=tuple(sorted(raw.items())),
    )


def resolve_run_config(
    overrides: Mapping[str, Scalar] | None = None,
    defaults: Mapping[str, Scalar] | None = None,
) -> RunConfig:
    """Defaults (``DEFAULTS`` plus strategy defaults passed in) updated by ``overrides``.

    Unlike :func:`parse_run_config`, ``overrides`` may be partial; a key that is not
    among the defaults fails with the list of valid keys (as ``flwr run`` does).
    """
    base = dict(DEFAULTS if defaults is None else defaults)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise InputError(f"unknown run config key(s) {unknown}; valid keys are {sorted(base)}")
    return parse_run_config({**base, **overrides})


def parse_override_pairs(pairs: list[str] | tuple[str, ...]) -> dict[str, Scalar]:
    """``["lora.r=8", 'task="beam"', "lr=1e-3"]`` -> typed dict (TOML value syntax,
    bare words taken as strings)."""
    import tomllib

    result: dict[str, Scalar] = {}
    for pair in pairs:
        for item in pair.split():
            key, sep, text = item.partition("=")
            if not sep or not key:
                raise InputError(f"--run-config {item!r} is invalid: use key=value")
            try:
                value = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                value = text.strip("'\"")
            if not isinstance(value, bool | int | float | str):
                raise InputError(f"--run-config {item!r}: values must be bool, int, float or str")
            result[key.strip()] = value
    return result
