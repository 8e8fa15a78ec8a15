"""Non-IID partitioning of pooled site data into federated clients.

Schemes (strings, as used in run configs and on the CLI):

- ``natural``: one base station = one client (the realistic split);
- ``iid``: uniform random split (a reference, not realistic);
- ``dirichlet-<alpha>``: label skew with Dirichlet concentration ``alpha`` over the
  beam or LoS label (``flwr_datasets.partitioner.DirichletPartitioner``); smaller
  ``alpha`` = more skew;
- ``quantity``: quantity skew, client ``i`` holds a share proportional to ``i + 1``
  (``flwr_datasets.partitioner.LinearPartitioner``).

First a global test set is held out from every site (``global_test_fraction`` of
each site, stratified by site); the rest is partitioned, then each client's share
is split into train/validation/test.

A station's held-out rows and its ``natural`` client split depend on that station
alone (its row count, its index and the partition seed: :func:`station_split`), so a
base station that holds only its own data computes its rows without anyone else's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rantune.errors import InputError
from rantune.schema import setting
from rantune.seeding import derive_seed

LABEL_FIELDS = {"beam": "beam_index", "los": "los"}


@dataclass(frozen=True)
class PartitionConfig:
    """How pooled data is split into clients.

    Attributes
    ----------
    scheme : ``natural``, ``iid``, ``dirichlet-<alpha>`` or ``quantity``.
    num_clients : number of clients; 0 (or ``None``) = one per site.
    label : label whose skew Dirichlet partitioning controls: ``beam`` or ``los``.
    val_fraction, test_fraction : per-client validation and test shares.
    global_test_fraction : share of every site held out as the global test set.
    seed : seed of every random choice made here.
    """

    scheme: str = setting(
        "natural", "natural (one base station = one client), iid, quantity or dirichlet-<alpha>"
    )
    num_clients: int = setting(0, "clients of a non-natural split (0 = one per site)", low=0)
    label: str = setting(
        "beam", "label whose skew dirichlet-<alpha> controls", choices=tuple(LABEL_FIELDS)
    )
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    global_test_fraction: float = 0.15
    seed: int = setting(0, "seed of every partitioning choice", low=0)

    def __post_init__(self) -> None:
        parse_scheme(self.scheme)
        if self.label not in LABEL_FIELDS:
            raise InputError(
                f"partition label {self.label!r} is invalid: choose one of {sorted(LABEL_FIELDS)}"
            )
        if self.num_clients is None:
            object.__setattr__(self, "num_clients", 0)
        if not isinstance(self.num_clients, int) or self.num_clients < 0:
            raise InputError(
                f"num_clients={self.num_clients} is invalid: expected >= 1 (0 = one per site)"
            )
        for name in ("val_fraction", "test_fraction", "global_test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 0.5:
                raise InputError(f"{name}={value} is invalid: expected 0 <= {name} < 0.5")


def parse_scheme(scheme: str) -> tuple[str, float | None]:
    """Split ``dirichlet-0.1`` into ``("dirichlet", 0.1)``; validate the name."""
    if scheme in ("natural", "iid", "quantity"):
        return scheme, None
    if scheme.startswith("dirichlet-"):
        try:
            alpha = float(scheme.removeprefix("dirichlet-"))
        except ValueError:
            alpha = -1.0
        if alpha > 0 and math.isfinite(alpha):
            return "dirichlet", alpha
    raise InputError(
        f"partition scheme {scheme!r} is invalid: use natural, iid, quantity or "
        "dirichlet-<alpha> with alpha > 0 (e.g. dirichlet-0.1)"
    )


@dataclass(frozen=True)
class ClientSplit:
    """Indices into the pooled data set of one client's train/val/test rows."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def all(self) -> np.ndarray:
        return np.concatenate([self.train, self.val, self.test])


@dataclass(frozen=True)
class Partitioning:
    """Result of :func:`partition`: per-client splits plus the global test set."""

    clients: tuple[ClientSplit, ...]
    global_test: np.ndarray
    config: PartitionConfig


def _flower_partitions(
    rows: np.ndarray, labels: np.ndarray, kind: str, alpha: float | None, n: int, seed: int
) -> list[np.ndarray]:
    """Split ``rows`` with a flwr-datasets partitioner; returns one index array per client."""
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, LinearPartitioner

    # IidPartitioner and LinearPartitioner cut contiguous blocks: shuffle first, or the
    # site-sorted rows would give each client whole sites instead of a random share.
    order = np.random.default_rng([seed, 1]).permutation(len(rows))
    rows, labels = rows[order], labels[order]
    table = Dataset.from_dict({"row": rows.astype(np.int64), "label": labels.astype(np.int64)})
    if kind == "dirichlet":
        min_size = max(1, min(10, len(rows) // (4 * n)))
        partitioner = DirichletPartitioner(
            num_partitions=n,
            partition_by="label",
            alpha=alpha,
            min_partition_size=min_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
    elif kind == "quantity":
        partitioner = LinearPartitioner(num_partitions=n)
    else:
        partitioner = IidPartitioner(num_partitions=n)
    partitioner.dataset = table
    return [np.asarray(partitioner.load_partition(i)["row"], dtype=np.int64) for i in range(n)]


def _split_client(rows: np.ndarray, cfg: PartitionConfig, rng) -> ClientSplit:
    rows = rng.permutation(rows)
    n_test = int(round(cfg.test_fraction * len(rows)))
    n_val = int(round(cfg.val_fraction * len(rows)))
    return ClientSplit(
        train=np.sort(rows[n_test + n_val :]),
        val=np.sort(rows[n_test : n_test + n_val]),
        test=np.sort(rows[:n_test]),
    )


def station_split(num_rows: int, station: int, cfg: PartitionConfig) -> tuple[np.ndarray, ClientSplit]:
    """One station's global-test rows and its ``natural`` client split.

    Parameters
    ----------
    num_rows : the station's number of samples.
    station : its index in the preset (seeds its own generator with ``cfg.seed``).
    cfg : the partition configuration (fractions, seed).

    Returns
    -------
    held : ``[round(global_test_fraction * num_rows)]`` sorted local row indices held
        out for the global test set.
    split : train/val/test of the other rows (local indices), the station's client
        under ``natural`` partitioning.
    """
    rng = np.random.default_rng(derive_seed(cfg.seed, "station-split", int(station)))
    count = int(round(cfg.global_test_fraction * num_rows))
    held = np.sort(rng.choice(num_rows, size=count, replace=False)).astype(np.int64)
    rest = np.setdiff1d(np.arange(num_rows, dtype=np.int64), held)
    return held, _split_client(rest, cfg, rng)


def partition(
    site_index: np.ndarray, labels: dict[str, np.ndarray], cfg: PartitionConfig
) -> Partitioning:
    """Partition pooled samples into clients.

    Parameters
    ----------
    site_index : ``[N]`` int, the site of every pooled sample.
    labels : ``{"beam": [N] int, "los": [N] int}`` labels available for skew.
    cfg : the partition configuration.

    Returns
    -------
    Partitioning
        Disjoint index arrays whose union (clients + global test) is ``range(N)``.
    """
    kind, alpha = parse_scheme(cfg.scheme)
    num_sites = int(site_index.max()) + 1 if len(site_index) else 0
    n = cfg.num_clients or num_sites
    if kind == "natural" and n != num_sites:
        raise InputError(
            f"natural partitioning gives one client per site ({num_sites} sites) but "
            f"num_clients={n}; drop num_clients or use dirichlet-<alpha>/iid/quantity"
        )
    order = np.argsort(site_index, kind="stable")
    bounds = np.searchsorted(site_index[order], np.arange(num_sites + 1))
    held, natural = [np.zeros(0, dtype=np.int64)], []
    for site in range(num_sites):
        rows = order[bounds[site] : bounds[site + 1]]  # ascending: the sort is stable
        site_held, split = station_split(len(rows), site, cfg)
        held.append(rows[site_held])
        natural.append(ClientSplit(rows[split.train], rows[split.val], rows[split.test]))
    global_test = np.sort(np.concatenate(held))
    remaining = np.setdiff1d(np.arange(len(site_index)), global_test)
    if len(remaining) < 3 * n:
        raise InputError(
            f"{len(remaining)} samples cannot be split into {n} clients with train/val/test; "
            "use more samples per site or fewer clients"
        )
    if kind == "natural":
        return Partitioning(clients=tuple(natural), global_test=global_test, config=cfg)
    label = labels[cfg.label][remaining]
    if kind == "dirichlet" and (label < 0).any():
        raise InputError(
            f"dirichlet partitioning by {cfg.label!r} needs that label for every row, but "
            f"{int((label < 0).sum())} row(s) have it unknown (imported stations without "
            "it); use --label beam, another scheme, or import the labels"
        )
    shares = _flower_partitions(remaining, label, kind, alpha, n, cfg.seed)
    clients = tuple(
        _split_client(rows, cfg, np.random.default_rng(derive_seed(cfg.seed, "client-split", i)))
        for i, rows in enumerate(shares)
    )
    return Partitioning(clients=clients, global_test=global_test, config=cfg)


def label_histograms(labels: np.ndarray, parts: Partitioning, num_classes: int) -> np.ndarray:
    """``[num_clients, num_classes]`` counts of ``labels`` over each client's rows
    (unknown labels, ``-1``, are not counted)."""
    rows = [labels[c.all] for c in parts.clients]
    return np.stack([np.bincount(r[r >= 0], minlength=num_classes) for r in rows])


def label_skew(histograms: np.ndarray) -> float:
    """Mean total-variation distance between client label distributions and the pooled one.

    0 = every client has the pooled distribution; 1 = disjoint supports.
    """
    pooled = histograms.sum(0) / max(histograms.sum(), 1)
    per_client = histograms / np.maximum(histograms.sum(1, keepdims=True), 1)
    return float(0.5 * np.abs(per_client - pooled).sum(1).mean())
