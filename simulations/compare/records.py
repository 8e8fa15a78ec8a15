"""Run records of a strategy comparison: one federated run's per-round history.

A record is a plain dict (JSON) so the grid runner, the report and users' own
scripts share one format::

    {
      "strategy": "fedavg", "partition": "dirichlet-0.1", "seed": 0, "task": "los",
      "metric": "accuracy",          # optional, default "metric"
      "higher_is_better": true,      # optional, default true
      "history": [
        {"round": 1, "global_metric": 0.81,                # null if not evaluated
         "client_metrics": {"site-0": 0.78, "site-1": 0.84},  # or a list, or {}
         "client_val_metrics": {"site-0": 0.80},            # optional: validation split
         "bytes_up": 120000, "bytes_down": 240000,          # this round, all clients
         "wall_time": 1.9},                                 # seconds this round
        ...
      ]
    }

Other top-level keys (config, versions, ...) are kept in ``extra`` and ignored.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rantune.errors import InputError
from rantune.fileio import atomic_write_json

REQUIRED_RUN_KEYS = ("strategy", "partition", "seed", "task", "history")
REQUIRED_ROUND_KEYS = ("round", "global_metric", "bytes_up", "bytes_down", "wall_time")


@dataclass(frozen=True)
class RoundRecord:
    """One round of a run.

    Attributes
    ----------
    round : 1-based server round.
    global_metric : metric of the global model (``nan`` when not evaluated).
    client_metrics : ``{client id: metric}`` from federated evaluation on each client's
        test split (may be empty).
    bytes_up, bytes_down : payload bytes this round, summed over clients.
    wall_time : seconds this round took.
    client_val_metrics : ``{client id: metric}`` of the same models on each client's
        validation split (run config ``client-validation``; empty when not evaluated).
    """

    round: int
    global_metric: float
    client_metrics: dict[str, float]
    bytes_up: int
    bytes_down: int
    wall_time: float
    client_val_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecord:
    """One (strategy, partition, seed, task) run and its history, rounds ascending."""

    strategy: str
    partition: str
    seed: int
    task: str
    history: tuple[RoundRecord, ...]
    metric: str = "metric"
    higher_is_better: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.task, self.strategy, self.partition, self.seed)

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` beats ``b`` (``nan`` never wins)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.higher_is_better else a < b


def _number(value: object, where: str, allow_none: bool = False) -> float:
    if value is None and allow_none:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _check_keys(raw: object, required: tuple[str, ...], what: str) -> None:
    """Raise unless ``raw`` is a mapping holding every ``required`` key."""
    if not isinstance(raw, Mapping):
        raise InputError(f"{what} must be a mapping, got {type(raw).__name__}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise InputError(f"{what} is missing {missing}; it needs {list(required)}")


def _round_from_dict(raw: Mapping, where: str) -> RoundRecord:
    _check_keys(raw, REQUIRED_ROUND_KEYS, f"{where}: a history entry")
    clients = _client_values(raw, "client_metrics", where)
    val = _client_values(raw, "client_val_metrics", where)
    rnd = raw["round"]
    if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
        raise InputError(f"{where}: round={rnd!r} is not an integer >= 0")
    up, down = (
        _number(raw["bytes_up"], f"{where}.bytes_up"),
        _number(raw["bytes_down"], f"{where}.bytes_down"),
    )
    wall = _number(raw["wall_time"], f"{where}.wall_time")
    if up < 0 or down < 0 or wall < 0:
        raise InputError(f"{where}: bytes and wall_time must be >= 0")
    return RoundRecord(
        round=rnd,
        global_metric=_number(raw["global_metric"], f"{where}.global_metric", allow_none=True),
        client_metrics={
            str(k): _number(v, f"{where}.client_metrics[{k}]", allow_none=True)
            for k, v in clients.items()
        },
        bytes_up=int(up),
        bytes_down=int(down),
        wall_time=wall,
        client_val_metrics={
            str(k): _number(v, f"{where}.client_val_metrics[{k}]", allow_none=True)
            for k, v in val.items()
        },
    )


def _client_values(raw: Mapping, key: str, where: str) -> Mapping:
    """``raw[key]`` as ``{client id: value}`` (a list is numbered; missing = empty)."""
    clients = raw.get(key) or {}
    if isinstance(clients, list | tuple):
        clients = {str(i): v for i, v in enumerate(clients)}
    if not isinstance(clients, Mapping):
        raise InputError(f"{where}: {key} must be a mapping or a list")
    return clients


def run_from_dict(raw: Mapping) -> RunRecord:
    """Validate a record dict (see the module docstring) and build a :class:`RunRecord`."""
    _check_keys(raw, REQUIRED_RUN_KEYS, "a run record")
    seed = raw["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"run record seed={seed!r} is not an integer")
    name = f"run {raw['strategy']}/{raw['partition']}/seed {seed}/{raw['task']}"
    history = raw["history"]
    if not isinstance(history, list | tuple) or not history:
        raise InputError(f"{name}: history must be a non-empty list of rounds")
    rounds = tuple(
        sorted(
            (_round_from_dict(r, f"{name} history[{i}]") for i, r in enumerate(history)),
            key=lambda r: r.round,
        )
    )
    if len({r.round for r in rounds}) != len(rounds):
        raise InputError(f"{name}: history has duplicate round numbers")
    hib = raw.get("higher_is_better", True)
    if not isinstance(hib, bool):
        raise InputError(f"{name}: higher_is_better must be true or false")
    extra = {
        k: v for k, v in raw.items() if k not in (*REQUIRED_RUN_KEYS, "metric", "higher_is_better")
    }
    return RunRecord(
        str(raw["strategy"]),
        str(raw["partition"]),
        seed,
        str(raw["task"]),
        rounds,
        str(raw.get("metric", "metric")),
        hib,
        extra,
    )


def run_to_dict(run: RunRecord) -> dict:
    """Inverse of :func:`run_from_dict` (``nan`` metrics become ``null``)."""

    def num(x: float) -> float | None:
        return None if math.isnan(x) else x

    return {
        **run.extra,
        "strategy": run.strategy,
        "partition": run.partition,
        "seed": run.seed,
        "task": run.task,
        "metric": run.metric,
        "higher_is_better": run.higher_is_better,
        "history": [
            {
                "round": r.round,
                "global_metric": num(r.global_metric),
                "client_metrics": {k: num(v) for k, v in r.client_metrics.items()},
                "client_val_metrics": {k: num(v) for k, v in r.client_val_metrics.items()},
                "bytes_up": r.bytes_up,
                "bytes_down": r.bytes_down,
                "wall_time": r.wall_time,
            }
            for r in run.history
        ],
    }


def as_runs(records: Iterable[Mapping | RunRecord]) -> list[RunRecord]:
    """Validate a mix of dicts and :class:`RunRecord`; raises on a duplicated run key."""
    runs = [r if isinstance(r, RunRecord) else run_from_dict(r) for r in records]
    seen: set = set()
    for run in runs:
        if run.key in seen:
            raise InputError(
                f"run {run.key} appears twice; each (task, strategy, partition, seed) once"
            )
        seen.add(run.key)
    if not runs:
        raise InputError("no run records to report")
    return runs


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (letters, digits, ``.``, ``-``, ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def record_path(out_dir: Path, task: str, strategy: str, partition: str, seed: int) -> Path:
    """Where the grid runner stores one run: ``OUT/runs/<task>/<strategy>__<partition>__seed<seed>.json``."""
    return (
        Path(out_dir)
        / "runs"
        / slug(task)
        / f"{slug(strategy)}__{slug(partition)}__seed{seed}.json"
    )


def save_run(out_dir: Path, record: Mapping | RunRecord) -> Path:
    """Validate and write ``record`` atomically to :func:`record_path`; returns the path."""
    run = record if isinstance(record, RunRecord) else run_from_dict(record)
    path = record_path(out_dir, run.task, run.strategy, run.partition, run.seed)
    atomic_write_json(path, run_to_dict(run))
    return path


def load_runs(out_dir: Path) -> list[RunRecord]:
    """Every run under ``OUT/runs`` (a corrupt file raises naming it)."""
    runs = []
    for path in sorted((Path(out_dir) / "runs").glob("*/*.json")):
        try:
            runs.append(run_from_dict(json.loads(path.read_text())))
        except (json.JSONDecodeError, ValueError) as err:
            raise InputError(
                f"{path}: unreadable run record ({err}); delete it to rerun that run"
            ) from err
    return runs
