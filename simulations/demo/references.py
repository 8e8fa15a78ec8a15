"""The demo's references next to each task's federated runs, on the same rows.

- **centralized**: LoRA + head trained on every client's training rows pooled (the rows
  the clients train on, the run's row caps applied) for as many epochs as one client
  trains over the whole federated run (rounds x local epochs), from the same initial
  adapters (:func:`rantune.compression.merge.train_centralized_run`); scored on the
  global test rows and on each client's own test rows. Not federated: the ceiling a
  federation tries to reach without pooling.
- **local-only**: the same training on one client's rows alone
  (``train_centralized_run(..., clients=[c])``), one model per client; scored on that
  client's own test rows (the like-for-like comparison with the personalized metrics)
  and on the global test rows.
- **baseline**: the task's strongest classical method (:meth:`Task.baseline`, fitted per
  station on the clients' training rows) on the global test rows and, with the same
  method, on each client's own test rows.

Each piece is one job (a process of the pool, single-threaded) and one JSON file
``OUT/references/<task>/<piece>.json`` holding its key (config hash, epochs, version);
a rerun with the same key reuses it.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from rantune.federated.run_config import RunConfig, Scalar
from rantune.fileio import atomic_write_json

REFERENCE_VERSION = 1
"""Bumped when what a reference measures changes: stored results of another version are redone."""

Log = Callable[[str], None]


def reference_config(flat: Mapping[str, Scalar]) -> RunConfig:
    """The run config of a task's references: the federated runs' flat keys."""
    from rantune.simulations.engine import resolve_config

    return resolve_config({k: v for k, v in flat.items() if k != "out-dir"})


def reference_epochs(cfg: RunConfig) -> int:
    """Epochs of a reference: the epochs one client trains over the federated run."""
    return cfg.num_server_rounds * cfg.train.local_epochs


def reference_key(cfg: RunConfig) -> dict:
    """What a stored reference must match to be reused."""
    return {
        "config-hash": cfg.identity_hash(),
        "epochs": reference_epochs(cfg),
        "version": REFERENCE_VERSION,
    }


def _client_ids(cfg: RunConfig) -> list[int]:
    from rantune.federated.splits import num_clients

    return list(range(num_clients(cfg.data, cfg.partition)))


def _scored(metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` without the row count; ``None`` for a NaN (JSON has no NaN)."""
    return {
        k: (None if not np.isfinite(v) else float(v))
        for k, v in metrics.items()
        if k != "num_examples"
    }


def _has_targets(y) -> bool:
    """Whether some row of a split has a target (positioning rows of TR 38.901
    stations have none: their target is NaN)."""
    values = np.asarray(y)
    if len(values) == 0:
        return False
    if not np.issubdtype(values.dtype, np.floating):
        return True
    return bool(np.isfinite(values.reshape(len(values), -1)).all(axis=1).any())


def _settings(cfg: RunConfig):
    from rantune.federated.local import train_settings

    return replace(train_settings({}, cfg.train, cfg.seed), epochs=reference_epochs(cfg))


def centralized(flat: Mapping[str, Scalar], work: Path) -> dict:
    """Train the centralized reference into ``work/central``; global and per-client scores."""
    from rantune.compression.merge import load_run, train_centralized_run
    from rantune.federated.splits import FederatedData
    from rantune.tasks import get_task
    from rantune.training import evaluate

    cfg = reference_config(flat)
    overrides = {k: v for k, v in cfg.flat_dict().items() if k != "out-dir"}
    summary = train_centralized_run(work / "central", overrides, _settings(cfg))
    model = load_run(work / "central").model
    task = get_task(cfg.task, cfg.task_options)
    data = FederatedData.load(cfg.data, cfg.partition)
    clients = {}
    for c in _client_ids(cfg):
        x, y = data.tensors(task, c, "test")
        if _has_targets(y):
            clients[str(c)] = _scored(evaluate(model, task, x, y))
    return {
        "global": _scored(summary["test"]),
        "clients": clients,
        "train-rows": int(summary["num_examples"]),
    }


def local_only(flat: Mapping[str, Scalar], work: Path, client: int) -> dict:
    """Train client ``client`` alone into ``work/local-<client>``; own and global scores."""
    from rantune.compression.merge import train_centralized_run

    cfg = reference_config(flat)
    overrides = {k: v for k, v in cfg.flat_dict().items() if k != "out-dir"}
    summary = train_centralized_run(
        work / f"local-{client}", overrides, _settings(cfg), clients=[client]
    )
    own = summary["own-test"]
    return {
        "global": _scored(summary["test"]),
        "own": _scored(own) if own.get("num_examples") and _finite_primary(cfg, own) else None,
        "train-rows": int(summary["num_examples"]),
    }


def _finite_primary(cfg: RunConfig, metrics: Mapping[str, float]) -> bool:
    from rantune.tasks import get_task

    value = metrics.get(get_task(cfg.task, cfg.task_options).primary_metric)
    return value is not None and bool(np.isfinite(value))


def best_method(metrics: Mapping[str, float], primary: str) -> str:
    """The method whose ``{method}_{primary}`` equals the plain ``primary`` value (the one
    :func:`rantune.tasks.baselines.best_of` picked)."""
    suffix = "_" + primary
    for key, value in sorted(metrics.items()):
        if key.endswith(suffix) and key != primary and value == metrics[primary]:
            return key[: -len(suffix)]
    raise ValueError(f"no baseline method scored {primary}={metrics.get(primary)}")


def baseline(flat: Mapping[str, Scalar]) -> dict:
    """The task's classical baseline on the global test rows and per client.

    Fitted on every client's training rows (each station's fit uses its own rows); the
    method best on the global test rows is kept for the per-client scores.
    """
    from rantune.federated.splits import FederatedData
    from rantune.tasks import get_task

    cfg = reference_config(flat)
    task = get_task(cfg.task, cfg.task_options)
    data = FederatedData.load(cfg.data, cfg.partition)
    train = np.concatenate([data.rows(c, "train") for c in _client_ids(cfg)])

    def score(test: np.ndarray) -> dict[str, float]:
        rows = np.concatenate([train, test])
        chosen = data.take(rows)
        index = np.arange(len(rows))
        return task.baseline(chosen, index[: len(train)], index[len(train) :])

    overall = score(data.rows(None, "test"))
    method = best_method(overall, task.primary_metric)
    clients = {}
    for c in _client_ids(cfg):
        own = data.rows(c, "test")
        _, y = data.tensors_of(task, own)
        if _has_targets(y):
            clients[str(c)] = _scored(method_metrics(score(own), method))
    return {
        "method": method,
        "global": _scored(method_metrics(overall, method)),
        "clients": clients,
        "all": _scored(overall),
    }


def method_metrics(metrics: Mapping[str, float], method: str) -> dict[str, float]:
    """One method's metrics ``{metric: value}`` out of a :meth:`Task.baseline` result."""
    return {k: metrics[f"{method}_{k}"] for k in metrics if f"{method}_{k}" in metrics}


def _job(piece: str, flat: dict, work: str) -> dict:
    """One reference piece in a worker process."""
    import torch

    from rantune.simulations.quiet import quiet_third_party

    quiet_third_party()
    torch.set_num_threads(1)
    if piece == "central":
        return centralized(flat, Path(work))
    if piece == "baseline":
        return baseline(flat)
    return local_only(flat, Path(work), int(piece.removeprefix("local-")))


def reference_stage(
    flats: Mapping[str, Mapping[str, Scalar]], out: Path, log: Log, workers: int
) -> dict[str, dict]:
    """Compute (or reuse) every task's references.

    Parameters
    ----------
    flats : ``{task: flat run config of its federated runs}``.
    out : the demo directory (writes ``out/references/<task>/``).
    workers : processes (spawn, one torch thread each); 1 runs here.

    Returns
    -------
    dict
        ``{task: {"key", "central", "local": {client: ...}, "baseline"}}``.
    """
    jobs, results, reused = [], {}, 0
    for task, flat in flats.items():
        cfg = reference_config(flat)
        key = reference_key(cfg)
        work = out / "references" / task
        pieces = ["central", "baseline", *(f"local-{c}" for c in _client_ids(cfg))]
        results[task] = {"key": key, "epochs": key["epochs"]}
        for piece in pieces:
            path = work / f"{piece}.json"
            stored = json.loads(path.read_text()) if path.exists() else None
            if stored is not None and stored.get("key") == key:
                results[task][piece] = stored["result"]
                reused += 1
            else:
                jobs.append((task, piece, dict(flat), work, key))
    log(f"  {len(jobs)} to compute, {reused} reused")

    def finish(task: str, piece: str, work: Path, key: dict, result: dict) -> None:
        atomic_write_json(work / f"{piece}.json", {"key": key, "result": result})
        results[task][piece] = result
        log(f"  {task}: {piece} done")

    if workers <= 1 or len(jobs) <= 1:
        for task, piece, flat, work, key in jobs:
            finish(task, piece, work, key, _job(piece, flat, str(work)))
    elif jobs:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            futures = [
                (pool.submit(_job, piece, flat, str(work)), task, piece, work, key)
                for task, piece, flat, work, key in jobs
            ]
            for future, task, piece, work, key in futures:
                finish(task, piece, work, key, future.result())
    return {task: _collect(result) for task, result in results.items()}


def _collect(result: dict) -> dict:
    """``central``/``baseline``/``local-<c>`` pieces -> ``{"central", "baseline", "local"}``."""
    local = {k.removeprefix("local-"): v for k, v in result.items() if k.startswith("local-")}
    rest = {k: v for k, v in result.items() if not k.startswith("local-")}
    return {**rest, "local": local}
