"""LoS state against 2-D distance follows TR 38.901 Table 7.4.2-1 for outdoor users.

Each scenario's generated ``los`` labels are binned by ``distance_2d``; in every bin
the LoS count must agree with the table's probability (averaged over the bin's users)
within 3 binomial standard deviations. Users are outdoors at 1.5 m, so the UMa
height term C'(h_UT) is 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from rantune.channels.sionna_generator import generate_site
from rantune.config import RadioConfig, SiteConfig

# The LoS state does not depend on the array: the smallest geometry is the fastest.
RADIO = RadioConfig(num_bs_antennas=2, num_subcarriers=4, num_beams=2, num_time_steps=0)
NUM_SAMPLES = 1024  # per scenario: 4 Sionna batches
MAX_SIGMA = 3.0


def p_los_umi(d: np.ndarray) -> np.ndarray:
    """UMi street canyon."""
    return np.where(d <= 18.0, 1.0, 18.0 / d + np.exp(-d / 36.0) * (1.0 - 18.0 / d))


def p_los_uma(d: np.ndarray, h_ut: float = 1.5) -> np.ndarray:
    """UMa with C'(h_UT) = 0 for h_UT <= 13 m, else ((h_UT - 13) / 10) ** 1.5."""
    c = 0.0 if h_ut <= 13.0 else ((h_ut - 13.0) / 10.0) ** 1.5
    base = 18.0 / d + np.exp(-d / 63.0) * (1.0 - 18.0 / d)
    return np.where(d <= 18.0, 1.0, base * (1.0 + c * 1.25 * (d / 100.0) ** 3 * np.exp(-d / 150.0)))


def p_los_rma(d: np.ndarray) -> np.ndarray:
    """RMa."""
    return np.where(d <= 10.0, 1.0, np.exp(-(d - 10.0) / 1000.0))


FORMULAS = {"umi": p_los_umi, "uma": p_los_uma, "rma": p_los_rma}
# Drop range and bin edges (metres). Users are uniform in area, so bins widen towards
# the BS to hold 40+ users each (1024 users per scenario).
BINS = {
    "umi": [10, 60, 100, 140, 180, 230, 300],
    "uma": [35, 90, 140, 200, 260, 330, 400],
    "rma": [35, 1000, 1800, 2600, 3400, 4200, 5000],
}
SEEDS = {"umi": 401, "uma": 402, "rma": 403}


def bin_z_scores(distance: np.ndarray, los: np.ndarray, edges, formula) -> np.ndarray:
    """Per bin: (LoS count - expected count) / binomial standard deviation."""
    scores = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (distance >= lo) & (distance < hi)
        p = formula(distance[in_bin])
        variance = max(float((p * (1.0 - p)).sum()), 1e-12)
        scores.append((los[in_bin].sum() - p.sum()) / np.sqrt(variance))
    return np.array(scores)


@pytest.fixture(scope="module")
def outdoor_links():
    links = {}
    for scenario, edges in BINS.items():
        site = SiteConfig(
            name=f"los-{scenario}",
            scenario=scenario,
            num_samples=NUM_SAMPLES,
            indoor_probability=0.0,
            distance_range_m=(float(edges[0]), float(edges[-1])),
            speed_range_mps=(0.0, 3.0),
            seed=SEEDS[scenario],
        )
        data = generate_site(site, RADIO)
        links[scenario] = (data["distance_2d"].astype(np.float64), data["los"].astype(np.int64))
    return links


def test_reference_formulas_match_table_values():
    # Prepare / Execute / Assert: spot values of Table 7.4.2-1
    assert p_los_umi(np.array([10.0]))[0] == 1.0
    assert p_los_umi(np.array([100.0]))[0] == pytest.approx(0.18 + np.exp(-100 / 36) * 0.82)
    assert p_los_uma(np.array([100.0]))[0] == pytest.approx(0.18 + np.exp(-100 / 63) * 0.82)
    assert p_los_uma(np.array([100.0]), h_ut=23.0)[0] > p_los_uma(np.array([100.0]))[0]
    assert p_los_rma(np.array([1010.0]))[0] == pytest.approx(np.exp(-1.0))


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["umi", "uma", "rma"])
def test_los_fraction_per_distance_bin_follows_tr38901(outdoor_links, scenario):
    # Prepare
    distance, los = outdoor_links[scenario]
    edges = BINS[scenario]

    # Execute
    z = bin_z_scores(distance, los, edges, FORMULAS[scenario])
    counts = np.histogram(distance, bins=edges)[0]

    # Assert
    assert len(distance) == NUM_SAMPLES
    assert counts.min() >= 30, counts  # every bin carries evidence
    assert np.all(np.abs(z) < MAX_SIGMA), dict(zip(edges[:-1], np.round(z, 2), strict=True))
    assert float((z**2).sum()) < 22.5  # chi-square, 6 dof: p = 0.001


@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "wrong"), [("umi", "rma"), ("uma", "rma"), ("rma", "umi")])
def test_the_check_rejects_another_scenarios_formula(outdoor_links, scenario, wrong):
    # Prepare: the same data scored against the wrong table row must fail the check
    distance, los = outdoor_links[scenario]

    # Execute
    z = bin_z_scores(distance, los, BINS[scenario], FORMULAS[wrong])

    # Assert
    assert np.abs(z).max() > 2 * MAX_SIGMA
