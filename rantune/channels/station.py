"""One base station's data set on disk: a directory with a checksummed shard and a manifest.

Layout of a station directory ``DIR``::

    DIR/station.safetensors   the per-sample fields (rantune.channels.dataset), the same
                              tensors as a cached generated site (complex fields stored as
                              ``name::complex`` float32 ``[..., 2]``)
    DIR/station.json          the manifest: ``format`` = "rantune-station",
                              ``station_format_version``, ``name``, ``num_samples``,
                              ``sha256`` of the shard, ``fields`` (shape, dtype, source:
                              ``file:<name>`` / ``derived`` / ``unknown``), ``unknown_fields``,
                              ``radio``, ``codebook`` and ``provenance``

A shard whose bytes do not match the manifest's sha256 is never used. A station is
written to a temporary directory next to ``DIR`` and renamed into place, so a failure
leaves no half-written station.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from rantune.channels.cache import ShardCache
from rantune.channels.dataset import ChannelDataset
from rantune.errors import InputError

STATION_FORMAT = "rantune-station"
STATION_FORMAT_VERSION = 1
SHARD_NAME = "station.safetensors"
MANIFEST_NAME = "station.json"


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


def load_station(path: Path | str) -> tuple[ChannelDataset, dict]:
    """Load a station directory, verifying the shard's checksum.

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
    manifest = read_manifest(path)
    return StationStore(Path(path)).load(manifest["name"]), manifest
