"""Partition summary: per-client table, label skew and a PNG of label histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rantune.channels import ChannelDataset
from rantune.config import DataConfig
from rantune.fileio import atomic_write_figure
from rantune.partition import (
    PartitionConfig,
    Partitioning,
    label_histograms,
    label_skew,
    partition,
)


def partition_sites(
    cfg: DataConfig, sites: list[ChannelDataset], part_cfg: PartitionConfig
) -> tuple[Partitioning, np.ndarray, np.ndarray]:
    """Partition the pooled sites; nothing is written.

    Returns
    -------
    parts : the partitioning of the pooled rows.
    beam_hist : ``[num_clients, num_beams]`` int64 beam-label counts per client.
    los_hist : ``[num_clients, 2]`` int64 NLoS/LoS counts per client.
    """
    pooled = ChannelDataset.concat(sites)
    labels = {"beam": pooled["beam_index"], "los": pooled["los"].astype(np.int64)}
    parts = partition(pooled["site_index"], labels, part_cfg)
    beam_hist = label_histograms(labels["beam"], parts, cfg.radio.num_beams)
    los_hist = label_histograms(labels["los"], parts, 2)
    return parts, beam_hist, los_hist


def plot_label_histograms(
    beam_hist: np.ndarray, los_hist: np.ndarray, scheme: str, path: Path
) -> None:
    """Write a PNG of per-client beam-label fractions and LoS shares (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_beam, ax_los) = plt.subplots(1, 2, figsize=(11, 4), width_ratios=[3, 1])
    image = ax_beam.imshow(
        beam_hist / np.maximum(beam_hist.sum(1, keepdims=True), 1), aspect="auto"
    )
    ax_beam.set(xlabel="beam index", ylabel="client", title=f"beam labels per client ({scheme})")
    fig.colorbar(image, ax=ax_beam, label="fraction of client samples")
    los_share = los_hist[:, 1] / np.maximum(los_hist.sum(1), 1)
    ax_los.barh(np.arange(len(los_share)), los_share, color="tab:orange")
    ax_los.set(xlabel="LoS fraction", xlim=(0, 1), title="LoS per client")
    ax_los.invert_yaxis()
    fig.tight_layout()
    atomic_write_figure(Path(path), fig)


def summarize_partition(parts: Partitioning, beam_hist: np.ndarray, los_hist: np.ndarray) -> dict:
    """JSON-able summary: sizes, label skew (total variation) and per-client LoS share."""
    los_share = los_hist[:, 1] / np.maximum(los_hist.sum(1), 1)
    return {
        "scheme": parts.config.scheme,
        "num_clients": len(parts.clients),
        "global_test_size": int(len(parts.global_test)),
        "beam_label_skew_tv": label_skew(beam_hist),
        "los_label_skew_tv": label_skew(los_hist),
        "clients": [
            {
                "train": int(len(c.train)),
                "val": int(len(c.val)),
                "test": int(len(c.test)),
                "los_fraction": float(los_share[i]),
            }
            for i, c in enumerate(parts.clients)
        ],
    }


def partition_report(
    cfg: DataConfig, sites: list[ChannelDataset], part_cfg: PartitionConfig, out: Path
) -> dict:
    """Partition the pooled sites, plot per-client histograms, return a JSON-able summary.

    Writes ``out/partition_labels.png``: beam and LoS label histograms per client.
    """
    parts, beam_hist, los_hist = partition_sites(cfg, sites, part_cfg)
    plot_label_histograms(beam_hist, los_hist, part_cfg.scheme, Path(out) / "partition_labels.png")
    return summarize_partition(parts, beam_hist, los_hist)
