"""Sionna TR 38.901 channel generation: fields, physics, beams, noise, determinism."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rantune.channels.beams import beam_gains, dft_codebook
from rantune.channels.dataset import OPTIONAL_FIELDS, REQUIRED_FIELDS, ChannelDataset
from rantune.channels.sionna_generator import (
    BATCH_SIZE,
    BS_HEIGHT_M,
    array_spacing_wavelengths,
    generate_site,
)
from rantune.config import RadioConfig, SiteConfig

# A small geometry keeps every generation in this module to a fraction of a second.
RADIO = RadioConfig(num_bs_antennas=8, num_subcarriers=16, num_beams=8, num_time_steps=4)


def site(**overrides) -> SiteConfig:
    values = dict(name="t", scenario="umi", num_samples=48, seed=5)
    return SiteConfig(**{**values, **overrides})


def rows(array: np.ndarray) -> np.ndarray:
    """One byte string per sample, for uniqueness checks."""
    return np.array([r.tobytes() for r in array])


@pytest.fixture(scope="module")
def two_batches() -> ChannelDataset:
    """A UMi site whose 300 samples take two Sionna batches (256 + 44)."""
    return generate_site(site(num_samples=300, indoor_probability=0.5), RADIO, site_index=4)


@pytest.fixture(scope="module")
def outdoor_sites() -> dict[str, ChannelDataset]:
    """Outdoor users (many LoS links) at a UMi and an RMa site, full-size array."""
    radio = RadioConfig(num_time_steps=0)
    return {
        scenario: generate_site(
            site(
                scenario=scenario,
                num_samples=160,
                indoor_probability=0.0,
                distance_range_m=(35.0, 150.0),
                seed=21,
            ),
            radio,
        )
        for scenario in ("umi", "rma")
    }


# ---------------------------------------------------------------- fields


def test_every_field_has_documented_shape_and_dtype(smoke_cfg, smoke_sites):
    # Prepare
    radio = smoke_cfg.radio
    a, s, k, t = radio.num_bs_antennas, radio.num_subcarriers, radio.num_beams, radio.num_time_steps
    expected = {
        "csi": ((a, s), np.complex64),
        "csi_noisy": ((a, s), np.complex64),
        "csi_norm": ((), np.float32),
        "los": ((), np.int8),
        "indoor": ((), np.int8),
        "beam_index": ((), np.int64),
        "beam_gains": ((k,), np.float32),
        "ut_position": ((3,), np.float32),
        "distance_2d": ((), np.float32),
        "speed": ((), np.float32),
        "snr_db": ((), np.float32),
        "site_index": ((), np.int64),
        "csi_sequence": ((t, a, s), np.complex64),
    }

    for index, (site_cfg, data) in enumerate(zip(smoke_cfg.sites, smoke_sites, strict=True)):
        # Execute
        got = {name: (array.shape, array.dtype) for name, array in data.arrays.items()}

        # Assert
        n = site_cfg.num_samples
        assert len(data) == n
        assert set(got) == set(REQUIRED_FIELDS) | set(OPTIONAL_FIELDS)
        for name, (shape, dtype) in expected.items():
            assert got[name] == ((n, *shape), np.dtype(dtype)), name
        assert data.shape == (a, s)
        assert np.all(data["site_index"] == index)
        assert all(np.isfinite(v).all() for v in data.arrays.values())


def test_values_respect_the_site_config(smoke_cfg, smoke_sites):
    for site_cfg, data in zip(smoke_cfg.sites, smoke_sites, strict=True):
        # Prepare
        position = data["ut_position"].astype(np.float64)

        # Execute
        radius = np.hypot(position[:, 0], position[:, 1])
        azimuth = np.arctan2(position[:, 1], position[:, 0])

        # Assert
        lo, hi = site_cfg.distance_range_m
        assert np.all((data["distance_2d"] >= lo * 0.999) & (data["distance_2d"] <= hi * 1.001))
        np.testing.assert_allclose(radius, data["distance_2d"], rtol=1e-5)
        assert np.all(np.abs(azimuth) <= np.pi / 3 + 1e-6), "users stay in the 120-degree sector"
        lo, hi = site_cfg.speed_range_mps
        assert np.all((data["speed"] >= lo - 1e-4) & (data["speed"] <= hi + 1e-4))
        lo, hi = site_cfg.snr_range_db
        assert np.all((data["snr_db"] >= lo) & (data["snr_db"] <= hi))
        assert set(np.unique(data["los"])) <= {0, 1}
        assert set(np.unique(data["indoor"])) <= {0, 1}
        outdoor = data["indoor"] == 0
        np.testing.assert_allclose(position[outdoor, 2], 1.5, atol=1e-6)
        assert np.all(data["csi_norm"] > 0)
        assert np.all((data["beam_index"] >= 0) & (data["beam_index"] < 16))


def test_csi_is_unit_norm_and_sequence_starts_with_csi(smoke_sites):
    for data in smoke_sites:
        # Execute
        norms = np.linalg.norm(data["csi"], axis=(1, 2))

        # Assert
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
        assert np.array_equal(data["csi_sequence"][:, 0], data["csi"])


def test_indoor_users_are_nlos_and_indoor_share_follows_config(two_batches):
    # Prepare
    indoor = two_batches["indoor"] == 1

    # Execute
    indoor_share = indoor.mean()

    # Assert: indoor links are NLoS in TR 38.901; p=0.5 over 300 users
    assert np.all(two_batches["los"][indoor] == 0)
    assert abs(indoor_share - 0.5) < 4 * np.sqrt(0.25 / 300)
    assert two_batches["los"][~indoor].sum() > 0


# ---------------------------------------------------------------- batches


def test_samples_are_distinct_across_sionna_batches(two_batches):
    # Prepare
    first, second = slice(0, BATCH_SIZE), slice(BATCH_SIZE, None)

    # Execute
    unique_csi = len(set(rows(two_batches["csi"])))
    unique_positions = len(set(rows(two_batches["ut_position"])))

    # Assert
    assert len(two_batches) == 300
    assert unique_csi == 300 and unique_positions == 300
    assert np.all(two_batches["site_index"] == 4)
    # the 44 samples of batch 2 are not a copy of any slice of batch 1
    tail = two_batches["csi"][second]
    assert not any(np.array_equal(tail, two_batches["csi"][i : i + 44]) for i in range(0, 257 - 44))
    # labels of batch 1 were not overwritten by batch 2 (the aliasing trap)
    assert not np.array_equal(two_batches["los"][first][-44:], two_batches["los"][second])


def test_first_batch_does_not_depend_on_later_batches(two_batches):
    # Prepare
    one_batch = site(num_samples=BATCH_SIZE, indoor_probability=0.5)

    # Execute
    prefix = generate_site(one_batch, RADIO, site_index=4)

    # Assert: kept values (LoS, CSI...) of batch 1 survive the second set_topology
    for name, array in prefix.arrays.items():
        assert np.array_equal(array, two_batches[name][:BATCH_SIZE]), name


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_same_bytes_other_seed_differs():
    # Prepare
    cfg = site(num_samples=24, speed_range_mps=(1.0, 20.0))

    # Execute
    first = generate_site(cfg, RADIO)
    other = generate_site(replace(cfg, seed=cfg.seed + 1), RADIO)
    again = generate_site(cfg, RADIO)

    # Assert
    for name in first.arrays:
        assert first[name].tobytes() == again[name].tobytes(), name
    for name in ("csi", "csi_noisy", "ut_position", "snr_db", "speed", "csi_sequence"):
        assert first[name].tobytes() != other[name].tobytes(), name


# ---------------------------------------------------------------- beams


def brute_force_labels(csi: np.ndarray, num_beams: int, spacing: float):
    """Exhaustive search over an independently built DFT codebook, one sample at a time."""
    num_antennas = csi.shape[1]
    labels, gains = [], []
    for h in csi.astype(np.complex128):
        row = []
        for k in range(num_beams):
            u = -1.0 + (2 * k + 1) / num_beams  # direction cosine of beam k
            w = np.exp(2j * np.pi * spacing * u * np.arange(num_antennas)) / np.sqrt(num_antennas)
            row.append(sum(abs(np.vdot(w, h[:, s])) ** 2 for s in range(h.shape[1])))
        gains.append(row)
        labels.append(int(np.argmax(row)))
    return np.array(labels), np.array(gains)


def test_beam_label_equals_exhaustive_codebook_search(smoke_cfg, smoke_sites):
    # Prepare
    spacing = array_spacing_wavelengths(smoke_cfg.radio)
    data = smoke_sites[0]

    # Execute
    labels, gains = brute_force_labels(data["csi"], smoke_cfg.radio.num_beams, spacing)

    # Assert
    assert spacing == pytest.approx(0.5, rel=1e-4)
    np.testing.assert_allclose(data["beam_gains"], gains, rtol=1e-4, atol=1e-6)
    assert np.array_equal(data["beam_index"], labels)
    assert len(np.unique(labels)) > 4


def test_full_dft_codebook_preserves_energy(smoke_sites):
    # Prepare: 16 beams on 16 half-wavelength elements form an orthonormal basis
    data = smoke_sites[1]

    # Execute
    total = data["beam_gains"].sum(axis=1)

    # Assert
    np.testing.assert_allclose(total, 1.0, rtol=1e-4)


def test_codebook_is_unit_norm_and_rejects_empty_codebook():
    # Prepare / Execute
    codebook = dft_codebook(8, 5)

    # Assert
    assert codebook.shape == (5, 8) and codebook.dtype == np.complex64
    np.testing.assert_allclose(np.linalg.norm(codebook, axis=1), 1.0, rtol=1e-6)
    gains = beam_gains(codebook[:, :, None], codebook)  # codeword k as a 1-subcarrier CSI
    assert np.array_equal(gains.argmax(axis=1), np.arange(5))
    np.testing.assert_allclose(np.diag(gains), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="at least 1 beam"):
        dft_codebook(8, 0)


def test_los_beam_points_at_the_user(outdoor_sites):
    for scenario, data in outdoor_sites.items():
        # Prepare: the ULA lies along the BS's local y axis (boresight x, no yaw)
        position = data["ut_position"].astype(np.float64)
        offset = position - np.array([0.0, 0.0, BS_HEIGHT_M[scenario]])
        cosine = offset[:, 1] / np.linalg.norm(offset, axis=1)
        centres = -1.0 + (2 * np.arange(16) + 1) / 16

        # Execute
        geometric = np.abs(cosine[:, None] - centres[None]).argmin(axis=1)
        los = data["los"] == 1
        hit = np.abs(geometric[los] - data["beam_index"][los]) <= 1

        # Assert: a LoS user's best beam is the one steered at it (within one beam)
        assert los.sum() >= 20, scenario
        assert hit.mean() >= 0.85, (scenario, hit.mean())


# ---------------------------------------------------------------- noisy estimate


def test_noisy_estimate_has_the_stated_snr(smoke_sites):
    # Prepare
    data = ChannelDataset.concat(smoke_sites)

    # Execute
    noise = data["csi_noisy"].astype(np.complex128) - data["csi"]
    signal_power = (np.abs(data["csi"]) ** 2).sum(axis=(1, 2))  # 1 by construction
    noise_power = (np.abs(noise) ** 2).sum(axis=(1, 2))
    measured_db = 10 * np.log10(signal_power / noise_power)
    error = measured_db - data["snr_db"]

    # Assert: 512 complex noise terms per sample -> about 0.19 dB spread per sample
    assert abs(error.mean()) < 0.05
    assert np.abs(error).max() < 1.0
    assert np.corrcoef(measured_db, data["snr_db"])[0, 1] > 0.99


def test_pilot_spacing_interpolates_between_pilots():
    # Prepare
    radio = replace(RADIO, pilot_spacing=4, num_time_steps=0)
    cfg = site(num_samples=32, snr_range_db=(0.0, 10.0))

    # Execute
    data = generate_site(cfg, radio)
    estimate, csi = data["csi_noisy"].astype(np.complex128), data["csi"]

    # Assert: pilots carry noise at the stated SNR, the rest is linear in between
    pilots = np.arange(0, 16, 4)
    noise = estimate[..., pilots] - csi[..., pilots]
    per_element = (np.abs(noise) ** 2).mean(axis=(1, 2))
    expected = 1.0 / (8 * 16) / 10 ** (data["snr_db"] / 10)
    ratio = per_element / expected
    assert 0.8 < ratio.mean() < 1.2
    for s in range(12):
        left, right = (s // 4) * 4, (s // 4) * 4 + 4
        weight = (s - left) / 4
        np.testing.assert_allclose(
            estimate[..., s],
            (1 - weight) * estimate[..., left] + weight * estimate[..., right],
            atol=1e-6,
        )
    for s in (13, 14, 15):  # held flat past the last pilot
        np.testing.assert_allclose(estimate[..., s], estimate[..., 12], atol=1e-7)
    assert not np.allclose(estimate[..., 1], estimate[..., 0])


# ---------------------------------------------------------------- time sequences


def test_static_users_have_constant_sequences_moving_users_decorrelate():
    # Prepare
    radio = replace(RADIO, num_time_steps=8, slot_duration_s=1e-3)
    still = site(num_samples=32, speed_range_mps=(0.0, 0.0), indoor_probability=0.0)
    fast = replace(still, speed_range_mps=(30.0, 30.0))

    # Execute
    sequences = {
        name: generate_site(cfg, radio)["csi_sequence"]
        for name, cfg in (("still", still), ("fast", fast))
    }

    def correlation(seq: np.ndarray) -> float:
        first, last = seq[:, 0].reshape(len(seq), -1), seq[:, -1].reshape(len(seq), -1)
        return float(np.abs(np.sum(first.conj() * last, axis=1)).mean())

    # Assert: 30 m/s at 3.5 GHz is a 350 Hz Doppler: 7 ms decorrelates the channel
    still_first = np.broadcast_to(sequences["still"][:, :1], sequences["still"].shape)
    np.testing.assert_allclose(sequences["still"], still_first, atol=1e-5)
    assert correlation(sequences["still"]) == pytest.approx(1.0, abs=1e-4)
    assert correlation(sequences["fast"]) < 0.8
    assert sequences["fast"].shape == (32, 8, 8, 16)


def test_no_sequence_field_without_time_steps():
    # Prepare
    radio = replace(RADIO, num_time_steps=0)

    # Execute
    data = generate_site(site(num_samples=8), radio)

    # Assert
    assert "csi_sequence" not in data
    assert data["csi"].shape == (8, 8, 16)
