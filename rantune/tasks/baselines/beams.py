"""Classical beam selection from a partial observation (Set B RSRPs or partial CSI).

Every function returns Set A scores ``[N, K]`` (higher = better beam), so the same
metrics (:func:`rantune.tasks.metrics.beam_metrics`) score them and the models.
"""

from __future__ import annotations

import numpy as np

from rantune.channels.beams import beam_gains
from rantune.tasks.baselines import by_site
from rantune.tasks.observation import ELEMENT_SPACING_WAVELENGTHS, BeamObservation

DIRECTION_OVERSAMPLING = 16  # direction grid of the single-path fit: 16 points per Set A beam
RIDGE = 1e-6  # relative ridge of the fitted linear maps (numerical safety only)


def steering(num_antennas: int, directions: np.ndarray) -> np.ndarray:
    """Unit-norm ULA steering vectors ``[G, A]`` for direction cosines ``[G]`` (the
    codebook's convention: beam ``k`` is the steering vector of its direction)."""
    positions = np.arange(num_antennas) * ELEMENT_SPACING_WAVELENGTHS
    return np.exp(2j * np.pi * np.outer(directions, positions)) / np.sqrt(num_antennas)


def best_of_set_b(obs: BeamObservation, rsrp: np.ndarray) -> np.ndarray:
    """The strongest measured Set B beam (``[N, Bm]`` RSRPs -> ``[N, K]`` scores)."""
    return obs.set_a_scores(rsrp)


def single_path_fit(obs: BeamObservation, rsrp: np.ndarray) -> np.ndarray:
    """Interpolate the Set B gains with the one-path model that fits them best.

    For each direction ``u`` on a fine grid, the Set B gains of a plane wave from ``u``
    are ``alpha p_b(u)``; the ``u`` with the largest normalized correlation
    ``<r, p(u)>^2 / |p(u)|^2`` (least squares over ``alpha``) is kept and the Set A gains
    of that plane wave, ``alpha |w_a^H a(u)|^2``, are the scores. Exact for a single
    plane wave; on multipath it interpolates the dominant lobe.
    """
    antennas = obs.shape[0]
    grid_size = DIRECTION_OVERSAMPLING * len(obs.codebook)
    directions = -1.0 + 2.0 * np.arange(grid_size) / grid_size  # [G]
    a = steering(antennas, directions)  # [G, A]
    pattern_b = np.abs(obs.set_b.conj() @ a.T) ** 2  # [Bm, G]
    pattern_a = np.abs(obs.codebook.conj() @ a.T) ** 2  # [K, G]
    corr = rsrp @ pattern_b  # [N, G]
    energy = np.maximum((pattern_b**2).sum(axis=0), 1e-30)  # [G]
    best = np.argmax(corr**2 / energy, axis=1)  # [N]
    alpha = corr[np.arange(len(best)), best] / energy[best]  # [N]
    return alpha[:, None] * pattern_a[:, best].T  # [N, K]


def _linear_map(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine LMMSE map ``y ~ mu_y + (x - mu_x) M`` from rows ``x`` ``[n, p]``, ``y`` ``[n, q]``."""
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mu_x, y - mu_y
    gram = xc.T @ xc
    gram += RIDGE * (np.trace(gram) / max(len(gram), 1) + 1e-30) * np.eye(len(gram))
    return mu_x, mu_y, np.linalg.solve(gram, xc.T @ yc)


def gain_lmmse(
    obs: BeamObservation,
    site_index: np.ndarray,
    train: np.ndarray,
    rsrp_train: np.ndarray,
    gains_train: np.ndarray,
    test: np.ndarray,
    rsrp_test: np.ndarray,
) -> np.ndarray:
    """Set A gains from Set B RSRPs by the LMMSE (affine least-squares) map fitted on each
    station's training rows (the station's own gain statistics); pooled fit for a station
    with too few rows. Inputs: row indices and their RSRPs ``[n, Bm]`` / gains ``[n, K]``."""
    pooled = _linear_map(rsrp_train, gains_train)
    where = {int(r): i for i, r in enumerate(train)}
    scores = np.zeros((len(test), len(obs.codebook)))
    train_sites = by_site(site_index, train)
    position = {int(r): i for i, r in enumerate(test)}
    for site, rows in by_site(site_index, test).items():
        own = train_sites.get(site, np.array([], np.int64))
        idx = [where[int(r)] for r in own]
        fit = (
            _linear_map(rsrp_train[idx], gains_train[idx])
            if len(idx) > 2 * rsrp_train.shape[1]
            else pooled
        )
        mu_x, mu_y, m = fit
        at = [position[int(r)] for r in rows]
        scores[at] = mu_y + (rsrp_test[at] - mu_x) @ m
    return scores


def exhaustive_partial(obs: BeamObservation, csi_noisy: np.ndarray) -> np.ndarray:
    """Codebook search on the observed entries only (zeros elsewhere): ``[N, K]`` gains."""
    return beam_gains(obs.masked(csi_noisy), obs.codebook)


def noise_variance(snr_db: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per-entry noise variance ``[N]`` of ``csi_noisy`` (unit-norm CSI) at ``snr_db``."""
    return 1.0 / (shape[0] * shape[1]) / 10.0 ** (np.asarray(snr_db, np.float64) / 10.0)


def station_covariance(csi: np.ndarray) -> np.ndarray:
    """Covariance ``E[h h^H]`` ``[D, D]`` (``D = A S``, row-major ``a S + s``) of one
    station's channels ``[n, A, S]``: the sample covariance shrunk towards its Kronecker
    (antenna x frequency) structure with the Ledoit-Wolf weight, so a few hundred rows
    give a well-conditioned estimate of a 512-dimensional covariance."""
    n = len(csi)
    x = csi.reshape(n, -1).astype(np.complex128)  # [n, D]
    sample = x.T @ x.conj() / n
    h = csi.astype(np.complex128)
    c_ant = np.einsum("nas,nbs->ab", h, h.conj()) / n  # [A, A]
    c_freq = np.einsum("nas,nat->st", h, h.conj()) / n  # [S, S]
    target = np.kron(c_ant, c_freq) / max(np.trace(c_ant).real, 1e-30)
    spread = ((np.linalg.norm(x, axis=1) ** 4).mean() - np.linalg.norm(sample) ** 2) / n
    distance = np.linalg.norm(sample - target) ** 2
    weight = float(np.clip(spread / max(distance, 1e-30), 0.0, 1.0))
    return (1.0 - weight) * sample + weight * target


def csi_lmmse(
    obs: BeamObservation,
    csi: np.ndarray,
    csi_noisy: np.ndarray,
    snr_db: np.ndarray,
    site_index: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
) -> np.ndarray:
    """LMMSE reconstruction of the full CSI from the observed noisy entries, then search.

    ``h_hat = C_ho (C_oo + sigma^2 I)^-1 y_o`` with ``C = E[h h^H]`` estimated from the
    station's training rows (``csi`` of those rows, ``[N, A, S]`` fields indexed by row)
    (:func:`station_covariance`) and ``sigma^2`` the row's noise variance (its SNR).
    Returns ``[len(test), K]`` gains.
    """
    antennas, subcarriers = obs.shape
    observed = np.flatnonzero(obs.mask.reshape(-1))
    scores = np.zeros((len(test), len(obs.codebook)))
    position = {int(r): i for i, r in enumerate(test)}
    train_sites = by_site(site_index, train)
    for site, rows in by_site(site_index, test).items():
        own = train_sites.get(site)
        fit_rows = own if own is not None and len(own) >= 8 else train
        cov = station_covariance(csi[fit_rows])  # [D, D]
        lam, u = np.linalg.eigh(cov[np.ix_(observed, observed)])  # C_oo = U diag(lam) U^H
        cov_ho = cov[:, observed]  # [D, No] E[h h_o^H]
        y = csi_noisy[rows].reshape(len(rows), -1)[:, observed].astype(np.complex128)  # [m, No]
        sigma2 = noise_variance(snr_db[rows], obs.shape)  # [m]
        z = (y @ u.conj()) / (np.maximum(lam, 0.0)[None, :] + sigma2[:, None])  # [m, No]
        estimate = z @ (cov_ho @ u).T  # [m, D]
        at = [position[int(r)] for r in rows]
        scores[at] = beam_gains(estimate.reshape(len(rows), antennas, subcarriers), obs.codebook)
    return scores
