"""On-disk cache of generated channel data, one safetensors shard per site.

Layout: ``<root>/sites/<site_hash>.safetensors`` and ``<site_hash>.json``; the hash
covers the radio geometry and the site's config, so presets that share a site
share its shard. The JSON records the shard's sha256: a shard whose bytes do not
match (truncated, edited, half-copied) raises :class:`CorruptCacheError` and is
never used. Writes go to a temporary file and are renamed into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from rantune.channels.dataset import ChannelDataset
from rantune.errors import InputError
from rantune.fileio import atomic_write_json, sha256_file

CACHE_FORMAT_VERSION = 1
COMPLEX_SUFFIX = "::complex"


class CorruptCacheError(InputError):
    """A cached shard failed its checksum or could not be parsed."""


def default_cache_root() -> Path:
    """``$RANTUNE_CACHE`` if set, else ``~/.cache/rantune``."""
    return Path(os.environ.get("RANTUNE_CACHE", Path.home() / ".cache" / "rantune"))


def _to_tensors(data: ChannelDataset) -> dict[str, np.ndarray]:
    tensors = {}
    for name, array in data.arrays.items():
        if np.iscomplexobj(array):
            real = np.ascontiguousarray(array.astype(np.complex64)).view(np.float32)
            tensors[name + COMPLEX_SUFFIX] = real.reshape(*array.shape, 2)
        else:
            tensors[name] = np.ascontiguousarray(array)
    return tensors


def _from_tensors(tensors: dict[str, np.ndarray]) -> ChannelDataset:
    arrays = {}
    for name, array in tensors.items():
        if name.endswith(COMPLEX_SUFFIX):
            complex_view = np.ascontiguousarray(array).view(np.complex64)[..., 0]
            arrays[name.removesuffix(COMPLEX_SUFFIX)] = complex_view
        else:
            arrays[name] = array
    return ChannelDataset(arrays)


class ShardCache:
    """Stores and verifies one safetensors shard per site hash."""

    repair_hint = "delete {shard} (and {meta}) or rerun with --rebuild to regenerate it"

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()

    def paths(self, key: str) -> tuple[Path, Path]:
        base = self.root / "sites" / key
        return base.with_suffix(".safetensors"), base.with_suffix(".json")

    def contains(self, key: str) -> bool:
        shard, meta = self.paths(key)
        return shard.exists() and meta.exists()

    def save(self, key: str, data: ChannelDataset, info: dict) -> None:
        """Write the shard first, then its metadata (the commit point).

        An old metadata file is removed before the new shard replaces the old one, so
        an interruption in between leaves an entry that :meth:`contains` reports as
        missing (and is regenerated), never a shard paired with a stale checksum.
        """
        shard, meta = self.paths(key)
        shard.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=shard.parent, prefix=f".{shard.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(_to_tensors(data), tmp)
            checksum = sha256_file(Path(tmp))
            meta.unlink(missing_ok=True)
            os.replace(tmp, shard)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        record = {
            "format_version": CACHE_FORMAT_VERSION,
            "key": key,
            "sha256": checksum,
            "num_samples": len(data),
            **info,
        }
        atomic_write_json(meta, record)

    def load(self, key: str) -> ChannelDataset:
        """Load and verify a shard.

        Raises
        ------
        CorruptCacheError
            If the shard's sha256 does not match its metadata or it cannot be parsed.
        """
        shard, meta = self.paths(key)
        hint = self.repair_hint.format(shard=shard, meta=meta.name)
        try:
            record = json.loads(meta.read_text())
            expected = record["sha256"]
        except (OSError, ValueError, KeyError) as err:
            raise CorruptCacheError(f"cache metadata {meta} is unreadable ({err}); {hint}") from err
        if not shard.exists():
            raise CorruptCacheError(f"cache shard {shard} is missing; {hint}")
        actual = sha256_file(shard)
        if actual != expected:
            raise CorruptCacheError(
                f"cache shard {shard} is corrupted (sha256 {actual[:12]}... != recorded "
                f"{expected[:12]}...); {hint}"
            )
        try:
            return _from_tensors(load_file(str(shard)))
        except Exception as err:  # safetensors raises its own error types
            raise CorruptCacheError(
                f"cache shard {shard} cannot be parsed ({err}); {hint}"
            ) from err

    def remove(self, key: str) -> None:
        for path in self.paths(key):
            path.unlink(missing_ok=True)
