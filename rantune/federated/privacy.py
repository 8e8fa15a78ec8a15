"""Privacy options of a federated run: differential privacy (``dp.*``) and SecAgg+ (``secagg.*``).

Flower-free: typed, validated settings read from the flat run config (the keys
live in ``[tool.flwr.app.config]`` and :data:`rantune.federated.run_config.DEFAULTS`).
``server/privacy.py`` wraps the strategy with Flower's DP wrappers,
``server/secagg.py`` runs SecAgg+ rounds, ``client/privacy.py`` and
``client/secagg.py`` hold the matching client mods.

``dp.mode``:

=================  ====================================================================
none               no differential privacy
server-fixed       the server clips each update to ``dp.clipping-norm`` and adds noise
client-fixed       each client clips its own update (``fixedclipping_mod``); server adds noise
server-adaptive    server-side clipping with a norm that tracks ``dp.target-quantile``
client-adaptive    client-side clipping (``adaptiveclipping_mod``) with an adaptive norm
=================  ====================================================================

Noise: ``N(0, (z C / n)^2)`` on the mean of the ``n`` sampled clients' clipped
updates (``z`` = ``dp.noise-multiplier``, ``C`` = clipping norm). The privacy unit
is one base station (client-level DP); the budget is reported per round as
``epsilon`` at ``dp.delta`` (see :mod:`rantune.federated.dp_accounting`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from rantune.errors import InputError
from rantune.federated.run_config import RunConfig, Scalar

DP_MODES = ("none", "server-fixed", "client-fixed", "server-adaptive", "client-adaptive")

# The dp.* and secagg.* keys with their defaults (mirrored in run_config.DEFAULTS and
# pyproject.toml; a unit test keeps the three equal).
PRIVACY_DEFAULTS: dict[str, Scalar] = {
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
}


def _fail(key: str, value: object, hint: str) -> None:
    raise InputError(f"run config {key}={value!r} is invalid: {hint}")


def _number(flat: dict, key: str, low: float = -math.inf, high: float = math.inf) -> float:
    value = flat.get(key, PRIVACY_DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(key, value, "expected a number")
    if not (math.isfinite(value) and low <= value <= high):
        _fail(key, value, f"expected a finite number in [{low:g}, {high:g}]")
    return float(value)


def _bool(flat: dict, key: str) -> bool:
    value = flat.get(key, PRIVACY_DEFAULTS[key])
    if not isinstance(value, bool):
        _fail(key, value, "expected true or false")
    return value


@dataclass(frozen=True)
class DPSettings:
    """``dp.*``: which DP wrapper and its parameters.

    Attributes
    ----------
    mode : one of :data:`DP_MODES`.
    noise_multiplier : z, noise std / clipping norm (>= 0; > 0 for a finite epsilon).
    clipping_norm : C, L2 bound of one client's update (fixed modes) or its initial
        value (adaptive modes), in parameter units.
    delta : the delta at which epsilon is reported, in (0, 1); choose << 1/num-clients.
    target_quantile : adaptive modes: share of updates that should be clipped.
    clip_norm_lr : adaptive modes: geometric learning rate of the clipping norm.
    clipped_count_stddev : adaptive modes: noise std of the clipped-update count
        (0 = Flower's default, sampled clients / 20).
    reproducible_noise : seed the DP noise from the run seed (simulations only:
        anyone who knows the seed can remove the noise).
    """

    mode: str = "none"
    noise_multiplier: float = 1.0
    clipping_norm: float = 1.0
    delta: float = 1e-5
    target_quantile: float = 0.5
    clip_norm_lr: float = 0.2
    clipped_count_stddev: float = 0.0
    reproducible_noise: bool = False

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def adaptive(self) -> bool:
        return self.mode.endswith("-adaptive")

    @property
    def client_side(self) -> bool:
        return self.mode.startswith("client-")


@dataclass(frozen=True)
class SecAggSettings:
    """``secagg.*``: Flower's SecAgg+ protocol (``SecAggPlusWorkflow`` + ``secaggplus_mod``).

    Attributes
    ----------
    enabled : run training rounds through SecAgg+.
    num_shares : shares of each client's secrets: an int > 2 (count) or a float in
        (0, 1] (share of the sampled clients).
    reconstruction_threshold : shares needed to reconstruct: an int (count, < num_shares)
        or a float in (0, 1] (share of num_shares; at least 2).
    clipping_range : parameters are clipped to [-r, r] before quantization.
    quantization_range : integers per parameter, [0, quantization_range).
    max_weight : largest client weight (num-examples); 0 = the largest training
        split of the partitioning.
    """

    enabled: bool = False
    num_shares: int | float = 1.0
    reconstruction_threshold: int | float = 0.67
    clipping_range: float = 8.0
    quantization_range: int = 4194304
    max_weight: float = 0.0

    def step(self) -> float:
        """Quantization step of one parameter (parameter units)."""
        return 2 * self.clipping_range / self.quantization_range


def _count_or_share(flat: dict, key: str, minimum_count: int) -> int | float:
    value = flat.get(key, PRIVACY_DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(key, value, "expected an integer count or a share in (0, 1]")
    if isinstance(value, int):
        if value == 1:
            return 1.0
        if value < minimum_count:
            _fail(key, value, f"a count must be >= {minimum_count} (or give a share in (0, 1])")
        return int(value)
    if not 0.0 < value <= 1.0:
        _fail(key, value, "a share must be in (0, 1] (or give an integer count)")
    return float(value)


def dp_settings(cfg: RunConfig) -> DPSettings:
    """Typed, validated ``dp.*`` keys of a run config."""
    flat = cfg.flat_dict()
    mode = flat.get("dp.mode", "none")
    if not isinstance(mode, str) or mode.strip().lower() not in DP_MODES:
        _fail("dp.mode", mode, f"choose one of {', '.join(DP_MODES)}")
    settings = DPSettings(
        mode=mode.strip().lower(),
        noise_multiplier=_number(flat, "dp.noise-multiplier", 0.0),
        clipping_norm=_number(flat, "dp.clipping-norm", 1e-12),
        delta=_number(flat, "dp.delta", 1e-300, 0.999999),
        target_quantile=_number(flat, "dp.target-quantile", 0.0, 1.0),
        clip_norm_lr=_number(flat, "dp.clip-norm-lr", 1e-12),
        clipped_count_stddev=_number(flat, "dp.clipped-count-stddev", 0.0),
        reproducible_noise=_bool(flat, "dp.reproducible-noise"),
    )
    if settings.enabled and settings.client_side and cfg.compression.enabled:
        _fail(
            "dp.mode",
            settings.mode,
            'client-side clipping needs update-compression.method="none" (the clipping '
            "mod compares the reply's tensors with the ones received); use a server-* mode "
            "or turn compression off",
        )
    return settings


def secagg_settings(cfg: RunConfig) -> SecAggSettings:
    """Typed, validated ``secagg.*`` keys of a run config (and what SecAgg+ excludes)."""
    flat = cfg.flat_dict()
    settings = SecAggSettings(
        enabled=_bool(flat, "secagg.enabled"),
        num_shares=_count_or_share(flat, "secagg.num-shares", 3),
        reconstruction_threshold=_count_or_share(flat, "secagg.reconstruction-threshold", 2),
        clipping_range=_number(flat, "secagg.clipping-range", 1e-9),
        quantization_range=int(_number(flat, "secagg.quantization-range", 2, 2**31)),
        max_weight=_number(flat, "secagg.max-weight", 0.0),
    )
    if (
        isinstance(settings.num_shares, int)
        and isinstance(settings.reconstruction_threshold, int)
        and settings.reconstruction_threshold >= settings.num_shares
    ):
        _fail(
            "secagg.reconstruction-threshold",
            settings.reconstruction_threshold,
            f"must be smaller than secagg.num-shares={settings.num_shares}",
        )
    if not settings.enabled:
        return settings
    if cfg.compression.enabled:
        _fail(
            "secagg.enabled",
            True,
            'SecAgg+ sums quantized parameters itself: set update-compression.method="none"',
        )
    if flat.get("dp.mode", "none") != "none":
        _fail(
            "secagg.enabled",
            True,
            "SecAgg+ is not combined with dp.mode here (Flower 1.41 has no DP wrapper for the "
            'legacy SecAgg+ workflow): set dp.mode="none" or secagg.enabled=false',
        )
    if cfg.sampling.min_train_clients < 2:
        _fail(
            "min-train-clients",
            cfg.sampling.min_train_clients,
            "SecAgg+ needs at least 2 clients per round (a sum of one update is that update)",
        )
    return settings


# SecAgg+ sends the legacy FitIns, whose tensors carry no names: both sides order
# them by name and the server adds this hash of the names to the FitIns config.
KEYS_HASH = "rantune.keys-sha256"


def keys_hash(keys: list[str]) -> str:
    """Short hash of an ordered list of tensor names."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
