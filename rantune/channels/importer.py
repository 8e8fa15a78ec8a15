"""A user's own channels as one station data set (``rantune data import``, ``scenario = "import"``).

Input: one ``.npz``, HDF5 (``.h5``/``.hdf5``) or MATLAB ``.mat`` (v4-v7 via scipy, v7.3
via h5py) file, read by :mod:`rantune.channels.readers`, with these arrays (the names
are options, :class:`rantune.config.ImportSiteConfig`):

============ ===================== ======================================================
option       shape                 meaning
============ ===================== ======================================================
csi_key      [N, A, S]             complex CSI, antennas x subcarriers (default ``csi``)
             [N, T, A, S]          or T slots per sample: ``csi_sequence``; ``csi`` is
                                   then slot 0, the *first* slot (as generated stations)
positions_key [N, 2] or [N, 3]     UT positions (x, y[, z]) in metres; needs
                                   ``bs_position_m`` in the same frame
los_key      [N]                   LoS flags, 0 or 1
snr_key      [N]                   SNR of each sample's estimate, dB
============ ===================== ======================================================

CSI values are complex64/complex128, or a real array with a trailing axis of 2 holding
(real, imag): ``[N, A, S, 2]`` or ``[N, T, A, S, 2]``. Every array must be finite and
have the same N; complex128 is stored as complex64.

Derived (as for generated stations, :mod:`rantune.channels.sionna_generator`):

- ``csi_norm``: Frobenius norm of the sample (slot 0 for sequences); ``csi`` and
  ``csi_sequence`` are divided by it (``csi`` has unit norm);
- ``snr_db``: the file's, else drawn uniformly from ``snr_range_db`` per sample (seeded);
- ``csi_noisy``: LS estimate of ``csi`` at ``snr_db`` on every ``pilot_spacing``-th
  subcarrier, linearly interpolated in between;
- ``beam_gains`` / ``beam_index``: half-wavelength DFT codebook of ``num_beams`` beams in
  the array's local frame (:mod:`rantune.channels.beams`), on the noiseless ``csi``;
- ``ut_position`` = positions - ``bs_position_m`` (z NaN unless both have z) and
  ``distance_2d`` from it; ``site_index``.

Not derivable, stored as unknown (``-1`` / NaN, listed in the manifest's
``unknown_fields``): ``los`` without flags, ``indoor``, ``speed``, and ``ut_position`` /
``distance_2d`` without positions. A task that needs an unknown field fails with a clear
error (:meth:`ChannelDataset.require`). The station is written as a station directory
(:mod:`rantune.channels.station`) whose manifest records the source file, its sha256 and
the import options.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from rantune.channels.beams import beam_gains, dft_codebook
from rantune.channels.dataset import ChannelDataset
from rantune.channels.readers import read_arrays
from rantune.channels.station import (
    CODEBOOK_SPACING_WAVELENGTHS,
    STATION_FORMAT,
    STATION_FORMAT_VERSION,
    codebook_record,
    is_station_dir,
    load_station,
)
from rantune.config import ImportSiteConfig, RadioConfig
from rantune.errors import InputError
from rantune.fileio import sha256_file

IMPORTER_VERSION = 1
IMPORT_STREAM = 17  # random stream of imported stations (SNR draws, estimation noise)
SPACING_WAVELENGTHS = CODEBOOK_SPACING_WAVELENGTHS  # ULA element spacing of the codebook
UNKNOWN_RADIO = ("carrier_frequency_hz", "subcarrier_spacing_hz", "slot_duration_s")
SHAPE_KEYS = ("num_bs_antennas", "num_subcarriers", "num_beams", "num_time_steps")
KEY_OPTIONS = {"csi": "csi_key", "positions": "positions_key", "los": "los_key", "snr": "snr_key"}
VECTORS = ("los", "snr")


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))[0])


def _check_finite(array: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        raise InputError(
            f"{where} holds {int(bad.sum())} NaN/Inf value(s) (first in sample "
            f"{_first_bad(bad)}); clean or drop those samples before importing"
        )


def _as_csi(array: np.ndarray, where: str) -> np.ndarray:
    """Validated complex CSI ``[N, A, S]`` or ``[N, T, A, S]`` (complex64)."""
    if array.dtype.kind in "iuf":
        if array.ndim == 0 or array.shape[-1] != 2:
            raise InputError(
                f"{where} is a real {array.dtype} array of shape {array.shape}: store "
                "complex values (complex64/complex128) or real values with a trailing "
                "(real, imag) axis of size 2, e.g. [N, antennas, subcarriers, 2]"
            )
        array = array[..., 0].astype(np.float64) + 1j * array[..., 1].astype(np.float64)
    elif array.dtype.kind != "c":
        raise InputError(
            f"{where} has dtype {array.dtype}, not numbers: store complex64/complex128 CSI"
        )
    if array.ndim not in (3, 4):
        raise InputError(
            f"{where} has shape {array.shape} (rank {array.ndim} after (real, imag)); expected "
            "[N, antennas, subcarriers] or [N, T, antennas, subcarriers]"
        )
    if 0 in array.shape:
        raise InputError(f"{where} is empty (shape {array.shape}); it needs at least one sample")
    if array.ndim == 4 and array.shape[1] == 1:
        raise InputError(
            f"{where} has T = 1 slot (shape {array.shape}): drop the slot axis "
            "([N, antennas, subcarriers]) or give >= 2 slots"
        )
    _check_finite(array, where)
    return array.astype(np.complex64)


def _as_real(array: np.ndarray, where: str, shapes: str, ok: bool) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise InputError(f"{where} has dtype {array.dtype}; expected real numbers {shapes}")
    if not ok:
        raise InputError(f"{where} has shape {array.shape}; expected {shapes}")
    array = array.astype(np.float64)
    _check_finite(array, where)
    return array


def _validate(raw: dict[str, np.ndarray], names: dict[str, str], path: Path) -> dict:
    """Check every array and that they agree on N; returns validated arrays."""
    where = {field: f"{path} [{names[field]}]" for field in raw}
    out = {"csi": _as_csi(raw["csi"], where["csi"])}
    n = len(out["csi"])
    if "positions" in raw:
        array = raw["positions"]
        ok = array.ndim == 2 and array.shape[1] in (2, 3)
        out["positions"] = _as_real(array, where["positions"], "[N, 2] or [N, 3] metres", ok)
    if "los" in raw:
        los = _as_real(raw["los"], where["los"], "[N] of 0/1", raw["los"].ndim == 1)
        if not np.isin(los, (0.0, 1.0)).all():
            raise InputError(f"{where['los']} must hold only 0 (NLoS) and 1 (LoS)")
        out["los"] = los
    if "snr" in raw:
        out["snr"] = _as_real(raw["snr"], where["snr"], "[N] dB", raw["snr"].ndim == 1)
    lengths = {names[field]: len(array) for field, array in out.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(
            f"{path}: arrays disagree on the number of samples N: {lengths}; give one row "
            "per sample in every array"
        )
    norm = np.sqrt(
        (np.abs(out["csi"][:, 0] if out["csi"].ndim == 4 else out["csi"]) ** 2)
        .reshape(n, -1)
        .sum(axis=1)
    )
    if not (norm > 0).all():
        raise InputError(
            f"{where['csi']}: {int((norm <= 0).sum())} sample(s) are all zero (first "
            f"{int(np.flatnonzero(norm <= 0)[0])}); they cannot be normalised: drop them"
        )
    out["norm"] = norm
    return out


def station_radio(csi_shape: tuple[int, ...], num_beams: int, pilot_spacing: int) -> RadioConfig:
    """Radio geometry of a standalone import: shapes from the file, codebook and pilots given.

    ``csi_shape`` is ``[N, A, S]`` or ``[N, T, A, S]``; carrier frequency, subcarrier
    spacing and slot duration are not known and are recorded as unknown.
    """
    slots = csi_shape[1] if len(csi_shape) == 4 else 0
    return RadioConfig(
        num_bs_antennas=csi_shape[-2],
        num_subcarriers=csi_shape[-1],
        num_beams=num_beams,
        num_time_steps=slots,
        pilot_spacing=pilot_spacing,
    )


def _shape_of(radio: RadioConfig | dict) -> dict:
    values = asdict(radio) if isinstance(radio, RadioConfig) else radio
    return {key: values.get(key) for key in SHAPE_KEYS}


def check_radio(found: RadioConfig | dict, radio: RadioConfig, where: str) -> None:
    """Fail if ``found`` (the file's or station's geometry) differs from the preset's ``radio``."""
    have, want = _shape_of(found), _shape_of(radio)
    diff = {key: (have[key], want[key]) for key in SHAPE_KEYS if have[key] != want[key]}
    if diff:
        text = ", ".join(f"{key} {a} (preset: {b})" for key, (a, b) in diff.items())
        raise InputError(
            f"{where} does not match the preset's [radio] block: {text}; fix [radio] or "
            "import data of that shape (num_beams changes the beam labels: re-import)"
        )


def _derive(src: dict, site: ImportSiteConfig, radio: RadioConfig, site_index: int):
    """The station's fields and, per field, where its values come from."""
    csi_in, norm, n = src["csi"], src["norm"].astype(np.float32), len(src["csi"])
    scale = norm.reshape(n, *([1] * (csi_in.ndim - 1)))
    sequence = csi_in / scale if csi_in.ndim == 4 else None
    csi = np.ascontiguousarray(sequence[:, 0] if sequence is not None else csi_in / scale)
    rng = np.random.default_rng([site.seed, IMPORT_STREAM])
    if "snr" in src:
        snr_db = src["snr"].astype(np.float32)
    else:
        snr_db = rng.uniform(*site.snr_range_db, n).astype(np.float32)
    from rantune.channels.sionna_generator import _noisy_estimate

    gains = beam_gains(
        csi, dft_codebook(radio.num_bs_antennas, radio.num_beams, SPACING_WAVELENGTHS)
    )
    position = np.full((n, 3), np.nan, dtype=np.float32)
    distance = np.full(n, np.nan, dtype=np.float32)
    if "positions" in src:
        bs = np.full(3, np.nan)
        bs[: len(site.bs_position_m)] = site.bs_position_m
        pos = np.full((n, 3), np.nan)
        pos[:, : src["positions"].shape[1]] = src["positions"]
        position = (pos - bs).astype(np.float32)
        distance = np.hypot(position[:, 0], position[:, 1]).astype(np.float32)
    unknown_int = np.full(n, -1, dtype=np.int8)
    arrays = {
        "csi": csi,
        "csi_noisy": _noisy_estimate(csi, snr_db, radio.pilot_spacing, rng),
        "csi_norm": norm,
        "los": src["los"].astype(np.int8) if "los" in src else unknown_int,
        "indoor": unknown_int.copy(),
        "beam_index": gains.argmax(axis=1).astype(np.int64),
        "beam_gains": gains,
        "ut_position": position,
        "distance_2d": distance,
        "speed": np.full(n, np.nan, dtype=np.float32),
        "snr_db": snr_db,
        "site_index": np.full(n, site_index, dtype=np.int64),
    }
    if sequence is not None:
        arrays["csi_sequence"] = np.ascontiguousarray(sequence)
    sources = {name: "derived" for name in arrays}
    sources.update(csi=f"file:{site.csi_key}", indoor="unknown", speed="unknown")
    if sequence is not None:
        sources["csi_sequence"] = f"file:{site.csi_key}"
    sources["los"] = f"file:{site.los_key}" if "los" in src else "unknown"
    if "snr" in src:
        sources["snr_db"] = f"file:{site.snr_key}"
    if "positions" in src:
        sources["ut_position"] = f"file:{site.positions_key} minus bs_position_m"
    else:
        sources["ut_position"] = sources["distance_2d"] = "unknown"
    return ChannelDataset(arrays), sources


def import_site(
    site: ImportSiteConfig,
    radio: RadioConfig | None = None,
    num_beams: int | None = None,
    pilot_spacing: int | None = None,
    site_index: int = 0,
) -> tuple[ChannelDataset, dict]:
    """Read, validate and complete a user's file as one station (nothing is written).

    Parameters
    ----------
    site : the file and import options.
    radio : a preset's radio geometry the file must match (antennas, subcarriers, slots);
        it gives the codebook size and pilot spacing. ``None``: geometry from the file.
    num_beams, pilot_spacing : codebook size and pilot spacing without ``radio``
        (defaults: :class:`RadioConfig`'s); not allowed with ``radio``.
    site_index : value of the ``site_index`` field.

    Returns
    -------
    data : the station's fields (see the module docstring).
    manifest : its manifest for :func:`rantune.channels.station.write_station`.
    """
    path = Path(site.path).expanduser()
    if radio is not None and (num_beams is not None or pilot_spacing is not None):
        raise InputError("num_beams / pilot_spacing come from the preset's [radio] block")
    if site.positions_key and not site.bs_position_m:
        raise InputError(
            f"{site.name}: positions ({site.positions_key!r}) need the BS position in the same "
            "frame: give bs_position_m / --bs-position X,Y[,Z], or drop the positions key"
        )
    names = {field: getattr(site, option) for field, option in KEY_OPTIONS.items()}
    names = {field: key for field, key in names.items() if key}
    raw, kind = read_arrays(path, names, vector_fields=VECTORS)
    src = _validate(raw, names, path)
    if radio is None:
        defaults = RadioConfig()
        use = station_radio(
            src["csi"].shape,
            defaults.num_beams if num_beams is None else num_beams,
            defaults.pilot_spacing if pilot_spacing is None else pilot_spacing,
        )
    else:
        found = station_radio(src["csi"].shape, radio.num_beams, radio.pilot_spacing)
        check_radio(found, radio, f"{path} [{site.csi_key}] (site {site.name})")
        use = radio
    data, sources = _derive(src, site, use, site_index)
    radio_record = asdict(use)
    if radio is None:
        radio_record.update({key: None for key in UNKNOWN_RADIO})
    options = {k: v for k, v in asdict(site).items() if k not in ("name", "path", "scenario")}
    manifest = {
        "format": STATION_FORMAT,
        "station_format_version": STATION_FORMAT_VERSION,
        "name": site.name,
        "fields": {
            name: {"shape": list(array.shape), "dtype": str(array.dtype), "source": sources[name]}
            for name, array in data.arrays.items()
        },
        "unknown_fields": sorted(name for name, source in sources.items() if source == "unknown"),
        "radio": radio_record,
        "codebook": codebook_record(use.num_beams),
        "provenance": {
            "source": str(path.absolute()),
            "source_sha256": sha256_file(path),
            "source_format": kind,
            "options": options,
            "importer_version": IMPORTER_VERSION,
        },
    }
    return data, manifest


def load_import_site(site: ImportSiteConfig, radio: RadioConfig, site_index: int) -> ChannelDataset:
    """One ``scenario = "import"`` site of a preset: a station directory or a raw file.

    A station directory (``rantune data import`` output) is loaded with its checksum
    verified and its geometry checked against ``radio``; it keeps the options it was
    imported with, so the site may not set other import options. A raw file is
    imported in memory on every load (nothing is cached).
    """
    path = Path(site.path).expanduser()
    if not is_station_dir(path):
        return import_site(site, radio, site_index=site_index)[0]
    defaults = ImportSiteConfig(name=site.name, path=site.path, seed=site.seed)
    changed = [k for k in KEY_OPTIONS.values() if getattr(site, k) != getattr(defaults, k)]
    changed += [
        k for k in ("snr_range_db", "bs_position_m") if getattr(site, k) != getattr(defaults, k)
    ]
    if changed:
        raise InputError(
            f"site {site.name}: {path} is an imported station; its options are fixed at import "
            f"time (see station.json), remove {changed} from the site or point path at the raw file"
        )
    data, manifest = load_station(path)
    check_radio(manifest["radio"], radio, f"station {path} (site {site.name})")
    data.arrays["site_index"] = np.full(len(data), site_index, dtype=np.int64)
    return data
