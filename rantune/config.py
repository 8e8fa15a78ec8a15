"""Typed, validated configuration of base-station sites and data presets.

A *site* is one base station. A TR 38.901 site (:class:`SiteConfig`) has its own
channel statistics (scenario, distances, speeds, indoor ratio, SNRs); a ray-traced
site (:class:`RtSiteConfig`, ``scenario = "rt"``) stands at a given position in a
Sionna RT scene and serves users in a given area of it. A *preset* is a named list
of sites plus the shared radio geometry. Every value is validated on construction:
a bad value raises ``InputError`` that names the field and says how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass, field, fields

from rantune.errors import InputError
from rantune.schema import check_settings, setting

SCENARIOS = ("umi", "uma", "rma")
RT_SCENARIO = "rt"
RT_ANTENNA_PATTERNS = ("tr38901", "iso")
MAX_RT_DEPTH = 6
MIN_UE_AREA_M2 = 4.0  # one 2 m x 2 m radio-map cell
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
            _fail(
                f"{self.name}.scenario",
                self.scenario,
                f"choose one of {', '.join(SCENARIOS)} (TR 38.901) or {RT_SCENARIO!r} "
                "(a ray-traced site: RtSiteConfig, with scene, bs_position_m and ue_area)",
            )
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


def _segments_cross(p1, p2, q1, q2) -> bool:
    """True if the closed segments p1-p2 and q1-q2 intersect (2-D)."""

    def orient(a, b, c) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    def on_segment(a, b, c) -> bool:
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(
            a[1], b[1]
        )

    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4):
        return True
    return (
        (d1 == 0 and on_segment(q1, q2, p1))
        or (d2 == 0 and on_segment(q1, q2, p2))
        or (d3 == 0 and on_segment(p1, p2, q1))
        or (d4 == 0 and on_segment(p1, p2, q2))
    )


def _ue_area_polygon(name: str, value: object) -> tuple[tuple[float, float], ...]:
    """Validate a UE area and return it as polygon vertices ``((x, y), ...)`` in metres.

    Accepted forms: a rectangle ``[x_min, y_min, x_max, y_max]`` or a simple polygon
    ``[[x, y], [x, y], [x, y], ...]`` (at least 3 vertices, not self-intersecting, not
    closed by repeating the first vertex, non-zero area).
    """
    hint_forms = "give a rectangle [x_min, y_min, x_max, y_max] or a polygon [[x, y], ...]"
    if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
        _fail(name, value, hint_forms)
    items = list(value)
    if len(items) == 4 and all(_is_number(v) for v in items):
        x0, y0, x1, y1 = (float(v) for v in items)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (x0 < x1 and y0 < y1):
            _fail(name, value, "a rectangle needs finite x_min < x_max and y_min < y_max")
        return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    vertices = []
    for vertex in items:
        if (
            isinstance(vertex, str | bytes)
            or not hasattr(vertex, "__len__")
            or len(vertex) != 2
            or not all(_is_number(v) and math.isfinite(float(v)) for v in vertex)
        ):
            _fail(
                name,
                value,
                f"vertex {vertex!r} is not a pair [x, y] of finite numbers; {hint_forms}",
            )
        vertices.append((float(vertex[0]), float(vertex[1])))
    if len(vertices) < 3:
        _fail(name, value, f"a polygon needs at least 3 vertices; {hint_forms}")
    if len(set(vertices)) != len(vertices):
        _fail(name, value, "polygon vertices must be distinct (do not repeat the first vertex)")
    n = len(vertices)
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbouring edges share a vertex
            a, b = vertices[i], vertices[(i + 1) % n]
            c, d = vertices[j], vertices[(j + 1) % n]
            if _segments_cross(a, b, c, d):
                _fail(
                    name,
                    value,
                    f"the polygon intersects itself (edge {i} {a}-{b} crosses edge {j} {c}-{d}); "
                    "list the vertices in order around the area",
                )
    area = 0.5 * sum(
        vertices[i][0] * vertices[(i + 1) % n][1] - vertices[(i + 1) % n][0] * vertices[i][1]
        for i in range(n)
    )
    if abs(area) < MIN_UE_AREA_M2:
        _fail(
            name,
            value,
            f"the polygon's area is {abs(area):.2g} m^2; it must be >= {MIN_UE_AREA_M2} m^2",
        )
    return tuple(vertices)


@dataclass(frozen=True)
class RtSiteConfig:
    """One ray-traced base station in a Sionna RT scene (``scenario = "rt"``).

    Coordinates are the scene's (metres, z up, the built-in scenes' ground at z = 0).

    Attributes
    ----------
    name : unique site name.
    scene : a built-in Sionna RT scene name (``munich``, ``etoile``, ``florence``,
        ``san_francisco``, ``simple_street_canyon``, ...) or the path to a Mitsuba XML
        scene file; checked when the data are loaded (``rantune.channels.scenes``).
    num_samples : number of users (samples) dropped in ``ue_area``.
    bs_position_m : BS array centre ``(x, y, z)``; z is the height above z = 0.
    ue_area : where users are dropped: a rectangle ``(x_min, y_min, x_max, y_max)`` or a
        simple polygon of ``(x, y)`` vertices; stored as polygon vertices.
    bs_azimuth_deg : boresight azimuth, degrees counter-clockwise from the scene's +x.
    bs_downtilt_deg : mechanical downtilt, degrees below the horizon.
    antenna_pattern : element pattern of the BS array (``tr38901`` or ``iso``); the
        array is a vertical-polarized ULA of ``radio.num_bs_antennas`` elements at
        half-wavelength spacing along the array's local y axis.
    ue_height_m : user antenna height above z = 0.
    speed_range_mps : UT speed range in m/s, drawn uniformly per user (random heading).
    snr_range_db : SNR range of the noisy channel estimate ``csi_noisy``, in dB.
    max_depth : ray-tracing depth (number of reflections/refractions per path).
    seed : seed of this site's random generators and of the ray tracer.
    """

    name: str
    scene: str
    num_samples: int
    bs_position_m: tuple[float, float, float]
    ue_area: tuple[tuple[float, float], ...]
    scenario: str = RT_SCENARIO
    bs_azimuth_deg: float = 0.0
    bs_downtilt_deg: float = 5.0
    antenna_pattern: str = "tr38901"
    ue_height_m: float = 1.5
    speed_range_mps: tuple[float, float] = (0.0, 3.0)
    snr_range_db: tuple[float, float] = (0.0, 20.0)
    max_depth: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail("name", self.name, "give each site a non-empty name")
        where = self.name
        if self.scenario != RT_SCENARIO:
            _fail(
                f"{where}.scenario",
                self.scenario,
                f"a ray-traced site has scenario = {RT_SCENARIO!r}",
            )
        if not isinstance(self.scene, str) or not self.scene.strip():
            _fail(
                f"{where}.scene", self.scene, "give a built-in Sionna RT scene name or an XML path"
            )
        _check_positive_int(f"{where}.num_samples", self.num_samples)
        position = self.bs_position_m
        if (
            isinstance(position, str | bytes)
            or not hasattr(position, "__len__")
            or len(position) != 3
            or not all(_is_number(v) and math.isfinite(float(v)) for v in position)
        ):
            _fail(f"{where}.bs_position_m", position, "expected [x, y, z] in metres")
        object.__setattr__(self, "bs_position_m", tuple(float(v) for v in position))
        if not self.bs_position_m[2] > 0:
            _fail(f"{where}.bs_position_m", position, "the BS height z must be > 0 m")
        object.__setattr__(self, "ue_area", _ue_area_polygon(f"{where}.ue_area", self.ue_area))
        for pair in ("speed_range_mps", "snr_range_db"):
            object.__setattr__(self, pair, _as_pair(f"{where}.{pair}", getattr(self, pair)))
        _check_number(f"{where}.bs_azimuth_deg", self.bs_azimuth_deg, -360.0, 360.0, " deg")
        _check_number(f"{where}.bs_downtilt_deg", self.bs_downtilt_deg, -90.0, 90.0, " deg")
        if self.antenna_pattern not in RT_ANTENNA_PATTERNS:
            _fail(
                f"{where}.antenna_pattern",
                self.antenna_pattern,
                f"choose one of {', '.join(RT_ANTENNA_PATTERNS)}",
            )
        _check_number(f"{where}.ue_height_m", self.ue_height_m, 0.1, 100.0, " m")
        _check_range(f"{where}.speed_range_mps", self.speed_range_mps, 0.0, 150.0)
        _check_range(f"{where}.snr_range_db", self.snr_range_db, -30.0, 60.0)
        _check_positive_int(f"{where}.max_depth", self.max_depth)
        if self.max_depth > MAX_RT_DEPTH:
            _fail(f"{where}.max_depth", self.max_depth, f"expected 1..{MAX_RT_DEPTH}")
        _check_positive_int(f"{where}.seed", self.seed, minimum=0)


IMPORT_SCENARIO = "import"


@dataclass(frozen=True)
class ImportSiteConfig:
    """A base station whose channels come from a user's file (``scenario = "import"``).

    See :mod:`rantune.channels.importer` for the accepted files, arrays and what is
    derived. Options other than ``name``, ``path`` and ``seed`` apply to raw files only;
    a station directory written by ``rantune data import`` keeps the options it was
    imported with (its ``station.json``).

    Attributes
    ----------
    name : unique site name.
    path : a ``.npz``, ``.h5``/``.hdf5`` or ``.mat`` file, or a station directory; in a
        preset a relative path is relative to the preset file.
    csi_key : name of the complex CSI array ``[N, A, S]`` or ``[N, T, A, S]``.
    positions_key : name of the UT positions ``[N, 2|3]`` in metres ("" = none).
    los_key : name of the LoS flags ``[N]`` (0/1; "" = none: LoS is unknown).
    snr_key : name of per-sample SNRs ``[N]`` in dB ("" = draw from ``snr_range_db``).
    snr_range_db : SNR range of ``csi_noisy`` when the file has no SNRs, in dB.
    bs_position_m : BS position ``(x, y)`` or ``(x, y, z)`` in the positions' frame;
        () = unknown (``distance_2d`` is then unknown).
    seed : seed of the SNR draws and of the estimation noise.
    """

    name: str
    path: str
    scenario: str = IMPORT_SCENARIO
    csi_key: str = "csi"
    positions_key: str = ""
    los_key: str = ""
    snr_key: str = ""
    snr_range_db: tuple[float, float] = (0.0, 20.0)
    bs_position_m: tuple[float, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail("name", self.name, "give each site a non-empty name")
        where = self.name
        if self.scenario != IMPORT_SCENARIO:
            _fail(
                f"{where}.scenario",
                self.scenario,
                f"an imported site has scenario = {IMPORT_SCENARIO!r}",
            )
        if not isinstance(self.path, str) or not self.path.strip():
            _fail(
                f"{where}.path",
                self.path,
                "give the path of a .npz/.h5/.mat file or station directory",
            )
        if not isinstance(self.csi_key, str) or not self.csi_key:
            _fail(f"{where}.csi_key", self.csi_key, "give the name of the CSI array in the file")
        for key in ("positions_key", "los_key", "snr_key"):
            if not isinstance(getattr(self, key), str):
                _fail(f"{where}.{key}", getattr(self, key), 'give an array name, or "" for none')
        object.__setattr__(
            self, "snr_range_db", _as_pair(f"{where}.snr_range_db", self.snr_range_db)
        )
        _check_range(f"{where}.snr_range_db", self.snr_range_db, -30.0, 60.0)
        position = self.bs_position_m
        if (
            isinstance(position, str | bytes)
            or not hasattr(position, "__len__")
            or len(position) not in (0, 2, 3)
            or not all(_is_number(v) and math.isfinite(float(v)) for v in position)
        ):
            _fail(
                f"{where}.bs_position_m", position, "expected [x, y] or [x, y, z] in metres, or []"
            )
        object.__setattr__(self, "bs_position_m", tuple(float(v) for v in position))
        _check_positive_int(f"{where}.seed", self.seed, minimum=0)


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

    carrier_frequency_hz: float = setting(3.5e9, "carrier (Hz)", low=0.5e9, high=100e9)
    num_subcarriers: int = setting(32, "sampled subcarriers (CSI width)", low=1)
    subcarrier_spacing_hz: float = setting(
        360e3, "spacing of the sampled subcarriers (Hz)", low=0.0, low_open=True
    )
    num_bs_antennas: int = setting(16, "BS ULA elements (CSI height)", low=1)
    num_beams: int = setting(16, "DFT codebook size", low=1)
    num_time_steps: int = setting(0, "slots per csi_sequence (0 = none, else >= 2)", low=0)
    slot_duration_s: float = setting(
        0.5e-3, "time between csi_sequence slots (s)", low=0.0, low_open=True
    )
    pilot_spacing: int = setting(1, "csi_noisy pilots on every k-th subcarrier", low=1)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.num_time_steps == 1:
            _fail("num_time_steps", 1, "use 0 (no sequence) or >= 2 snapshots")
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
    sites: tuple[SiteConfig | RtSiteConfig | ImportSiteConfig, ...] = field(default_factory=tuple)
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

    def site_hash(self, site: SiteConfig | RtSiteConfig) -> str:
        """Hash of one site's config: radio geometry plus that site's fields.

        For a ray-traced site the channel cache key adds the scene files' hash and the
        generator version (``rantune.channels.cache_key``).
        """
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
