"""PNG plots of a strategy comparison (matplotlib, Agg backend), one set per task.

- ``metric_vs_round_<task>.png``: ranked metric per round (the global metric, or the
  personalized client mean for a strategy that keeps parameters on the stations,
  labelled so), mean over seeds with a ±1 std band, one panel per partition, one line
  per strategy;
- ``metric_vs_mb_<task>.png``: the same mean against cumulative MB uploaded;
- ``client_spread_<task>.png``: per-client metrics of the last evaluated round
  (pooled over seeds), a box per strategy, one panel per partition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from rantune.federated.messages import MB
from rantune.fileio import atomic_write_figure
from rantune.simulations.compare.records import RunRecord, slug


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    return atomic_write_figure(path, fig)


def mean_curve(runs: Sequence[RunRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per round over seeds: ``(rounds [R], mean metric [R], std [R], mean cumulative MB up [R])``.

    The metric is the ranked one (:mod:`~rantune.simulations.compare.report`): the
    global metric, or the client mean of a ``personalized`` run. Rounds missing in some
    seeds are averaged over the seeds that have them; ``nan`` metrics are ignored.
    """
    by_round: dict[int, list[float]] = {}
    mb_by_round: dict[int, list[float]] = {}
    for run in runs:
        cumulative = 0.0
        for r in run.history:
            cumulative += r.bytes_up / MB
            mb_by_round.setdefault(r.round, []).append(cumulative)
            value = r.global_metric
            if run.extra.get("personalized"):
                finite = [v for v in r.client_metrics.values() if not math.isnan(v)]
                value = float(np.mean(finite)) if finite else math.nan
            if not math.isnan(value):
                by_round.setdefault(r.round, []).append(value)
    rounds = np.array(sorted(by_round), dtype=np.int64)
    mean = np.array([np.mean(by_round[r]) for r in rounds])
    std = np.array([np.std(by_round[r], ddof=1) if len(by_round[r]) > 1 else 0.0 for r in rounds])
    mb = np.array([np.mean(mb_by_round[r]) for r in rounds])
    return rounds, mean, std, mb


def _panels(plt, count: int, title: str):
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    fig.suptitle(title)
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _group(
    runs: Sequence[RunRecord],
) -> tuple[list[str], list[str], dict[tuple[str, str], list[RunRecord]]]:
    partitions = sorted({r.partition for r in runs})
    strategies = sorted({r.strategy for r in runs})
    cells: dict[tuple[str, str], list[RunRecord]] = {}
    for run in runs:
        cells.setdefault((run.strategy, run.partition), []).append(run)
    return partitions, strategies, cells


def plot_task(runs: Sequence[RunRecord], out_dir: Path, target: float | None = None) -> list[Path]:
    """The three PNGs for one task's runs; returns their paths."""
    plt = _pyplot()
    task, metric = runs[0].task, runs[0].metric
    direction = "higher is better" if runs[0].higher_is_better else "lower is better"
    partitions, strategies, cells = _group(runs)
    # tab10 colours, then the same colours dashed/dotted: up to 30 distinguishable strategies.
    styles = {
        s: (plt.get_cmap("tab10")(i % 10), ("-", "--", ":")[i // 10 % 3])
        for i, s in enumerate(strategies)
    }
    paths = []

    for kind in ("round", "mb"):
        title = f"{task}: {metric} ({direction}) vs " + (
            "round" if kind == "round" else "cumulative MB uploaded"
        )
        fig, axes = _panels(plt, len(partitions), title)
        for ax, partition in zip(axes, partitions, strict=True):
            positive = True
            for strategy in strategies:
                group = cells.get((strategy, partition))
                if not group:
                    continue
                rounds, mean, std, mb = mean_curve(group)
                if rounds.size == 0:
                    continue
                x = rounds if kind == "round" else mb
                color, linestyle = styles[strategy]
                ax.plot(
                    x,
                    mean,
                    label=strategy + (" (personalized)" if group[0].extra.get("personalized") else ""),
                    color=color,
                    linestyle=linestyle,
                    marker="o" if x.size < 3 else None,
                )
                if len(group) > 1:
                    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
                positive &= bool((x > 0).all())
            if target is not None:
                ax.axhline(target, color="gray", linestyle="--", linewidth=1)
            ax.set(
                title=f"partition {partition}",
                xlabel="round" if kind == "round" else "cumulative MB uploaded",
                ylabel=metric,
            )
            if kind == "mb" and positive:
                # Upload differs by orders of magnitude between strategies (LoRA vs full model).
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize="small")
        fig.tight_layout()
        name = "metric_vs_round" if kind == "round" else "metric_vs_mb"
        paths.append(_save(fig, out_dir / f"{name}_{slug(task)}.png"))

    fig, axes = _panels(
        plt, len(partitions), f"{task}: per-client {metric}, last evaluated round (all seeds)"
    )
    for ax, partition in zip(axes, partitions, strict=True):
        data, labels = [], []
        for strategy in strategies:
            values = []
            for run in cells.get((strategy, partition), []):
                last = [r for r in run.history if r.client_metrics]
                if last:
                    values += [v for v in last[-1].client_metrics.values() if not math.isnan(v)]
            if values:
                data.append(values)
                labels.append(strategy)
        if data:
            ax.boxplot(data)  # tick labels set separately: matplotlib < 3.9 lacks tick_labels=
            ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right")
        else:
            ax.text(0.5, 0.5, "no client metrics", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=f"partition {partition}", ylabel=metric)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    paths.append(_save(fig, out_dir / f"client_spread_{slug(task)}.png"))
    return paths


def make_plots(
    runs: Sequence[RunRecord], out_dir: Path, targets: float | Mapping[str, float] | None = None
) -> dict[str, list[Path]]:
    """``{task: [png paths]}`` for every task in ``runs`` (written under ``out_dir``)."""
    out: dict[str, list[Path]] = {}
    for task in sorted({r.task for r in runs}):
        target = targets.get(task) if isinstance(targets, Mapping) else targets
        out[task] = plot_task([r for r in runs if r.task == task], Path(out_dir), target)
    return out
