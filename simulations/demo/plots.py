"""The demo report's plots: per-site data summary, and per task the metric against rounds
and uploaded MB with the reference lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rantune.fileio import atomic_write_figure

SCENARIO_COLORS = {"umi": "tab:blue", "uma": "tab:orange", "rma": "tab:green", "rt": "tab:purple"}


def plot_sites(rows: list[dict], path: Path) -> None:
    """Three panels per base station: LoS/indoor share, distance and speed, SNR range.

    ``rows`` are :func:`simulations.commands.data.site_summary` dicts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    y = np.arange(len(rows))
    colors = [SCENARIO_COLORS.get(r["scenario"], "gray") for r in rows]
    fig, (ax_los, ax_dist, ax_snr) = plt.subplots(1, 3, figsize=(13, 0.45 * len(rows) + 1.8))
    ax_los.barh(y - 0.2, [r["los_fraction"] for r in rows], 0.4, color=colors, label="LoS")
    ax_los.barh(
        y + 0.2, [r["indoor_fraction"] for r in rows], 0.4, color="lightgray", label="indoor"
    )
    ax_los.set(
        yticks=y, yticklabels=names, xlim=(0, 1), xlabel="share of users", title="LoS / indoor"
    )
    ax_los.legend(loc="lower right", fontsize=8)
    ax_los.invert_yaxis()
    ax_dist.barh(y, [r["mean_distance_m"] for r in rows], color=colors)
    ax_dist.set(yticks=y, yticklabels=[], xscale="log", xlabel="mean BS-UT distance (m)")
    for i, r in enumerate(rows):
        low, high = r["speed_range_mps"]
        ax_dist.annotate(
            f"{low * 3.6:.0f}-{high * 3.6:.0f} km/h",
            (r["mean_distance_m"], i),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax_dist.set_title("distance (bars) and UT speed")
    ax_dist.invert_yaxis()
    for i, r in enumerate(rows):
        low, high = r["snr_range_db"]
        ax_snr.plot([low, high], [i, i], lw=6, color=colors[i], solid_capstyle="butt")
    ax_snr.set(yticks=y, yticklabels=[], xlabel="SNR of the CSI estimate (dB)", title="SNR range")
    ax_snr.invert_yaxis()
    handles = [
        plt.Line2D([], [], color=c, lw=6, label=s.upper()) for s, c in SCENARIO_COLORS.items()
    ]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    atomic_write_figure(path, fig)


REFERENCE_STYLES = {"centralized": ":", "local-only": "-.", "baseline": "--"}


def plot_task_curves(table: dict, curves: dict[str, dict], out_dir: Path) -> list[Path]:
    """``metric_vs_round_<task>.png`` and ``metric_vs_mb_<task>.png`` of one task.

    Two panels each: the global model on the global test rows, and the client mean of the
    model each station uses (personalized where the strategy keeps parameters local) on
    its own test rows. The centralized, local-only and classical-baseline values of the
    same metric are horizontal lines in both.

    Parameters
    ----------
    table : :func:`rantune.simulations.demo.tables.task_table`.
    curves : ``{strategy: tables.curves(history, primary)}``.
    out_dir : where the PNGs go.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from rantune.simulations.demo.tables import reference_lines

    task, metric = table["task"], table["primary"]
    direction = "higher is better" if table["higher_is_better"] else "lower is better"
    lines = reference_lines(table)
    kinds = {row["label"]: row["kind"] for row in table["rows"]}
    personalized = {row["label"] for row in table["rows"] if row.get("personalized")}
    paths = []
    for axis, xlabel in (("round", "round"), ("mb_up", "cumulative MB uploaded (all clients)")):
        fig, panels = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, (key, title) in zip(
            panels,
            (("global", "global model, global test rows"),
             ("clients", "model each station uses, own test rows (client mean)")),
            strict=True,
        ):
            for i, (strategy, curve) in enumerate(sorted(curves.items())):
                x = np.asarray(curve[axis], dtype=float)
                y = np.array([np.nan if v is None else v for v in curve[key]], dtype=float)
                label = strategy
                if strategy in personalized:
                    label += " (personalized)" if key == "clients" else " (global: unused)"
                ax.plot(x, y, marker="o", ms=3, color=plt.get_cmap("tab10")(i % 10), label=label)
            for j, (name, value) in enumerate(lines[key].items()):
                if value is not None:
                    ax.axhline(
                        value,
                        color=("black", "dimgray", "gray")[j % 3],
                        linestyle=REFERENCE_STYLES.get(kinds[name], "--"),
                        linewidth=1.2,
                        label=name,
                    )
            if axis == "mb_up":
                ax.set_xscale("log")
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(title=title, xlabel=xlabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        panels[0].set_ylabel(f"{metric} ({direction})")
        fig.suptitle(f"{task}: {metric} vs {xlabel.split(' (')[0]}")
        fig.tight_layout()
        name = "metric_vs_round" if axis == "round" else "metric_vs_mb"
        paths.append(atomic_write_figure(out_dir / f"{name}_{task}.png", fig))
    return paths
