"""Ray-traced sites (Sionna RT): fields, physics checks, determinism, cache, errors.

Every generation here uses Sionna RT's small ``simple_street_canyon`` scene (the
``rt-smoke`` preset or sites like it) and a few dozen users, so each test takes
seconds on the CPU.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

import rantune.channels as channels
from rantune.channels import load_site_info, load_sites
from rantune.channels.dataset import REQUIRED_FIELDS
from rantune.channels.raytraced import RT_ONLY_FIELDS, SiteTracer, generate_rt_site
from rantune.channels.scenes import segment_clear
from rantune.config import DataConfig, RadioConfig, RtSiteConfig
from rantune.errors import InputError
from rantune.presets import load_preset

SMALL_RADIO = RadioConfig(num_bs_antennas=8, num_subcarriers=16, num_beams=8, num_time_steps=4)


def canyon_site(**overrides) -> RtSiteConfig:
    values = dict(
        name="t",
        scene="simple_street_canyon",
        num_samples=24,
        bs_position_m=(-60.0, 0.0, 10.0),
        ue_area=(-90.0, -55.0, 90.0, 55.0),
        seed=3,
    )
    return RtSiteConfig(**{**values, **overrides})


def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|<a, b>| / (|a| |b|)`` over all but the first axis, ``[N]``."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    inner = np.abs((a.conj() * b).sum(axis=1))
    return inner / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def angle_delay_power(csi: np.ndarray) -> np.ndarray:
    """``[N, A, S]`` CSI -> its angle-delay power profile (2-D DFT magnitude squared).

    Small-scale fading changes the complex channel within a wavelength (8.6 cm at
    3.5 GHz); the profile keeps what spatial consistency is about: which angles and
    delays carry the power.
    """
    return np.abs(np.fft.fft2(csi, axes=(1, 2))) ** 2


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of real profiles over all but the first axis, ``[N]``."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def rt_cfg() -> DataConfig:
    return load_preset("rt-smoke")


@pytest.fixture(scope="module")
def rt_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("rt-cache")


@pytest.fixture(scope="module")
def rt_sites(rt_cfg, rt_cache):
    """The rt-smoke preset's two stations, generated once into a module cache."""
    return load_sites(rt_cfg, cache_root=rt_cache, progress=False)


@pytest.fixture(scope="module")
def west_tracer(rt_cfg):
    return SiteTracer(rt_cfg.sites[0], rt_cfg.radio)


# ---------------------------------------------------------------- fields


def test_fields_match_tr38901_sites_plus_strongest_path(rt_cfg, rt_sites):
    # Prepare
    radio = rt_cfg.radio
    a, s, k, t = radio.num_bs_antennas, radio.num_subcarriers, radio.num_beams, 6

    # Execute
    data = rt_sites[1]

    # Assert
    assert set(REQUIRED_FIELDS) | {"csi_sequence"} | set(RT_ONLY_FIELDS) == set(data.arrays)
    assert len(data) == rt_cfg.sites[1].num_samples
    assert data["csi"].shape == (len(data), a, s) and data["csi"].dtype == np.complex64
    assert data["csi_sequence"].shape == (len(data), t, a, s)
    assert data["beam_gains"].shape == (len(data), k)
    assert data["ut_position_scene"].shape == (len(data), 3)
    np.testing.assert_allclose(np.linalg.norm(data["csi"].reshape(len(data), -1), axis=1), 1, 1e-5)
    np.testing.assert_array_equal(data["csi_sequence"][:, 0], data["csi"])
    assert (data["site_index"] == 1).all() and (data["indoor"] == 0).all()
    assert (data["beam_index"] == data["beam_gains"].argmax(axis=1)).all()
    assert np.isfinite(data["aod_azimuth_rad"]).all() and np.isfinite(data["delay_s"]).all()
    # the east station's users are inside its polygon, near the BS frame's x axis (az 180)
    assert (data["ut_position"][:, 0] > 0).mean() > 0.5
    assert len({r.tobytes() for r in data["csi"]}) == len(data)


def test_two_stations_share_the_scene_and_their_areas_overlap(rt_cfg, rt_sites):
    # Execute
    west, east = (d["ut_position_scene"] for d in rt_sites)

    # Assert: both stations serve users in the canyon between them
    assert rt_cfg.sites[0].scene == rt_cfg.sites[1].scene
    overlap = (west[:, 0] > -20) & (west[:, 0] < 90) & (np.abs(west[:, 1]) < 8)
    assert overlap.any() and (east[:, 0] < 0).any()


def test_drop_statistics_are_recorded_with_the_shard(rt_cfg, rt_sites, rt_cache):
    # Execute
    info = load_site_info(rt_cfg, rt_cache)

    # Assert
    for site, record in zip(rt_cfg.sites, info, strict=True):
        stats = record["generation"]
        assert stats["accepted"] == site.num_samples
        assert stats["traced"] == stats["accepted"] + stats["no_path"]
        assert stats["candidates"] >= stats["traced"] + stats["outside_area"] + stats["under_roof"]


# ---------------------------------------------------------------- physics


def test_spatial_consistency_near_users_correlate_more_than_far_users(rt_sites, west_tracer):
    # Prepare: dropped users, a point 0.5 m from each, and another user 45-55 m away
    users = rt_sites[0]["ut_position_scene"].astype(np.float64)
    gap = np.linalg.norm(users[:, None, :2] - users[None, :, :2], axis=-1)  # [N, N]
    has_far = ((gap > 45) & (gap < 55)).any(axis=1)
    base = users[has_far]
    far = users[((gap > 45) & (gap < 55))[has_far].argmax(axis=1)]
    heading = np.random.default_rng(0).uniform(-np.pi, np.pi, len(base))
    near = base + 0.5 * np.stack([np.cos(heading), np.sin(heading), 0 * heading], -1)
    still = np.zeros_like(base)

    # Execute
    traced = [west_tracer.trace(p, still, seed=1) for p in (base, near, far)]
    ok = np.logical_and.reduce([t["has_path"] for t in traced])
    profile = [angle_delay_power(t["response"][ok, 0]) for t in traced]

    # Assert
    near_sim, far_sim = cosine(profile[0], profile[1]), cosine(profile[0], profile[2])
    assert ok.sum() >= 20
    assert near_sim.mean() > 0.85 and far_sim.mean() < 0.6
    assert (near_sim > far_sim).mean() >= 0.8


def test_los_label_agrees_with_an_unobstructed_segment(rt_cfg, rt_sites, west_tracer):
    # Prepare
    data = rt_sites[0]
    bs = np.asarray(rt_cfg.sites[0].bs_position_m)

    # Execute
    clear = segment_clear(west_tracer.scene, bs, data["ut_position_scene"])

    # Assert
    assert 0 < data["los"].mean() < 1
    assert (clear == data["los"].astype(bool)).mean() >= 0.95


def test_los_users_beam_label_points_at_the_user(rt_cfg, rt_sites, west_tracer):
    # Prepare: direction cosine of each user along the array axis (local frame)
    data = rt_sites[0]
    num_beams = rt_cfg.radio.num_beams
    offset = data["ut_position_scene"] - np.asarray(rt_cfg.sites[0].bs_position_m)
    local = (offset / np.linalg.norm(offset, axis=1, keepdims=True)) @ west_tracer.to_scene
    expected = np.clip(np.floor((local[:, 1] + 1.0) * num_beams / 2), 0, num_beams - 1)

    # Execute
    los = data["los"].astype(bool)
    error = np.abs(expected - data["beam_index"])[los]

    # Assert
    assert los.sum() >= 10 and (error <= 1).mean() >= 0.8
    aod_from_geometry = np.arctan2(local[los, 1], local[los, 0])
    np.testing.assert_allclose(data["aod_azimuth_rad"][los], aod_from_geometry, atol=1e-3)


def test_first_last_slot_correlation_falls_as_speed_rises():
    # Prepare
    site = canyon_site(num_samples=72, speed_range_mps=(0.0, 40.0), seed=8)
    data, _ = generate_rt_site(site, SMALL_RADIO)
    seq, speed = data["csi_sequence"], data["speed"]

    # Execute
    corr = correlation(seq[:, 0], seq[:, -1])
    bands = [corr[(speed >= lo) & (speed < hi)].mean() for lo, hi in ((0, 5), (5, 20), (20, 41))]

    # Assert
    assert bands[0] > bands[1] > bands[2]
    assert bands[0] > 0.99 and bands[2] < 0.99


# ---------------------------------------------------------------- determinism and cache


def test_same_seed_same_bytes_other_seed_other_bytes():
    # Prepare
    site = canyon_site(num_samples=20)

    # Execute
    first, _ = generate_rt_site(site, SMALL_RADIO)
    again, _ = generate_rt_site(site, SMALL_RADIO)
    other, _ = generate_rt_site(replace(site, seed=4), SMALL_RADIO)

    # Assert
    for name in first.arrays:
        assert first[name].tobytes() == again[name].tobytes(), name
    assert first["csi"].tobytes() != other["csi"].tobytes()
    assert first["ut_position_scene"].tobytes() != other["ut_position_scene"].tobytes()


def test_cache_hit_does_not_start_the_ray_tracer(rt_cfg, rt_sites, rt_cache, monkeypatch):
    # Prepare: the ray tracer and its generator become unusable
    def fail(*args, **kwargs):
        raise AssertionError("the ray tracer was started on a cache hit")

    monkeypatch.setattr(channels, "_generate_raytraced", fail)
    for module in ("mitsuba", "drjit", "sionna.rt"):
        monkeypatch.setitem(sys.modules, module, None)

    # Execute
    reloaded = load_sites(rt_cfg, cache_root=rt_cache, progress=False)

    # Assert
    for a, b in zip(rt_sites, reloaded, strict=True):
        assert a["csi_sequence"].tobytes() == b["csi_sequence"].tobytes()


def test_mixed_preset_gives_tr_sites_the_ray_traced_fields_as_nan(rt_cfg, rt_cache):
    # Prepare
    from rantune.config import SiteConfig

    tr_site = SiteConfig(name="umi-x", scenario="umi", num_samples=16, seed=77)
    cfg = replace(rt_cfg, sites=(rt_cfg.sites[0], tr_site))

    # Execute
    rt_data, tr_data = load_sites(cfg, cache_root=rt_cache, progress=False)
    pooled = channels.ChannelDataset.concat([rt_data, tr_data])

    # Assert
    assert set(rt_data.arrays) == set(tr_data.arrays)
    assert np.isnan(tr_data["ut_position_scene"]).all() and np.isnan(tr_data["delay_s"]).all()
    assert len(pooled) == len(rt_data) + len(tr_data)


def test_cache_key_follows_scene_files_and_generator_version(rt_cfg, tmp_path, monkeypatch):
    # Prepare: a copy of the scene as a user XML file
    import shutil

    import rantune.channels.raytraced as raytraced
    from rantune.channels.scenes import resolve_scene, scene_digest

    source = resolve_scene("simple_street_canyon").parent
    shutil.copytree(source, tmp_path / "canyon")
    xml = tmp_path / "canyon" / "simple_street_canyon.xml"
    site = replace(rt_cfg.sites[0], scene=str(xml))
    assert scene_digest(xml) == scene_digest(source / xml.name)  # content, not location

    # Execute
    base = channels.cache_key(rt_cfg, site)
    builtin = channels.cache_key(rt_cfg, rt_cfg.sites[0])
    mesh = next((tmp_path / "canyon" / "meshes").glob("*.ply"))
    mesh.write_bytes(mesh.read_bytes() + b"\n")
    edited = channels.cache_key(rt_cfg, site)
    monkeypatch.setattr(raytraced, "RT_GENERATOR_VERSION", raytraced.RT_GENERATOR_VERSION + 1)
    bumped = channels.cache_key(rt_cfg, site)

    # Assert: the digest follows the files' content; edits and generator versions change keys
    assert scene_digest(xml) != scene_digest(resolve_scene("simple_street_canyon"))  # edited
    assert base != builtin  # the site's config differs (scene string)
    assert len({base, edited, bumped}) == 3


# ---------------------------------------------------------------- errors write nothing


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"scene": "munch"}, "not a built-in Sionna RT scene"),
        ({"bs_position_m": (0.0, 20.0, 10.0)}, "inside or under a building"),
        (
            {"scene": "box", "bs_position_m": (20.0, 0.0, 3.0), "ue_area": (-3, -3, 3, 3)},
            "receives no path",
        ),
    ],
    ids=["unknown-scene", "bs-in-building", "area-without-paths"],
)
def test_bad_site_fails_clearly_and_writes_nothing(tmp_path, overrides, match):
    # Prepare
    cfg = DataConfig(name="bad", radio=SMALL_RADIO, sites=(canyon_site(**overrides),))

    # Execute / Assert
    with pytest.raises(InputError, match=match):
        load_sites(cfg, cache_root=tmp_path / "cache", progress=False)
    assert not list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize(
    ("area", "match"),
    [
        ([[0, 0], [10, 10], [10, 0], [0, 10]], "intersects itself"),
        ([[0, 0], [10, 0]], "at least 3 vertices"),
        ([[0, 0], [10, 0], [20, 0]], "area"),
        ([[0, 0], [10, "a"], [0, 10]], "not a pair"),
        ([10, 0, 0, 10], "x_min < x_max"),
    ],
)
def test_malformed_ue_area_is_rejected_with_a_hint(area, match):
    with pytest.raises(InputError, match=match):
        canyon_site(ue_area=area)
