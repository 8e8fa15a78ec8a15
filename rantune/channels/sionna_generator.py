"""3GPP TR 38.901 channel generation with Sionna (UMi, UMa, RMa).

One site at a time: users are dropped in a 120-degree sector in front of the BS
(uniform in area between the site's min and max 2-D distance), with the site's
speed range (random heading) and indoor probability. Sionna draws the large-scale
parameters, LoS state and clusters; the OFDM response is sampled at
``num_subcarriers`` frequencies, over ``num_time_steps`` slots when channel
prediction data is asked for (Doppler follows from the UT velocity).

Aliasing: Sionna's scenario keeps the tensors passed to ``set_topology`` and its
properties (``los``, ``indoor``...) are reused across calls, so every value kept
from a batch is copied before the next batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rantune.channels.beams import beam_gains, dft_codebook
from rantune.channels.dataset import ChannelDataset
from rantune.config import RadioConfig, SiteConfig

BS_HEIGHT_M = {"umi": 10.0, "uma": 25.0, "rma": 35.0}
SECTOR_HALF_WIDTH_RAD = math.pi / 3.0
BATCH_SIZE = 256


def _channel_model(scenario: str, radio: RadioConfig):
    from sionna.phy.channel.tr38901 import RMa, UMa, UMi

    bs_array, ut_array = _arrays(radio)
    common = dict(
        carrier_frequency=radio.carrier_frequency_hz,
        ut_array=ut_array,
        bs_array=bs_array,
        direction="uplink",
        enable_pathloss=False,
        enable_shadow_fading=False,
    )
    if scenario == "rma":
        return RMa(**common)
    cls = UMi if scenario == "umi" else UMa
    return cls(o2i_model="low", **common)


def _arrays(radio: RadioConfig):
    from sionna.phy.channel.tr38901 import PanelArray

    bs_array = PanelArray(
        num_rows_per_panel=1,
        num_cols_per_panel=radio.num_bs_antennas,
        polarization="single",
        polarization_type="V",
        antenna_pattern="38.901",
        carrier_frequency=radio.carrier_frequency_hz,
    )
    ut_array = PanelArray(
        num_rows_per_panel=1,
        num_cols_per_panel=1,
        polarization="single",
        polarization_type="V",
        antenna_pattern="omni",
        carrier_frequency=radio.carrier_frequency_hz,
    )
    return bs_array, ut_array


def array_spacing_wavelengths(radio: RadioConfig) -> float:
    """Element spacing of the BS ULA in wavelengths, read from Sionna's array."""
    bs_array, _ = _arrays(radio)
    positions = bs_array.ant_pos[:, 1].double().cpu().numpy()  # local y axis, metres
    if len(positions) < 2:
        return 0.5
    wavelength = 299_792_458.0 / radio.carrier_frequency_hz
    return float(np.mean(np.diff(positions)) / wavelength)


def _drop_users(site: SiteConfig, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random user drop in the BS sector; all arrays float32 except ``indoor`` (bool)."""
    d_min, d_max = site.distance_range_m
    radius = np.sqrt(rng.uniform(d_min**2, d_max**2, batch))  # uniform in area
    azimuth = rng.uniform(-SECTOR_HALF_WIDTH_RAD, SECTOR_HALF_WIDTH_RAD, batch)
    indoor = rng.random(batch) < site.indoor_probability
    floors = rng.integers(1, 5, batch) if site.scenario != "rma" else np.ones(batch, int)
    height = np.where(indoor, 3.0 * (floors - 1) + 1.5, 1.5)
    speed = rng.uniform(*site.speed_range_mps, batch)
    heading = rng.uniform(-math.pi, math.pi, batch)
    position = np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), height], -1)
    velocity = np.stack([speed * np.cos(heading), speed * np.sin(heading), 0 * speed], -1)
    return {
        "position": position.astype(np.float32),
        "velocity": velocity.astype(np.float32),
        "speed": speed.astype(np.float32),
        "distance_2d": radius.astype(np.float32),
        "indoor": indoor,
        "ut_yaw": rng.uniform(-math.pi, math.pi, batch).astype(np.float32),
    }


def _noisy_estimate(
    csi: np.ndarray, snr_db: np.ndarray, pilot_spacing: int, rng: np.random.Generator
) -> np.ndarray:
    """LS estimate of unit-norm ``csi`` ``[B, A, S]`` at per-sample SNR ``[B]`` dB.

    Pilots sit on every ``pilot_spacing``-th subcarrier; the others are linearly
    interpolated (and held flat past the last pilot).
    """
    batch, antennas, subcarriers = csi.shape
    noise_var = 1.0 / (antennas * subcarriers) / (10.0 ** (snr_db / 10.0))  # [B]
    scale = np.sqrt(noise_var / 2.0)[:, None, None]
    noise = scale * (rng.standard_normal(csi.shape) + 1j * rng.standard_normal(csi.shape))
    estimate = csi + noise
    if pilot_spacing > 1:
        pilots = np.arange(0, subcarriers, pilot_spacing)
        grid = np.arange(subcarriers)
        flat = estimate[..., pilots].reshape(-1, len(pilots))
        real = np.stack([np.interp(grid, pilots, row.real) for row in flat])
        imag = np.stack([np.interp(grid, pilots, row.imag) for row in flat])
        estimate = (real + 1j * imag).reshape(batch, antennas, subcarriers)
    return estimate.astype(np.complex64)


def generate_site(
    site: SiteConfig,
    radio: RadioConfig,
    site_index: int = 0,
    on_batch=None,
) -> ChannelDataset:
    """Generate all samples of one site.

    Parameters
    ----------
    site, radio : the site and the preset's radio geometry.
    site_index : index stored in the ``site_index`` field.
    on_batch : optional callback ``on_batch(num_new_samples)`` for progress bars.

    Returns
    -------
    ChannelDataset
        ``site.num_samples`` rows; see :mod:`rantune.channels.dataset` for fields.
    """
    import sionna.phy
    from sionna.phy.channel import cir_to_ofdm_channel, subcarrier_frequencies

    rng = np.random.default_rng([site.seed, 7])
    model = _channel_model(site.scenario, radio)
    codebook = dft_codebook(
        radio.num_bs_antennas, radio.num_beams, array_spacing_wavelengths(radio)
    )
    frequencies = subcarrier_frequencies(radio.num_subcarriers, radio.subcarrier_spacing_hz)
    num_slots = max(radio.num_time_steps, 1)
    bs_height = BS_HEIGHT_M[site.scenario]
    mid_distance = 0.5 * sum(site.distance_range_m)
    downtilt = math.atan2(bs_height - 1.5, mid_distance)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, site.num_samples, BATCH_SIZE):
        batch = min(BATCH_SIZE, site.num_samples - start)
        sionna.phy.config.seed = int(site.seed * 100_003 + start) % (2**31 - 1)
        users = _drop_users(site, batch, rng)
        ut_loc = torch.tensor(users["position"])[:, None, :]
        bs_loc = torch.tensor([0.0, 0.0, bs_height]).expand(batch, 1, 3).clone()
        ut_orientation = torch.zeros(batch, 1, 3)
        ut_orientation[..., 0] = torch.tensor(users["ut_yaw"])[:, None]
        bs_orientation = torch.zeros(batch, 1, 3)
        bs_orientation[..., 1] = downtilt
        velocity = torch.tensor(users["velocity"])[:, None, :]
        in_state = torch.tensor(users["indoor"])[:, None]
        if start > 0:
            # Sionna freezes the topology's shapes (the last batch may be smaller) and
            # copies later values into the first call's tensors: start afresh per batch.
            model.reset_topology()
        model.set_topology(ut_loc, bs_loc, ut_orientation, bs_orientation, velocity, in_state)
        a, tau = model(num_time_samples=num_slots, sampling_frequency=1.0 / radio.slot_duration_s)
        response = cir_to_ofdm_channel(frequencies, a, tau, normalize=False)
        # [B, rx=1, A, tx=1, 1, T, S] -> [B, T, A, S]
        sequence = response[:, 0, :, 0, 0].permute(0, 2, 1, 3).cpu().numpy().astype(np.complex64)
        los = np.array(model._scenario.los.detach().cpu().numpy(), copy=True).reshape(batch)
        snapshot = sequence[:, 0]
        norm = np.sqrt((np.abs(snapshot) ** 2).sum(axis=(1, 2))).astype(np.float32)  # [B]
        safe_norm = np.maximum(norm, 1e-30)
        sequence = sequence / safe_norm[:, None, None, None]
        csi = sequence[:, 0]
        snr_db = rng.uniform(*site.snr_range_db, batch).astype(np.float32)
        gains = beam_gains(csi, codebook)
        part = {
            "csi": np.ascontiguousarray(csi),
            "csi_noisy": _noisy_estimate(csi, snr_db, radio.pilot_spacing, rng),
            "csi_norm": norm,
            "los": los.astype(np.int8),
            "indoor": users["indoor"].astype(np.int8),
            "beam_index": gains.argmax(axis=1).astype(np.int64),
            "beam_gains": gains,
            "ut_position": users["position"],
            "distance_2d": users["distance_2d"],
            "speed": users["speed"],
            "snr_db": snr_db,
            "site_index": np.full(batch, site_index, dtype=np.int64),
        }
        if radio.num_time_steps:
            part["csi_sequence"] = np.ascontiguousarray(sequence)
        parts.append(part)
        if on_batch is not None:
            on_batch(batch)
    return ChannelDataset({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
