"""DFT beam codebook for the BS uniform linear array and beam labels.

The codebook is defined in the array's *local* frame: beam ``k`` steers to the
direction cosine ``u_k = -1 + (2k + 1) / K`` along the array axis, so the codebook
is independent of the panel's orientation in the scenario.
"""

from __future__ import annotations

import numpy as np

from rantune.errors import InputError


def dft_codebook(num_antennas: int, num_beams: int, spacing_wavelengths: float = 0.5) -> np.ndarray:
    """Unit-norm DFT beamforming codebook.

    Parameters
    ----------
    num_antennas : number of ULA elements ``N``.
    num_beams : codebook size ``K`` (>= 1).
    spacing_wavelengths : element spacing in wavelengths.

    Returns
    -------
    np.ndarray
        ``[K, N]`` complex64; row ``k`` is the weight vector of beam ``k``.
    """
    if num_beams < 1:
        raise InputError(f"num_beams={num_beams} is invalid: a codebook needs at least 1 beam")
    if num_antennas < 1:
        raise InputError(f"num_antennas={num_antennas} is invalid: expected >= 1")
    directions = -1.0 + (2.0 * np.arange(num_beams) + 1.0) / num_beams  # [K]
    positions = np.arange(num_antennas) * spacing_wavelengths  # [N], in wavelengths
    phase = 2.0 * np.pi * np.outer(directions, positions)  # [K, N]
    return (np.exp(1j * phase) / np.sqrt(num_antennas)).astype(np.complex64)


def beam_gains(csi: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Beamforming gain of every codeword, summed over subcarriers.

    Parameters
    ----------
    csi : ``[..., N, S]`` complex, antennas x subcarriers.
    codebook : ``[K, N]`` complex.

    Returns
    -------
    np.ndarray
        ``[..., K]`` float32, ``g_k = sum_s |w_k^H h_s|^2``.
    """
    projected = np.einsum("kn,...ns->...ks", codebook.conj(), csi)  # [..., K, S]
    return (np.abs(projected) ** 2).sum(axis=-1).astype(np.float32)
