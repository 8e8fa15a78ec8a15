"""Per-site data summary plot of the demo report."""

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
