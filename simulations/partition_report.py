"""Partition summary: per-client table, label skew and a PNG of label histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rantune.channels import ChannelDataset
from rantune.config import DataConfig
from rantune.partition import PartitionConfig, label_histograms, label_skew, partition


def partition_report(
    cfg: DataConfig, sites: list[ChannelDataset], part_cfg: PartitionConfig, out: Path
) -> dict:
    """Partition the pooled sites, plot per-client histograms, return a JSON-able summary.

    Writes ``out/partition_labels.png``: beam and LoS label histograms per client.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = ChannelDataset.concat(sites)
    labels = {"beam": pooled["beam_index"], "los": pooled["los"].astype(np.int64)}
    parts = partition(pooled["site_index"], labels, part_cfg)
    beam_hist = label_histograms(labels["beam"], parts, cfg.radio.num_beams)
    los_hist = label_histograms(labels["los"], parts, 2)
    fig, (ax_beam, ax_los) = plt.subplots(1, 2, figsize=(11, 4), width_ratios=[3, 1])
    image = ax_beam.imshow(
        beam_hist / np.maximum(beam_hist.sum(1, keepdims=True), 1), aspect="auto"
    )
    ax_beam.set(
        xlabel="beam index", ylabel="client", title=f"beam labels per client ({part_cfg.scheme})"
    )
    fig.colorbar(image, ax=ax_beam, label="fraction of client samples")
    los_share = los_hist[:, 1] / np.maximum(los_hist.sum(1), 1)
    ax_los.barh(np.arange(len(los_share)), los_share, color="tab:orange")
    ax_los.set(xlabel="LoS fraction", xlim=(0, 1), title="LoS per client")
    ax_los.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "partition_labels.png", dpi=110)
    plt.close(fig)
    return {
        "scheme": part_cfg.scheme,
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
