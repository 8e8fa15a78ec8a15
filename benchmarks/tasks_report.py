"""Markdown of the downstream-task benchmark, generated from ``benchmarks/results/tasks.json``.

The tables are computed here from the per-seed runs in the JSON (mean ± 95% Student-t
interval over seeds); ``python benchmarks/tasks.py --render`` rewrites ``tasks.md``.
"""

from __future__ import annotations

import common

MODES = ("lora", "scratch", "probe")
LABELS = {
    "lora": "pretrained + LoRA",
    "scratch": "from scratch",
    "probe": "probe (frozen encoder)",
    "baseline": "classical baseline",
}
SECONDARY = {"los": ("f1", "auc"), "beam": ("top3", "gain_ratio"), "prediction": ()}
LINEAR = " (linear)"  # prediction's second classical reference: linear extrapolation


def _cell(values) -> tuple[float, float, int]:
    return common.mean_ci(values)


def summarize(task: str, primary: str, runs: list[dict], base: dict) -> dict:
    """``{method: {budget: {metric: (mean, half, n), "subsets": ..., ...}}}``."""
    table: dict = {}
    for item in runs:
        seeds = item["runs"]
        cell = {m: _cell(r["metrics"][m] for r in seeds) for m in (primary, *SECONDARY[task])}
        cell["subsets"] = {
            s: _cell(r["subset_metrics"][s][primary] for r in seeds) for s in seeds[0]["subset_metrics"]
        }
        for key in ("steps", "num_train", "trainable_parameters"):
            cell[key] = seeds[0][key]
        table.setdefault(item["mode"], {})[str(item["budget"])] = cell
    for budget, seeds in base.items():
        metrics = seeds[0]["metrics"]
        cell = {m: _cell(r["metrics"][m] for r in seeds) for m in (primary, *SECONDARY[task]) if m in metrics}
        if "linear_nmse_db" in metrics:
            cell["linear_nmse_db"] = _cell(r["metrics"]["linear_nmse_db"] for r in seeds)
        cell["subsets"] = {}
        for s in seeds[0]["subset_metrics"]:
            cell["subsets"][s] = _cell(r["subset_metrics"][s][primary] for r in seeds)
            if "linear_nmse_db" in seeds[0]["subset_metrics"][s]:
                cell["subsets"][s + LINEAR] = _cell(r["subset_metrics"][s]["linear_nmse_db"] for r in seeds)
        table.setdefault("baseline", {})[budget] = cell
    return table


def verdicts(task: str, primary: str, higher: bool, table: dict, budgets: list[str]) -> list[str]:
    def better(a: float, b: float) -> bool:
        return a > b if higher else a < b

    lines = []
    for budget in budgets:
        lora = table["lora"][budget][primary][0]
        for other in ("scratch", "baseline"):
            value = table[other][budget][primary][0]
            lines.append(
                f"- {task}, budget {float(budget):.0%}: pretrained+LoRA {lora:.3f} "
                f"{'beats' if better(lora, value) else 'does NOT beat'} {other} {value:.3f} ({primary})"
            )
        for subset, cell in table["lora"][budget]["subsets"].items():
            for key in (subset, subset + LINEAR):
                base = table["baseline"][budget]["subsets"].get(key)
                if base is None:
                    continue
                name = "linear extrapolation" if key.endswith(LINEAR) else "baseline"
                lines.append(
                    f"  - {subset}: LoRA {cell[0]:.3f} "
                    f"{'beats' if better(cell[0], base[0]) else 'does NOT beat'} {name} {base[0]:.3f}"
                )
    return lines


def _method_rows(table: dict, budgets: list[str], metric: str) -> list[list[str]]:
    return [
        [LABELS[m], *(common.fmt_mean_ci(*table[m][b][metric]) for b in budgets)]
        for m in (*MODES, "baseline")
    ]


def task_lines(task: str, info: dict, table: dict, budgets: list[str]) -> list[str]:
    primary = info["primary_metric"]
    arrow = "higher is better" if info["higher_is_better"] else "lower is better"
    header = ["method", *(f"{float(b):.0%}" for b in budgets)]
    rows = _method_rows(table, budgets, primary)
    if "linear_nmse_db" in table["baseline"][budgets[0]]:
        rows.append(
            ["linear extrapolation",
             *(common.fmt_mean_ci(*table["baseline"][b]["linear_nmse_db"]) for b in budgets)]
        )
    blocks = [common.table(header, rows)]
    for metric in SECONDARY[task]:
        blocks += [[f"{metric}:"], common.table(header, _method_rows(table, budgets, metric))]
    subset_rows = []
    for subset in table["baseline"][budgets[0]]["subsets"]:
        for m in (*MODES, "baseline"):
            cells = [table[m][b]["subsets"].get(subset) for b in budgets]
            if all(cells):
                subset_rows.append([f"{subset}: {LABELS[m]}", *(common.fmt_mean_ci(*c) for c in cells)])
    blocks += [[f"{primary} on test subsets:"], common.table(header, subset_rows)]
    lora = [table["lora"][b] for b in budgets]
    params = {m: table[m][budgets[-1]]["trainable_parameters"] for m in MODES}
    blocks.append(
        [f"Labelled rows {[c['num_train'] for c in lora]}, optimizer steps "
         f"{[c['steps'] for c in lora]}; trainable parameters {params}."]
    )
    blocks.append(["Verdicts (means):", "", *verdicts(task, primary, info["higher_is_better"], table, budgets)])
    return common.section(f"{task} ({primary}, {arrow})", *blocks)


def markdown(report: dict) -> str:
    """The whole ``tasks.md`` from the results JSON."""
    recon = report["masked_reconstruction"]
    budgets = [str(b) for b in report["budgets"]]
    lora = report["lora"]
    max_steps = max(s["max_steps"] for s in report["schedule"].values())
    lines = [
        "# Downstream tasks: pretrained+LoRA vs scratch vs probe vs classical",
        "",
        *common.provenance_lines(report["provenance"]),
        "",
        f"Wall time {report['wall_seconds']:.0f} s with {report['workers']} worker processes "
        "x 1 torch thread.",
        "",
        f"Data: `{report['preset']}` preset (base stations disjoint from the pretraining "
        "preset), natural split; training pool = union of the clients' train rows "
        f"({report['num_train_pool']} rows), test = a fixed seeded {report['test_share']:.0%} "
        f"of the global test rows ({report['num_test']} rows). Budgets are seeded random "
        f"shares of the pool; {common.ci_note(len(report['seeds']))} Seeds {report['seeds']} "
        "(seed = budget subset, init, batch order).",
        "",
        "Heads (all methods): each task's default head from `rantune.tasks`, trained in full; "
        "the probe is the frozen encoder + that head, not a purely linear probe. LoRA: "
        f"r = {lora['r']}, alpha = {lora['alpha']:g} on {', '.join(lora['targets'])}.",
        "",
        "Compute schedule (same for every learned method of a task; a CPU budget, not "
        "convergence): " + "; ".join(f"{t}: {s}" for t, s in report["schedule"].items())
        + ". Learning rates: " + ", ".join(f"{m} {report['lr'][m]:g}" for m in MODES)
        + f". All learned numbers are at <= {max_steps} optimizer steps.",
        "",
        *common.section(
            "Shipped encoder (`tiny`)",
            common.table(
                ["quantity", "value"],
                [
                    [f"masked NMSE, pretrain held-out sites {', '.join(recon['pretrain_held_out_sites'])}",
                     f"{recon['masked_nmse_db_pretrain_held_out_sites']:.2f} dB"],
                    [f"masked NMSE, {report['preset']} preset test rows (unseen base stations, "
                     f"{recon['num_default_test']} evenly spaced rows)",
                     f"{recon['masked_nmse_db_default_test']:.2f} dB"],
                    ["LMMSE interpolation with the pretraining covariance, same rows and masks",
                     f"{recon['lmmse_masked_nmse_db_default_test']:.2f} dB"],
                    ["mask ratio", f"{recon['mask_ratio']} (real+imag of a patch together)"],
                    ["pretraining throughput",
                     f"{recon['throughput_samples_per_s']} samples/s ({recon['pretrain_threads']} "
                     f"thread, {recon['pretrain_seconds']:.0f} s)"],
                ],
                align="lr",
            ),
            [f"Reproduce: `{recon['reproduce']}`"],
        ),
    ]
    for task, info in report["task_info"].items():
        runs = [r for r in report["runs"] if r["task"] == task]
        table = summarize(task, info["primary_metric"], runs, report["baseline_runs"][task])
        lines += task_lines(task, info, table, budgets)
    return "\n".join(lines).rstrip() + "\n"
