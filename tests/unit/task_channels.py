"""Hand-built channel data sets for the task tests: plane waves whose answers are known.

A plane wave from direction cosine ``u`` (along the ULA axis) with delay ``tau`` has
``h[n, s] = exp(2j pi d n u) exp(-2j pi s tau / S)`` (``d`` = half a wavelength, the DFT
codebook's convention), normalized to unit Frobenius norm; its ``csi_sequence`` turns
at a Doppler phase step ``doppler`` (radians per slot).
"""

from __future__ import annotations

import numpy as np

from rantune.channels.beams import beam_gains, dft_codebook
from rantune.channels.dataset import ChannelDataset

SPEED_OF_LIGHT = 299_792_458.0


def plane_waves(
    directions: np.ndarray,
    delays: np.ndarray | None = None,
    antennas: int = 16,
    subcarriers: int = 32,
) -> np.ndarray:
    """``[N, A, S]`` complex64 unit-norm plane waves (``delays`` in taps of 1 / (S df))."""
    directions = np.asarray(directions, np.float64)
    delays = np.zeros(len(directions)) if delays is None else np.asarray(delays, np.float64)
    a = np.exp(1j * np.pi * np.outer(directions, np.arange(antennas)))  # [N, A]
    f = np.exp(-2j * np.pi * np.outer(delays, np.arange(subcarriers)) / subcarriers)  # [N, S]
    h = a[:, :, None] * f[:, None, :]
    return (h / np.sqrt(antennas * subcarriers)).astype(np.complex64)


def dataset(
    csi: np.ndarray,
    num_beams: int = 16,
    sequence: np.ndarray | None = None,
    snr_db: float = 200.0,
    noisy: np.ndarray | None = None,
    speed: np.ndarray | None = None,
    site_index: np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> ChannelDataset:
    """A data set around ``csi`` ``[N, A, S]`` with labels from the DFT codebook.

    ``csi_noisy`` = ``noisy`` (default: ``csi`` itself, a noiseless estimate); ``snr_db``
    sets the SNR the tasks draw their own noise at (200 dB: none to speak of).
    """
    n = len(csi)
    gains = beam_gains(csi, dft_codebook(csi.shape[1], num_beams, 0.5))
    arrays = {
        "csi": csi,
        "csi_noisy": (csi if noisy is None else noisy).astype(np.complex64),
        "csi_norm": np.ones(n, np.float32),
        "los": np.ones(n, np.int8),
        "indoor": np.zeros(n, np.int8),
        "beam_index": gains.argmax(1).astype(np.int64),
        "beam_gains": gains,
        "ut_position": np.zeros((n, 3), np.float32),
        "distance_2d": np.ones(n, np.float32),
        "speed": np.ones(n, np.float32) if speed is None else speed.astype(np.float32),
        "snr_db": np.full(n, snr_db, np.float32),
        "site_index": np.zeros(n, np.int64) if site_index is None else site_index,
    }
    if sequence is not None:
        arrays["csi_sequence"] = sequence.astype(np.complex64)
    arrays.update(extra or {})
    return ChannelDataset(arrays)


def rotating(csi: np.ndarray, doppler: np.ndarray, slots: int = 6) -> np.ndarray:
    """``[N, T, A, S]``: slot ``t`` = ``csi * exp(1j doppler t)`` (a single-path Doppler)."""
    phase = np.exp(1j * np.outer(doppler, np.arange(slots)))  # [N, T]
    return (csi[:, None] * phase[:, :, None, None]).astype(np.complex64)


def los_users(
    positions: np.ndarray, bs_height: float = 25.0, antennas: int = 16, subcarriers: int = 32
) -> ChannelDataset:
    """Ray-traced-like LoS users at ``positions`` ``[N, 3]`` (m, relative to the BS foot):
    plane waves from ``u = y / d``, the ``delay_s`` field ``d / c``, no delay in the CSI
    (delays normalized, as the ray tracer stores them)."""
    offset = positions - np.array([0.0, 0.0, bs_height])
    distance = np.linalg.norm(offset, axis=1)
    csi = plane_waves(offset[:, 1] / distance, antennas=antennas, subcarriers=subcarriers)
    extra = {
        "delay_s": (distance / SPEED_OF_LIGHT).astype(np.float32),
        "aod_azimuth_rad": np.arctan2(offset[:, 1], offset[:, 0]).astype(np.float32),
        "aod_elevation_rad": np.zeros(len(positions), np.float32),
        "ut_position_scene": positions.astype(np.float32),
    }
    data = dataset(csi, extra=extra)
    data.arrays["ut_position"] = positions.astype(np.float32)
    return data
