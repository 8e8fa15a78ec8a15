"""Markdown of the compression benchmark, generated from ``benchmarks/results/compression.json``.

The per-variant tables and target checks are the library's own
(:func:`rantune.compression.report.markdown_table`, :func:`targets_markdown`,
:func:`assess_targets` as stored in each report); every other number comes from the
JSON. ``python benchmarks/compression.py --render`` rewrites ``compression.md`` without
measuring.
"""

from __future__ import annotations

import common

from rantune.compression.report import (
    INT8_TARGET,
    STUDENT_TARGET,
    drop,
    markdown_table,
    targets_markdown,
)

MODE_TEXT = {
    "federated": "each base station distils the student on its own training rows (its own "
    "labels next to the teacher's outputs), the server averages the students (FedAvg)",
    "server": "the server distils on channels it generates itself (a TR 38.901 drop), "
    "teacher outputs only, no labels; nothing travels",
}
READING = [
    "- `fp32` and `int8-dynamic` do not depend on the distillation mode (the same files in "
    "both modes; their latencies are measured again next to each mode's students). "
    "`int8-static` does: in `federated` mode each station computes onnxruntime MinMax "
    "activation ranges on its own rows and only the ranges travel; in `server` mode the "
    "server calibrates on its generated channels.",
    "- Speed-ups are against PyTorch eager fp32 at batch 1, which for a small model is "
    "dominated by per-operator dispatch overhead; the `fp32` row (onnxruntime, same "
    "weights) separates the runtime's gain from the compression's.",
    "- `distilled-fp32` is the student before int8: the difference to `distilled-int8` is "
    "what quantization costs, the difference to the teacher what distillation costs.",
    "- `int8-static` (QDQ) is the format integer-only NPUs need; whether it is faster than "
    "`int8-dynamic` depends on the CPU's int8 instructions (compare their latency columns).",
    "- `sparse-int8` (magnitude pruning without recovery, then int8) saves size only once "
    "deflated (zip MB), at an accuracy cost.",
    "- A negative drop is a gain: a student trained on the stations' own labels can beat a "
    "teacher that a short federated run left under-fitted.",
]


def targets_line() -> str:
    i8, st = INT8_TARGET, STUDENT_TARGET
    return (
        f"Targets: int8 <= {i8['max_size_ratio']:.0%} of fp32 size with <= "
        f"{i8['max_drop_points']:g} point drop (<= {i8['max_drop_db']} dB NMSE); "
        f"distilled+int8 >= {1 / st['max_size_ratio']:.0f}x smaller and >= "
        f"{st['min_speedup_b1']:g}x faster at batch 1 than PyTorch eager fp32 (teacher), "
        f"<= {st['max_drop_points']:g} points drop (<= {st['max_drop_db']:g} dB)."
    )


def pieces(results: dict):
    """``(task, mode, piece)`` of every measured (task, mode)."""
    for task, entry in results["tasks"].items():
        for mode, piece in entry["modes"].items():
            yield task, mode, piece


def summary_rows(results: dict) -> list[list[str]]:
    """One row per (task, mode, variant): size, metric, drop and batch-1 speed-up."""
    rows = []
    for task, mode, piece in pieces(results):
        report = piece["report"]
        key, ref = report["primary_metric"], report["reference"]
        unit = "pts" if report["higher_is_better"] else "dB"
        t_b1 = ref["latency"]["b1"]["p50_ms"]
        rows.append([task, mode, "torch fp32 (teacher)", f"{ref['size_bytes'] / 1e6:.3f}",
                     "1.00", f"{key} {ref[key]:.4f}", "-", f"{t_b1:.3f}", "1.0x"])  # fmt: skip
        for v in report["variants"]:
            b1 = v["latency"]["b1"]["p50_ms"]
            rows.append(
                [task, mode, v["variant"], f"{v['size_bytes'] / 1e6:.3f}",
                 f"{v['size_bytes'] / ref['size_bytes']:.2f}", f"{key} {v[key]:.4f}",
                 f"{drop(report, v):+.2f} {unit}", f"{b1:.3f}", f"{t_b1 / b1:.1f}x"]
            )  # fmt: skip
    return rows


def target_rows(results: dict) -> list[list[str]]:
    rows = []
    for task, mode, piece in pieces(results):
        for check in piece["report"]["targets"]:
            speed = f"{check['speedup_b1']:.1f}x" if "speedup_b1" in check else "-"
            rows.append(
                [task, mode, check["variant"], f"{check['size_ratio']:.4f}",
                 f"{check['drop']:+.2f} {check['drop_unit']}", speed,
                 "met" if check["met"] else "**missed**"]
            )  # fmt: skip
    return rows


def _metric_text(task: str, teacher: dict) -> str:
    final = teacher.get("server_final") or {}
    key = teacher.get("primary_metric")
    if key not in final:
        return ""
    curve = ", ".join(f"{v:.3f}" for v in teacher.get("curve", []) if v is not None)
    return f"; its server-side {key} after the last round: {final[key]:.4f} (rounds 0..: {curve})"


def teacher_lines(task: str, teacher: dict) -> list[str]:
    line = f"Teacher: {teacher['kind']}, `{teacher['run_dir']}`"
    o = teacher.get("overrides")
    if o:
        line += (
            f" ({o['data.preset']} preset, {teacher.get('num_clients')} stations, "
            f"{o['num-server-rounds']} rounds x {o['local-epochs']} local epochs, <= "
            f"{o['data.max-train-rows']} training rows per station, "
            f"{teacher['seconds']:.0f} s / {teacher['cpu_seconds']:.0f} CPU-s)"
        )
    return [line + _metric_text(task, teacher) + "."]


def student_lines(report: dict) -> list[str]:
    """What each student learned from and what travelled, from its manifest record."""
    lines = []
    for v in report["variants"]:
        details = v.get("details") or {}
        record = details.get("distill") or details.get("recovery")
        if v["variant"] not in ("pruned-int8", "distilled-int8") or not record:
            continue
        sent = record.get("bytes", {}).get("total", 0)
        rows = sum(record.get("rows", {}).values())
        lines.append(
            f"- `{v['variant']}`: mode `{record['mode']}`, {record['rounds']} round(s) x "
            f"{record.get('local_epochs', record.get('epochs'))} local epoch(s), "
            f"{len(record.get('stations', [])) or 'no'} station(s), {rows} rows, labels: "
            f"{record['labels']}, {sent / 1e6:.2f} MB moved"
        )
    static = next((v for v in report["variants"] if v["variant"] == "int8-static"), None)
    if static:
        d = static["details"]
        text = f"- `int8-static`: calibration `{d['calib_source']}` ({d['calibration_rows']} rows"
        calib = d.get("calibration")
        if calib:
            b = calib["bytes"]
            text += (
                f" on {len(calib['stations'])} stations, {calib['tensors']} tensor ranges; "
                f"{b['ranges-up'] / 1e3:.1f} kB of ranges up, {b['graph-down'] / 1e6:.2f} MB "
                "of fp32 graph down"
            )
        lines.append(text + ")")
    return lines


def mode_lines(task: str, mode: str, piece: dict) -> list[str]:
    report = piece["report"]
    grid = []
    for name, rows in piece["edge_grid"].items():
        cell = {(r["threads"], r["batch"]): f"{r['p50_ms']:.3f}" for r in rows}
        grid.append([name, cell[(1, 1)], cell[(1, 64)], cell[(2, 1)], cell[(2, 64)]])
    return common.section(
        f"{task}, distillation `{mode}`",
        [f"{MODE_TEXT.get(mode, mode)}; {report['eval_rows']} global test rows; "
         f"{piece['seconds']:.0f} s / {piece['cpu_seconds']:.0f} CPU-s."],
        [markdown_table(report)],
        [targets_markdown(report)],
        student_lines(report),
        ["Misses:", "", *(f"- {m}" for m in piece["misses"])] if piece["misses"] else [],
        ["Edge runtime grid (p50 ms; threads x batch):"],
        common.table(["variant", "1 thr b1", "1 thr b64", "2 thr b1", "2 thr b64"], grid),
        level=3,
    )  # fmt: skip


def provenance_records(results: dict) -> list[dict]:
    """The run's own record and those of resumed pieces and teachers, each once."""
    records, seen = [], set()
    candidates = list(results["provenance"])
    for entry in results["tasks"].values():
        candidates.append(entry["teacher"].get("provenance"))
        candidates += [p.get("provenance") for p in entry["modes"].values()]
    for p in candidates:
        if not p:
            continue
        key = (p.get("command"), p.get("commit"), p.get("dirty"))
        if key not in seen:
            seen.add(key)
            records.append(p)
    return records


def _provenance_note(records: list[dict]) -> list[str]:
    """Why one run can name several commits (each piece records HEAD when it starts)."""
    commits = {r.get("commit") for r in records}
    if len(commits) < 2:
        return []
    return [
        "The first line is the invocation that assembled this file (a rerun keeps finished "
        "teachers and pieces); each teacher and (task, mode) piece records the HEAD at which "
        "it was measured: they differ where other work was committed while the run went on.",
        "",
    ]


def totals(results: dict) -> tuple[float, float]:
    """Wall and CPU seconds of every piece and teacher the results hold."""
    wall = cpu = 0.0
    for entry in results["tasks"].values():
        wall += entry["teacher"].get("seconds", 0.0)
        cpu += entry["teacher"].get("cpu_seconds", 0.0)
        for piece in entry["modes"].values():
            wall += piece["seconds"]
            cpu += piece["cpu_seconds"]
    return wall, cpu


def markdown(results: dict) -> str:
    """The whole ``compression.md`` from the results JSON."""
    wall, cpu = totals(results)
    lines = [
        "# Compression benchmark",
        "",
        *common.provenance_lines(provenance_records(results)),
        "",
        *_provenance_note(provenance_records(results)),
        f"onnxruntime {results['versions']['onnxruntime']}, torch "
        f"{results['versions']['torch']}, 1 thread. Per task a FedAvg teacher on the "
        "`default` preset, then `compress` with every variant in each distillation mode; "
        "accuracy / NMSE on the global test rows. Teachers and pieces took "
        f"{wall / 60:.1f} min wall, {cpu / 60:.1f} CPU-min in all."
        + ("" if results.get("complete") else " **Incomplete**: not every task and mode ran."),
        "",
        targets_line(),
        "",
        "Latency: p50 at batch 1 with 1 thread; within one (task, mode) the PyTorch eager "
        "teacher and every artifact are timed back to back in interleaved rounds, so their "
        "ratios (speed-up column) are the meaningful part of the timings.",
        "",
    ]
    lines += common.section(
        "Summary",
        common.table(
            ["task", "mode", "variant", "MB", "x fp32", "metric", "drop", "b1 ms", "speed-up b1"],
            summary_rows(results),
            align="lll" + "r" * 6,
        ),
    )
    lines += common.section(
        "Targets",
        common.table(
            ["task", "mode", "variant", "size x fp32", "drop", "speed-up b1", "target"],
            target_rows(results),
            align="lll" + "r" * 4,
        ),
    )
    for task, entry in results["tasks"].items():
        lines += common.section(task, teacher_lines(task, entry["teacher"]))
        for mode, piece in entry["modes"].items():
            lines += mode_lines(task, mode, piece)
    lines += common.section("Reading the numbers", READING)
    return "\n".join(lines).rstrip() + "\n"
