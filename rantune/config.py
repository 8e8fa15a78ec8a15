"""Typed, validated configuration of base-station sites and data presets.

A *site* is one base station with its own channel statistics (scenario, distances,
speeds, indoor ratio, SNRs). A *preset* is a named list of sites plus the shared
radio geometry. Every value is validated on construction: a bad value raises
``ValueError`` that names the field and says how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass, field, fields

from rantune.errors import InputError

SCENARIOS = ("umi", "uma", "rma")
# Largest 2-D BS-UT distance for which TR 38.901 (Table 7.4.1-1) defines the scenario.
MAX_DISTANCE_M = {"umi": 5_000.0, "uma": 5_000.0, "rma": 10_000.0}


def _fail(name: str, value: object, hint: str) -> None:
    raise InputError(f"{name}={value!r} is invalid: {hint}")


def _check_positive_int(name: str, value: object, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(name, value, f"expected an integer >= {minimum}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(name: str, value: object, low: float, high: float, unit: str = "") -> None:
    if not _is_number(value) or not (low <= float(value) <= high):
        _fail(name, value, f"expected a number in {low:g}..{high:g}{unit}")


def _as_pair(name: str, value: object) -> tuple:
    if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 2:
        _fail(name, value, "expected a pair [min, max] of numbers")
    return tuple(value)


def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    if len(value) != 2 or not all(_is_number(v) for v in value):
        _fail(name, value, "expected a pair [min, max] of numbers")
    lo, hi = float(value[0]), float(value[1])
    if not (low <= lo <= hi <= high) or math.isnan(lo) or math.isnan(hi):
        _fail(name, value, f"expected {low} <= min <= max <= {high}")


@dataclass(frozen=True)
class SiteConfig:
    """One base station: where its users are and how its channels behave.

    Attributes
    ----------
    name : unique site name, e.g. ``"umi-dense"``.
    scenario : TR 38.901 scenario, one of ``umi``, ``uma``, ``rma``.
    num_samples : number of user snapshots (samples) generated at this site.
    speed_range_mps : UT speed range in m/s, drawn uniformly per user.
    indoor_probability : probability that a user is indoors (indoor links are NLoS).
    distance_range_m : min and max BS-UT 2-D distance in metres, within 10 m and the
        scenario's TR 38.901 limit (5 km for UMi/UMa, 10 km for RMa).
    snr_range_db : SNR range of the noisy channel estimate ``csi_noisy``, in dB.
    seed : seed of this site's random generators.
    """

    name: str
    scenario: str
    num_samples: int
    speed_range_mps: tuple[float, float] = (0.0, 3.0)
    indoor_probability: float = 0.2
    distance_range_m: tuple[float, float] = (10.0, 200.0)
    snr_range_db: tuple[float, float] = (0.0, 20.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail("name", self.name, "give each site a non-empty name")
        for pair in ("speed_range_mps", "distance_range_m", "snr_range_db"):
            object.__setattr__(self, pair, _as_pair(f"{self.name}.{pair}", getattr(self, pair)))
        if self.scenario not in SCENARIOS:
            _fail(f"{self.name}.scenario", self.scenario, f"choose one of {', '.join(SCENARIOS)}")
        _check_positive_int(f"{self.name}.num_samples", self.num_samples)
        _check_range(f"{self.name}.speed_range_mps", self.speed_range_mps, 0.0, 150.0)
        _check_number(f"{self.name}.indoor_probability", self.indoor_probability, 0.0, 1.0)
        _check_range(
            f"{self.name}.distance_range_m",
            self.distance_range_m,
            10.0,
            MAX_DISTANCE_M[self.scenario],
        )
        _check_range(f"{self.name}.snr_range_db", self.snr_range_db, -30.0, 60.0)
        _check_positive_int(f"{self.name}.seed", self.seed, minimum=0)


@dataclass(frozen=True)
class RadioConfig:
    """Radio geometry shared by every site of a preset (one model input shape).

    Attributes
    ----------
    carrier_frequency_hz : carrier frequency in Hz.
    num_subcarriers : number of sampled subcarriers (CSI width).
    subcarrier_spacing_hz : spacing between sampled subcarriers in Hz (e.g. one per
        resource block: 12 x 30 kHz = 360 kHz).
    num_bs_antennas : number of elements of the BS uniform linear array (CSI height).
    num_beams : size of the DFT beam codebook used for beam labels.
    num_time_steps : OFDM slots per ``csi_sequence`` for channel prediction; 0 = none.
    slot_duration_s : time between consecutive snapshots of ``csi_sequence``.
    pilot_spacing : ``csi_noisy`` is estimated on every ``pilot_spacing``-th subcarrier
        and linearly interpolated in between (1 = every subcarrier is a pilot).
    """

    carrier_frequency_hz: float = 3.5e9
    num_subcarriers: int = 32
    subcarrier_spacing_hz: float = 360e3
    num_bs_antennas: int = 16
    num_beams: int = 16
    num_time_steps: int = 0
    slot_duration_s: float = 0.5e-3
    pilot_spacing: int = 1

    def __post_init__(self) -> None:
        _check_number("carrier_frequency_hz", self.carrier_frequency_hz, 0.5e9, 100e9, " Hz")
        _check_positive_int("num_subcarriers", self.num_subcarriers)
        if not _is_number(self.subcarrier_spacing_hz) or not self.subcarrier_spacing_hz > 0:
            _fail("subcarrier_spacing_hz", self.subcarrier_spacing_hz, "expected > 0 Hz")
        _check_positive_int("num_bs_antennas", self.num_bs_antennas)
        _check_positive_int("num_beams", self.num_beams)
        _check_positive_int("num_time_steps", self.num_time_steps, minimum=0)
        if self.num_time_steps == 1:
            _fail("num_time_steps", 1, "use 0 (no sequence) or >= 2 snapshots")
        if not _is_number(self.slot_duration_s) or not self.slot_duration_s > 0:
            _fail("slot_duration_s", self.slot_duration_s, "expected > 0 s")
        _check_positive_int("pilot_spacing", self.pilot_spacing)
        if self.pilot_spacing > self.num_subcarriers:
            _fail("pilot_spacing", self.pilot_spacing, "must not exceed num_subcarriers")


@dataclass(frozen=True)
class DataConfig:
    """A preset: the radio geometry and the list of sites (base stations).

    Attributes
    ----------
    name : preset name.
    radio : radio geometry shared by every site.
    sites : the base stations, at least one, unique names.
    test_fraction : share of every site held out as the global test set
        (``PartitionConfig.global_test_fraction`` when partitioning this preset).
    """

    name: str
    radio: RadioConfig
    sites: tuple[SiteConfig, ...] = field(default_factory=tuple)
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(self.sites))
        if not self.sites:
            _fail(f"{self.name}.sites", [], "a preset needs at least one [[sites]] entry")
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            _fail(f"{self.name}.sites", names, "site names must be unique")
        if not _is_number(self.test_fraction) or not (0.0 < self.test_fraction < 0.5):
            _fail("test_fraction", self.test_fraction, "expected 0 < test_fraction < 0.5")

    def to_dict(self) -> dict:
        return asdict(self)

    def config_hash(self) -> str:
        """Short sha256 of everything that changes the generated data."""
        payload = json.dumps(
            {"radio": asdict(self.radio), "sites": [asdict(s) for s in self.sites]},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def site_hash(self, site: SiteConfig) -> str:
        """Hash of one site's data: radio geometry plus that site's config."""
        payload = json.dumps({"radio": asdict(self.radio), "site": asdict(site)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def with_seed(self, seed: int) -> DataConfig:
        """The same preset with every site's seed offset by ``seed``."""
        from dataclasses import replace

        if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
            seed = int(seed)
        _check_positive_int("seed", seed, minimum=0)
        sites = tuple(replace(s, seed=s.seed + 1000 * seed) for s in self.sites)
        return replace(self, sites=sites)


def build_dataclass(cls: type, values: dict, where: str):
    """Build ``cls`` from a dict, failing loudly on unknown keys."""
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected a table of key = value pairs, got {values!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(known)}")
    return cls(**values)
