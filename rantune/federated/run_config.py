"""The federated run configuration: one typed schema, Flower's flat ``run_config`` derived from it.

Every run default is declared once, as a :func:`rantune.schema.setting` (default,
help text, bounds or choices) of the section that uses it: the tree
:class:`RunConfig` below, with sections defined next to their concept
(``lora.*`` in :mod:`rantune.lora`, ``partition.*`` in :mod:`rantune.partition`,
``dp.*`` / ``secagg.*`` in :mod:`rantune.federated.privacy`, ``attack.*`` in
:mod:`rantune.federated.attacks`). :data:`DEFAULTS` (dotted kebab keys) is derived
from it; ``[tool.flwr.app.config]`` of ``pyproject.toml`` holds the same table for
Flower, and a unit test proves the two equal. Each app turns ``context.run_config``
into a :class:`RunConfig` once (:func:`parse_run_config`) and passes on the section
a function needs.

>>> cfg = parse_run_config({**DEFAULTS, "lora.r": 8})
>>> cfg.lora.r
8
>>> DEFAULTS["dp.mode"]
'none'
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass

from rantune.errors import InputError
from rantune.federated.attacks import AttackSettings
from rantune.federated.privacy import DPSettings, SecAggSettings, check_privacy
from rantune.lora import LoraSettings, shipped_targets
from rantune.model.config import MODEL_SIZES
from rantune.partition import PartitionConfig
from rantune.schema import (
    Scalar,
    check_known,
    flat_defaults,
    non_identity_keys,
    read_section,
    section,
    setting,
    to_flat,
)
from rantune.tasks import TASKS, TaskSettings
from rantune.tasks.classification import CLASSIFICATION_HEADS

__all__ = [
    "DEFAULTS",
    "NON_IDENTITY_KEYS",
    "RunConfig",
    "Scalar",
    "compatible_diff",
    "identity_diff",
    "identity_hash",
    "parse_override_pairs",
    "parse_run_config",
    "resolve_run_config",
]

COMPRESSION_METHODS = ("none", "int8", "topk", "topk-int8")
GRANULARITIES = ("tensor", "channel")
PRETRAINED_NONE = ("", "none")


@dataclass(frozen=True)
class DataSection:
    """``data.*``: the preset, its data seed, the cache and per-split row caps."""

    preset: str = setting(
        "smoke", "built-in preset name (smoke, default, large, ...) or a preset .toml path"
    )
    seed: int = setting(0, "seed of the channel generation", low=0)
    cache: str = setting("", "channel cache directory ('' = $RANTUNE_CACHE)", identity=False)
    max_train_rows: int = setting(
        0, "cap on each client's training rows (seeded subset; 0 = all)", low=0
    )
    max_eval_rows: int = setting(
        0, "cap on each client's validation/test rows (seeded subset; 0 = all)", low=0
    )
    max_global_test_rows: int = setting(
        0, "cap on the server's global test rows (seeded subset; 0 = all)", low=0
    )


@dataclass(frozen=True)
class ModelSection:
    """``model.*``: the encoder (shipped, or a custom one by entry point) and the head."""

    pretrained: str = setting(
        "tiny",
        "shipped encoder: checkpoint name, a .safetensors path, or none (a seeded random "
        "encoder); not used with model.encoder",
    )
    size: str = setting(
        "tiny", "encoder size of a random encoder (model.pretrained=none)", choices=tuple(MODEL_SIZES)
    )
    head: str = setting(
        "pooled-linear",
        "LoS/beam head: pooled-linear (~2K parameters) or token-mlp (~3% more uplink)",
        choices=tuple(CLASSIFICATION_HEADS),
    )
    encoder: str = setting(
        "",
        "custom encoder entry point package.module:factory or /path/file.py:factory "
        "(README Extending; '' = the shipped encoder)",
    )
    checkpoint: str = setting(
        "", "model.encoder's weights: a .safetensors state_dict ('' = its seeded init)"
    )

    def __post_init__(self) -> None:
        if self.checkpoint.strip() and not self.custom:
            raise InputError(
                f"model.checkpoint={self.checkpoint!r} loads a custom encoder's weights, but "
                "model.encoder is empty: set model.encoder, or give the shipped encoder's "
                "checkpoint as model.pretrained"
            )
        if self.checkpoint.strip() and not self.checkpoint.strip().endswith(".safetensors"):
            raise InputError(
                f"model.checkpoint={self.checkpoint!r} is invalid: expected a .safetensors path"
            )
        if self.custom and ":" not in self.encoder:
            raise InputError(
                f"model.encoder={self.encoder!r} is not an entry point: write "
                "package.module:factory or /path/to/file.py:factory"
            )

    @property
    def custom(self) -> bool:
        """Whether ``model.encoder`` names a custom encoder."""
        return bool(self.encoder.strip())

    @property
    def is_random(self) -> bool:
        """Whether the base encoder is a seeded random one (no weights loaded)."""
        if self.custom:
            return not self.checkpoint.strip()
        return self.pretrained.strip().lower() in PRETRAINED_NONE


@dataclass(frozen=True)
class StrategySection:
    """``strategy.name`` and every strategy hyper-parameter (``strategy.<param>``).

    A strategy names the fields it reads (``StrategySpec.params`` in
    ``rantune.server.strategies``); a new hyper-parameter is one field here.
    """

    name: str = setting("fedavg", "aggregation rule (rantune simulate --help lists them)")
    proximal_mu: float = setting(0.01, "fedprox: weight mu of the proximal term", low=0.0)
    eta: float = setting(
        0.01, "fedadam/fedyogi/fedadagrad: server learning rate", low=0.0, low_open=True
    )
    tau: float = setting(
        0.001, "fedadam/fedyogi/fedadagrad: adaptivity tau", low=0.0, low_open=True
    )
    beta_1: float = setting(0.9, "fedadam/fedyogi: first-moment decay", low=0.0, high=0.999999)
    beta_2: float = setting(0.99, "fedadam/fedyogi: second-moment decay", low=0.0, high=0.999999)
    server_learning_rate: float = setting(
        1.0, "fedavgm: server learning rate", low=0.0, low_open=True
    )
    server_momentum: float = setting(0.9, "fedavgm: server momentum", low=0.0, high=0.999999)
    trim_beta: float = setting(
        0.2, "fedtrimmedavg: fraction cut at each end", low=0.0, high=0.499999
    )
    num_malicious_nodes: int = setting(
        0, "krum/multikrum/bulyan: assumed Byzantine clients f", low=0
    )
    num_nodes_to_select: int = setting(0, "multikrum: updates kept (0 = n - f)", low=0)
    q: float = setting(0.1, "qfedavg: fairness exponent q", low=0.0)
    qffl_learning_rate: float = setting(
        0.0, "qfedavg: its Lipschitz learning rate (0 = the run's lr)", low=0.0
    )
    fedsa_share_head: bool = setting(True, "fedsa-lora: average the task head too")
    hetlora_weight_by_examples: bool = setting(
        False, "hetlora: weight clients by examples as well as by update norm"
    )
    hetlora_weight_scope: str = setting(
        "module", "hetlora: norm weights per module or one global norm", choices=("module", "global")
    )
    lora_fair_lambda: float = setting(
        0.01, "lora-fair: regularisation weight of the residual correction of B", low=0.0
    )


@dataclass(frozen=True)
class SamplingSection:
    """Client sampling per round (Flower's ``fraction_*`` / ``min_*_nodes``)."""

    fraction_train: float = setting(1.0, "share of clients sampled per training round", low=0.0, high=1.0)
    fraction_evaluate: float = setting(
        1.0, "share of clients sampled per evaluation round", low=0.0, high=1.0
    )
    min_available_clients: int = setting(2, "clients that must be connected to start", low=1)
    min_train_clients: int = setting(2, "least clients per training round", low=1)
    min_evaluate_clients: int = setting(2, "least clients per evaluation round", low=0)


@dataclass(frozen=True)
class LocalTrainSection:
    """Local optimisation on each base station."""

    local_epochs: int = setting(1, "local epochs per round", low=1)
    batch_size: int = setting(32, "local batch size", low=1)
    lr: float = setting(0.003, "local AdamW learning rate", low=1e-12, high=10.0)
    weight_decay: float = setting(0.0, "local AdamW weight decay", low=0.0)
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0 = off)", low=0.0)


@dataclass(frozen=True)
class CompressionSection:
    """Uplink update compression: ``none``, ``int8``, ``topk`` or ``topk-int8``."""

    method: str = setting("none", "uplink update compression", choices=COMPRESSION_METHODS)
    granularity: str = setting(
        "tensor", "int8 scale per tensor or per output channel", choices=GRANULARITIES
    )
    topk_fraction: float = setting(
        0.1, "share of entries kept by top-k", low=0.0, high=1.0, low_open=True
    )
    error_feedback: bool = setting(
        False, "carry the compression residual into the next round's update"
    )

    @property
    def enabled(self) -> bool:
        return self.method != "none"


@dataclass(frozen=True)
class RunConfig:
    """The whole resolved run configuration; ``RunConfig()`` is every default."""

    task: str = setting("los", "downstream task", choices=TASKS)
    task_options: TaskSettings = section(TaskSettings, "task-options.")
    seed: int = setting(0, "run seed (adapter init, local shuffling, sampling)", low=0)
    num_server_rounds: int = setting(3, "federated rounds", low=1, identity=False)
    out_dir: str = setting("runs/federated", "run directory (absolute with flwr run)", identity=False)
    round_timeout: float = setting(
        3600.0, "seconds to wait for a round's replies", low=0.0, low_open=True, identity=False
    )
    torch_threads: int = setting(
        1, "torch intra-op threads per process (0 = torch's default)", low=0, identity=False
    )
    server_evaluation: bool = setting(
        True,
        "evaluate the global model on the server's global test set each round "
        "(false: the server opens no channel data, e.g. in deployment)",
    )
    client_validation: bool = setting(
        False,
        "clients also evaluate the received (and personalized) model on their validation "
        "split each evaluation round (val-<metric>, e.g. to tune the lr without the test set)",
        identity=False,
    )
    data: DataSection = section(DataSection, "data.")
    partition: PartitionConfig = section(PartitionConfig, "partition.")
    model: ModelSection = section(ModelSection, "model.")
    lora: LoraSettings = section(LoraSettings, "lora.")
    strategy: StrategySection = section(StrategySection, "strategy.")
    sampling: SamplingSection = section(SamplingSection, "")
    train: LocalTrainSection = section(LocalTrainSection, "")
    compression: CompressionSection = section(CompressionSection, "update-compression.")
    dp: DPSettings = section(DPSettings, "dp.")
    secagg: SecAggSettings = section(SecAggSettings, "secagg.")
    attack: AttackSettings = section(AttackSettings, "attack.")

    def __post_init__(self) -> None:
        if not self.out_dir.strip():
            raise InputError("run config out-dir='' is invalid: give a directory path")
        if not self.model.custom:  # a custom encoder's targets are checked on the model
            shipped_targets(self.lora.targets)
        check_privacy(self)

    def flat_dict(self) -> dict[str, Scalar]:
        """The flat ``run_config`` form (kebab dotted keys), as Flower passes it."""
        return to_flat(self)

    def to_dict(self) -> dict:
        """Nested JSON-able form written to ``OUT/config.json``."""
        nested: dict = {}
        for key, value in sorted(self.flat_dict().items()):
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
        return resolve_run_config({**self.flat_dict(), **flat})


DEFAULTS: dict[str, Scalar] = flat_defaults(RunConfig)
# Keys that do not change the numbers a run produces: a run may be resumed (or
# extended by more rounds) when only these differ.
NON_IDENTITY_KEYS: tuple[str, ...] = non_identity_keys(RunConfig)


def identity_hash(flat: Mapping[str, Scalar]) -> str:
    payload = {k: v for k, v in flat.items() if k not in NON_IDENTITY_KEYS}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def identity_diff(a: Mapping[str, Scalar], b: Mapping[str, Scalar]) -> list[str]:
    """Identity keys whose values differ between two flat configs."""
    keys = (set(a) | set(b)) - set(NON_IDENTITY_KEYS)
    return sorted(k for k in keys if a.get(k) != b.get(k))


def compatible_diff(stored: Mapping[str, Scalar], current: Mapping[str, Scalar]) -> list[str]:
    """Like :func:`identity_diff` for a run written by an older rantune: a key the stored
    config lacks (added since) counts as its default, so adding keys whose default keeps
    the old behaviour does not orphan existing runs."""
    filled = dict(stored)
    for key, value in current.items():
        filled.setdefault(key, DEFAULTS.get(key, value))
    return identity_diff(filled, current)


def parse_run_config(raw: Mapping[str, Scalar]) -> RunConfig:
    """Turn Flower's flat ``context.run_config`` (every key present) into a :class:`RunConfig`.

    Raises
    ------
    InputError
        On unknown or missing keys (the message lists the valid ones) and on any
        invalid value (the message names the key and the expected form).
    """
    check_known(RunConfig, raw, require_all=True)
    return read_section(RunConfig, raw)


def resolve_run_config(overrides: Mapping[str, Scalar] | None = None) -> RunConfig:
    """:data:`DEFAULTS` updated by partial ``overrides``; an unknown key fails with the
    list of valid keys (as ``flwr run`` does)."""
    overrides = dict(overrides or {})
    check_known(RunConfig, overrides, require_all=False)
    return read_section(RunConfig, overrides)


def parse_override_pairs(pairs: list[str] | tuple[str, ...]) -> dict[str, Scalar]:
    """``["lora.r=8", 'task="beam"', "lr=1e-3"]`` -> typed dict (TOML value syntax,
    bare words taken as strings)."""
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
