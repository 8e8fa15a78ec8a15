"""The rows a federated run trains and tests on: each client's splits and the global test set.

:class:`FederatedData` holds a preset's stations as loaded (one data set per station,
never concatenated into a pooled copy) and their partitioning into clients. Rows are
pooled indices (station 0's rows first, then station 1's, ...), as
:func:`rantune.partition.partition` numbers them; :meth:`FederatedData.tensors`
gathers one split's rows from the stations that hold them. Who needs data builds one
(a client process for its stations, the server for the global test set) and keeps
only what it uses; nothing here is cached.

How many clients a run has is known from the config alone (:func:`num_clients`):
asking it loads no data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from torch import Tensor

from rantune.channels import ChannelDataset, load_sites
from rantune.config import DataConfig
from rantune.errors import InputError
from rantune.federated.run_config import DataSection
from rantune.partition import LABEL_FIELDS, PartitionConfig, Partitioning, parse_scheme, partition
from rantune.presets import load_preset
from rantune.seeding import derive_seed
from rantune.tasks import Task

SPLITS = ("train", "val", "test")


def preset(data: DataSection) -> DataConfig:
    """The run's preset (``data.preset``) with the data seed (``data.seed``) applied."""
    return load_preset(data.preset).with_seed(data.seed)


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


@dataclass(frozen=True)
class FederatedData:
    """A preset's stations and their partitioning into clients.

    Attributes
    ----------
    stations : one data set per station, in preset order (``site_index`` set).
    offsets : ``[num_stations + 1]`` int64, pooled index of each station's first row.
    parts : per-client train/val/test rows and the global test rows (pooled indices).
    data : the ``data.*`` section (row caps, data seed).
    """

    stations: tuple[ChannelDataset, ...]
    offsets: np.ndarray
    parts: Partitioning
    data: DataSection

    @classmethod
    def load(cls, data: DataSection, partition_cfg: PartitionConfig) -> FederatedData:
        """Load every station of the preset from the channel cache and partition them."""
        stations = tuple(load_sites(preset(data), cache_root=data.cache or None, progress=False))
        sizes = [len(s) for s in stations]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        site_index = np.concatenate([s["site_index"] for s in stations])
        labels = {
            name: np.concatenate([s[field] for s in stations]).astype(np.int64)
            for name, field in LABEL_FIELDS.items()
        }
        parts = partition(site_index, labels, partition_config(data, partition_cfg))
        return cls(stations, offsets, parts, data)

    @property
    def num_clients(self) -> int:
        return len(self.parts.clients)

    def rows(self, client: int | None, split: str) -> np.ndarray:
        """Pooled row indices of a client's ``train``/``val``/``test`` split, or of the
        global test set (``client=None, split="test"``), row caps applied."""
        if split not in SPLITS:
            raise InputError(f"split {split!r} is unknown: choose one of {list(SPLITS)}")
        if client is None:
            if split != "test":
                raise InputError("only the global test split exists without a client")
            return cap_rows(self.parts.global_test, self.data, None, split)
        check_partition_id(client, self.num_clients)
        return cap_rows(getattr(self.parts.clients[client], split), self.data, client, split)

    def take(self, rows: np.ndarray) -> ChannelDataset:
        """Rows ``rows`` (pooled indices, any order) gathered from their stations (a copy)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.offsets[-1]):
            raise InputError(f"rows outside 0..{self.offsets[-1] - 1} requested")
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        station = np.searchsorted(self.offsets, ordered, side="right") - 1
        pieces = [
            self.stations[s].subset(ordered[station == s] - self.offsets[s])
            for s in np.unique(station)
        ]
        if not pieces:
            return self.stations[0].subset(np.zeros(0, dtype=np.int64))
        gathered = ChannelDataset.concat(pieces) if len(pieces) > 1 else pieces[0]
        if np.array_equal(order, np.arange(len(rows))):  # sorted already: no second copy
            return gathered
        return gathered.subset(np.argsort(order, kind="stable"))

    def tensors_of(self, task: Task, rows: np.ndarray) -> tuple[Tensor, Tensor]:
        """Task inputs and targets of rows ``rows`` (pooled indices)."""
        chosen = self.take(rows)
        return task.tensors(chosen, np.arange(len(chosen)))

    def tensors(self, task: Task, client: int | None, split: str) -> tuple[Tensor, Tensor]:
        """Task inputs and targets of one split (see :meth:`rows`)."""
        return self.tensors_of(task, self.rows(client, split))
