"""Strategy comparison report: ``results.csv``, ``report.md`` and PNG plots from run records.

``write_report(records, out_dir, targets)`` is the entry point; records are dicts or
:class:`~simulations.compare.records.RunRecord` (format in ``records.py``). Every
statistic honours the metric direction (``higher_is_better``): "best", "worst
client", "rounds to target" and the ranking flip for lower-is-better metrics such
as NMSE in dB.

Ranking: a strategy is ranked by the model its stations use. For one that shares the
whole model that is the global model (``final_metric``, on the global test set); for
one that keeps parameters on each station (a record with ``personalized``: FedSA-LoRA
keeps B) the global model is what no station uses, so it is ranked by the client mean
of its personalized models on each station's own test rows (``mean_client_metric``).
Both are shown; ``rank_metric`` is the one ranked, and "rounds to target" follows it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rantune.errors import InputError
from rantune.federated.messages import MB
from rantune.fileio import atomic_write_bytes
from rantune.simulations.compare.records import RunRecord, as_runs

CSV_COLUMNS = (
    "task",
    "strategy",
    "partition",
    "seed",
    "metric",
    "higher_is_better",
    "rounds",
    "final_metric",
    "best_metric",
    "best_round",
    "worst_client_metric",
    "mean_client_metric",
    "mean_client_val_metric",
    "personalized",
    "rank_metric",
    "target",
    "rounds_to_target",
    "mb_up",
    "mb_down",
    "wall_time_s",
)

Targets = float | Mapping[str, float] | None
"""One target for every task, ``{task: target}``, or none."""


def _target_for(targets: Targets, task: str) -> float | None:
    if targets is None:
        return None
    if isinstance(targets, Mapping):
        value = targets.get(task)
        return None if value is None else float(value)
    return float(targets)


def _worst(values: Iterable[float], higher_is_better: bool) -> float:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan
    return min(finite) if higher_is_better else max(finite)


def _client_mean(values: Mapping[str, float]) -> float:
    finite = [v for v in values.values() if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def run_row(run: RunRecord, target: float | None = None) -> dict:
    """One ``results.csv`` row: final/best global metric, worst client, rounds to target, MB, time.

    ``final_metric`` is the last evaluated round's; ``worst_client_metric`` /
    ``mean_client_metric`` are over the clients of the last round that has client
    metrics (``mean_client_val_metric`` likewise on their validation splits);
    ``personalized`` is the record's flag and ``rank_metric`` the ranked value (module
    docstring); ``rounds_to_target`` is the first round whose ranked value (the global
    metric, or the personalized client mean) reaches ``target`` (``>=`` or ``<=`` by
    direction), ``None`` if never.
    """
    evaluated = [r for r in run.history if not math.isnan(r.global_metric)]
    final = evaluated[-1].global_metric if evaluated else math.nan
    best_round = None
    best = math.nan
    for r in evaluated:
        if best_round is None or run.better(r.global_metric, best):
            best, best_round = r.global_metric, r.round
    with_clients = [r for r in run.history if r.client_metrics]
    worst = (
        _worst(with_clients[-1].client_metrics.values(), run.higher_is_better)
        if with_clients
        else math.nan
    )
    last_clients = (
        [v for v in with_clients[-1].client_metrics.values() if not math.isnan(v)]
        if with_clients
        else []
    )
    client_mean = float(np.mean(last_clients)) if last_clients else math.nan
    with_val = [r for r in run.history if r.client_val_metrics]
    val_mean = _client_mean(with_val[-1].client_val_metrics) if with_val else math.nan
    personalized = bool(run.extra.get("personalized", False))
    curve = (
        [(r.round, _client_mean(r.client_metrics)) for r in with_clients]
        if personalized
        else [(r.round, r.global_metric) for r in evaluated]
    )
    reached = None
    if target is not None:
        for rnd, value in curve:
            if (value >= target) if run.higher_is_better else (value <= target):
                reached = rnd
                break
    return {
        "task": run.task,
        "strategy": run.strategy,
        "partition": run.partition,
        "seed": run.seed,
        "metric": run.metric,
        "higher_is_better": run.higher_is_better,
        "rounds": len(run.history),
        "final_metric": final,
        "best_metric": best,
        "best_round": best_round,
        "worst_client_metric": worst,
        "mean_client_metric": client_mean,
        "mean_client_val_metric": val_mean,
        "personalized": personalized,
        "rank_metric": client_mean if personalized else final,
        "target": target,
        "rounds_to_target": reached,
        "mb_up": sum(r.bytes_up for r in run.history) / MB,
        "mb_down": sum(r.bytes_down for r in run.history) / MB,
        "wall_time_s": sum(r.wall_time for r in run.history),
    }


def build_rows(records: Iterable[Mapping | RunRecord], targets: Targets = None) -> list[dict]:
    """``results.csv`` rows, one per run, sorted by (task, strategy, partition, seed)."""
    runs = as_runs(records)
    rows = [run_row(run, _target_for(targets, run.task)) for run in runs]
    return sorted(rows, key=lambda r: (r["task"], r["strategy"], r["partition"], r["seed"]))


def rows_to_csv(rows: list[dict]) -> str:
    """CSV text with :data:`CSV_COLUMNS`; ``None``/``nan`` become empty cells."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out = {}
        for col in CSV_COLUMNS:
            value = row[col]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                out[col] = ""
            elif isinstance(value, float):
                out[col] = f"{value:.6g}"
            else:
                out[col] = value
        writer.writerow(out)
    return buffer.getvalue()


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds (``nan`` entries ignored)."""

    mean: float
    std: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
        if not finite:
            return cls(math.nan, math.nan, 0)
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
        return cls(float(np.mean(finite)), std, len(finite))

    def format(self, digits: int = 4) -> str:
        if self.count == 0:
            return "—"
        if self.count == 1:
            return f"{self.mean:.{digits}g}"
        return f"{self.mean:.{digits}g} ± {self.std:.2g}"


@dataclass(frozen=True)
class Summary:
    """One (task, strategy, partition) cell aggregated over seeds."""

    task: str
    strategy: str
    partition: str
    metric: str
    higher_is_better: bool
    seeds: int
    final: Stat
    best: Stat
    worst_client: Stat
    mean_client: Stat
    mean_client_val: Stat
    personalized: bool
    rank: Stat
    rounds_to_target: Stat  # over the seeds that reached it
    target: float | None
    mb_up: Stat
    mb_down: Stat
    wall_time: Stat

    def sort_key(self) -> tuple:
        """Ascending = better first (by ``rank``); ``nan`` last, then less upload."""
        mean = self.rank.mean
        if math.isnan(mean):
            return (1, 0.0, self.mb_up.mean)
        return (0, -mean if self.higher_is_better else mean, self.mb_up.mean)


def summarise(rows: list[dict]) -> list[Summary]:
    """Mean ± std over seeds per (task, strategy, partition), best first within (task, partition)."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["strategy"], row["partition"]), []).append(row)
    out = []
    for (task, strategy, partition), group in groups.items():
        directions = {r["higher_is_better"] for r in group}
        if len(directions) != 1:
            raise InputError(
                f"task {task!r}: runs disagree on higher_is_better; one direction per task"
            )
        out.append(
            Summary(
                task=task,
                strategy=strategy,
                partition=partition,
                metric=group[0]["metric"],
                higher_is_better=group[0]["higher_is_better"],
                seeds=len(group),
                final=Stat.of(r["final_metric"] for r in group),
                best=Stat.of(r["best_metric"] for r in group),
                worst_client=Stat.of(r["worst_client_metric"] for r in group),
                mean_client=Stat.of(r.get("mean_client_metric") for r in group),
                mean_client_val=Stat.of(r.get("mean_client_val_metric") for r in group),
                personalized=any(r.get("personalized") for r in group),
                rank=Stat.of(r.get("rank_metric", r["final_metric"]) for r in group),
                rounds_to_target=Stat.of(r["rounds_to_target"] for r in group),
                target=group[0]["target"],
                mb_up=Stat.of(r["mb_up"] for r in group),
                mb_down=Stat.of(r["mb_down"] for r in group),
                wall_time=Stat.of(r["wall_time_s"] for r in group),
            )
        )
    return sorted(out, key=lambda s: (s.task, s.partition, s.sort_key(), s.strategy))


RANKED_BY = {False: "global", True: "personalized client mean"}
"""What a strategy is ranked by, by whether it keeps parameters on the stations."""


def _ranked(s: Summary) -> str:
    """The ranked value of a cell, marked ``(personalized)`` where it is the client mean."""
    return s.rank.format() + (" (personalized)" if s.personalized else "")


def _direction(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(cells) + " |" for cells in lines),
    ]


def render_markdown(
    rows: list[dict],
    plots: Mapping[str, Sequence[Path]] | None = None,
    plot_root: Path | None = None,
) -> str:
    """``report.md`` text: per task an overview (mean rank over partitions) and a ranked table per partition."""
    summaries = summarise(rows)
    tasks = sorted({s.task for s in summaries})
    lines = ["# Strategy comparison", ""]
    lines.append(
        f"{len(rows)} runs: strategies {', '.join(sorted({r['strategy'] for r in rows}))}; "
        f"partitions {', '.join(sorted({r['partition'] for r in rows}))}; "
        f"seeds {', '.join(str(s) for s in sorted({r['seed'] for r in rows}))}. "
        "Values are mean ± sample std over seeds; MB = 10^6 bytes summed over all rounds and clients. "
        "'final'/'best': the global model; 'worst client'/'client mean': each client's local test "
        "metric in the last evaluated round (its personalized model where the strategy keeps "
        "local parameters, e.g. FedSA-LoRA). Ranked by the model the stations use: the final "
        "global metric, or the personalized client mean for a strategy that keeps parameters "
        "on the stations ('ranked by' says which)."
    )
    for task in tasks:
        cells = [s for s in summaries if s.task == task]
        first = cells[0]
        partitions = sorted({s.partition for s in cells})
        lines += [
            "",
            f"## Task `{task}`: {first.metric} ({_direction(first.higher_is_better)})",
            "",
        ]
        # Overview: final metric per partition, ranked by mean rank across partitions.
        ranks: dict[str, list[int]] = {}
        for partition in partitions:
            ordered = [s for s in cells if s.partition == partition]
            for i, s in enumerate(ordered, start=1):
                ranks.setdefault(s.strategy, []).append(i)
        by_strategy = {(s.strategy, s.partition): s for s in cells}
        overview = sorted(ranks, key=lambda k: (float(np.mean(ranks[k])), k))
        header = [
            "rank",
            "strategy",
            *[f"ranked value `{p}`" for p in partitions],
            "mean rank",
            "MB up",
            "MB down",
        ]
        body = []
        for i, strategy in enumerate(overview, start=1):
            own = [by_strategy.get((strategy, p)) for p in partitions]
            present = [s for s in own if s is not None]
            body.append(
                [
                    str(i),
                    f"**{strategy}**" if i == 1 else strategy,
                    *[_ranked(s) if s else "—" for s in own],
                    f"{np.mean(ranks[strategy]):.2f}",
                    f"{np.mean([s.mb_up.mean for s in present]):.3g}",
                    f"{np.mean([s.mb_down.mean for s in present]):.3g}",
                ]
            )
        lines += ["### Overview", "", *_table(header, body)]
        for partition in partitions:
            ordered = [s for s in cells if s.partition == partition]
            target = ordered[0].target
            target_col = f"rounds to {target:g}" if target is not None else "rounds to target"
            header = [
                "rank",
                "strategy",
                "seeds",
                "ranked by",
                "final",
                "best",
                "worst client",
                "client mean",
                "client val mean",
                target_col,
                "MB up",
                "MB down",
                "wall s",
            ]
            body = []
            for i, s in enumerate(ordered, start=1):
                reached = (
                    "—"
                    if target is None
                    else (
                        f"{s.rounds_to_target.format(3)} ({s.rounds_to_target.count}/{s.seeds})"
                        if s.rounds_to_target.count
                        else f"never (0/{s.seeds})"
                    )
                )
                body.append(
                    [
                        str(i),
                        s.strategy,
                        str(s.seeds),
                        RANKED_BY[s.personalized],
                        s.final.format(),
                        s.best.format(),
                        s.worst_client.format(),
                        s.mean_client.format(),
                        s.mean_client_val.format(),
                        reached,
                        s.mb_up.format(3),
                        s.mb_down.format(3),
                        s.wall_time.format(3),
                    ]
                )
            lines += ["", f"### Partition `{partition}`", "", *_table(header, body)]
        task_plots = (plots or {}).get(task, [])
        if task_plots:
            lines += ["", "### Plots", ""]
            for path in task_plots:
                rel = path.relative_to(plot_root) if plot_root else path
                lines.append(f"![{path.stem}]({rel.as_posix()})")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ReportFiles:
    csv: Path
    markdown: Path
    plots: tuple[Path, ...]


def write_report(
    records: Iterable[Mapping | RunRecord],
    out_dir: Path,
    targets: Targets = None,
    plots: bool = True,
) -> ReportFiles:
    """Write ``results.csv``, ``report.md`` and (``plots=True``) ``plots/*.png`` under ``out_dir``."""
    from rantune.simulations.compare.plots import make_plots

    out_dir = Path(out_dir)
    runs = as_runs(records)
    rows = build_rows(runs, targets)
    plot_paths = make_plots(runs, out_dir / "plots", targets) if plots else {}
    csv_path, md_path = out_dir / "results.csv", out_dir / "report.md"
    atomic_write_bytes(csv_path, rows_to_csv(rows).encode())
    atomic_write_bytes(md_path, render_markdown(rows, plot_paths, out_dir).encode())
    return ReportFiles(csv_path, md_path, tuple(p for paths in plot_paths.values() for p in paths))
