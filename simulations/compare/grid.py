"""Run a strategy comparison grid on the in-process engine: resumable, on a process pool.

>>> from simulations.compare.grid import GridSpec, run_grid
>>> spec = GridSpec(preset="smoke", tasks=("los",), strategies=("fedavg", "flora"),
...                 partitions=("natural", "dirichlet-1.0"), seeds=(0,), rounds=2)
>>> result = run_grid(spec, "runs/compare", workers=2)
>>> result.files.csv          # OUT/results.csv (+ report.md, plots/*.png)

Layout of OUT::

    runs/<task>/<strategy>__<partition>__seed<seed>.json   one record per finished run
    work/<task>/<strategy>__<partition>__seed<seed>/       the engine's run directory
    results.csv, report.md, plots/*.png                     the report over the grid

Every run's configuration is resolved and checked (unknown strategy, incompatible
options, too few clients for Krum, ...) before any run starts. A run whose record
exists with the same config hash and number of rounds is skipped; an interrupted run
resumes from its last checkpoint (the engine's resume); a work directory of another
configuration (the run defaults changed) is renamed ``*.stale-<hash>`` and redone. Runs go to ``workers``
processes (``spawn``), each single-threaded (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from rantune.errors import InputError
from rantune.federated.evaluation import lower_is_better
from rantune.federated.run_config import RunConfig, Scalar
from rantune.simulations.compare.records import record_path, run_from_dict, save_run, slug
from rantune.simulations.compare.report import ReportFiles, Targets, write_report


@dataclass(frozen=True)
class GridSpec:
    """What to compare.

    Attributes
    ----------
    preset : data preset (``data.preset``).
    tasks, strategies, partitions, seeds : the grid axes (every combination runs).
    rounds : server rounds per run.
    overrides : extra flat run-config keys for every run (``{"local-epochs": 2}``).
    metric : the compared metric: one name for every task, ``{task: name}``, or
        ``None`` for each task's primary metric.
    split_seed : ``partition.seed`` = the run seed, so each seed also draws its own
        split (train/validation/test rows of every client and the global test set);
        off: every seed shares ``partition.seed`` (default 0).
    """

    preset: str
    tasks: tuple[str, ...]
    strategies: tuple[str, ...]
    partitions: tuple[str, ...]
    seeds: tuple[int, ...]
    rounds: int
    overrides: Mapping[str, Scalar] = field(default_factory=dict)
    metric: str | Mapping[str, str] | None = None
    split_seed: bool = False

    def metric_for(self, task: str) -> str | None:
        if isinstance(self.metric, Mapping):
            return self.metric.get(task)
        return self.metric


@dataclass(frozen=True)
class RunJob:
    """One run of the grid: its axes and full flat overrides."""

    task: str
    strategy: str
    partition: str
    seed: int
    overrides: tuple[tuple[str, Scalar], ...]

    @property
    def name(self) -> str:
        return f"{self.task}/{self.strategy}/{self.partition}/seed {self.seed}"

    def work_dir(self, out: Path) -> Path:
        return (
            Path(out)
            / "work"
            / slug(self.task)
            / f"{slug(self.strategy)}__{slug(self.partition)}__seed{self.seed}"
        )


@dataclass
class GridResult:
    """What :func:`run_grid` did: runs done now, skipped (already recorded), failed."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    files: ReportFiles | None = None
    wall_s: float = 0.0


def parse_list(text: str, what: str) -> tuple[str, ...]:
    """``"a, b,c"`` -> ``("a", "b", "c")`` (no empties, no duplicates)."""
    items = tuple(t.strip() for t in str(text).split(",") if t.strip())
    if not items:
        raise InputError(f"--{what} is empty: give a comma-separated list")
    duplicates = sorted({t for t in items if items.count(t) > 1})
    if duplicates:
        raise InputError(f"--{what} lists {duplicates} twice")
    return items


def parse_metric(text: str | None) -> str | dict[str, str] | None:
    """``"auc"`` (every task) or ``"los=auc,beam=top1"`` (per task); ``None`` stays."""
    if text is None or not str(text).strip():
        return None
    if "=" not in text:
        return text.strip()
    out = {}
    for item in parse_list(text, "metric"):
        task, sep, name = item.partition("=")
        if not sep or not task.strip() or not name.strip():
            raise InputError(f"--metric {item!r} is invalid: use name or task=name,task=name")
        out[task.strip()] = name.strip()
    return out


def parse_seeds(text: str) -> tuple[int, ...]:
    seeds = []
    for item in parse_list(text, "seeds"):
        if not item.lstrip("-").isdigit() or int(item) < 0:
            raise InputError(f"--seeds: {item!r} is not an integer >= 0")
        seeds.append(int(item))
    return tuple(seeds)


def plan(spec: GridSpec, out: Path) -> list[tuple[RunJob, RunConfig]]:
    """Every run of the grid with its resolved config; raises before anything runs
    on an unknown strategy/partition/key or options a strategy cannot handle."""
    from rantune.server.strategies import get_spec
    from rantune.simulations.engine import resolve_config

    if spec.rounds < 1:
        raise InputError(f"--rounds {spec.rounds} is invalid: expected >= 1")
    for name in spec.strategies:
        get_spec(name)  # unknown -> lists the valid ones
    reserved = {"data.preset", "task", "strategy.name", "partition.scheme", "seed", "out-dir"}
    if spec.split_seed:
        reserved.add("partition.seed")
    clash = sorted(reserved & set(spec.overrides))
    if clash:
        raise InputError(f"--run-config may not set {clash}: they are the grid's own axes/flags")
    jobs = []
    for task in spec.tasks:
        for strategy in spec.strategies:
            for partition in spec.partitions:
                for seed in spec.seeds:
                    flat = {
                        **dict(spec.overrides),
                        "data.preset": spec.preset,
                        "task": task,
                        "strategy.name": strategy,
                        "partition.scheme": partition,
                        "seed": seed,
                        "num-server-rounds": spec.rounds,
                    }
                    if spec.split_seed:
                        flat["partition.seed"] = seed
                    job = RunJob(task, strategy, partition, seed, tuple(sorted(flat.items())))
                    flat["out-dir"] = str(job.work_dir(out).resolve())
                    try:
                        cfg = resolve_config(flat)
                    except ValueError as err:
                        raise InputError(f"run {job.name}: {err}") from err
                    jobs.append((job, cfg))
    return jobs


def history_to_record(history: dict, job: RunJob, cfg: RunConfig, metric: str | None) -> dict:
    """A :mod:`simulations.compare.records` record from the engine's ``history.json``.

    ``global_metric``: the global model on the global test set (server side).
    ``client_metrics``: each client's local test metric of the last evaluation, the
    personalized one (``personalized-<metric>``) where the strategy keeps local
    parameters (FedSA-LoRA). ``client_val_metrics``: the same models on each client's
    validation split (``val-<metric>``, run config ``client-validation``).
    ``bytes_up``/``bytes_down``: training messages, all clients (``count_bytes``);
    evaluation downlink is kept in ``bytes-down-evaluate``.
    """
    name = metric or history["primary-metric"]
    higher = history["higher-is-better"] if metric is None else not lower_is_better(name)
    rounds, personalized, down_eval = [], False, 0
    for rec in history["rounds"]:
        if rec["round"] < 1:
            continue
        clients, val = {}, {}
        for cid, entry in (rec.get("clients") or {}).items():
            values = entry.get("evaluate") or {}
            for key, out in ((name, clients), ("val-" + name, val)):
                if "personalized-" + key in values:
                    personalized = True
                    out[cid] = values["personalized-" + key]
                elif key in values:
                    out[cid] = values[key]
        value = (rec.get("server") or {}).get(name)
        if value is not None and not math.isfinite(value):
            value = None
        size = rec.get("bytes") or {}
        down_eval += int(size.get("down-evaluate", 0))
        rounds.append(
            {
                "round": rec["round"],
                "global_metric": value,
                "client_metrics": clients,
                "client_val_metrics": val,
                "bytes_up": int(size.get("up", 0)),
                "bytes_down": int(size.get("down", 0)),
                "wall_time": float(rec.get("wall-time-s", 0.0)),
            }
        )
    if not rounds:
        raise InputError(f"run {job.name}: history has no training round")
    return {
        "strategy": job.strategy,
        "partition": job.partition,
        "seed": job.seed,
        "task": job.task,
        "metric": name,
        "higher_is_better": bool(higher),
        "history": rounds,
        "config-hash": cfg.identity_hash(),
        "num-rounds": cfg.num_server_rounds,
        "personalized": personalized,
        "num-clients": history.get("num-clients"),
        "adapter-bytes": history.get("adapter-bytes"),
        "full-model-bytes": history.get("full-model-bytes"),
        "bytes-down-evaluate": down_eval,
        "final-server": history.get("final", {}),
        "run-config": dict(job.overrides),
        "metric-requested": metric,
    }


def is_done(out: Path, job: RunJob, cfg: RunConfig, metric: str | None = None) -> bool:
    """Whether a valid record of this run (same config hash, rounds and metric) exists.

    A record of another metric is rebuilt by "running" again: the engine finds every
    round done and only rewrites the history (seconds)."""
    path = record_path(out, job.task, job.strategy, job.partition, job.seed)
    if not path.exists():
        return False
    try:
        raw = json.loads(path.read_text())
        run_from_dict(raw)
    except (OSError, ValueError):
        return False
    return (
        raw.get("config-hash") == cfg.identity_hash()
        and raw.get("num-rounds") == cfg.num_server_rounds
        and (metric is None or raw.get("metric") == metric)
        and (metric is not None or raw.get("metric-requested") is None)
    )


def set_aside_stale(work: Path, cfg: RunConfig) -> Path | None:
    """Rename a grid work directory that holds a run of another configuration (e.g. the
    run defaults changed since) to ``<name>.stale-<hash>``, so the run starts afresh;
    nothing is deleted. Returns the new name, or ``None`` when nothing was stale."""
    config = Path(work) / "config.json"
    if not config.exists():
        return None
    try:
        stored = json.loads(config.read_text()).get("config-hash")
    except (OSError, ValueError, AttributeError):
        stored = "unreadable"
    if stored == cfg.identity_hash():
        return None
    target = Path(work).with_name(f"{Path(work).name}.stale-{stored}")
    suffix = 1
    while target.exists():
        target = Path(work).with_name(f"{Path(work).name}.stale-{stored}-{suffix}")
        suffix += 1
    Path(work).rename(target)
    logging.getLogger(__name__).warning("%s held another configuration: moved to %s", work, target)
    return target


def _init_worker() -> None:
    import torch

    from rantune.simulations.quiet import quiet_third_party

    quiet_third_party()
    torch.set_num_threads(1)
    logging.getLogger("flwr").setLevel(logging.WARNING)


def execute(job: RunJob, out: str, metric: str | None) -> dict:
    """Run one job and save its record (in a worker process); never raises."""
    from rantune.simulations.engine import resolve_config, run_simulation

    start = time.perf_counter()
    try:
        flat = dict(job.overrides)
        flat["out-dir"] = str(job.work_dir(Path(out)).resolve())
        cfg = resolve_config(flat)
        set_aside_stale(job.work_dir(Path(out)), cfg)
        history = run_simulation(cfg)
        record = history_to_record(history, job, cfg, metric)
        save_run(Path(out), record)
        return {"job": job.name, "ok": True, "seconds": time.perf_counter() - start}
    except Exception as err:  # noqa: BLE001 - reported per run, the grid goes on
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        return {
            "job": job.name,
            "ok": False,
            "error": detail,
            "seconds": time.perf_counter() - start,
        }


def run_grid(
    spec: GridSpec,
    out: str | Path,
    workers: int = 2,
    targets: Targets = None,
    plots: bool = True,
    progress: Callable[[dict, int, int], None] | None = None,
) -> GridResult:
    """Run every missing run of ``spec`` and write the report over the whole grid.

    Parameters
    ----------
    out : output directory (created).
    workers : processes; 1 runs in this process (no pool).
    targets : metric target(s) for "rounds to target".
    progress : called ``(outcome, done, total)`` after each run.
    """
    out = Path(out)
    if workers < 1:
        raise InputError(f"--workers {workers} is invalid: expected >= 1")
    jobs = plan(spec, out)
    result = GridResult()
    start = time.perf_counter()
    pending = []
    for job, cfg in jobs:
        done = is_done(out, job, cfg, spec.metric_for(job.task))
        (result.skipped if done else pending).append(job)
    result.skipped = [j.name for j in result.skipped]
    total = len(pending)

    def record(outcome: dict, done: int) -> None:
        if outcome["ok"]:
            result.ran.append(outcome["job"])
        else:
            result.failed[outcome["job"]] = outcome["error"]
        if progress is not None:
            progress(outcome, done, total)

    if pending and workers == 1:
        _init_worker()
        for i, job in enumerate(pending, start=1):
            record(execute(job, str(out), spec.metric_for(job.task)), i)
    elif pending:
        _run_pool(pending, out, spec, workers, record)
    records = [
        json.loads(record_path(out, j.task, j.strategy, j.partition, j.seed).read_text())
        for j, _ in jobs
        if j.name not in result.failed
        and record_path(out, j.task, j.strategy, j.partition, j.seed).exists()
    ]
    if records:
        result.files = write_report(records, out, targets, plots=plots)
    result.wall_s = time.perf_counter() - start
    return result


def _run_pool(
    pending: list[RunJob],
    out: Path,
    spec: GridSpec,
    workers: int,
    record: Callable[[dict, int], None],
    attempts: int = 3,
) -> None:
    """Run ``pending`` on a ``spawn`` pool; a pool broken by a killed worker (OOM, a
    stray signal) is replaced and the unfinished runs resubmitted (they resume from
    their checkpoints), up to ``attempts`` pools."""
    done = 0
    for attempt in range(1, attempts + 1):
        context = multiprocessing.get_context("spawn")
        finished: set[str] = set()
        try:
            with ProcessPoolExecutor(
                max_workers=min(workers, len(pending)), mp_context=context, initializer=_init_worker
            ) as pool:
                futures = {
                    pool.submit(execute, job, str(out), spec.metric_for(job.task)): job
                    for job in pending
                }
                for future in as_completed(futures):
                    outcome = future.result()
                    finished.add(futures[future].name)
                    done += 1
                    record(outcome, done)
            return
        except BrokenProcessPool as err:
            pending = [job for job in pending if job.name not in finished]
            if attempt == attempts:
                for job in pending:
                    done += 1
                    record({"job": job.name, "ok": False, "error": str(err), "seconds": 0.0}, done)
                return
            logging.getLogger(__name__).warning(
                "worker process died (%s); restarting the pool for %d run(s)", err, len(pending)
            )
