"""Markdown of the compression benchmark, generated from ``benchmarks/results/compression.json``.

The per-variant table and the target checks are the library's own
(:func:`rantune.compression.report.markdown_table`, :func:`targets_markdown`); every
other number comes from the JSON. ``python benchmarks/compression.py --render``
rewrites ``compression.md`` without measuring.
"""

from __future__ import annotations

import common

from rantune.compression.report import (
    INT8_TARGET,
    STUDENT_TARGET,
    markdown_table,
    targets_markdown,
)

READING = [
    "- `pruned-int8` and `distilled-int8` are recovered/distilled on client training rows "
    "with their labels next to KD and hidden-state MSE, so they can beat a teacher that "
    "federated training left under-fitted: a negative drop is a gain.",
    "- Speed-ups are against PyTorch eager fp32 at batch 1, which for a small model is "
    "dominated by per-operator dispatch overhead; compare the `fp32` row (onnxruntime, "
    "same weights) to separate the runtime gain from the compression gain.",
    "- `int8-static` (QDQ) is the format integer-only NPUs need; whether it is faster than "
    "`int8-dynamic` depends on the CPU's int8 instructions (compare their latency columns).",
    "- `sparse-int8` (magnitude pruning without recovery, then int8) saves size only once "
    "deflated (zip MB), at an accuracy cost.",
    "- The teacher and all artifacts of a task are timed in interleaved rounds so they see "
    "the same load; the edge grid is timed per artifact.",
]


def _targets() -> str:
    i8, st = INT8_TARGET, STUDENT_TARGET
    return (
        f"Targets: int8 <= {i8['max_size_ratio']:.0%} of fp32 size with <= "
        f"{i8['max_drop_points']:g} point drop (<= {i8['max_drop_db']} dB NMSE); "
        f"distilled+int8 >= {1 / st['max_size_ratio']:.0f}x smaller and >= "
        f"{st['min_speedup_b1']:g}x faster at batch 1 than PyTorch eager fp32 (teacher), "
        f"<= {st['max_drop_points']:g} points drop (<= {st['max_drop_db']:g} dB)."
    )


def task_lines(task: str, entry: dict) -> list[str]:
    report = entry["report"]
    kind = entry["source"]["kind"]
    if kind.startswith("centralized"):
        kind += (
            " in the federated run-directory format, because no finished federated run of "
            "this task on the preset (loadable with the model code) existed when the "
            "benchmark ran"
        )
    source = [f"Source: {kind} — `{entry['run_dir']}`"]
    summary = entry["source"].get("summary")
    if summary:
        source.append(f"(teacher on the global test set at training time: {summary.get('test', {})})")
    grid = []
    for name, rows in entry["edge_grid"].items():
        cell = {(r["threads"], r["batch"]): f"{r['p50_ms']:.3f}" for r in rows}
        grid.append([name, cell[(1, 1)], cell[(1, 64)], cell[(2, 1)], cell[(2, 64)]])
    return common.section(
        task,
        source,
        [markdown_table(report)],
        [targets_markdown(report)],
        ["Misses:", "", *(f"- {m}" for m in entry["misses"])] if entry["misses"] else [],
        ["Edge runtime grid (p50 ms; threads x batch):"],
        common.table(["variant", "1 thr b1", "1 thr b64", "2 thr b1", "2 thr b64"], grid),
    )


def server_lines(results: dict) -> list[str]:
    server = {t: e for t, e in results["tasks"].items() if e.get("server")}
    if not server:
        return []
    rows = [
        [
            task, r["mode"], "yes" if r["compiled"] else "no", f"{r['setup_s']:.1f}",
            str(r.get("graphs_compiled", "-")), f"{r['b1']:.3f}", f"{r['b64']:.2f}",
            f"{r['max_abs_err_rel']:.4f}",
        ]
        for task, e in server.items()
        for r in e["server"]
    ]
    eval_rows = sorted({e["server_eval_rows"] for e in server.values()})
    return common.section(
        "Server core (torchao, this CPU)",
        [
            "Setup = quantize + first calls; new graphs = graphs Dynamo compiled for this model "
            "(0: it reused the code compiled for the task before, shapes being dynamic). Max "
            "err = max |out - fp32| / fp32 output spread on "
            f"{', '.join(map(str, eval_rows))} test rows."
        ],
        common.table(
            ["task", "mode", "torch.compile", "setup s", "new graphs", "p50 b1 ms", "p50 b64 ms",
             "max err / spread"],
            rows,
            align="lll" + "r" * 5,
        ),
    )


def markdown(results: dict) -> str:
    """The whole ``compression.md`` from the results JSON."""
    presets = sorted({e["report"]["source"]["data_preset"] for e in results["tasks"].values()})
    lines = [
        "# Compression benchmark",
        "",
        *common.provenance_lines(results["provenance"]),
        "",
        f"onnxruntime {results['versions']['onnxruntime']}. Data: preset "
        f"{', '.join(f'`{p}`' for p in presets)}; accuracy/NMSE on the global test rows.",
        "",
        _targets(),
        "",
        "Latency columns: p50 with 1 thread (the edge case); the edge-runtime grid below adds "
        "2 threads. Ratios measured back to back are the meaningful part of the timings.",
        "",
    ]
    for task, entry in results["tasks"].items():
        lines += task_lines(task, entry)
    lines += server_lines(results)
    lines += common.section("Reading the numbers", [*READING, *results.get("notes", [])])
    return "\n".join(lines).rstrip() + "\n"
