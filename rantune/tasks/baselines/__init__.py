"""Classical (non-learned) baselines of the tasks: each the strongest cheap method an
engineer would use without a learned model, scored on the same rows as the models.

- :mod:`~rantune.tasks.baselines.angle_delay`: 2-D DFT angle-delay profiles (LoS peak
  ratio, fingerprint features).
- :mod:`~rantune.tasks.baselines.beams`: best of Set B, single-path interpolation of Set B
  gains, exhaustive search on partial CSI, LMMSE reconstruction with the station's own
  covariance.
- :mod:`~rantune.tasks.baselines.prediction`: sample-and-hold, linear extrapolation,
  per-sample AR(p), Wiener/LS predictor fitted on the station's training rows.
- :mod:`~rantune.tasks.baselines.positioning`: LoS geometry from the strongest path's
  angle and delay, k-nearest-neighbour fingerprinting.

Fitted baselines are fitted per station (``site_index``) on its training rows.
"""

from __future__ import annotations

import numpy as np


def by_site(site_index: np.ndarray, rows: np.ndarray) -> dict[int, np.ndarray]:
    """``{site: rows of that site}`` (rows keep their order)."""
    sites = site_index[rows]
    return {int(s): rows[sites == s] for s in np.unique(sites)}


def best_of(results: dict[str, dict[str, float]], primary: str, higher: bool) -> dict[str, float]:
    """Flatten per-method baseline metrics: ``{method}_{metric}`` for every method, and the
    plain metric names for the method best on ``primary`` (the strongest classical
    reference on these rows; NaN-valued methods never win)."""
    flat: dict[str, float] = {}
    best_name, best_value = None, None
    for name, metrics in results.items():
        for key, value in metrics.items():
            flat[f"{name}_{key}"] = float(value)
        value = metrics.get(primary, float("nan"))
        if np.isfinite(value) and (
            best_value is None or (value > best_value if higher else value < best_value)
        ):
            best_name, best_value = name, value
    if best_name is not None:
        flat.update({k: float(v) for k, v in results[best_name].items()})
    return flat
