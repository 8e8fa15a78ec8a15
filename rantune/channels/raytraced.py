"""Ray-traced base stations: site-specific channels from Sionna RT scenes.

One site at a time: the scene is loaded on Dr.Jit's LLVM (CPU) variant, the BS is
a vertical-polarized ULA of ``radio.num_bs_antennas`` elements (half-wavelength
spacing along the array's local y axis, boresight = local x, oriented by the site's
azimuth and downtilt), users are single isotropic antennas dropped where the radio
map says the BS reaches them (:mod:`rantune.channels.drops`). ``PathSolver`` traces
line of sight, specular reflections and refraction up to ``site.max_depth``;
``Paths.cfr`` gives the OFDM response at the preset's subcarriers and, for
``num_time_steps > 0``, its evolution over the slots from each path's Doppler shift
for the user's velocity (the ray tracer's own time evolution, no synthetic phase).

Fields are those of TR 38.901 sites (:mod:`rantune.channels.dataset`), plus the
strongest path's angle of departure in the array's local frame and its delay, and the
user's position in scene coordinates. ``los`` = a path without any interaction
exists; ``indoor`` is 0 (users under a roof are not dropped).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rantune.channels.beams import beam_gains, dft_codebook
from rantune.channels.dataset import ChannelDataset
from rantune.channels.drops import UeDropper
from rantune.channels.scenes import (
    deterministic_jit,
    height_above,
    load_scene,
    resolve_scene,
    start_ray_tracer,
)
from rantune.channels.sionna_generator import _noisy_estimate
from rantune.config import RadioConfig, RtSiteConfig
from rantune.errors import InputError

# Bump when a change to this module, drops.py or scenes.py changes generated samples:
# it is part of every ray-traced shard's cache key.
RT_GENERATOR_VERSION = 1
BATCH_SIZE = 256
PATH_SAMPLES_PER_SRC = 10**5
ELEMENT_SPACING_WAVELENGTHS = 0.5
MAX_DROP_ROUNDS = 50
RT_ONLY_FIELDS = ("aod_azimuth_rad", "aod_elevation_rad", "delay_s", "ut_position_scene")


def rotation_matrix(azimuth: float, downtilt: float) -> np.ndarray:
    """``[3, 3]`` local-to-scene rotation of Sionna RT's orientation ``(azimuth, downtilt, 0)``."""
    ca, sa, cb, sb = math.cos(azimuth), math.sin(azimuth), math.cos(downtilt), math.sin(downtilt)
    return np.array([[ca * cb, -sa, ca * sb], [sa * cb, ca, sa * sb], [-sb, 0.0, cb]])


class SiteTracer:
    """A loaded scene with one site's BS, tracing channels to given user positions.

    Raises
    ------
    InputError
        If the BS stands inside or under a building (a vertical ray hits the scene).
    RayTracerUnavailable
        If Sionna RT cannot start (see :func:`rantune.channels.scenes.start_ray_tracer`).
    """

    def __init__(self, site: RtSiteConfig, radio: RadioConfig, scene_path: Path | None = None):
        from sionna.phy.channel import subcarrier_frequencies

        rt = start_ray_tracer()
        self.rt, self.site, self.radio = rt, site, radio
        self.scene = load_scene(scene_path or resolve_scene(site.scene), radio.carrier_frequency_hz)
        self.bs = np.asarray(site.bs_position_m, dtype=np.float64)
        roof = height_above(self.scene, self.bs[None])[0]
        if np.isfinite(roof):
            raise InputError(
                f"{site.name}.bs_position_m={list(site.bs_position_m)} is inside or under a "
                f"building of scene {site.scene!r}: a vertical ray from it hits the scene at "
                f"z = {roof:.1f} m; raise z above the roof or move the BS into a street"
            )
        self.scene.tx_array = rt.PlanarArray(
            num_rows=1,
            num_cols=radio.num_bs_antennas,
            vertical_spacing=ELEMENT_SPACING_WAVELENGTHS,
            horizontal_spacing=ELEMENT_SPACING_WAVELENGTHS,
            pattern=site.antenna_pattern,
            polarization="V",
        )
        self.scene.rx_array = rt.PlanarArray(
            num_rows=1, num_cols=1, pattern="iso", polarization="V"
        )
        self.azimuth = math.radians(site.bs_azimuth_deg)
        self.downtilt = math.radians(site.bs_downtilt_deg)
        self.to_scene = rotation_matrix(self.azimuth, self.downtilt)
        self.scene.add(
            rt.Transmitter(
                name="bs",
                position=self._point(self.bs),
                orientation=self._point([self.azimuth, self.downtilt, 0.0]),
            )
        )
        freqs = subcarrier_frequencies(radio.num_subcarriers, radio.subcarrier_spacing_hz)
        self.frequencies = np.asarray(freqs.cpu().numpy(), dtype=np.float32)  # [S], Hz offsets

    def _point(self, xyz):
        import mitsuba as mi

        return mi.Point3f(*(float(v) for v in xyz))

    def trace(self, positions: np.ndarray, velocities: np.ndarray, seed: int) -> dict:
        """Trace the channels of users at ``positions`` moving at ``velocities``.

        Parameters
        ----------
        positions, velocities : ``[B, 3]`` scene coordinates (m) and velocities (m/s).
        seed : seed of the path solver's ray sampling.

        Returns
        -------
        dict
            ``response`` ``[B, T, A, S]`` complex64 raw CFR (``T = max(num_time_steps, 1)``),
            ``has_path``/``los`` ``[B]`` bool, ``aod_azimuth_rad``/``aod_elevation_rad``
            ``[B]`` float32 (strongest path, array local frame), ``delay_s`` ``[B]``
            float32 (strongest path's propagation delay).
        """
        rt, scene, radio = self.rt, self.scene, self.radio
        names = [f"ue-{i}" for i in range(len(positions))]
        for name, p, v in zip(names, positions, velocities, strict=True):
            scene.add(rt.Receiver(name=name, position=self._point(p), velocity=self._point(v)))
        try:
            paths = rt.PathSolver()(
                scene,
                max_depth=self.site.max_depth,
                samples_per_src=PATH_SAMPLES_PER_SRC,
                synthetic_array=True,
                los=True,
                specular_reflection=True,
                diffuse_reflection=False,
                refraction=True,
                seed=int(seed),
            )
            steps = max(radio.num_time_steps, 1)
            cfr = paths.cfr(
                frequencies=self.frequencies,
                sampling_frequency=1.0 / radio.slot_duration_s,
                num_time_steps=steps,
                normalize_delays=True,
                out_type="numpy",
            )  # [B, rx_ant=1, tx=1, A, T, S]
            a_real, a_imag = (np.asarray(x.numpy()) for x in paths.a)  # [B, 1, 1, A, P]
            valid = np.asarray(paths.valid.numpy(), dtype=bool)[:, 0]  # [B, P]
            first = np.asarray(paths.interactions.numpy())[0, :, 0]  # [B, P]
            theta = np.asarray(paths.theta_t.numpy())[:, 0]  # [B, P] zenith, scene frame
            phi = np.asarray(paths.phi_t.numpy())[:, 0]
            tau = np.asarray(paths.tau.numpy())[:, 0]
        finally:
            for name in names:
                scene.remove(name)
        response = np.ascontiguousarray(cfr[:, 0, 0].transpose(0, 2, 1, 3), dtype=np.complex64)
        power = np.where(valid, (a_real**2 + a_imag**2)[:, 0, 0].sum(axis=1), -1.0)  # [B, P]
        has_path = valid.any(axis=1)
        strongest = power.argmax(axis=1) if power.shape[1] else np.zeros(len(power), int)
        pick = (np.arange(len(power)), strongest)
        out = {
            "response": response,
            "has_path": has_path,
            "los": (valid & (first == int(rt.InteractionType.NONE))).any(axis=1),
        }
        if power.shape[1]:
            th, ph = theta[pick], phi[pick]
            direction = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1)
            local = direction @ self.to_scene  # rows: R^T k
            out["aod_azimuth_rad"] = np.arctan2(local[:, 1], local[:, 0])
            out["aod_elevation_rad"] = np.arcsin(np.clip(local[:, 2], -1.0, 1.0))
            out["delay_s"] = tau[pick]
        else:
            for key in ("aod_azimuth_rad", "aod_elevation_rad", "delay_s"):
                out[key] = np.full(len(power), np.nan)
        for key in ("aod_azimuth_rad", "aod_elevation_rad", "delay_s"):
            out[key] = np.where(has_path, out[key], np.nan).astype(np.float32)
        return out


def _relative_position(site: RtSiteConfig, scene_xyz: np.ndarray) -> np.ndarray:
    """``[N, 3]`` user position relative to the BS, x along the boresight azimuth, z = height."""
    az = math.radians(site.bs_azimuth_deg)
    dx = scene_xyz[:, 0] - site.bs_position_m[0]
    dy = scene_xyz[:, 1] - site.bs_position_m[1]
    x = math.cos(az) * dx + math.sin(az) * dy
    y = -math.sin(az) * dx + math.cos(az) * dy
    return np.stack([x, y, scene_xyz[:, 2]], -1).astype(np.float32)


def generate_rt_site(
    site: RtSiteConfig,
    radio: RadioConfig,
    site_index: int = 0,
    on_batch: Callable[[int], None] | None = None,
    scene_path: Path | None = None,
) -> tuple[ChannelDataset, dict]:
    """Generate all samples of one ray-traced site.

    Parameters
    ----------
    site, radio : the site and the preset's radio geometry.
    site_index : index stored in the ``site_index`` field.
    on_batch : optional callback ``on_batch(num_new_samples)`` for progress bars.
    scene_path : the scene's XML (default: resolved from ``site.scene``).

    Returns
    -------
    (ChannelDataset, dict)
        ``site.num_samples`` rows, and the drop statistics (candidates drawn, rejected
        outside the area / under a roof / without any path, accepted) with timings.

    Raises
    ------
    InputError
        For a BS inside a building, an area without coverage, or too few users with paths.
    """
    start_ray_tracer()
    with deterministic_jit():
        return _generate(site, radio, site_index, on_batch, scene_path)


def _generate(site, radio, site_index, on_batch, scene_path) -> tuple[ChannelDataset, dict]:
    start_time = time.perf_counter()
    rng = np.random.default_rng([site.seed, 13])
    tracer = SiteTracer(site, radio, scene_path)
    dropper = UeDropper(tracer.scene, site)
    stats = dropper.stats
    parts: list[dict[str, np.ndarray]] = []
    kept = 0
    batch_index = 0
    for _ in range(MAX_DROP_ROUNDS):
        if kept >= site.num_samples:
            break
        candidates = dropper.draw(site.num_samples - kept)
        for begin in range(0, len(candidates), BATCH_SIZE):
            if kept >= site.num_samples:
                break
            positions = candidates[begin : begin + min(BATCH_SIZE, site.num_samples - kept)]
            speed = rng.uniform(*site.speed_range_mps, len(positions))
            heading = rng.uniform(-math.pi, math.pi, len(positions))
            velocity = np.stack([speed * np.cos(heading), speed * np.sin(heading), 0 * speed], -1)
            seed = (site.seed * 7_919 + batch_index) % (2**31 - 1)
            batch_index += 1
            out = tracer.trace(positions, velocity, seed)
            stats.traced += len(positions)
            keep = out["has_path"]
            stats.no_path += int((~keep).sum())
            keep &= np.cumsum(keep) <= site.num_samples - kept
            part = {k: v[keep] for k, v in out.items() if k != "has_path"}
            part["position"] = positions[keep]
            part["speed"] = speed[keep]
            parts.append(part)
            kept += int(keep.sum())
            if on_batch is not None:
                on_batch(int(keep.sum()))
    if kept < site.num_samples:
        raise InputError(
            f"{site.name}: only {kept} of {site.num_samples} users found positions with paths "
            f"after {stats.candidates} candidates ({stats.to_dict()}); enlarge ue_area, move it "
            "nearer the BS or lower num_samples"
        )
    stats.accepted = kept
    data = _assemble(site, radio, site_index, parts, rng)
    info = {**stats.to_dict(), "seconds": time.perf_counter() - start_time}
    return data, info


def _assemble(
    site: RtSiteConfig,
    radio: RadioConfig,
    site_index: int,
    parts: list[dict[str, np.ndarray]],
    rng: np.random.Generator,
) -> ChannelDataset:
    """Normalize the traced responses and build the data set's fields."""
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    sequence = merged["response"]  # [N, T, A, S]
    norm = np.sqrt((np.abs(sequence[:, 0]) ** 2).sum(axis=(1, 2))).astype(np.float32)  # [N]
    sequence = (sequence / np.maximum(norm, 1e-30)[:, None, None, None]).astype(np.complex64)
    csi = np.ascontiguousarray(sequence[:, 0])
    count = len(csi)
    snr_db = rng.uniform(*site.snr_range_db, count).astype(np.float32)
    codebook = dft_codebook(radio.num_bs_antennas, radio.num_beams, ELEMENT_SPACING_WAVELENGTHS)
    gains = beam_gains(csi, codebook)
    scene_xyz = merged["position"]
    relative = _relative_position(site, scene_xyz)
    arrays = {
        "csi": csi,
        "csi_noisy": _noisy_estimate(csi, snr_db, radio.pilot_spacing, rng),
        "csi_norm": norm,
        "los": merged["los"].astype(np.int8),
        "indoor": np.zeros(count, dtype=np.int8),
        "beam_index": gains.argmax(axis=1).astype(np.int64),
        "beam_gains": gains,
        "ut_position": relative,
        "distance_2d": np.hypot(relative[:, 0], relative[:, 1]).astype(np.float32),
        "speed": merged["speed"].astype(np.float32),
        "snr_db": snr_db,
        "site_index": np.full(count, site_index, dtype=np.int64),
        "aod_azimuth_rad": merged["aod_azimuth_rad"],
        "aod_elevation_rad": merged["aod_elevation_rad"],
        "delay_s": merged["delay_s"],
        "ut_position_scene": scene_xyz.astype(np.float32),
    }
    if radio.num_time_steps:
        arrays["csi_sequence"] = np.ascontiguousarray(sequence)
    return ChannelDataset(arrays)
