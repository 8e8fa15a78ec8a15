"""The rows a federated run trains and tests on: each client's splits and the global test set.

:class:`FederatedData` holds a preset's stations (:mod:`rantune.channels.sources`:
each station opened on its own, memory-mapped, never concatenated into a pooled
copy) and their partitioning into clients. Nothing is read when it is built: a
client reads only its own rows, the server only the global test rows.

- ``natural`` (one base station = one client): a client's rows depend on its own
  station alone (:func:`rantune.partition.station_split`), so it opens only its own
  shard; a deployed base station builds it from its own station directory
  (:meth:`FederatedData.of_node`, node-config ``data-path``) and cannot reach another.
- ``iid`` / ``quantity`` / ``dirichlet-<alpha>`` (simulation only): the partition
  index is computed from the label tensors of every station (two small tensors per
  shard, memory-mapped), then a client reads only its own rows.

Rows are addressed per station (``[(station, local rows), ...]``, :meth:`selection`)
or as pooled indices (station 0's rows first, then station 1's, ..., as
:func:`rantune.partition.partition` numbers them; :meth:`rows` / :meth:`take`, for
tools that hold every station's metadata). How many clients a run has is known from
the config alone (:func:`num_clients`): asking it loads no data.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import Tensor

from rantune.channels import ChannelDataset
from rantune.channels.sources import NodeStations, PresetStations
from rantune.config import DataConfig
from rantune.errors import InputError
from rantune.federated.run_config import DataSection
from rantune.partition import (
    LABEL_FIELDS,
    PartitionConfig,
    Partitioning,
    parse_scheme,
    partition,
    station_split,
)
from rantune.presets import PRESET_DIR, load_preset
from rantune.seeding import derive_seed
from rantune.tasks import Task

Selection = list[tuple[int, np.ndarray]]
"""Rows addressed per station: ``[(station index, sorted local row indices), ...]``."""

SPLITS = ("train", "val", "test")


def preset(data: DataSection) -> DataConfig:
    """The run's preset (``data.preset``) with the data seed (``data.seed``) applied.

    Parsed once per preset file version and seed (a 10,000-station preset takes about
    a second to build; the client and server ask for it on every message): the result
    is a frozen :class:`DataConfig`, and an edited file (new mtime or size) is parsed
    again.
    """
    return _parsed_preset(data.preset, data.seed, _file_stamp(data.preset))


def _file_stamp(name: str) -> tuple[str, int, int] | None:
    """Where ``load_preset`` would read ``name`` from, with its mtime and size."""
    path = Path(name).expanduser()
    if not path.suffix and (PRESET_DIR / f"{name}.toml").exists():
        path = PRESET_DIR / f"{name}.toml"
    try:
        stat = path.stat()
    except OSError:
        return None  # load_preset reports it (errors are not cached)
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=8)
def _parsed_preset(name: str, seed: int, stamp: tuple | None) -> DataConfig:
    return load_preset(name).with_seed(seed)


def partition_config(data: DataSection, partition_cfg: PartitionConfig) -> PartitionConfig:
    """The run's partition config; the global test share is the preset's ``test_fraction``."""
    return replace(partition_cfg, global_test_fraction=preset(data).test_fraction)


def num_clients(data: DataSection, partition_cfg: PartitionConfig) -> int:
    """Clients of the run's partitioning (one per station for ``natural``), without
    loading any data."""
    num_sites = len(preset(data).sites)
    kind, _ = parse_scheme(partition_cfg.scheme)
    n = partition_cfg.num_clients or num_sites
    if kind == "natural" and n != num_sites:
        raise InputError(
            f"natural partitioning gives one client per site ({num_sites} sites) but "
            f"num_clients={n}; drop num_clients or use dirichlet-<alpha>/iid/quantity"
        )
    return n


def check_partition_id(partition_id: object, count: int) -> None:
    """Raise unless ``partition_id`` is an int in ``0..count-1``."""
    if not isinstance(partition_id, int) or not 0 <= partition_id < count:
        raise InputError(
            f"partition-id {partition_id!r} is out of range: this run's partitioning has "
            f"{count} clients (0..{count - 1}); run as many SuperNodes as clients "
            "(options.num-supernodes) or change partition.num-clients"
        )


def cap_rows(rows: np.ndarray, data: DataSection, client: int | None, split: str) -> np.ndarray:
    """A seeded subset of ``rows`` when the split's cap is below its size.

    Caps: ``data.max-train-rows`` for a client's ``train``, ``data.max-eval-rows`` for
    its ``val``/``test``, ``data.max-global-test-rows`` for the global test set
    (``client=None``); 0 = no cap. The same rows every call (seeded by the data seed,
    client and split), original order.
    """
    if client is None:
        cap = data.max_global_test_rows
    else:
        cap = data.max_train_rows if split == "train" else data.max_eval_rows
    if cap == 0 or len(rows) <= cap:
        return rows
    rng = np.random.default_rng(
        derive_seed(data.seed, "row-cap", split, -1 if client is None else client)
    )
    return np.sort(rng.choice(np.asarray(rows), size=cap, replace=False))


class FederatedData:
    """A preset's stations and their partitioning into clients (see the module docstring).

    Parameters
    ----------
    stations : :class:`~rantune.channels.sources.PresetStations` (every station, opened
        on use) or :class:`~rantune.channels.sources.NodeStations` (one node's own).
    data : the ``data.*`` section (row caps, data seed).
    partition_cfg : the run's partitioning (its global test share is the preset's).
    """

    def __init__(
        self, stations: PresetStations | NodeStations, data: DataSection, partition_cfg: PartitionConfig
    ) -> None:
        self.stations = stations
        self.data = data
        self.num_clients = num_clients(data, partition_cfg)
        self.partition_cfg = partition_config(data, partition_cfg)
        self.kind = parse_scheme(partition_cfg.scheme)[0]
        self._sizes: np.ndarray | None = None
        self._pooled: Partitioning | None = None

    @classmethod
    def load(cls, data: DataSection, partition_cfg: PartitionConfig) -> FederatedData:
        """The preset's stations from the channel cache; nothing is read yet (a missing
        generated station is generated when first used)."""
        return cls(PresetStations(preset(data), data.cache or None), data, partition_cfg)

    @classmethod
    def of_node(
        cls, data: DataSection, partition_cfg: PartitionConfig, partition_id: int, path: str | Path
    ) -> FederatedData:
        """A deployed base station: its own station directory ``path`` (node-config
        ``data-path``) is station ``partition_id`` of the preset; no other is reachable.

        Raises
        ------
        InputError
            For a synthetic partitioning (simulation only), or a ``path`` that does not
            exist or holds another station (:class:`~rantune.channels.sources.NodeStations`).
        """
        check_partition_id(partition_id, num_clients(data, partition_cfg))
        if parse_scheme(partition_cfg.scheme)[0] != "natural":
            raise InputError(
                f"node-config data-path needs partition.scheme='natural' (one base station = "
                f"one client); {partition_cfg.scheme!r} splits rows across stations, which only "
                "a simulation can do (drop data-path or use the natural scheme)"
            )
        stations = NodeStations(preset(data), int(partition_id), path)
        return cls(stations, data, partition_cfg)

    # ------------------------------------------------------------------ indexing
    def sizes(self) -> np.ndarray:
        """``[num_stations]`` int64 rows per station (every station's metadata is read)."""
        if self._sizes is None:
            self._sizes = np.array(
                [self.stations.num_samples(i) for i in range(len(self.stations))], dtype=np.int64
            )
        return self._sizes

    @property
    def offsets(self) -> np.ndarray:
        """``[num_stations + 1]`` int64, pooled index of each station's first row."""
        return np.concatenate([[0], np.cumsum(self.sizes())]).astype(np.int64)

    def _pooled_parts(self) -> Partitioning:
        """The synthetic partitioning, from every station's label tensors (computed once)."""
        if self._pooled is None:
            labels = {name: [] for name in LABEL_FIELDS}
            for i in range(len(self.stations)):
                for name, values in self.stations.open(i).labels().items():
                    labels[name].append(values)
            site_index = np.repeat(np.arange(len(self.stations)), self.sizes())
            pooled = {name: np.concatenate(v) for name, v in labels.items()}
            self._pooled = partition(site_index, pooled, self.partition_cfg)
        return self._pooled

    def _per_station(self, rows: np.ndarray) -> Selection:
        """Pooled row indices (sorted) -> per-station local rows."""
        offsets = self.offsets
        station = np.searchsorted(offsets, rows, side="right") - 1
        return [(int(s), rows[station == s] - offsets[s]) for s in np.unique(station)]

    def selection(self, client: int | None, split: str) -> Selection:
        """A client's ``train``/``val``/``test`` rows, or the global test rows
        (``client=None, split="test"``), row caps applied, per station.

        A natural client's rows need only its own station's size; the global test set
        needs every station's size (metadata only).
        """
        if split not in SPLITS:
            raise InputError(f"split {split!r} is unknown: choose one of {list(SPLITS)}")
        if client is None and split != "test":
            raise InputError("only the global test split exists without a client")
        if client is not None:
            check_partition_id(client, self.num_clients)
        if self.kind == "natural" or client is None:
            stations = range(len(self.stations)) if client is None else [client]
            pieces = []
            for s in stations:
                held, own = station_split(self.stations.num_samples(s), s, self.partition_cfg)
                pieces.append((s, held if client is None else getattr(own, split)))
        else:
            pieces = self._per_station(getattr(self._pooled_parts().clients[client], split))
        return _cap(pieces, self.data, client, split)

    def rows(self, client: int | None, split: str) -> np.ndarray:
        """Pooled row indices of :meth:`selection` (sorted)."""
        offsets = self.offsets
        chosen = [offsets[s] + local for s, local in self.selection(client, split)]
        return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)

    # --------------------------------------------------------------------- reads
    def gather(self, pieces: Selection) -> ChannelDataset:
        """The rows of ``pieces`` from their stations, in order (copies, memory-mapped
        reads: each station touched reads only these rows)."""
        parts = [self.stations[s].dataset(local) for s, local in pieces if len(local)]
        if not parts:
            first = pieces[0][0] if pieces else 0
            return self.stations[first].dataset(np.zeros(0, dtype=np.int64))
        return ChannelDataset.concat(parts) if len(parts) > 1 else parts[0]

    def take(self, rows: np.ndarray) -> ChannelDataset:
        """Rows ``rows`` (pooled indices, any order) gathered from their stations (a copy)."""
        rows = np.asarray(rows, dtype=np.int64)
        total = int(self.offsets[-1])
        if len(rows) and (rows.min() < 0 or rows.max() >= total):
            raise InputError(f"rows outside 0..{total - 1} requested")
        order = np.argsort(rows, kind="stable")
        gathered = self.gather(self._per_station(rows[order]))
        if np.array_equal(order, np.arange(len(rows))):  # sorted already: no second copy
            return gathered
        return gathered.subset(np.argsort(order, kind="stable"))

    def tensors_of(self, task: Task, rows: np.ndarray) -> tuple[Tensor, Tensor]:
        """Task inputs and targets of rows ``rows`` (pooled indices)."""
        chosen = self.take(rows)
        return task.tensors(chosen, np.arange(len(chosen)))

    def tensors(self, task: Task, client: int | None, split: str) -> tuple[Tensor, Tensor]:
        """Task inputs and targets of one split (see :meth:`selection`)."""
        chosen = self.gather(self.selection(client, split))
        return task.tensors(chosen, np.arange(len(chosen)))


def _cap(pieces: Selection, data: DataSection, client: int | None, split: str) -> Selection:
    """:func:`cap_rows` over the concatenation of ``pieces`` (the same rows it picks from
    the equivalent pooled indices), split back per station."""
    lengths = np.array([len(local) for _, local in pieces], dtype=np.int64)
    total = int(lengths.sum())
    positions = cap_rows(np.arange(total), data, client, split)
    if len(positions) == total:
        return pieces
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    capped = []
    for (s, local), lo, hi in zip(pieces, bounds[:-1], bounds[1:], strict=True):
        keep = positions[(positions >= lo) & (positions < hi)] - lo
        if len(keep):
            capped.append((s, local[keep]))
    return capped
