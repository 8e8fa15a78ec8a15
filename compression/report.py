"""Compression report: target checks, Markdown table and the Pareto plot.

Targets (issue: compression stage)
----------------------------------
- ``int8-dynamic`` / ``int8-static``: size <= 30% of the fp32 ONNX model and a drop of
  at most 1 point of the primary metric (0.5 dB for NMSE).
- ``distilled-int8``: >= 4x smaller than the fp32 teacher, >= 3x faster at batch 1
  than the PyTorch eager fp32 teacher, and a drop of at most 2 points (1 dB NMSE).

A *drop* is ``(teacher - variant) x 100`` points for accuracy-like metrics and
``variant - teacher`` dB for NMSE; the teacher is the merged fp32 model in PyTorch.
"""

from __future__ import annotations

import math
from pathlib import Path

from rantune.fileio import atomic_write_bytes, atomic_write_figure

INT8_TARGET = {"max_size_ratio": 0.30, "max_drop_points": 1.0, "max_drop_db": 0.5}
STUDENT_TARGET = {
    "max_size_ratio": 0.25,
    "min_speedup_b1": 3.0,
    "max_drop_points": 2.0,
    "max_drop_db": 1.0,
}


def drop(report: dict, variant: dict) -> float:
    """Primary-metric drop of ``variant`` vs the teacher (points, or dB for NMSE)."""
    key = report["primary_metric"]
    teacher, value = report["reference"][key], variant[key]
    if report["higher_is_better"]:
        return (teacher - value) * 100.0
    return value - teacher


def _drop_unit(report: dict) -> str:
    return "points" if report["higher_is_better"] else "dB"


def assess_targets(report: dict) -> list[dict]:
    """One entry per checked variant: values, limits and ``met`` (bool) per target."""
    ref = report["reference"]
    checks = []
    for variant in report["variants"]:
        name = variant["variant"]
        if name in ("int8-dynamic", "int8-static"):
            target = INT8_TARGET
        elif name == "distilled-int8":
            target = STUDENT_TARGET
        else:
            continue
        max_drop = target["max_drop_points" if report["higher_is_better"] else "max_drop_db"]
        size_ratio = variant["size_bytes"] / ref["size_bytes"]
        entry = {
            "variant": name,
            "size_ratio": size_ratio,
            "max_size_ratio": target["max_size_ratio"],
            "drop": drop(report, variant),
            "max_drop": max_drop,
            "drop_unit": _drop_unit(report),
        }
        met = size_ratio <= target["max_size_ratio"] and entry["drop"] <= max_drop
        if "min_speedup_b1" in target:
            speedup = ref["latency"]["b1"]["p50_ms"] / variant["latency"]["b1"]["p50_ms"]
            entry.update(speedup_b1=speedup, min_speedup_b1=target["min_speedup_b1"])
            met = met and speedup >= target["min_speedup_b1"]
        entry["met"] = bool(met)
        checks.append(entry)
    return checks


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _fidelity(entry: dict) -> str:
    """Agreement with the teacher: top-1 share, or NMSE to the teacher's output."""
    if "agreement_with_teacher" in entry:
        return f"{entry['agreement_with_teacher']:.1%}"
    if "nmse_vs_teacher_db" in entry:
        return f"{entry['nmse_vs_teacher_db']:.1f} dB"
    return "-"


def report_rows(report: dict) -> list[list[str]]:
    """Table rows: reference first, then every variant."""
    key = report["primary_metric"]
    ref = report["reference"]
    rows = []
    for entry in [ref, *report["variants"]]:
        lat = entry["latency"]
        rows.append(
            [
                entry["variant"],
                f"{entry['size_bytes'] / 1e6:.3f}",
                f"{entry['size_bytes'] / ref['size_bytes']:.2f}",
                f"{entry['compressed_size_bytes'] / 1e6:.3f}"
                if "compressed_size_bytes" in entry
                else "-",
                f"{entry['parameters']:,}",
                f"{lat['b1']['p50_ms']:.3f}",
                f"{lat['b64']['p50_ms']:.2f}",
                f"{ref['latency']['b1']['p50_ms'] / lat['b1']['p50_ms']:.1f}x",
                _fmt(entry[key]),
                "-" if entry is ref else f"{drop(report, entry):+.2f}",
                _fidelity(entry),
            ]
        )
    return rows


def table_header(report: dict) -> list[str]:
    """Column names of :func:`report_rows`."""
    return [
        "variant",
        "size MB",
        "x fp32",
        "zip MB",
        "params",
        "p50 b1 ms",
        "p50 b64 ms",
        "speed-up b1",
        report["primary_metric"],
        f"drop ({_drop_unit(report)})",
        "vs teacher" if report["higher_is_better"] else "NMSE to teacher",
    ]


# Columns a narrow terminal leaves out first (report.md always has all of them).
NARROW_DROP_ORDER = (4, 3, 6, 2, 10, 7, 1)


def fit_columns(
    header: list[str], rows: list[list[str]], width: int, drop_order=NARROW_DROP_ORDER
) -> list[int]:
    """Indices of the columns to show so a boxed table fits ``width`` characters.

    A column needs its widest cell (cells never wrap, so no number is cut) or its
    longest header word (headers wrap at spaces), plus 3 for padding and border; the
    table adds 1. Columns in ``drop_order`` go first, until the rest fit (the first
    column and those not in ``drop_order`` always stay).
    """

    def need(i: int) -> int:
        words = max(len(word) for word in header[i].split())
        return max(words, *(len(row[i]) for row in rows)) + 3

    keep = list(range(len(header)))
    for column in drop_order:
        if 1 + sum(need(i) for i in keep) <= width:
            break
        if column in keep and column != 0:
            keep.remove(column)
    return keep


def markdown_table(report: dict) -> str:
    header = table_header(report)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in report_rows(report)]
    return "\n".join(lines)


def targets_markdown(report: dict) -> str:
    lines = []
    for check in report.get("targets", []):
        parts = [
            f"size {check['size_ratio']:.3f}x (<= {check['max_size_ratio']:.2f})",
            f"drop {check['drop']:+.2f} {check['drop_unit']} (<= {check['max_drop']:g})",
        ]
        if "speedup_b1" in check:
            parts.append(f"speed-up b1 {check['speedup_b1']:.1f}x (>= {check['min_speedup_b1']:g})")
        status = "met" if check["met"] else "MISSED"
        lines.append(f"- **{check['variant']}**: {status} — " + ", ".join(parts))
    return "\n".join(lines)


def write_report_md(path: Path, report: dict) -> None:
    """``report.md``: the table, target checks and how it was measured."""
    ref = report["reference"]
    threads = ref["latency"].get("threads", 1)
    text = [
        f"# Compression report: task `{report['task']}`",
        "",
        f"Source run: `{report['source']['run_dir']}` (config hash "
        f"`{report['source']['config_hash']}`), evaluated on {report['eval_rows']} global "
        "test rows.",
        "",
        markdown_table(report),
        "",
        f"Latency: p50 over repeated calls, {threads} thread(s); `torch-fp32-teacher` is "
        "PyTorch eager fp32 (the reference for speed-ups), the others run in onnxruntime "
        "on the CPU. Size of the reference = the fp32 ONNX file; zip MB = the file "
        "deflated (what sparsity buys: sparse-int8 is size-only). Drop is vs the teacher.",
        "",
        "## Targets",
        "",
        targets_markdown(report) or "(no targeted variant was built)",
        "",
    ]
    atomic_write_bytes(path, "\n".join(text).encode())


def _pareto(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of points not dominated (lower x is better, y per direction)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = False
        for j, (x2, y2) in enumerate(points):
            better_y = y2 >= y if higher_is_better else y2 <= y
            strictly = x2 < x or (y2 > y if higher_is_better else y2 < y)
            if j != i and x2 <= x and better_y and strictly:
                dominated = True
                break
        if not dominated:
            front.append(i)
    return front


def write_pareto(path: Path, report: dict) -> None:
    """Two panels: primary metric vs batch-1 latency and vs size; Pareto fronts joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, better = report["primary_metric"], report["higher_is_better"]
    entries = [report["reference"], *report["variants"]]
    names = [e["variant"] for e in entries]
    metric = [float(e[key]) for e in entries]
    axes_data = [
        ("p50 latency at batch 1 (ms)", [e["latency"]["b1"]["p50_ms"] for e in entries]),
        ("model size (MB)", [e["size_bytes"] / 1e6 for e in entries]),
    ]
    from matplotlib.ticker import LogLocator, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (label, xs) in zip(axes, axes_data, strict=True):
        colours = ["black"] + ["tab:blue"] * (len(xs) - 1)
        ax.scatter(xs, metric, color=colours, zorder=3)
        for k, (name, x, y) in enumerate(zip(names, xs, metric, strict=True)):
            offset = (5, 6 + 9 * (k % 3)) if k % 2 == 0 else (5, -12 - 9 * (k % 3))
            ax.annotate(name, (x, y), textcoords="offset points", xytext=offset, fontsize=8)
        front = sorted(_pareto(list(zip(xs, metric, strict=True)), better), key=lambda i: xs[i])
        ax.plot([xs[i] for i in front], [metric[i] for i in front], "--o", color="tab:orange",
                markerfacecolor="none", markersize=11, zorder=2)  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="x", which="minor", labelsize=0)
        span = max(metric) - min(metric)
        pad = span * 0.25 if span > 0 else max(abs(metric[0]) * 0.02, 0.01)
        ax.set_ylim(min(metric) - pad, max(metric) + pad)
        ax.set_xlabel(label)
        ax.set_ylabel(key + ("" if better else " (lower is better)"))
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{report['task']}: quality vs cost (black: PyTorch eager fp32 teacher; circled: Pareto front)"
    )
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=120)
