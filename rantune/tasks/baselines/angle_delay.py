"""Angle-delay profiles: the 2-D DFT of CSI over antennas (angle) and subcarriers (delay)."""

from __future__ import annotations

import numpy as np


def angle_delay_power(csi: np.ndarray, oversample: int = 2) -> np.ndarray:
    """Power of the angle-delay transform, ``[N, A, S]`` -> ``[N, o A, o S]`` float64.

    DFT over the antenna axis (angle bins) and inverse DFT over subcarriers (delay
    taps), each zero-padded ``oversample`` times so off-grid paths are not split
    between bins.
    """
    antennas, subcarriers = csi.shape[-2:]
    angle = np.fft.fft(csi.astype(np.complex128), n=oversample * antennas, axis=-2)
    both = np.fft.ifft(angle, n=oversample * subcarriers, axis=-1)
    return np.abs(both) ** 2


def peak_ratio(csi: np.ndarray, oversample: int = 2) -> np.ndarray:
    """Power of the strongest angle-delay bin over the total, ``[N, A, S]`` -> ``[N]``.

    A line-of-sight channel concentrates in one (angle, delay) bin; the strongest delay
    tap alone (:func:`rantune.tasks.classification.strongest_tap_ratio`) mixes the paths
    that arrive together from different directions.
    """
    power = angle_delay_power(csi, oversample).reshape(len(csi), -1)
    return power.max(axis=1) / np.maximum(power.sum(axis=1), 1e-30)


def fingerprint(csi: np.ndarray) -> np.ndarray:
    """Unit-norm angle-delay amplitude profile ``[N, A * S]``: invariant to a common phase
    (and, with normalized delays, to the timing offset)."""
    amplitude = np.sqrt(angle_delay_power(csi, oversample=1)).reshape(len(csi), -1)
    return amplitude / np.maximum(np.linalg.norm(amplitude, axis=1, keepdims=True), 1e-30)
