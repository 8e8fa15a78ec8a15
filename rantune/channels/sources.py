"""Where each base station of a preset keeps its data, read one station at a time.

Station ``i`` of a preset is read from one place, opened on first use and never
pooled with the others:

- a generated site (TR 38.901 or ray-traced): its shard in the channel cache
  (:mod:`rantune.channels.cache`), generated and cached first if it is missing;
- an imported station directory (``scenario = "import"``, ``path = DIR``);
- a raw import file (``.npz`` / HDF5 / ``.mat``): imported in memory on first use
  (it has no shard to map);
- on a deployed base station, the node's own station directory (node-config
  ``data-path``, :class:`NodeStations`): every other station is refused.

Shards are memory-mapped (:class:`~rantune.channels.cache.MappedShard`): reading some
rows touches those rows and verifies only the tensors read; reading the labels of
every station (a synthetic partition's index) reads two small tensors per station.

>>> from rantune.presets import load_preset
>>> stations = PresetStations(load_preset("smoke"))
>>> stations[1].dataset(np.arange(4))["site_index"]     # rows 0..3 of station 1 only
array([1, 1, 1, 1])
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from rantune.channels.cache import MappedShard, ShardCache
from rantune.channels.dataset import ChannelDataset
from rantune.channels.station import (
    STATION_FORMAT,
    STATION_FORMAT_VERSION,
    codebook_record,
    is_station_dir,
    open_station,
    read_manifest,
    write_station,
)
from rantune.config import IMPORT_SCENARIO, RT_SCENARIO, DataConfig
from rantune.errors import InputError

LABELS = {"beam": "beam_index", "los": "los"}
KEEP_OPEN = 256  # stations a PresetStations keeps open (metadata + verification state)


def _fill_fields(cfg: DataConfig) -> tuple[str, ...]:
    """Fields every station of ``cfg`` carries although some do not store them: the
    ray-traced-only fields (NaN) when the preset has ray-traced stations."""
    if not any(site.scenario == RT_SCENARIO for site in cfg.sites):
        return ()
    from rantune.channels.raytraced import RT_ONLY_FIELDS

    return RT_ONLY_FIELDS


class StationSource:
    """One station's data: its shard, memory-mapped (or an in-memory data set).

    Parameters
    ----------
    index : the station's index in its preset (written into ``site_index``).
    name : its site name.
    shard : its mapped shard; or ``data`` for a raw import file held in memory.
    fill : fields the shard may lack that every station of the preset carries (NaN).
    """

    def __init__(
        self,
        index: int,
        name: str,
        shard: MappedShard | None = None,
        data: ChannelDataset | None = None,
        fill: tuple[str, ...] = (),
    ) -> None:
        if (shard is None) == (data is None):
            raise ValueError("give exactly one of shard and data")
        self.index, self.name, self.shard, self.data, self.fill = index, name, shard, data, fill

    @property
    def num_samples(self) -> int:
        return self.shard.num_samples if self.shard is not None else len(self.data)

    def read(self, rows: np.ndarray | None = None, fields=None) -> dict[str, np.ndarray]:
        """Rows ``rows`` (local indices, any order; ``None`` = all) of ``fields``."""
        if self.shard is not None:
            return self.shard.read(rows, fields)
        names = list(self.data.arrays) if fields is None else list(fields)
        index = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
        return {name: self.data[name][index] for name in names}

    def dataset(self, rows: np.ndarray | None = None) -> ChannelDataset:
        """Rows ``rows`` of every field, ``site_index`` = this station, missing
        ray-traced-only fields as NaN (a copy: no view of the mapping remains)."""
        arrays = self.read(rows)
        count = len(arrays["csi"])
        arrays["site_index"] = np.full(count, self.index, dtype=np.int64)
        for name in self.fill:
            if name not in arrays:
                shape = (count, 3) if name == "ut_position_scene" else (count,)
                arrays[name] = np.full(shape, np.nan, dtype=np.float32)
        return ChannelDataset(arrays)

    def labels(self) -> dict[str, np.ndarray]:
        """``{"beam": [N] int64, "los": [N] int64}`` (only these two tensors are read)."""
        arrays = self.read(None, LABELS.values())
        return {label: arrays[field].astype(np.int64) for label, field in LABELS.items()}


class PresetStations:
    """The stations of a preset, each opened on first use (see the module docstring).

    Parameters
    ----------
    cfg : the preset.
    cache_root : channel cache (default ``$RANTUNE_CACHE`` / ``~/.cache/rantune``).
    """

    def __init__(self, cfg: DataConfig, cache_root: Path | str | None = None) -> None:
        self.cfg = cfg
        self.cache = ShardCache(Path(cache_root) if cache_root else None)
        self.fill = _fill_fields(cfg)
        self._open: OrderedDict[int, StationSource] = OrderedDict()

    def __len__(self) -> int:
        return len(self.cfg.sites)

    def __getitem__(self, index: int) -> StationSource:
        """Station ``index``, kept open (its verification is remembered) for later reads;
        the :data:`KEEP_OPEN` most recently used stay open."""
        if index not in self._open:
            self._open[index] = self.open(index)
            while len(self._open) > KEEP_OPEN:
                self._open.popitem(last=False)
        self._open.move_to_end(index)
        return self._open[index]

    def _key(self, index: int) -> str:
        from rantune.channels import cache_key

        return cache_key(self.cfg, self.cfg.sites[index])

    def open(self, index: int) -> StationSource:
        """Station ``index``, opened afresh (not kept)."""
        site = self.cfg.sites[index]
        if site.scenario == IMPORT_SCENARIO:
            if is_station_dir(Path(site.path).expanduser()):
                from rantune.channels.importer import check_radio

                shard, manifest = open_station(Path(site.path).expanduser())
                check_radio(manifest["radio"], self.cfg.radio, f"station {site.path} ({site.name})")
                return StationSource(index, site.name, shard=shard, fill=self.fill)
            from rantune.channels.importer import load_import_site

            data = load_import_site(site, self.cfg.radio, index)
            return StationSource(index, site.name, data=data, fill=self.fill)
        key = self._key(index)
        if not self.cache.contains(key):
            self.generate(index)
        return StationSource(index, site.name, shard=self.cache.open(key), fill=self.fill)

    def generate(self, index: int) -> None:
        """Generate and cache station ``index`` (one station, nothing else loaded)."""
        from rantune.channels import load_sites

        single = replace(self.cfg, sites=(self.cfg.sites[index],))
        load_sites(single, cache_root=self.cache.root, progress=False)

    def missing(self) -> list[int]:
        """Generated stations that are not in the cache yet (checks files only)."""
        return [
            i
            for i, site in enumerate(self.cfg.sites)
            if site.scenario != IMPORT_SCENARIO and not self.cache.contains(self._key(i))
        ]

    def num_samples(self, index: int) -> int:
        """Rows of station ``index`` (its metadata only; the source is not kept open)."""
        if index in self._open:
            return self._open[index].num_samples
        return self.open(index).num_samples


class NodeStations:
    """A deployed base station's view of the preset: only its own station directory.

    Parameters
    ----------
    cfg : the run's preset (names the station of each partition id).
    index : this node's station (its ``partition-id``; natural partitioning).
    path : the node's ``data-path``: a station directory holding station ``index``.

    Raises
    ------
    InputError
        If ``path`` does not exist, is not a station directory, or holds another
        station (name, site config or radio geometry differ from station ``index``).
    """

    def __init__(self, cfg: DataConfig, index: int, path: Path | str) -> None:
        self.cfg, self.index, self.path = cfg, index, Path(path).expanduser()
        if not self.path.is_dir():
            raise InputError(
                f"data-path {str(path)!r} does not exist or is not a directory: point it at "
                f"this base station's data set (a directory with station.json + "
                "station.safetensors; `rantune federation up --preset` lays them out)"
            )
        if not is_station_dir(self.path):
            raise InputError(
                f"data-path {str(path)!r} holds no station.json: it is not a station data set "
                "(export one with `rantune federation up --preset` or `rantune data import`)"
            )
        shard, manifest = open_station(self.path)
        check_identity(manifest, cfg, index, f"data-path {str(path)!r}")
        self.source = StationSource(index, manifest["name"], shard=shard, fill=_fill_fields(cfg))

    def __len__(self) -> int:
        return len(self.cfg.sites)

    def __getitem__(self, index: int) -> StationSource:
        if index != self.index:
            raise InputError(
                f"this base station holds only its own data (station {self.index}, "
                f"data-path {str(self.path)!r}); station {index} is not here: deployed nodes "
                "support partition.scheme='natural' and no server-side data"
            )
        return self.source

    def open(self, index: int) -> StationSource:
        return self[index]

    def num_samples(self, index: int) -> int:
        return self[index].num_samples


def check_identity(manifest: dict, cfg: DataConfig, index: int, where: str) -> None:
    """Fail unless a station manifest is station ``index`` of preset ``cfg``: its name,
    its site config hash (generated stations) and its radio geometry."""
    from rantune.channels.importer import check_radio

    if not 0 <= index < len(cfg.sites):
        raise InputError(f"{where}: station index {index} is outside preset {cfg.name!r}")
    site = cfg.sites[index]
    if manifest.get("name") != site.name:
        raise InputError(
            f"{where} holds station {manifest.get('name')!r}, but this node is partition-id "
            f"{index} = station {site.name!r} of preset {cfg.name!r}: point data-path at "
            "that station's directory"
        )
    recorded = manifest.get("provenance", {}).get("site_hash")
    if recorded is not None and site.scenario != IMPORT_SCENARIO:
        expected = cfg.site_hash(site)
        if recorded != expected:
            raise InputError(
                f"{where} holds station {site.name!r} generated from another configuration "
                f"(site hash {recorded} != {expected} of preset {cfg.name!r}, data.seed "
                "included): export it again from this preset"
            )
    check_radio(manifest["radio"], cfg.radio, where)


def export_station(
    cfg: DataConfig, index: int, out: Path | str, cache_root: Path | str | None = None
) -> Path:
    """Write station ``index`` of ``cfg`` as a station directory ``out`` (atomically).

    The shard holds exactly that station's rows (from the channel cache, generated
    first if missing, or from its import); the manifest records where it came from.
    A deployed base station is given this directory as its ``data-path``.
    """
    stations = PresetStations(cfg, cache_root)
    data = stations[index].dataset()
    site = cfg.sites[index]
    if site.scenario == IMPORT_SCENARIO:
        manifest = _import_manifest(site, cfg, index)
    else:
        from rantune.channels import site_kind

        manifest = {
            "format": STATION_FORMAT,
            "station_format_version": STATION_FORMAT_VERSION,
            "name": site.name,
            "fields": {
                name: {"shape": list(a.shape), "dtype": str(a.dtype), "source": "generated"}
                for name, a in data.arrays.items()
            },
            "unknown_fields": [],
            "radio": asdict(cfg.radio),
            "codebook": codebook_record(cfg.radio.num_beams),
            "provenance": {
                "generator": site_kind(site),
                "generator_version": _generator_version(site.scenario),
                "cache_key": stations._key(index),
                "site_hash": cfg.site_hash(site),
                "site": asdict(site),
            },
        }
    manifest["provenance"].update(preset=cfg.name, station_index=index)
    return write_station(Path(out), data, manifest, replace=True)


def _import_manifest(site, cfg: DataConfig, index: int) -> dict:
    """The manifest of an imported station (its directory's, or the raw file's import)."""
    path = Path(site.path).expanduser()
    if is_station_dir(path):
        written = ("format_version", "key", "sha256", "header_sha256", "tensors", "num_samples")
        return {k: v for k, v in read_manifest(path).items() if k not in written}
    from rantune.channels.importer import import_site

    return import_site(site, cfg.radio, site_index=index)[1]


def _generator_version(scenario: str) -> str:
    """``sionna-rt <v> / rantune-rt <n>`` for ray-traced sites, ``sionna <v>`` else."""
    if scenario == RT_SCENARIO:
        from rantune.channels.raytraced import RT_GENERATOR_VERSION

        return f"sionna-rt {metadata.version('sionna-rt')} / rantune-rt {RT_GENERATOR_VERSION}"
    return f"sionna {metadata.version('sionna')}"
