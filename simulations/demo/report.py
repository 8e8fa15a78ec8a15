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


METRIC_NAMES = {
    "auc": "AUC",
    "top1": "top-1",
    "gain_loss_db": "gain loss (dB)",
    "nmse_db": "NMSE (dB)",
    "error_p90_m": "p90 error (m)",
}
KIND_NOTES = {
    "centralized": "reference: every client's training rows pooled (not federated)",
    "local-only": "reference: each station alone; global = mean of the station models",
    "baseline": "classical, no learning; fitted per station on its training rows",
}


def _metric_name(name: str) -> str:
    return METRIC_NAMES.get(name, name)


def _what(row: dict) -> str:
    if row["kind"] != "federated":
        return KIND_NOTES[row["kind"]]
    if row["personalized"]:
        return "stations use their personalized model (global model unused)"
    return "stations use the global model"


def _task_section(out: Path, table: dict, plan: dict, number: str) -> list[str]:
    metrics = table["metrics"]
    direction = "higher" if table["higher_is_better"] else "lower"
    header = ["model", "what the stations use"]
    for m in metrics:
        name = _metric_name(m)
        header += [f"{name} global test", f"{name} client mean", f"{name} client worst"]
    header += ["clients", "MB up"]
    lines = [
        f"### {number} `{table['task']}`: {_metric_name(table['primary'])} ({direction} is better)",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|" + "---:|" * (len(header) - 2),
    ]
    for row in table["rows"]:
        label = f"`{row['label']}`" if row["kind"] == "federated" else row["label"]
        cells = [label, _what(row)]
        for m in metrics:
            cells += [_fmt(row["global"][m]), _fmt(row["client_mean"][m]), _fmt(row["client_worst"][m])]
        mb = _fmt(row["mb_up"], 2) if "mb_up" in row else "-"
        cells += [str(row["clients_scored"]), mb]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Centralized and local-only LoRA train {table['epochs']} epochs (the epochs one "
        f"client trains over the {plan['rounds']} rounds) from the same initial adapters. "
        "Client mean / worst: each client's own test rows, the model that station uses.",
        "",
    ]
    for plot in table.get("plots", []):
        lines += [f"![{Path(plot).stem}]({plot})", ""]
    return lines


def _comparison_section(out: Path, summary: dict) -> list[str]:
    plan = summary["plan"]
    lines = [
        "## 2. Federated LoRA fine-tuning: strategies next to the references",
        "",
        f"{plan['rounds']} rounds, one client per base station ({', '.join(plan['partitions'])} "
        "split); only LoRA adapters and the task head travel. Global test: the server's "
        "held-out global test rows. The centralized, local-only and classical rows use the "
        "same training and test rows as the federated runs.",
        "",
    ]
    for i, task in enumerate(plan["tasks"], start=1):
        lines += _task_section(out, summary["tasks"][task], plan, f"2.{i}")
    lines += ["Strategy comparison over rounds: [compare/report.md](compare/report.md).", ""]
    return lines


def _timing_section(summary: dict) -> list[str]:
    timing = summary["timing"]
    lines = [
        "## 4. Wall time",
        "",
        f"This invocation: **{timing['wall_s']:.0f} s** on {timing['cpus']} CPU cores with "
        f"{timing['workers']} worker processes, {timing['cpu_s']:.0f} CPU seconds in this "
        "process and its workers (load average 1/5/15 min "
        f"{' / '.join(f'{x:.2f}' for x in timing['load_start'])} at the start, "
        f"{' / '.join(f'{x:.2f}' for x in timing['load_end'])} at the end; the machine may "
        f"be shared); {timing['stations_generated']} station(s) generated, "
        f"{timing['runs_reused']} federated run(s) reused.",
        "",
        "| stage | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in timing["stages"].items()]
    lines += [
        "",
        "Every invocation into this directory (`invocations.json`):",
        "",
        "| date (UTC) | wall s | CPU s | stations generated | runs reused | load 1 min at start |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for inv in summary["invocations"]:
        lines.append(
            f"| {inv['date']} | {inv['wall_s']:.0f} | {_fmt(inv.get('cpu_s'), 0)} | "
            f"{inv['stations_generated']} | {inv['runs_reused']} | {inv['load_start'][0]:.2f} |"
        )
    return lines + [""]


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
    timing = summary["timing"]
    lines = [
        "# rantune demo",
        "",
        f"Preset `{plan['preset']}`; tasks {', '.join(plan['tasks'])}; strategies "
        f"{', '.join(plan['strategies'])}; artifacts {', '.join(plan['variants'])}; "
        f"{plan['left_out']}. "
        f"Wall time {timing['wall_s']:.0f} s (load average {timing['load_start'][0]:.2f} at "
        f"the start, {timing['cpus']} cores; section 4).",
        "",
    ]
    lines += _data_section(out, summary["data"])
    lines += _comparison_section(out, summary)
    lines += _compression_section(out, summary["compression"], summary["edge"])
    lines += _timing_section(summary)
    atomic_write_bytes(out / "report.md", "\n".join(lines).encode())
    atomic_write_json(out / "report.json", summary)
