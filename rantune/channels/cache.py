"""On-disk cache of generated channel data, one safetensors shard per site, read memory-mapped.

Layout: ``<root>/sites/<site_hash>.safetensors`` and ``<site_hash>.json``; the hash
covers the radio geometry and the site's config, so presets that share a site
share its shard. The JSON records the shard's sha256 and, per tensor, the sha256 of
its bytes (``tensors``) and of the header (``header_sha256``): a shard whose bytes
do not match (truncated, edited, half-copied) raises :class:`CorruptCacheError` and
is never used. Writes go to a temporary file and are renamed into place.

Reads are memory-mapped (:class:`MappedShard`): safetensors' own ``safe_open`` maps
the file too, but its ``get_tensor`` / ``get_slice`` copy whole tensors or contiguous
ranges; a client that needs some rows (or only the label tensors) maps the file and
gathers just those rows from numpy views at the offsets of the safetensors header
(the format's documented layout: 8-byte little-endian header length, JSON header
with ``dtype``, ``shape`` and ``data_offsets`` per tensor, then the raw bytes).
Only the tensors read are verified (their own sha256; reading every tensor checks
the whole file's), once per :class:`MappedShard`.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from rantune.channels.dataset import ChannelDataset
from rantune.errors import InputError
from rantune.fileio import atomic_write_json, sha256_file

CACHE_FORMAT_VERSION = 1
COMPLEX_SUFFIX = "::complex"
HEADER_KEY = "__header__"
# safetensors dtype names -> numpy (the ones rantune writes, and their relatives)
DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}


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


def _digest(buffer) -> str:
    return hashlib.sha256(buffer).hexdigest()


def _file_digest(handle, start: int, stop: int) -> str:
    """sha256 of bytes ``start:stop`` of an open file (plain reads: nothing is mapped)."""
    digest = hashlib.sha256()
    handle.seek(start)
    left = stop - start
    while left > 0:
        block = handle.read(min(left, 1 << 20))
        if not block:
            break
        digest.update(block)
        left -= len(block)
    return digest.hexdigest()


def _header_size(path: Path) -> int:
    """Length of a safetensors file's prefix (8-byte length + JSON header)."""
    with open(path, "rb") as handle:
        return 8 + int.from_bytes(handle.read(8), "little")


class MappedShard:
    """One shard, read memory-mapped: any rows of any of its tensors, verified on use.

    Parameters
    ----------
    shard, meta : the ``.safetensors`` file and its JSON record (``sha256``,
        ``num_samples``; ``tensors`` / ``header_sha256`` for per-tensor checks).
    hint : how to repair the entry (ends every error message).

    Attributes
    ----------
    record : the JSON record.
    num_samples : rows of every tensor.
    """

    def __init__(self, shard: Path, meta: Path, hint: str) -> None:
        self.shard, self.meta, self.hint = Path(shard), Path(meta), hint
        try:
            self.record = json.loads(self.meta.read_text())
            self.sha256 = self.record["sha256"]
            self.num_samples = int(self.record["num_samples"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CorruptCacheError(
                f"cache metadata {self.meta} is unreadable ({err}); {hint}"
            ) from err
        if not self.shard.exists():
            raise CorruptCacheError(f"cache shard {self.shard} is missing; {hint}")
        self._entries: dict[str, dict] | None = None
        self._data_start = 0
        self._verified: set[str] = set()

    # ------------------------------------------------------------------ header
    def _fail(self, what: str, err: Exception | None = None) -> CorruptCacheError:
        reason = f"{what} ({err})" if err is not None else what
        return CorruptCacheError(f"cache shard {self.shard} {reason}; {self.hint}")

    def _header(self) -> dict[str, dict]:
        if self._entries is not None:
            return self._entries
        size = self.shard.stat().st_size
        try:
            with open(self.shard, "rb") as handle:
                length = int.from_bytes(handle.read(8), "little")
                if not 0 < length <= size - 8:
                    raise ValueError(f"header length {length} does not fit a {size}-byte file")
                header = json.loads(handle.read(length))
            header.pop("__metadata__", None)
            end = 0
            for name, info in header.items():
                lo, hi = info["data_offsets"]
                count = int(np.prod(info["shape"], dtype=np.int64))
                if hi - lo != count * np.dtype(DTYPES[info["dtype"]]).itemsize or lo > hi:
                    raise ValueError(f"tensor {name} has inconsistent offsets")
                end = max(end, hi)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise self._fail("cannot be parsed", err) from err
        if 8 + length + end != size:
            raise self._fail(
                f"is corrupted ({size} bytes, its header describes {8 + length + end}; "
                "sha256 not matching the record)"
            )
        self._entries, self._data_start = header, 8 + length
        return header

    @property
    def fields(self) -> tuple[str, ...]:
        """Field names (complex fields without their ``::complex`` suffix), sorted."""
        return tuple(sorted(n.removesuffix(COMPLEX_SUFFIX) for n in self._header()))

    def _tensor_name(self, field: str) -> str:
        entries = self._header()
        for name in (field, field + COMPLEX_SUFFIX):
            if name in entries:
                return name
        raise InputError(f"{self.shard} has no field {field!r}; it holds {list(self.fields)}")

    # ------------------------------------------------------------ verification
    def _verify_file(self) -> None:
        if "*" in self._verified:
            return
        actual = sha256_file(self.shard)
        if actual != self.sha256:
            raise self._fail(
                f"is corrupted (sha256 {actual[:12]}... != recorded {self.sha256[:12]}...)"
            )
        self._verified.add("*")

    def _verify(self, names: Iterable[str]) -> None:
        """Check the tensors ``names`` against their recorded sha256 (each once)."""
        names = [n for n in names if n not in self._verified]
        if "*" in self._verified or not names:
            return
        digests = self.record.get("tensors")
        if not isinstance(digests, dict):  # an entry written before per-tensor digests
            self._verify_file()
            return
        entries = self._header()
        with open(self.shard, "rb") as handle:
            checks = [(HEADER_KEY, 0, self._data_start)] if HEADER_KEY not in self._verified else []
            for name in names:
                lo, hi = entries[name]["data_offsets"]
                checks.append((name, self._data_start + lo, self._data_start + hi))
            for name, lo, hi in checks:
                expected = self.record.get("header_sha256") if name == HEADER_KEY else digests.get(name)
                actual = _file_digest(handle, lo, hi)
                if actual != expected:
                    raise self._fail(
                        f"is corrupted ({name}: sha256 {actual[:12]}... != recorded "
                        f"{str(expected)[:12]}...)"
                    )
                self._verified.add(name)

    # -------------------------------------------------------------------- read
    def read(
        self, index: np.ndarray | None = None, fields: Iterable[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Rows ``index`` (``[k]`` int, any order; ``None`` = all) of ``fields``
        (default all), as fresh arrays; the mapping is closed before returning.

        Raises
        ------
        CorruptCacheError
            If a tensor read fails its sha256, or the file cannot be parsed.
        """
        if fields is None:
            self._verify_file()  # every tensor is read: one pass over the whole file
            names = list(self._header())
        else:
            names = [self._tensor_name(f) for f in fields]
        self._verify(names)
        entries = self._header()
        rows = None if index is None else np.asarray(index, dtype=np.int64)
        if rows is not None and len(rows) and (rows.min() < 0 or rows.max() >= self.num_samples):
            raise InputError(f"rows outside 0..{self.num_samples - 1} of {self.shard} requested")
        out: dict[str, np.ndarray] = {}
        with open(self.shard, "rb") as handle, mmap.mmap(
            handle.fileno(), 0, access=mmap.ACCESS_READ
        ) as mapped:
            for name in names:
                info = entries[name]
                dtype, shape = np.dtype(DTYPES[info["dtype"]]), tuple(info["shape"])
                count = int(np.prod(shape, dtype=np.int64))
                if count == 0:
                    array = np.zeros(shape, dtype)
                else:
                    view = np.frombuffer(
                        mapped, dtype, count, self._data_start + info["data_offsets"][0]
                    ).reshape(shape)
                    array = view.copy() if rows is None else np.take(view, rows, axis=0)
                    del view  # no view may outlive the mapping
                if rows is not None and count == 0:
                    array = np.zeros((len(rows), *shape[1:]), dtype)
                if name.endswith(COMPLEX_SUFFIX):
                    array = array.view(np.complex64)[..., 0]
                out[name.removesuffix(COMPLEX_SUFFIX)] = array
        return out

    def dataset(self, index: np.ndarray | None = None) -> ChannelDataset:
        """Rows ``index`` of every field as a :class:`ChannelDataset`."""
        return ChannelDataset(self.read(index))


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
        tensors = _to_tensors(data)
        try:
            save_file(tensors, tmp)
            checksum = sha256_file(Path(tmp))
            with open(tmp, "rb") as handle:
                header = _file_digest(handle, 0, _header_size(Path(tmp)))
            meta.unlink(missing_ok=True)
            os.replace(tmp, shard)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        record = {
            "format_version": CACHE_FORMAT_VERSION,
            "key": key,
            "sha256": checksum,
            "header_sha256": header,
            "tensors": {name: _digest(a.tobytes()) for name, a in tensors.items()},
            "num_samples": len(data),
            **info,
        }
        atomic_write_json(meta, record)

    def open(self, key: str) -> MappedShard:
        """The entry ``key``, memory-mapped (nothing is read or verified yet).

        Raises
        ------
        CorruptCacheError
            If the metadata is unreadable or the shard is missing.
        """
        shard, meta = self.paths(key)
        return MappedShard(shard, meta, self.repair_hint.format(shard=shard, meta=meta.name))

    def load(self, key: str) -> ChannelDataset:
        """Load and verify a whole shard.

        Raises
        ------
        CorruptCacheError
            If the shard's sha256 does not match its metadata or it cannot be parsed.
        """
        return self.open(key).dataset()

    def remove(self, key: str) -> None:
        for path in self.paths(key):
            path.unlink(missing_ok=True)
