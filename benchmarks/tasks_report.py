"""Markdown of the downstream-task benchmark, generated from ``benchmarks/results/tasks.json``.

Every table cell is the mean ± 95% Student-t interval over the seeds of the per-piece
results in the JSON; the targets of issue 13 and whether each was met are computed here.
``python benchmarks/tasks.py --render`` rewrites ``tasks.md``.
"""

from __future__ import annotations

import common

MODES = ("lora", "scratch", "probe")
LABELS = {"lora": "pretrained + LoRA", "scratch": "from scratch", "probe": "probe (frozen encoder)"}
SECONDARY = {
    "los": ("accuracy",),
    "beam-spatial": ("top3", "gain_loss_db", "gain_loss_db_p90"),
    "beam-temporal": ("top3", "gain_loss_db", "gain_loss_db_p90"),
    "prediction": (),
    "positioning": ("error_mean_m", "error_p50_m"),
}
VEHICULAR = ("speed 10-25 m/s", "speed >=25 m/s")
"""Prediction's vehicular speed bands (``rantune.tasks.prediction.SPEED_BANDS_MPS``)."""
GROUP_LABELS = {"rt": "ray-traced stations", "tr38901": "TR 38.901 stations"}


def baseline_methods(piece: dict, primary: str) -> list[str]:
    """Names of the baseline methods in a baselines piece (keys ``{method}_{primary}``)."""
    suffix = f"_{primary}"
    return sorted(k[: -len(suffix)] for k in piece["metrics"] if k.endswith(suffix))


def value(piece: dict, method: str, metric: str, subset: str | None = None) -> float | None:
    """One number of a piece: a learned mode's metric, or baseline ``method``'s."""
    if piece["method"] != "baselines":
        if subset is None:
            return piece["metrics"].get(metric)
        return piece["subset_metrics"].get(subset, {}).get(metric)
    key = f"{method}_{metric}" + (f"[{subset}]" if subset else "")
    return piece["metrics"].get(key)


class Cells:
    """The pieces of one (task, group), indexed for tables: ``cell(method, budget, metric)``
    = (mean, half-width, n) over seeds; ``method`` a mode or a baseline method name."""

    def __init__(self, pieces: list[dict], primary: str, higher: bool) -> None:
        self.primary, self.higher = primary, higher
        self.by = {}
        for p in pieces:
            self.by.setdefault((p["method"], str(p["budget"])), []).append(p)
        base = [p for p in pieces if p["method"] == "baselines"]
        self.baselines = baseline_methods(base[0], primary) if base else []

    def cell(self, method: str, budget: str, metric: str, subset: str | None = None):
        kind = method if method in MODES else "baselines"
        runs = self.by.get((kind, budget), [])
        return common.mean_ci(value(p, method, metric, subset) for p in runs)

    def best_baseline(self, budget: str, metric: str | None = None, subset: str | None = None):
        """The baseline method with the best mean ``metric`` (default primary) at ``budget``."""
        metric = metric or self.primary
        scored = [(self.cell(m, budget, metric, subset)[0], m) for m in self.baselines]
        scored = [(v, m) for v, m in scored if v == v]  # NaN never wins
        if not scored:
            return None
        return (max if self.higher else min)(scored)[1]

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher else a < b


def _fmt(cell, digits: int = 3) -> str:
    return common.fmt_mean_ci(*cell, digits=digits)


def _overlap(a, b) -> bool:
    return abs(a[0] - b[0]) <= (a[1] if a[1] == a[1] else 0) + (b[1] if b[1] == b[1] else 0)


def method_table(c: Cells, budgets: list[str], metric: str, subset: str | None = None) -> list[str]:
    header = ["method", *(f"{float(b):.0%} labels" for b in budgets)]
    rows = [[LABELS[m], *(_fmt(c.cell(m, b, metric, subset)) for b in budgets)] for m in MODES]
    rows += [[f"baseline: {m}", *(_fmt(c.cell(m, b, metric, subset)) for b in budgets)] for m in c.baselines]
    return common.table(header, rows)


def stopping_lines(c: Cells, budgets: list[str], caps: dict) -> list[str]:
    """Epochs run, best epoch and how often the cap bound, per mode and budget."""
    header = ["mode", *(f"{float(b):.0%}: epochs / best / cap bound" for b in budgets)]
    rows = []
    for m in MODES:
        cells = []
        for b in budgets:
            runs = c.by.get((m, b), [])
            if not runs:
                cells.append("—")
                continue
            epochs = common.mean_ci(r["epochs"] for r in runs)[0]
            best = common.mean_ci(r["best_epoch"] for r in runs)[0]
            bound = sum(not r["stopped_early"] for r in runs)
            cells.append(f"{epochs:.1f} / {best:.1f} / {bound} of {len(runs)} (cap {caps[b]['max_epochs']})")
        rows.append([LABELS[m], *cells])
    return common.table(header, rows)


def _verdict(name: str, met: bool, detail: str) -> str:
    return f"- {name}: **{'met' if met else 'MISSED'}** ({detail})"


def targets(task: str, group: str, c: Cells, budgets: list[str]) -> list[str]:
    """Issue 13's targets for this task and group, each computed as met or missed."""
    if group != "rt" and task not in ("prediction", "los"):
        return []
    primary, lines = c.primary, []
    if task in ("beam-spatial", "beam-temporal", "positioning") and group == "rt":
        for b in (b for b in ("0.1", "1.0") if b in budgets and c.best_baseline(b)):
            best = c.best_baseline(b)
            lora, base = c.cell("lora", b, primary), c.cell(best, b, primary)
            lines.append(_verdict(
                f"LoRA beats the best baseline at {float(b):.0%} labels",
                c.better(lora[0], base[0]),
                f"LoRA {_fmt(lora)} vs {best} {_fmt(base)} {primary}"
                + ("; intervals overlap" if _overlap(lora, base) else ""),
            ))
        for b in (b for b in ("0.01", "0.1") if b in budgets):
            lora, scratch = c.cell("lora", b, primary), c.cell("scratch", b, primary)
            lines.append(_verdict(
                f"LoRA beats from-scratch at {float(b):.0%} labels",
                c.better(lora[0], scratch[0]),
                f"LoRA {_fmt(lora)} vs scratch {_fmt(scratch)}"
                + ("; intervals overlap" if _overlap(lora, scratch) else ""),
            ))
    if task == "prediction":
        for band in VEHICULAR:
            for b in budgets:
                lora, wiener = c.cell("lora", b, primary, band), c.cell("wiener", b, primary, band)
                if lora[2] == 0 or wiener[2] == 0:
                    continue
                lines.append(_verdict(
                    f"LoRA beats the Wiener predictor, {band}, {float(b):.0%} labels",
                    c.better(lora[0], wiener[0]),
                    f"LoRA {_fmt(lora)} vs Wiener {_fmt(wiener)} dB NMSE",
                ))
    if task == "los":
        for b in budgets:
            lora, ad = c.cell("lora", b, primary), c.cell("angle_delay", b, primary)
            lines.append(_verdict(
                f"LoRA AUC matches the angle-delay ratio (within CI) at {float(b):.0%} labels",
                lora[0] >= ad[0] or _overlap(lora, ad),
                f"LoRA {_fmt(lora)} vs angle-delay {_fmt(ad)}",
            ))
    return lines


def task_section(task: str, group: str, info: dict, pieces: list[dict], report: dict) -> list[str]:
    primary, higher = info["primary_metric"], info["higher_is_better"]
    c = Cells(pieces, primary, higher)
    budgets = [str(b) for b in report["budgets"]]
    arrow = "higher is better" if higher else "lower is better"
    one = [p for p in pieces if p["method"] == "lora"] or pieces
    sizes = sorted({(str(p["budget"]), p["num_train"], p.get("num_val", 0), p["num_test"]) for p in one})
    blocks = [[f"{primary} ({arrow}):"], method_table(c, budgets, primary)]
    for metric in SECONDARY[task]:
        blocks += [[f"{metric}:"], method_table(c, budgets, metric)]
    if task == "prediction":
        bands = sorted({s for p in pieces if p["method"] != "baselines" for s in p["subset_metrics"]})
        for band in bands:
            blocks += [[f"{primary}, {band}:"], method_table(c, budgets, primary, band)]
    best = {b: c.best_baseline(b) for b in budgets}
    blocks.append([
        "Best baseline per budget (mean " + primary + "): "
        + ", ".join(f"{float(b):.0%} {m}" for b, m in best.items()) + ". Rows per seed "
        "(budget, labelled, of them validation, test): "
        + "; ".join(f"{float(b):.0%}: {n}, {v}, {t}" for b, n, v, t in sorted(set(sizes))) + "."
    ])
    blocks += [["Early stopping (mean epochs run / mean best epoch / runs that hit the cap):"],
               stopping_lines(c, budgets, report["stopping"])]
    verdicts = targets(task, group, c, budgets)
    if verdicts:
        blocks.append(["Targets (issue 13; means, intervals as in the tables):", "", *verdicts])
    return common.section(f"{task}, {GROUP_LABELS[group]}", *blocks)


def summary_rows(report: dict) -> list[list[str]]:
    """Primary metric of lora, scratch, probe and the best baseline per task, group, budget."""
    rows = []
    for task, info in report["task_info"].items():
        for group in info["groups"]:
            pieces = [p for p in report["pieces"] if p["task"] == task and p["group"] == group]
            if not pieces:
                continue
            c = Cells(pieces, info["primary_metric"], info["higher_is_better"])
            for b in (str(x) for x in report["budgets"]):
                best = c.best_baseline(b)
                rows.append([
                    f"{task} ({group})", f"{float(b):.0%}", info["primary_metric"],
                    *(_fmt(c.cell(m, b, info["primary_metric"])) for m in MODES),
                    f"{_fmt(c.cell(best, b, info['primary_metric']))} ({best})" if best else "—",
                ])
    return rows


def cap_bound(report: dict) -> str:
    """``1% labels 3 of 45, ...``: learned runs per budget that hit the epoch cap."""
    parts = []
    for b in report["budgets"]:
        runs = [p for p in report["pieces"] if p["method"] != "baselines" and p["budget"] == b]
        bound = sum(not p["stopped_early"] for p in runs)
        parts.append(f"{float(b):.0%} labels {bound} of {len(runs)}")
    return ", ".join(parts)


def markdown(report: dict) -> str:
    """The whole ``tasks.md`` from the results JSON."""
    pieces = report["pieces"]
    learned = [p for p in pieces if p["method"] != "baselines"]
    options = ", ".join(f"{k.replace('_', '-')} = {v}" for k, v in report["task_options"].items())
    stopping = "; ".join(
        f"{float(b):.0%} labels: patience {s['patience']}, cap {s['max_epochs']} epochs"
        for b, s in report["stopping"].items()
    )
    commits = sorted({p["commit"] for p in pieces})
    first = next(iter(report["stopping"].values()))
    lora = report["lora"]
    lines = [
        "# Downstream tasks: pretrained+LoRA vs scratch vs probe vs every classical baseline",
        "",
        *common.provenance_lines(report["provenance"]),
        "",
        f"Pieces measured at commit(s) {', '.join(commits)}; this invocation's wall time "
        f"{report['wall_seconds']:.0f} s with {report['workers']} worker process(es) x 1 torch "
        f"thread; the pieces' own times sum to {sum(p['piece_seconds'] for p in pieces):.0f} s "
        f"({sum(p['piece_seconds'] for p in learned):.0f} s learned, the rest baselines) on a "
        "shared 2-core machine.",
        "",
        f"Data: `{report['preset']}` preset (base stations disjoint from the pretraining preset). "
        "Station groups: " + "; ".join(f"{GROUP_LABELS[g]}: {', '.join(s)}" for g, s in report["groups"].items())
        + ". Per seed, the natural split with that partition seed, restricted to the group's "
        "stations: the training pool (union of the clients' train rows) and test rows (its "
        "global test rows), the same test rows for every method. Budgets are seeded shares of "
        f"the pool; {common.ci_note(len(report['seeds']))} Seeds {report['seeds']}: each seed "
        "sets the split, the labelled subset, the validation rows, the init and the batch order.",
        "",
        f"Task options (defaults): {options}. Models: the shipped `{report['checkpoint']}` encoder "
        f"(LoRA r = {lora['r']}, alpha = {lora['alpha']:g} on {', '.join(lora['targets'])}, adapters "
        "and head train), the same architecture from scratch, or frozen with only the head "
        "training (probe); each task's default head. Learning rates "
        + ", ".join(f"{m} {report['lr'][m]:g}" for m in MODES)
        + f", batch {report['batch_size']}.",
        "",
        f"Early stopping (`rantune.training.fit`): a seeded {first['val_share']:.0%} of the "
        f"labelled rows (at least {first['min_val_rows']}) validates after every epoch on the "
        "task's primary metric (ties broken by the validation loss; the validation loss where the "
        "metric is undefined on those rows); the state before training competes as epoch 0; the "
        f"best epoch's weights are scored. {stopping}. The caps are this benchmark's CPU budget; "
        "learned runs that ran to the cap without stopping: " + cap_bound(report) + ".",
        "",
        *common.section(
            "Summary (primary metric, mean ± 95% CI)",
            common.table(
                ["task (stations)", "labels", "metric", *(LABELS[m] for m in MODES), "best baseline"],
                summary_rows(report),
            ),
        ),
    ]
    for task, info in report["task_info"].items():
        for group in info["groups"]:
            mine = [p for p in pieces if p["task"] == task and p["group"] == group]
            if mine:
                lines += task_section(task, group, info, mine, report)
    return "\n".join(lines).rstrip() + "\n"
