"""Classical channel predictors from past (noisy) slots ``[N, T, A, S]`` -> ``[N, A, S]``.

- sample-and-hold: the last observed slot;
- linear extrapolation of the last two slots;
- AR(p) fitted on each sample's own past (complex taps shared by the sample's antenna x
  subcarrier entries, least squares over its slots), iterated to the horizon;
- Wiener/LS predictor: ``T`` complex taps over the observed slots fitted on a station's
  training rows (noisy past -> clean target), the same for every entry.
"""

from __future__ import annotations

import numpy as np

from rantune.tasks.baselines import by_site

AR_ORDER = 2
RIDGE = 1e-9  # relative ridge of the least-squares fits (numerical safety only)
_CHUNK = 512


def hold(past: np.ndarray) -> np.ndarray:
    """Sample-and-hold: the last observed slot."""
    return past[:, -1]


def linear(past: np.ndarray, horizon: int) -> np.ndarray:
    """Linear extrapolation of the last two slots ``horizon`` slots ahead (hold if one slot)."""
    if past.shape[1] < 2:
        return hold(past)
    return past[:, -1] + horizon * (past[:, -1] - past[:, -2])


def _solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Batched ridge solve of ``gram [N, p, p] a = rhs [N, p]``."""
    p = gram.shape[-1]
    scale = np.trace(gram, axis1=-2, axis2=-1).real / p + 1e-30  # [N]
    regular = gram + RIDGE * scale[:, None, None] * np.eye(p)
    return np.linalg.solve(regular, rhs[..., None])[..., 0]


def ar_coefficients(past: np.ndarray, order: int = AR_ORDER) -> np.ndarray:
    """Per-sample AR taps ``[N, p]`` with ``x_t ~ sum_i a_i x_(t-i)`` (least squares).

    ``past`` ``[N, T, A, S]`` complex; ``p = min(order, T - 1)`` (needs ``T >= 2``).
    """
    slots = past.shape[1]
    p = min(order, slots - 1)
    flat = past.reshape(len(past), slots, -1).astype(np.complex128)  # [N, T, E]
    # regressors [N, T - p, E, p]: lags 1..p of every predicted slot t = p .. T - 1
    lags = np.stack([flat[:, p - i : slots - i] for i in range(1, p + 1)], axis=-1)
    target = flat[:, p:]  # [N, T - p, E]
    gram = np.einsum("ntei,ntej->nij", lags.conj(), lags)  # [N, p, p]
    rhs = np.einsum("ntei,nte->ni", lags.conj(), target)  # [N, p]
    return _solve(gram, rhs)


def ar_predict(past: np.ndarray, horizon: int, order: int = AR_ORDER) -> np.ndarray:
    """AR(p) fitted on each sample's own past, iterated ``horizon`` slots ahead."""
    if past.shape[1] < 2:
        return hold(past)
    taps = ar_coefficients(past, order)  # [N, p]
    p = taps.shape[1]
    history = [past[:, t].astype(np.complex128) for t in range(past.shape[1])]
    for _ in range(horizon):
        nxt = sum(taps[:, i, None, None] * history[-1 - i] for i in range(p))
        history.append(nxt)
    return history[-1].astype(np.complex64)


def wiener_fit(past: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Taps ``[T]`` complex minimizing ``sum |target - sum_t w_t past_t|^2`` over all rows
    and entries (``past`` ``[n, T, A, S]``, ``target`` ``[n, A, S]``)."""
    slots = past.shape[1]
    gram = np.zeros((1, slots, slots), np.complex128)
    rhs = np.zeros((1, slots), np.complex128)
    for start in range(0, len(past), _CHUNK):
        x = past[start : start + _CHUNK].reshape(-1, slots, past[0, 0].size).astype(np.complex128)
        y = target[start : start + _CHUNK].reshape(len(x), -1).astype(np.complex128)  # [n, E]
        gram[0] += np.einsum("nie,nje->ij", x.conj(), x)  # [T, T]
        rhs[0] += np.einsum("nie,ne->i", x.conj(), y)  # [T]
    return _solve(gram, rhs)[0]


def wiener_predict(past: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """``sum_t w_t past_t`` ``[N, A, S]`` complex64."""
    return np.einsum("t,ntas->nas", taps, past).astype(np.complex64)


def wiener_by_site(
    site_index: np.ndarray,
    train: np.ndarray,
    past_train: np.ndarray,
    target_train: np.ndarray,
    test: np.ndarray,
    past_test: np.ndarray,
) -> np.ndarray:
    """Wiener/LS prediction of the ``test`` rows with taps fitted on the same station's
    ``train`` rows (pooled taps for a station without training rows)."""
    pooled = wiener_fit(past_train, target_train)
    where = {int(r): i for i, r in enumerate(train)}
    position = {int(r): i for i, r in enumerate(test)}
    train_sites = by_site(site_index, train)
    out = np.zeros((len(test), *past_test.shape[2:]), np.complex64)
    for site, rows in by_site(site_index, test).items():
        own = train_sites.get(site)
        taps = pooled
        if own is not None and len(own):
            idx = [where[int(r)] for r in own]
            taps = wiener_fit(past_train[idx], target_train[idx])
        at = [position[int(r)] for r in rows]
        out[at] = wiener_predict(past_test[at], taps)
    return out
