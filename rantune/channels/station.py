"""One base station's data set on disk: a directory with a checksummed shard and a manifest.

This is the one on-disk format of a station's data, whether it was imported
(``rantune data import``) or exported from the channel cache for a deployed base
station (``rantune federation up`` lays out one per SuperNode; node-config
``data-path`` points the node at it). Layout of a station directory ``DIR``::

    DIR/station.safetensors   the per-sample fields (rantune.channels.dataset), the same
                              tensors as a cached generated site (complex fields stored as
                              ``name::complex`` float32 ``[..., 2]``)
    DIR/station.json          the manifest: ``format`` = "rantune-station",
                              ``station_format_version``, ``name`` (the station's identity:
                              its site name in a preset), ``num_samples``, ``sha256`` of the
                              shard, ``header_sha256`` and ``tensors`` (sha256 per tensor),
                              ``fields`` (shape, dtype, source: ``file:<name>`` /
                              ``derived`` / ``generated`` / ``unknown``), ``unknown_fields``,
                              ``radio``, ``codebook`` and ``provenance`` (imported: source
                              file, its sha256, options, importer version; generated: the
                              generator and its version, the site config and its hash, the
                              preset and the station's index in it)

A shard whose bytes do not match the manifest's sha256 is never used. The shard is
read memory-mapped (:func:`open_station`; only the rows and tensors asked for are
read and verified). A station is written to a temporary directory next to ``DIR``
and renamed into place, so a failure leaves no half-written station.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from rantune.channels.cache import MappedShard, ShardCache
from rantune.channels.dataset import ChannelDataset
from rantune.errors import InputError

STATION_FORMAT = "rantune-station"
STATION_FORMAT_VERSION = 1
SHARD_NAME = "station.safetensors"
MANIFEST_NAME = "station.json"
CODEBOOK_SPACING_WAVELENGTHS = 0.5  # ULA element spacing of every station's beam codebook


def codebook_record(num_beams: int) -> dict:
    """The manifest's ``codebook`` entry: the DFT codebook that labels the beams."""
    return {
        "kind": "dft-ula",
        "num_beams": int(num_beams),
        "spacing_wavelengths": CODEBOOK_SPACING_WAVELENGTHS,
        "frame": "array local: beam k steers to direction cosine -1 + (2k + 1) / K",
    }


class StationStore(ShardCache):
    """A :class:`ShardCache` whose one entry is ``root/station.{safetensors,json}``."""

    repair_hint = "re-import the station with `rantune data import` (or restore {shard})"

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / SHARD_NAME, self.root / MANIFEST_NAME


def is_station_dir(path: Path | str) -> bool:
    """Whether ``path`` is a directory holding a station manifest."""
    return (Path(path) / MANIFEST_NAME).is_file()


def check_station_target(out: Path, replace: bool = False) -> Path:
    """Fail, without writing anything, if ``out`` cannot receive a station directory.

    ``out`` may be missing, an empty directory, or (with ``replace``) an existing
    station directory.
    """
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise InputError(f"--out {out} is a file; give a directory path for the station")
        if any(out.iterdir()):
            if not is_station_dir(out):
                raise InputError(
                    f"--out {out} is a non-empty directory that is not a station data set; "
                    "choose a new or empty directory"
                )
            if not replace:
                raise InputError(
                    f"--out {out} already holds a station data set; pass --force to replace it"
                )
    ancestor = out.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: {ancestor} is not a writable directory")
    return out


def write_station(out: Path, data: ChannelDataset, manifest: dict, replace: bool = False) -> Path:
    """Write ``data`` and ``manifest`` as the station directory ``out`` (atomically).

    Parameters
    ----------
    out : the station directory to create (see :func:`check_station_target`).
    data : the station's samples.
    manifest : JSON-serialisable manifest; ``name`` is required. The shard's format
        version, sha256 and sample count are added.
    replace : replace an existing station directory at ``out``.

    Returns
    -------
    Path
        ``out``.
    """
    out = check_station_target(out, replace)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    old = tmp.with_name(tmp.name + ".old")
    try:
        StationStore(tmp).save(manifest["name"], data, manifest)
        if out.exists():
            os.rename(out, old)  # an empty directory or the station being replaced
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out


def read_manifest(path: Path | str) -> dict:
    """The manifest of the station directory ``path`` (checked to be one)."""
    path = Path(path)
    if not is_station_dir(path):
        raise InputError(
            f"{path} is not a station data set (no {MANIFEST_NAME}); create one with "
            "`rantune data import FILE --out DIR`"
        )
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path / MANIFEST_NAME} is unreadable ({err}); re-import it") from err
    if not isinstance(manifest, dict) or manifest.get("format") != STATION_FORMAT:
        raise InputError(f"{path / MANIFEST_NAME} is not a {STATION_FORMAT} manifest")
    version = manifest.get("station_format_version")
    if version != STATION_FORMAT_VERSION:
        raise InputError(
            f"{path} has station format version {version!r}; this rantune reads version "
            f"{STATION_FORMAT_VERSION}: re-import it"
        )
    return manifest


def open_station(path: Path | str) -> tuple[MappedShard, dict]:
    """A station directory, memory-mapped: its shard (nothing read yet) and its manifest.

    Raises
    ------
    InputError
        Not a station directory, unreadable or foreign manifest, or the shard is missing.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(
            f"{path} does not exist: give the directory holding the station's "
            f"{MANIFEST_NAME} and {SHARD_NAME}"
        )
    manifest = read_manifest(path)
    return StationStore(path).open(manifest["name"]), manifest


def load_station(path: Path | str) -> tuple[ChannelDataset, dict]:
    """Load a whole station directory, verifying the shard's checksum.

    Returns
    -------
    data : the station's samples.
    manifest : its manifest (see the module docstring).

    Raises
    ------
    InputError
        Not a station directory, unreadable or foreign manifest; a
        :class:`~rantune.channels.cache.CorruptCacheError` if the shard fails its checksum.
    """
    shard, manifest = open_station(path)
    return shard.dataset(), manifest
