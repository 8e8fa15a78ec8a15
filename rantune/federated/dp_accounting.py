"""Privacy accounting for DP federated rounds: RDP of the sampled Gaussian mechanism.

One round of central DP (clip every client update to L2 norm ``C``, average the
``m`` updates, add ``N(0, (z C / n)^2)`` noise; ``n`` clients sampled of ``N``) is
a Gaussian mechanism with noise multiplier ``z_eff = z m / n`` on the mean, applied
to a client sample of rate ``q = n / N``. Its Rényi DP (Mironov et al. 2017,
https://arxiv.org/abs/1702.07476) under Poisson subsampling with add/remove-one
client neighbours follows Mironov, Talwar, Zhang 2019
(https://arxiv.org/abs/1908.10530): ``A_alpha = E_{z~N(0, s^2)}[(mu(z)/mu0(z))^alpha]``
with ``mu = (1-q) N(0, s^2) + q N(1, s^2)``, computed exactly for integer orders
and by their series for fractional orders. RDP composes additively over rounds;
``(epsilon, delta)`` comes from the conversion of Canonne, Kamath, Steinke 2020
(https://arxiv.org/abs/2004.00010, Prop. 12), minimized over the orders.

This is the sampling the DP rounds of rantune perform: each client takes part
independently with probability ``q``, drawn from the OS CSPRNG
(:class:`rantune.server.sampling.PoissonSampler`); the accountant records the model
(:data:`POISSON`) in its ledger, and the server refuses to compose a round drawn any
other way. The privacy unit is one base station's whole dataset. With ``q = 1``
(every client every round) the bound is the plain Gaussian mechanism's
``alpha / (2 z^2)`` per round.

Pure Python + numpy: no dependency beyond the standard library's ``math``.

>>> acc = RdpAccountant()
>>> acc.compose(noise_multiplier=1.0, sampling_rate=1.0, steps=10)
>>> round(acc.epsilon(1e-5), 2)
19.05
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from rantune.errors import InputError

POISSON = "poisson"
"""The sampling model of :class:`RdpAccountant`: Poisson subsampling at rate ``q``."""

# The orders Google's dp-accounting uses by default: 1.1 .. 10.9 by 0.1, 11 .. 63, 2^7 .. 2^10.
DEFAULT_ORDERS: tuple[float, ...] = (
    tuple(round(1 + x / 10, 1) for x in range(1, 100))
    + tuple(float(a) for a in range(11, 64))
    + (128.0, 256.0, 512.0, 1024.0)
)


def _log_add(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow."""
    hi, lo = max(a, b), min(a, b)
    if hi == -math.inf:
        return -math.inf
    return hi + math.log1p(math.exp(lo - hi))


def _log_sub(a: float, b: float) -> float:
    """``log(exp(a) - exp(b))`` for ``a >= b``."""
    if b > a:
        raise InputError("log_sub: the result would be negative")
    if b == -math.inf:
        return a
    if a == b:
        return -math.inf
    try:
        return math.log(math.expm1(a - b)) + b
    except OverflowError:
        return a


def _log_erfc(x: float) -> float:
    """``log(erfc(x))``, with the asymptotic series where ``erfc`` underflows."""
    if x < 25.0:
        value = math.erfc(x)
        if value > 0.0:
            return math.log(value)
    # erfc(x) ~ exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6) + ...)
    r = 1.0 / (x * x)
    series = 1.0 - 0.5 * r + 0.75 * r * r - 1.875 * r**3 + 6.5625 * r**4
    return -math.log(math.pi) / 2 - math.log(x) - x * x + math.log(series)


_MAX_SERIES_TERMS = 20_000


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    """``log A_alpha`` for an integer order (binomial expansion, exact)."""
    log_a = -math.inf
    for i in range(alpha + 1):
        log_coef = (
            math.lgamma(alpha + 1)
            - math.lgamma(i + 1)
            - math.lgamma(alpha - i + 1)
            + i * math.log(q)
            + (alpha - i) * math.log1p(-q)
        )
        log_a = _log_add(log_a, log_coef + (i * i - i) / (2 * sigma**2))
    return log_a


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    """``log A_alpha`` for a fractional order (series of Mironov et al. 2019, Sec. 3.3)."""
    log_a0, log_a1 = -math.inf, -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    coef, i = 1.0, 0  # generalized binomial coefficient binom(alpha, i)
    while True:
        j = alpha - i
        log_coef = math.log(abs(coef))
        log_t0 = log_coef + i * math.log(q) + j * math.log1p(-q)
        log_t1 = log_coef + j * math.log(q) + i * math.log1p(-q)
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2 * sigma**2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma**2) + log_e1
        if coef > 0:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        i += 1
        if max(log_s0, log_s1) < -30:
            break
        if i > _MAX_SERIES_TERMS:
            return math.inf  # not converged: this order gives no bound
        coef *= (alpha - (i - 1)) / i
        if coef == 0.0:
            break
    return _log_add(log_a0, log_a1)


def rdp_sampled_gaussian(q: float, noise_multiplier: float, order: float) -> float:
    """RDP at ``order`` of one sampled Gaussian release.

    Parameters
    ----------
    q : sampling rate in [0, 1] (Poisson), 1 = no subsampling.
    noise_multiplier : noise std / L2 sensitivity (> 0; 0 gives infinity).
    order : Rényi order alpha > 1.
    """
    if not 0.0 <= q <= 1.0:
        raise InputError(f"sampling rate q={q} must be in [0, 1]")
    if order <= 1:
        raise InputError(f"Rényi order {order} must be > 1")
    if q == 0.0:
        return 0.0
    if noise_multiplier <= 0.0:
        return math.inf
    if q == 1.0:
        return order / (2 * noise_multiplier**2)
    if math.isinf(order):
        return math.inf
    if float(order).is_integer():
        log_a = _log_a_int(q, noise_multiplier, int(order))
    else:
        log_a = _log_a_frac(q, noise_multiplier, float(order))
    return log_a / (order - 1)


def epsilon_from_rdp(
    orders: Sequence[float], rdp: Sequence[float], delta: float
) -> tuple[float, float]:
    """``(epsilon, best order)`` at ``delta`` from RDP values (Canonne et al. 2020, Prop. 12)."""
    if not 0.0 < delta < 1.0:
        raise InputError(f"delta={delta} must be in (0, 1)")
    best, best_order = math.inf, math.nan
    for a, r in zip(orders, rdp, strict=True):
        if r < 0:
            raise InputError("RDP values must be >= 0")
        if math.isinf(r):
            continue
        if delta**2 + math.expm1(-r) > 0:  # KL bound already gives epsilon = 0
            eps = 0.0
        elif a > 1.01:
            eps = r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
        else:
            eps = math.inf
        if eps < best:
            best, best_order = eps, a
    return max(0.0, best), best_order


@lru_cache(maxsize=256)
def _rdp_vector(q: float, noise_multiplier: float, orders: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(rdp_sampled_gaussian(q, noise_multiplier, a) for a in orders)


@dataclass
class RdpAccountant:
    """Composes sampled Gaussian releases and reports ``epsilon`` at a ``delta``.

    The ledger (``releases``: ``(noise_multiplier, sampling_rate, steps)``) is the
    whole state: :meth:`state_dict` / :meth:`from_state` round-trip it through JSON,
    so a resumed run reports the same budget as an uninterrupted one. ``sampling``
    names the subsampling the bound assumes (only :data:`POISSON`).
    """

    sampling = POISSON
    orders: tuple[float, ...] = DEFAULT_ORDERS
    releases: list[tuple[float, float, int]] = field(default_factory=list)
    _rdp: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if any(a <= 1 for a in self.orders):
            raise InputError("every Rényi order must be > 1")
        ledger, self.releases = list(self.releases), []
        self._rdp = [0.0] * len(self.orders)
        for z, q, steps in ledger:
            self.compose(z, q, steps)

    def compose(self, noise_multiplier: float, sampling_rate: float, steps: int = 1) -> None:
        """Add ``steps`` releases of a Gaussian mechanism with this multiplier and rate."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps={steps!r} must be a positive integer")
        if not noise_multiplier >= 0 or not math.isfinite(noise_multiplier):
            raise InputError(f"noise multiplier {noise_multiplier} must be finite and >= 0")
        per_step = _rdp_vector(float(sampling_rate), float(noise_multiplier), tuple(self.orders))
        for k, value in enumerate(per_step):
            self._rdp[k] += steps * value
        self.releases.append((float(noise_multiplier), float(sampling_rate), int(steps)))

    @property
    def num_releases(self) -> int:
        return sum(steps for _, _, steps in self.releases)

    def rdp(self) -> list[float]:
        """Cumulative RDP at every order."""
        return list(self._rdp)

    def epsilon(self, delta: float) -> float:
        """Cumulative ``epsilon`` at ``delta`` (0 before any release; inf with no noise)."""
        if not self.releases:
            return 0.0
        return epsilon_from_rdp(self.orders, self._rdp, delta)[0]

    def state_dict(self) -> dict:
        return {
            "sampling": self.sampling,
            "orders": list(self.orders),
            "releases": [list(r) for r in self.releases],
        }

    @classmethod
    def from_state(cls, state: dict) -> RdpAccountant:
        sampling = state.get("sampling", POISSON)
        if sampling != cls.sampling:
            raise InputError(
                f"privacy accountant state assumes {sampling!r} sampling; this accountant "
                f"composes {cls.sampling!r} subsampled releases only"
            )
        try:
            orders = tuple(float(a) for a in state["orders"])
            releases = [(float(z), float(q), int(s)) for z, q, s in state["releases"]]
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"unreadable privacy accountant state: {err}") from err
        return cls(orders=orders, releases=releases)
