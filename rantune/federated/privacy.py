"""Privacy options of a federated run: differential privacy (``dp.*``) and SecAgg+ (``secagg.*``).

Flower-free: the typed ``dp.*`` and ``secagg.*`` sections of the run config
(:class:`rantune.federated.run_config.RunConfig` ``.dp`` / ``.secagg``).
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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rantune.errors import InputError
from rantune.schema import setting

if TYPE_CHECKING:
    from rantune.federated.run_config import RunConfig

DP_MODES = ("none", "server-fixed", "client-fixed", "server-adaptive", "client-adaptive")


def _fail(key: str, value: object, hint: str) -> None:
    raise InputError(f"run config {key}={value!r} is invalid: {hint}")


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

    mode: str = setting("none", "differential privacy: " + "|".join(DP_MODES), choices=DP_MODES)
    noise_multiplier: float = setting(1.0, "z: noise std / clipping norm", low=0.0)
    clipping_norm: float = setting(
        1.0, "C: L2 bound of one client's update (initial value if adaptive)", low=1e-12
    )
    delta: float = setting(1e-5, "delta at which epsilon is reported", low=1e-300, high=0.999999)
    target_quantile: float = setting(
        0.5, "adaptive: share of updates that should be clipped", low=0.0, high=1.0
    )
    clip_norm_lr: float = setting(0.2, "adaptive: learning rate of the clipping norm", low=1e-12)
    clipped_count_stddev: float = setting(
        0.0, "adaptive: noise std of the clipped count (0 = sampled clients / 20)", low=0.0
    )
    reproducible_noise: bool = setting(
        False, "seed the DP noise from the run seed (simulations only: removes privacy)"
    )

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def adaptive(self) -> bool:
        return self.mode.endswith("-adaptive")

    @property
    def client_side(self) -> bool:
        return self.mode.startswith("client-")


def _count_or_share(key: str, value: int | float, minimum_count: int) -> int | float:
    """An integer count (>= ``minimum_count``) or a share in (0, 1]; the integer 1 is
    the share 1.0."""
    if isinstance(value, int):
        if value == 1:
            return 1.0
        if value < minimum_count:
            _fail(key, value, f"a count must be >= {minimum_count} (or give a share in (0, 1])")
        return int(value)
    if not 0.0 < value <= 1.0:
        _fail(key, value, "a share must be in (0, 1] (or give an integer count)")
    return float(value)


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

    enabled: bool = setting(False, "run training rounds through SecAgg+")
    num_shares: int | float = setting(
        1.0, "shares of each client's secrets: a count > 2 or a share in (0, 1]"
    )
    reconstruction_threshold: int | float = setting(
        0.67, "shares needed to reconstruct: a count < num-shares or a share in (0, 1]"
    )
    clipping_range: float = setting(8.0, "parameters clipped to [-r, r] before quantization", low=1e-9)
    quantization_range: int = setting(4194304, "integers per parameter", low=2, high=2**31)
    max_weight: float = setting(
        0.0, "largest client weight (0 = the largest training split)", low=0.0
    )

    def __post_init__(self) -> None:
        shares = _count_or_share("secagg.num-shares", self.num_shares, 3)
        threshold = _count_or_share(
            "secagg.reconstruction-threshold", self.reconstruction_threshold, 2
        )
        object.__setattr__(self, "num_shares", shares)
        object.__setattr__(self, "reconstruction_threshold", threshold)
        if isinstance(shares, int) and isinstance(threshold, int) and threshold >= shares:
            _fail(
                "secagg.reconstruction-threshold",
                threshold,
                f"must be smaller than secagg.num-shares={shares}",
            )

    def step(self) -> float:
        """Quantization step of one parameter (parameter units)."""
        return 2 * self.clipping_range / self.quantization_range


def check_privacy(cfg: RunConfig) -> None:
    """Combinations of ``dp.*``, ``secagg.*`` and the rest that cannot run together."""
    dp, secagg = cfg.dp, cfg.secagg
    if dp.enabled and dp.client_side and cfg.compression.enabled:
        _fail(
            "dp.mode",
            dp.mode,
            'client-side clipping needs update-compression.method="none" (the clipping '
            "mod compares the reply's tensors with the ones received); use a server-* mode "
            "or turn compression off",
        )
    if not secagg.enabled:
        return
    if cfg.compression.enabled:
        _fail(
            "secagg.enabled",
            True,
            'SecAgg+ sums quantized parameters itself: set update-compression.method="none"',
        )
    if dp.enabled:
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


# SecAgg+ sends the legacy FitIns, whose tensors carry no names: both sides order
# them by name and the server adds this hash of the names to the FitIns config.
KEYS_HASH = "rantune.keys-sha256"


def keys_hash(keys: list[str]) -> str:
    """Short hash of an ordered list of tensor names."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
