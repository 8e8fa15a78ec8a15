"""The demo's ``report.md`` and ``report.json``: one page from channels to the edge."""

from __future__ import annotations

import os
from pathlib import Path

from rantune.fileio import atomic_write_bytes, atomic_write_json


def _fmt(value, digits: int = 3) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return "-"


def _rel(out: Path, path: Path) -> str:
    return os.path.relpath(path, out)


def _data_section(out: Path, data: dict) -> list[str]:
    lines = [
        f"## 1. Channel data: preset `{data['preset']}` ({len(data['sites'])} base stations)",
        "",
        "One data set per base station: 3GPP TR 38.901 stochastic channels (Sionna) or "
        "channels ray-traced in a Sionna RT city scene; cached by "
        f"config hash `{data['config_hash']}`.",
        "",
        "| site | kind | scenario / scene | samples | LoS | indoor | mean dist (m) | "
        "speed (m/s) | SNR (dB) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["sites"]:
        lines.append(
            f"| {r['name']} | {r.get('kind', '-')} | {r.get('scene', r['scenario'])} | "
            f"{r['num_samples']} | {r['los_fraction']:.2f} | "
            f"{r['indoor_fraction']:.2f} | {r['mean_distance_m']:.0f} | "
            "{:.1f}-{:.1f} | {:.0f}-{:.0f} |".format(*r["speed_range_mps"], *r["snr_range_db"])
        )
    lines += [
        "",
        f"![per-site summary]({_rel(out, out / 'data' / 'sites.png')})",
        "",
        f"![labels per client]({_rel(out, out / 'data' / 'partition_labels.png')})",
        "",
    ]
    return lines


def _comparison_section(out: Path, rows: list[dict], plan: dict) -> list[str]:
    lines = [
        "## 2. Federated LoRA fine-tuning: strategies side by side",
        "",
        f"{plan['rounds']} rounds, one client per base station ({', '.join(plan['partitions'])} "
        "split), only LoRA adapters and the task head travel. Final and best global metric on "
        "the held-out global test set; worst client on its local test split; MB = uplink + "
        "downlink over the run.",
        "",
        "| task | strategy | metric | final | best | worst client | MB up | MB down | wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for task in plan["tasks"]:
        task_rows = [r for r in rows if r["task"] == task]
        higher = bool(task_rows) and task_rows[0]["higher_is_better"].lower() == "true"
        task_rows.sort(key=lambda r: float(r["final_metric"] or "nan"), reverse=higher)
        for r in task_rows:
            lines.append(
                f"| {task} | {r['strategy']} | {r['metric']} | {_fmt(r['final_metric'])} | "
                f"{_fmt(r['best_metric'])} | {_fmt(r['worst_client_metric'])} | "
                f"{_fmt(r['mb_up'], 2)} | {_fmt(r['mb_down'], 2)} | {_fmt(r['wall_time_s'], 0)} |"
            )
    lines += ["", "Full comparison: [compare/report.md](compare/report.md).", ""]
    for plot in sorted((out / "compare" / "plots").glob("*.png")):
        lines += [f"![{plot.stem}]({_rel(out, plot)})", ""]
    return lines


def _compression_section(out: Path, compression: dict, edge: dict) -> list[str]:
    lines = ["## 3. Compression and edge deployment", ""]
    for task, report in compression.items():
        key = report["primary_metric"]
        ref = report["reference"]
        lines += [
            f"### {task}: global model of `{report.get('demo_strategy', '?')}`",
            "",
            f"PyTorch eager fp32 teacher: {key} {_fmt(ref.get(key))}, "
            f"{ref['parameters']} parameters, batch-1 latency "
            f"{_fmt(ref['latency']['b1']['p50_ms'])} ms.",
            "",
            f"| artifact | size (MB) | {key} | p50 batch 1 (ms) | p50 batch 64 (ms) |",
            "|---|---:|---:|---:|---:|",
        ]
        for v in report["variants"]:
            lines.append(
                f"| `artifacts/{task}/{v['variant']}` | {v['size_bytes'] / 1e6:.3f} | "
                f"{_fmt(v.get(key))} | {_fmt(v['latency']['b1']['p50_ms'])} | "
                f"{_fmt(v['latency']['b64']['p50_ms'])} |"
            )
        lines += [
            "",
            f"![compression Pareto]({_rel(out, out / 'artifacts' / task / 'pareto.png')})",
            "",
        ]
        bench = edge.get(task)
        if bench:
            lines += [
                f"Edge runtime (`rantune edge bench --artifact artifacts/{task}/int8-dynamic`):",
                "",
                "| threads | batch | p50 (ms) | p95 (ms) | samples/s |",
                "|---:|---:|---:|---:|---:|",
            ]
            for r in bench["results"]:
                lines.append(
                    f"| {r['threads']} | {r['batch']} | {_fmt(r['p50_ms'])} | "
                    f"{_fmt(r['p95_ms'])} | {r['samples_per_s']:.0f} |"
                )
            lines.append("")
    return lines


def write_demo_report(out: Path, summary: dict) -> None:
    """Write ``out/report.md`` (with relative PNG links) and ``out/report.json``."""
    plan = summary["plan"]
    lines = [
        "# rantune demo",
        "",
        f"Preset `{plan['preset']}`; tasks {', '.join(plan['tasks'])}; strategies "
        f"{', '.join(plan['strategies'])}; artifacts {', '.join(plan['variants'])}. "
        f"Wall time {summary['wall_s']:.0f} s ({summary['reused_runs']} federated run(s) reused).",
        "",
    ]
    lines += _data_section(out, summary["data"])
    lines += _comparison_section(out, summary["comparison"], plan)
    lines += _compression_section(out, summary["compression"], summary["edge"])
    atomic_write_bytes(out / "report.md", "\n".join(lines).encode())
    atomic_write_json(out / "report.json", summary)
