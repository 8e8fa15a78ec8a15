"""RDP accountant of the sampled Gaussian mechanism (rantune.federated.dp_accounting).

References: the closed form alpha / (2 z^2) without subsampling; numerical
integration of A_alpha = E_{x~N(0,z^2)}[((1-q) + q exp((2x-1)/(2z^2)))^alpha]
(mpmath, 30 digits); the exact (epsilon, delta) curve of a Gaussian mechanism
(Balle & Wang 2018) as a lower bound; epsilons of Google's dp-accounting 0.6.0
(``RdpAccountant`` with ``PoissonSampledDpEvent``/``GaussianDpEvent``) as published
reference values.
"""

from __future__ import annotations

import math

import pytest

from rantune.federated.dp_accounting import (
    DEFAULT_ORDERS,
    RdpAccountant,
    epsilon_from_rdp,
    rdp_sampled_gaussian,
)


def _gaussian_delta(epsilon: float, sigma: float) -> float:
    """Exact delta(epsilon) of a Gaussian mechanism, sensitivity 1, noise std sigma."""

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    a, b = 1 / (2 * sigma), epsilon * sigma
    return phi(a - b) - math.exp(epsilon) * phi(-a - b)


def _gaussian_epsilon(delta: float, sigma: float) -> float:
    lo, hi = 0.0, 200.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _gaussian_delta(mid, sigma) > delta else (lo, mid)
    return hi


@pytest.mark.parametrize("order", [1.5, 2.0, 7.3, 64.0])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_without_subsampling_rdp_is_the_gaussian_closed_form(order, sigma):
    assert rdp_sampled_gaussian(1.0, sigma, order) == pytest.approx(order / (2 * sigma**2))


@pytest.mark.parametrize(
    ("q", "sigma"), [(0.01, 1.1), (1 / 3, 0.8), (0.5, 2.0), (0.9, 0.5), (0.1, 1.0)]
)
@pytest.mark.parametrize("order", [1.1, 1.5, 2.0, 2.5, 3.0, 7.5, 10.9])
def test_subsampled_rdp_matches_numerical_integration(q, sigma, order):
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 30

    # Prepare: A_alpha by quadrature of its definition
    def integrand(x):
        ratio = (1 - q) + q * mp.e ** ((2 * x - 1) / (2 * sigma**2))
        return mp.npdf(x, 0, sigma) * ratio**order

    log_a = mp.log(mp.quad(integrand, [-mp.inf, -10, 0, 1, 10, mp.inf]))

    # Execute / Assert
    expected = float(log_a / (order - 1))
    assert rdp_sampled_gaussian(q, sigma, order) == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize(
    ("q", "sigma", "steps", "reference"),
    [
        (1.0, 1.0, 10, 19.05359753163139),
        (0.01, 1.1, 1000, 1.7117701662429012),
        (256 / 60000, 1.1, 14063, 2.596655529521983),
        (0.5, 2.0, 10, 4.366906764052282),
    ],
)
def test_epsilon_matches_dp_accounting_reference_values(q, sigma, steps, reference):
    # Prepare
    accountant = RdpAccountant()

    # Execute
    accountant.compose(sigma, q, steps)

    # Assert: equal up to dp-accounting's more conservative fractional orders
    assert accountant.epsilon(1e-5) == pytest.approx(reference, rel=2e-3)
    assert accountant.epsilon(1e-5) <= reference + 1e-9


@pytest.mark.parametrize(("sigma", "rounds"), [(0.8, 1), (1.0, 5), (2.0, 20), (5.0, 3)])
def test_epsilon_upper_bounds_the_exact_gaussian_curve(sigma, rounds):
    # Prepare: T Gaussian releases = one with noise sigma / sqrt(T)
    exact = _gaussian_epsilon(1e-5, sigma / math.sqrt(rounds))
    accountant = RdpAccountant()

    # Execute
    accountant.compose(sigma, 1.0, rounds)

    # Assert: RDP is a valid bound, and not a loose one
    epsilon = accountant.epsilon(1e-5)
    assert exact <= epsilon <= 1.25 * exact


def test_epsilon_increases_with_rounds_and_decreases_with_noise():
    # Execute
    per_round = []
    accountant = RdpAccountant()
    for _ in range(6):
        accountant.compose(1.0, 0.5)
        per_round.append(accountant.epsilon(1e-5))
    by_noise = []
    for sigma in (0.5, 1.0, 2.0, 4.0):
        other = RdpAccountant()
        other.compose(sigma, 0.5, 6)
        by_noise.append(other.epsilon(1e-5))

    # Assert
    assert all(b > a for a, b in zip(per_round, per_round[1:], strict=False))
    assert per_round[-1] == pytest.approx(by_noise[1])
    assert all(b < a for a, b in zip(by_noise, by_noise[1:], strict=False))


def test_subsampling_amplifies_privacy():
    epsilons = []
    for q in (1.0, 0.5, 0.1, 0.01):
        accountant = RdpAccountant()
        accountant.compose(1.0, q, 10)
        epsilons.append(accountant.epsilon(1e-5))

    assert all(b < a for a, b in zip(epsilons, epsilons[1:], strict=False))


def test_edge_cases():
    accountant = RdpAccountant()
    assert accountant.epsilon(1e-5) == 0.0  # nothing released yet
    accountant.compose(0.0, 1.0)
    assert accountant.epsilon(1e-5) == math.inf  # no noise: no guarantee
    assert rdp_sampled_gaussian(0.0, 1.0, 2.0) == 0.0
    with pytest.raises(ValueError, match="delta"):
        epsilon_from_rdp(DEFAULT_ORDERS, [0.0] * len(DEFAULT_ORDERS), 0.0)
    with pytest.raises(ValueError, match="sampling rate"):
        rdp_sampled_gaussian(1.5, 1.0, 2.0)
    with pytest.raises(ValueError, match="steps"):
        RdpAccountant().compose(1.0, 1.0, 0)


def test_state_round_trip_gives_the_same_budget():
    # Prepare
    accountant = RdpAccountant()
    accountant.compose(1.2, 1.0, 3)
    accountant.compose(0.9, 0.5)

    # Execute
    restored = RdpAccountant.from_state(accountant.state_dict())

    # Assert
    assert restored.releases == accountant.releases
    assert restored.num_releases == 4
    assert restored.epsilon(1e-6) == accountant.epsilon(1e-6)
    with pytest.raises(ValueError, match="unreadable"):
        RdpAccountant.from_state({"orders": [2.0]})
