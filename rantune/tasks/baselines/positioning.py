"""Classical single-station positioning: LoS geometry and k-nearest-neighbour fingerprints.

Coordinates are those of the ``ut_position`` field: metres relative to the BS, ``x``
along the boresight azimuth, ``y`` horizontal along the ULA axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rantune.tasks.baselines import by_site
from rantune.tasks.baselines.angle_delay import fingerprint
from rantune.tasks.baselines.beams import steering

SPEED_OF_LIGHT = 299_792_458.0
ANGLE_OVERSAMPLING = 64  # direction grid points per antenna of the angle search
KNN_NEIGHBOURS = 5
_CHUNK = 512


def direction_cosine(csi: np.ndarray) -> np.ndarray:
    """Direction cosine along the array axis of the strongest path, ``[N, A, S]`` -> ``[N]``.

    Matched-filter search ``argmax_u sum_s |a(u)^H h_s|^2`` on a grid of
    ``ANGLE_OVERSAMPLING`` points per antenna, refined by a parabola through the peak.
    """
    antennas = csi.shape[1]
    size = ANGLE_OVERSAMPLING * antennas
    grid = -1.0 + 2.0 * np.arange(size) / size
    a = steering(antennas, grid)  # [G, A]
    power = (np.abs(np.einsum("ga,nas->ngs", a.conj(), csi)) ** 2).sum(axis=-1)  # [N, G]
    peak = power.argmax(axis=1)
    rows = np.arange(len(csi))
    left, mid, right = power[rows, peak - 1], power[rows, peak], power[rows, (peak + 1) % size]
    denom = left - 2 * mid + right
    shift = np.where(
        np.abs(denom) > 1e-30, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0
    )
    return np.clip(grid[peak] + np.clip(shift, -0.5, 0.5) * (2.0 / size), -1.0, 1.0)


def los_position(
    u: np.ndarray,
    delay_s: np.ndarray,
    height_sq: float,
    sign: float,
    front: np.ndarray | None = None,
) -> np.ndarray:
    """Horizontal position ``[N, 2]`` of a LoS user at direction cosine ``u`` and delay.

    Range ``d = c tau``; the height difference ``dz`` (``height_sq = dz^2``) gives the
    horizontal range ``r = sqrt(d^2 - dz^2)``; ``y = sign u d`` along the array axis and
    ``x = +-sqrt(r^2 - y^2)``: in front of the array unless ``front`` ``[N]`` says not (a
    ULA cannot tell front from back by angle).
    """
    distance = SPEED_OF_LIGHT * np.asarray(delay_s, np.float64)
    horizontal = np.sqrt(np.maximum(distance**2 - height_sq, 0.0))
    y = np.clip(sign * u * distance, -horizontal, horizontal)
    x = np.sqrt(np.maximum(horizontal**2 - y**2, 0.0))
    if front is not None:
        x = np.where(front, x, -x)
    return np.stack([x, y], axis=-1)


def power_level_db(csi_norm: np.ndarray, delay_s: np.ndarray) -> np.ndarray:
    """Received amplitude corrected for free-space spreading, ``20 log10(|h| d)`` dB ``[N]``:
    about constant for LoS users in front of the array, far lower behind it (the element
    pattern's back lobe)."""
    distance = SPEED_OF_LIGHT * np.asarray(delay_s, np.float64)
    return 20.0 * np.log10(np.maximum(np.asarray(csi_norm, np.float64) * distance, 1e-30))


@dataclass(frozen=True)
class LosGeometry:
    """One station's fitted geometry: ``dz^2``, the array axis sign and the power level
    (dB, :func:`power_level_db`) below which a user is placed behind the array."""

    height_sq: float
    sign: float
    back_below_db: float = -np.inf

    def locate(self, u: np.ndarray, delay_s: np.ndarray, csi_norm: np.ndarray) -> np.ndarray:
        front = power_level_db(csi_norm, delay_s) >= self.back_below_db
        return los_position(u, delay_s, self.height_sq, self.sign, front)


def fit_los_geometry(
    u: np.ndarray, delay_s: np.ndarray, position: np.ndarray, los: np.ndarray, csi_norm: np.ndarray
) -> LosGeometry:
    """A station's :class:`LosGeometry` from its training rows (``position`` ``[n, 2]``).

    ``dz^2`` = median of ``(c tau)^2 - r^2`` over LoS rows (all rows if none); the axis
    sign is the one with the smaller median error; the front/back power threshold
    maximizes the share of training rows put on their true side.
    """
    pick = los.astype(bool) if los.any() else np.ones(len(los), bool)
    distance = SPEED_OF_LIGHT * np.asarray(delay_s, np.float64)
    height_sq = float(max(np.median(distance[pick] ** 2 - (position[pick] ** 2).sum(1)), 0.0))
    errors = {}
    for s in (1.0, -1.0):
        estimate = los_position(u[pick], delay_s[pick], height_sq, s, position[pick, 0] >= 0)
        errors[s] = np.median(np.linalg.norm(estimate - position[pick], axis=1))
    behind = position[:, 0] < 0
    threshold = -np.inf
    if behind.any() and not behind.all():
        level = power_level_db(csi_norm, delay_s)
        candidates = np.concatenate([[-np.inf], np.unique(level)])
        correct = [((level >= t) != behind).mean() for t in candidates]
        threshold = float(candidates[int(np.argmax(correct))])
    return LosGeometry(height_sq, min(errors, key=errors.get), threshold)


def los_geometry(
    csi_noisy: np.ndarray,
    delay_s: np.ndarray,
    csi_norm: np.ndarray,
    position: np.ndarray,
    los: np.ndarray,
    site_index: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
) -> np.ndarray:
    """LoS-geometry locator: angle from each row's noisy CSI, range from its strongest
    path's delay, front or back of the array from its received power; height, axis sign
    and the power threshold fitted per station on its training rows.

    Field arrays are indexed by row; returns ``[len(test), 2]`` positions.
    """
    out = np.zeros((len(test), 2))
    position_of = {int(r): i for i, r in enumerate(test)}
    train_sites = by_site(site_index, train)
    for site, rows in by_site(site_index, test).items():
        fit_rows = train_sites.get(site, train)
        geometry = fit_los_geometry(
            direction_cosine(csi_noisy[fit_rows]),
            delay_s[fit_rows],
            position[fit_rows, :2],
            los[fit_rows],
            csi_norm[fit_rows],
        )
        at = [position_of[int(r)] for r in rows]
        out[at] = geometry.locate(direction_cosine(csi_noisy[rows]), delay_s[rows], csi_norm[rows])
    return out


def knn_positions(
    train_features: np.ndarray, train_positions: np.ndarray, features: np.ndarray, k: int
) -> np.ndarray:
    """Inverse-distance weighted mean position of the ``k`` nearest training fingerprints."""
    k = max(1, min(k, len(train_features)))
    out = np.zeros((len(features), train_positions.shape[1]))
    for start in range(0, len(features), _CHUNK):
        chunk = features[start : start + _CHUNK]
        dist = np.sqrt(
            np.maximum(
                (chunk**2).sum(1)[:, None]
                + (train_features**2).sum(1)[None]
                - 2 * chunk @ train_features.T,
                0.0,
            )
        )  # [m, n]
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]  # [m, k]
        d = np.take_along_axis(dist, nearest, axis=1)
        weight = 1.0 / (d + 1e-9)
        weight /= weight.sum(axis=1, keepdims=True)
        out[start : start + len(chunk)] = np.einsum("mk,mkc->mc", weight, train_positions[nearest])
    return out


def knn_fingerprinting(
    csi_noisy: np.ndarray,
    position: np.ndarray,
    site_index: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    k: int = KNN_NEIGHBOURS,
) -> np.ndarray:
    """kNN on angle-delay fingerprints of each station's own training rows: ``[len(test), 2]``."""
    out = np.zeros((len(test), 2))
    position_of = {int(r): i for i, r in enumerate(test)}
    train_sites = by_site(site_index, train)
    for site, rows in by_site(site_index, test).items():
        fit_rows = train_sites.get(site, train)
        at = [position_of[int(r)] for r in rows]
        out[at] = knn_positions(
            fingerprint(csi_noisy[fit_rows]).real,
            position[fit_rows, :2].astype(np.float64),
            fingerprint(csi_noisy[rows]).real,
            k,
        )
    return out
