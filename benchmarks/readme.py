"""The README's results table and headline numbers, generated from the result JSON.

Every number the README states about results comes from ``benchmarks/results/*.json``
through this script, written between markers in ``README.md``::

    <!-- results:begin --> ... <!-- results:end -->            the Results table + headlines
    <!-- results:NAME:begin -->...<!-- results:NAME:end -->     one phrase elsewhere (NAME in BLOCKS)

A headline whose JSON lacks the numbers is left out (nothing is claimed without its
measurement). ``tests/unit/test_readme_results.py`` re-renders the README from the JSON
and fails when the two disagree.

Usage::

    python benchmarks/readme.py            # rewrite README.md's blocks from the JSON
    python benchmarks/readme.py --check    # exit 1 if README.md differs from the JSON
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import common

README = common.ROOT / "README.md"
FILES = (
    ("data_generation", "Sionna TR 38.901 and Sionna RT generation speed, cache reload speed-up"),
    ("tasks", "pretrained + LoRA vs scratch vs probe vs classical baselines, 1/10/100% labels"),
    ("federated", "FedAvg vs centralized vs local-only LoRA vs classical baselines, uplink bytes, `flwr run` timing"),
    ("strategies", "strategy comparison, each strategy at its lr tuned on validation"),
    ("compression", "int8 / pruned / distilled artifacts: size, latency, accuracy"),
    ("privacy", "LoS AUC and accuracy vs epsilon, SecAgg+ overhead"),
    ("scale", "64 / 1,000 / 10,000 base stations: peak memory and round time, 1 vs 2 engine workers vs `flwr run`"),
)
"""The result files of the table, in order, with what each measures (any other result
file follows, named by its script)."""
TASK_VARIANTS = (
    ("tasks-converged", "tasks: the 100% label column trained until early stopping ends it"),
    ("tasks-tiny-v2", "tasks with the shipped `tiny-v2` encoder instead of `tiny`"),
)
"""Further ``benchmarks/tasks.py`` runs, each in ``results/<name>/tasks.{json,md}``."""
HEADLINE_METRIC = {"los": "auc"}
"""Metric a task's headline uses instead of its JSON primary metric, when present (LoS
is imbalanced: AUC, not accuracy)."""
Results = Mapping[str, dict]


# ---------------------------------------------------------------------------- reading
def load_results(folder: Path = common.RESULTS) -> dict[str, dict]:
    """``{name: payload}`` of every ``folder/*.json`` and of the :data:`TASK_VARIANTS`."""
    out = {p.stem: common.load_json(p) for p in sorted(Path(folder).glob("*.json"))}
    for name, _ in TASK_VARIANTS:
        if (Path(folder) / name / "tasks.json").exists():
            out[name] = common.load_json(Path(folder) / name / "tasks.json")
    return out


def markdown_path(name: str) -> str:
    """Where the Markdown of result ``name`` lives, relative to the repository."""
    if name in dict(TASK_VARIANTS):
        return f"benchmarks/results/{name}/tasks.md"
    return f"benchmarks/results/{name}.md"


def provenance_records(payload: Mapping) -> list[dict]:
    """The provenance records of a result file (a dict, a list, a dict of dicts, or the
    older top-level ``command``/``date`` keys)."""
    prov = payload.get("provenance")
    if isinstance(prov, list):
        return [p for p in prov if isinstance(p, dict)]
    if isinstance(prov, dict):
        if "command" in prov:
            return [prov]
        return [p for p in prov.values() if isinstance(p, dict) and "command" in p]
    if "command" in payload:
        return [{"command": payload["command"], "commit": payload.get("commit", "not recorded")}]
    return []


def _commits(payload: Mapping) -> str:
    records = provenance_records(payload)
    if not records:
        return "not recorded"
    names = []
    for p in records:
        name = str(p.get("commit", "not recorded")) + (" + uncommitted edits" if p.get("dirty") else "")
        if name not in names:
            names.append(name)
    return "; ".join(names)


# ----------------------------------------------------------------------------- format
def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _span(values: list[float], fmt: Callable[[float], str], unit: str = "") -> str:
    """``a<unit>`` or ``a–b<unit>`` for the smallest and largest of ``values``."""
    lo, hi = fmt(min(values)), fmt(max(values))
    return (lo if lo == hi else f"{lo}–{hi}") + unit


def _signed(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}"


# -------------------------------------------------------------------------- headlines
def _encoder_headline(results: Results) -> list[str]:
    recon = (results.get("tasks") or {}).get("masked_reconstruction")
    if not recon:
        return []
    return [
        f"the shipped `tiny` encoder reconstructs masked patches of the "
        f"`{results['tasks'].get('preset', 'default')}` preset's unseen base stations at "
        f"{recon['masked_nmse_db_default_test']:.2f} dB NMSE (LMMSE interpolation with the "
        f"pretraining covariance, same rows and masks: "
        f"{recon['lmmse_masked_nmse_db_default_test']:.2f} dB)"
    ]


def _task_headlines(results: Results) -> list[str]:
    lines = _task_lines(results.get("tasks"))
    converged = _task_lines(results.get("tasks-converged"))
    return lines + [f"trained until early stopping ends it, {line}" for line in converged]


def _task_lines(tasks: Mapping | None) -> list[str]:
    """One line per (task, station group) of a tasks result: at 10% labels where that
    budget was run, else at the largest."""
    if not tasks or "pieces" not in tasks:
        return []
    import tasks_report

    budgets = [str(b) for b in tasks["budgets"]]
    budget = "0.1" if "0.1" in budgets else budgets[-1]
    out = []
    for task, info in tasks["task_info"].items():
        for group in info["groups"]:
            pieces = [p for p in tasks["pieces"] if p["task"] == task and p["group"] == group]
            metric, higher = info["primary_metric"], info["higher_is_better"]
            cells = tasks_report.Cells(pieces, metric, higher)
            best = cells.best_baseline(budget)
            if best is None:
                continue
            value = {m: cells.cell(m, budget, metric)[0] for m in (*tasks_report.MODES, best)}
            learned = [value[m] for m in tasks_report.MODES]
            best_learned = max(learned) if higher else min(learned)
            line = (
                f"`{task}` on the {tasks_report.GROUP_LABELS[group]}, {metric} with "
                f"{float(budget):.0%} of the labels: pretrained + LoRA {value['lora']:.3f}, from "
                f"scratch {value['scratch']:.3f}, probe {value['probe']:.3f}, best classical "
                f"baseline ({best}) {value[best]:.3f}"
            )
            if cells.better(value[best], best_learned):
                line += " (the classical baseline beats every learned model)"
            out.append(line)
    return out


def _federated_headlines(results: Results) -> list[str]:
    acc = (results.get("federated") or {}).get("accuracy")
    if not acc:
        return []
    from federated_report import TARGETS

    share = TARGETS["fed-over-central"]
    out = []
    for task, a in sorted(acc.items()):
        digits = 1 if a["metric"].endswith("_m") else 3
        lower = a.get("higher-is-better") is False
        own = a["client-mean-own-test"]["fedavg"][0]
        line = (
            f"`{task}` after {a['rounds']} FedAvg rounds: {a['metric']} {a['fedavg'][0]:.{digits}f}, "
            f"centralized LoRA {a['centralized'][0]:.{digits}f} ({'centralized / FedAvg' if lower else 'FedAvg / centralized'} "
            f"{a['fed-over-central']:.4f}, target >= {share}: "
            f"{'met' if a['fed-over-central'] >= share else 'missed'}); on the stations' own test "
            f"rows FedAvg {own:.{digits}f} vs local-only {a['local-only-own-test'][0]:.{digits}f}"
        )
        line += f"; best classical baseline {a['best-baseline-global'][0]:.{digits}f}"
        if HEADLINE_METRIC.get(task, a["metric"]) != a["metric"]:
            line += f" (this file has no {HEADLINE_METRIC[task]} for `{task}`)"
        out.append(line)
    ups = [a["up-ratio"] for a in acc.values()]
    int8 = [a["up-ratio-int8"] for a in acc.values() if "up-ratio-int8" in a]
    line = f"an upload of LoRA adapters + head is {_span(ups, _pct, '%')} of full-model FedAvg's bytes"
    if int8:
        line += f" ({_span(int8, _pct, '%')} with int8 update compression)"
    out.append(line)
    return out


def _variant_changes(task: dict, name: str) -> tuple[float, str] | None:
    """Size ratio to fp32 and the primary-metric change vs the teacher of one variant."""
    report = task["report"]
    key, ref = report["primary_metric"], report["reference"]
    variant = next((v for v in report["variants"] if v["variant"] == name), None)
    if variant is None or key not in variant:
        return None
    if report["higher_is_better"]:
        change = f"{_signed(100 * (variant[key] - ref[key]))} points"
    else:
        change = f"{_signed(variant[key] - ref[key])} dB"
    return variant["size_bytes"] / ref["size_bytes"], f"{report['task']} {key} {change}"


def _compression_headlines(results: Results) -> list[str]:
    tasks = (results.get("compression") or {}).get("tasks")
    if not tasks:
        return []
    by_mode: dict[str, list[dict]] = {}
    for entry in tasks.values():
        for mode, piece in (entry.get("modes") or {}).items():
            by_mode.setdefault(mode, []).append(piece)
    out = []
    first = next(iter(by_mode.values()), [])  # int8-dynamic: the same file in every mode
    found = [c for p in first if (c := _variant_changes(p, "int8-dynamic"))]
    if found:
        out.append(
            f"the int8-dynamic ONNX artifact is {_span([r for r, _ in found], lambda x: f'{x:.2f}', 'x')} "
            f"the fp32 size ({', '.join(c for _, c in found)} vs the fp32 teacher; "
            f"{_target_text(first, 'int8-dynamic')})"
        )
    for mode, group in by_mode.items():
        found = [(p, c) for p in group if (c := _variant_changes(p, "int8-static"))]
        if found:
            source = _static_source(found[0][0])
            out.append(
                f"`{mode}` mode: the int8-static artifact, calibrated on {source}, is "
                f"{_span([r for _, (r, _) in found], lambda x: f'{x:.2f}', 'x')} the fp32 size "
                f"({', '.join(c for _, (_, c) in found)}; {_target_text(group, 'int8-static')})"
            )
        student = [(p, c) for p in group if (c := _variant_changes(p, "distilled-int8"))]
        if student:
            speed = []
            for piece, _ in student:
                report = piece["report"]
                variant = next(v for v in report["variants"] if v["variant"] == "distilled-int8")
                speed.append(report["reference"]["latency"]["b1"]["p50_ms"] / variant["latency"]["b1"]["p50_ms"])
            out.append(
                f"`{mode}` mode: the distilled int8 student is "
                f"{_span([1 / r for _, (r, _) in student], lambda x: f'{x:.1f}', 'x')} smaller than "
                f"fp32 and {_span(speed, lambda x: f'{x:.0f}', 'x')} faster at batch 1 (1 thread) than "
                f"the PyTorch eager teacher ({', '.join(c for _, (_, c) in student)}; "
                f"{_target_text(group, 'distilled-int8')})"
            )
    return out


def _target_text(pieces: list[dict], variant: str) -> str:
    """Which tasks met the report's target for ``variant`` and which missed it."""
    met, missed = [], []
    for piece in pieces:
        check = next((t for t in piece["report"].get("targets", []) if t["variant"] == variant), None)
        if check is None:
            continue
        task = piece["report"]["task"]
        if check["met"]:
            met.append(task)
            continue
        why = []
        if check["size_ratio"] > check["max_size_ratio"]:
            why.append(f"size {check['size_ratio']:.4f}x > {check['max_size_ratio']:g}x")
        if check["drop"] > check["max_drop"]:
            why.append(f"drop {check['drop']:.2f} > {check['max_drop']:g} {check['drop_unit']}")
        if check.get("speedup_b1", 1e9) < check.get("min_speedup_b1", 0):
            why.append(f"speed-up {check['speedup_b1']:.1f}x < {check['min_speedup_b1']:g}x")
        missed.append(f"{task} ({', '.join(why)})")
    parts = [f"target met for {', '.join(met)}" if met else "", f"missed for {', '.join(missed)}" if missed else ""]
    return "; ".join(p for p in parts if p)


def _static_source(piece: dict) -> str:
    """Where the int8-static artifact of a result piece was calibrated."""
    variant = next(v for v in piece["report"]["variants"] if v["variant"] == "int8-static")
    details = variant.get("details") or {}
    source = details.get("calib_source", "?")
    if details.get("calibration"):
        source += f" of {len(details['calibration']['stations'])} stations"
    return source


def _privacy_headlines(results: Results) -> list[str]:
    sec = ((results.get("privacy") or {}).get("secagg") or {}).get("default")
    if not sec:
        return []
    return [
        f"SecAgg+ ({sec['clients']} clients) costs {sec['secagg-bytes-up'] / sec['plain-bytes-up']:.1f}x "
        f"the upload and {sec['secagg-train-s-per-round'] / sec['plain-train-s-per-round']:.2f}x the "
        f"training-phase time; its round-1 aggregate differs from plain FedAvg's by at most "
        f"{sec['max-adapter-difference-round-1']:.1e} per parameter (quantization bound "
        f"{sec['error-bound-last-round']:.1e})"
    ]


def _scale_headlines(results: Results) -> list[str]:
    sizes = (results.get("scale") or {}).get("sizes") or {}
    runs = {int(n): size.get("engine-w1") for n, size in sizes.items()}
    runs = {n: e for n, e in runs.items() if e and "error" not in e}
    if len(runs) < 2:
        return []
    low, high = min(runs), max(runs)
    ratio = runs[high]["peak-rss-bytes"] / runs[low]["peak-rss-bytes"]
    return [
        f"with {runs[high]['sampled-per-round'][0]} clients sampled per round, the in-process "
        f"engine's peak memory at {high:,} base stations is {ratio:.2f}x that at {low:,} "
        f"({runs[high]['peak-rss-bytes'] / 2**20:,.0f} MiB): each process reads only the "
        "stations it serves"
    ]


def _strategies_headlines(results: Results) -> list[str]:
    """Per task: the best-ranked strategy and FedAvg, each at its lr tuned on validation."""
    payload = results.get("strategies") or {}
    rows = payload.get("main") or []
    if not rows or "tuning" not in payload:
        return []
    import strategies_report

    out = []
    rounds = payload["settings"]["rounds"]
    for task in sorted({r["task"] for r in rows}):
        ranked = strategies_report.ranked_strategies(rows, task)
        seeds = min(len(runs) for _, runs in ranked)
        metric = ranked[0][1][0]["metric"]

        def value(strategy: str, runs: list[dict]) -> str:
            personal = any(strategies_report._flag(r.get("personalized")) for r in runs)
            text = common.fmt_ci([strategies_report._num(r["rank_metric"]) for r in runs])
            return f"{strategy} {text}" + (" (personalized client mean)" if personal else "")

        (best, best_runs), base = ranked[0], dict(ranked).get("fedavg")
        line = (
            f"strategy comparison, `{task}` {metric} after {rounds} rounds, each strategy at its "
            f"lr tuned on validation ({seeds} seeds, 95% CI): best {value(best, best_runs)} of "
            f"{len(ranked)}"
        )
        if base is not None and best != "fedavg":
            line += f", FedAvg {value('', base).strip()}"
        out.append(line)
    return out


HEADLINES = (
    _encoder_headline,
    _task_headlines,
    _federated_headlines,
    _strategies_headlines,
    _compression_headlines,
    _privacy_headlines,
    _scale_headlines,
)


# ----------------------------------------------------------------------------- blocks
def results_block(results: Results) -> str:
    """The Results section's table and headline list (between the main markers)."""
    described = dict(FILES + TASK_VARIANTS)  # a result file not listed still gets its row
    listed = [n for n, _ in FILES + TASK_VARIANTS if n in results]
    names = listed + sorted(set(results) - set(described))
    rows = [
        [
            described.get(name, f"results of `benchmarks/{name}.py`"),
            f"[{markdown_path(name)}]({markdown_path(name)})",
            _commits(results[name]),
        ]
        for name in names
    ]
    lines = ["", *common.table(["what", "where", "produced at commit"], rows, align="lll"), ""]
    headlines = [h for make in HEADLINES for h in make(results)]
    if headlines:
        lines += ["Headlines (each from the result file it names in the table):", ""]
        lines += [f"- {h[0].upper()}{h[1:]}." for h in headlines]
        lines.append("")
    return "\n".join(lines)


def data_generation_phrase(results: Results) -> str:
    """How long generating the ``default`` preset took (Channel data section)."""
    preset = (results.get("data_generation") or {}).get("preset")
    if not preset:
        return "Generation timings:"
    text = f"Generating `{preset['preset']}` took {preset['generate_s']:.0f} s on this 2-core machine"
    if "raytraced_s" in preset:
        text += (
            f" (its {preset['raytraced_samples']:,} ray-traced samples about "
            f"{preset['raytraced_s']:.0f} s)"
        )
    return text + ";"


def uplink_phrase(results: Results) -> str:
    """Uplink share of an adapter upload (Federated fine-tuning section)."""
    acc = (results.get("federated") or {}).get("accuracy")
    if not acc:
        return "a small share of full-model FedAvg bytes"
    ranks = sorted({a["config"]["lora.r"] for a in acc.values()})
    return (
        f"{_span([a['up-ratio'] for a in acc.values()], _pct, '%')} of full-model FedAvg bytes per "
        f"client and round at rank {', '.join(str(r) for r in ranks)}"
    )


BLOCKS: dict[str, Callable[[Results], str]] = {
    "": results_block,
    "data-generation": data_generation_phrase,
    "uplink": uplink_phrase,
}
"""Marker name (``""`` = ``results``) -> the function rendering its content."""


def _markers(name: str) -> tuple[str, str]:
    tag = f"results:{name}:" if name else "results:"
    return f"<!-- {tag}begin -->", f"<!-- {tag}end -->"


def render(readme: str, results: Results) -> str:
    """``readme`` with every block of :data:`BLOCKS` re-rendered from ``results``.

    Raises
    ------
    ValueError
        When a block's markers are missing, repeated or out of order.
    """
    for name, make in BLOCKS.items():
        begin, end = _markers(name)
        pattern = re.compile(re.escape(begin) + r"(.*?)" + re.escape(end), re.DOTALL)
        found = pattern.findall(readme)
        if len(found) != 1 or readme.count(begin) != 1 or readme.count(end) != 1:
            raise ValueError(f"README needs exactly one {begin} ... {end} pair (found {len(found)})")
        content = make(results)
        replacement = begin + content + end
        readme = pattern.sub(lambda _match, text=replacement: text, readme)
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    parser.add_argument("--check", action="store_true", help="exit 1 if the README differs")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    new = render(text, load_results(args.results))
    if args.check:
        if new != text:
            print(f"{args.readme} disagrees with {args.results}: run python benchmarks/readme.py")
            return 1
        print(f"{args.readme} agrees with {args.results}")
        return 0
    if new != text:
        common.save_text(args.readme, new)
        print(f"wrote {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
