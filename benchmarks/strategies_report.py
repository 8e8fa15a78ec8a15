"""Markdown of the strategy benchmark, generated from ``benchmarks/results/strategies.json``.

Every number below comes from that JSON (one row per run, as the grid's
``results.csv`` writes it); ``python benchmarks/strategies.py --render`` rewrites
``strategies.md`` from it without measuring.
"""

from __future__ import annotations

import math
import statistics

import common

PLOTS = "strategies/plots"  # relative to benchmarks/results/


def _num(value) -> float:
    return float(value) if value not in ("", None) else math.nan


def _mean(values) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.fmean(finite) if finite else math.nan


def _ci(rows: list[dict], key: str) -> str:
    return common.fmt_ci([_num(r.get(key)) for r in rows])


def _sorted_partitions(rows: list[dict]) -> list[str]:
    return sorted({r["partition"] for r in rows}, key=lambda p: (p != "natural", p))


def _seeds(rows: list[dict]) -> int:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["task"], r["strategy"], r["partition"]), set()).add(r["seed"])
    return min((len(v) for v in groups.values()), default=0)


def settings_lines(s: dict) -> list[str]:
    st = s["settings"]
    partitions = _sorted_partitions(s["main"])
    lora = st["lora"]
    metrics = ", ".join(f"{task} {metric}" for task, metric in st["metrics"].items())
    return [
        f"- preset `{st['preset']}`"
        + (f", partitions {', '.join(f'`{p}`' for p in partitions)}" if partitions else "")
        + ", every client in every round",
        f"- {st['rounds']} rounds, {st['local-epochs']} local epoch(s), at most "
        f"{st['data.max-train-rows']} training rows per client, {st['data.max-eval-rows']} rows "
        f"per client validation/test split and {st['data.max-global-test-rows']} global test "
        "rows (`data.max-train-rows`, `data.max-eval-rows`, `data.max-global-test-rows`: "
        f"seeded subsets), batch {st['batch-size']}, lr {st['lr']:g}, seeds {st['seeds']}",
        f"- encoder `model.pretrained = {st['model.pretrained']}`, LoRA r = {lora['lora.r']}, "
        f"alpha = {lora['lora.alpha']:g} on `{lora['lora.targets']}`, `{lora['model.head']}` "
        "head trained (main grid); strategy hyper-parameters at their registry defaults",
        f"- metrics: {metrics} of the global model on the global test subset (LoS accuracy "
        "sits at the NLoS majority class for weak models, so AUC ranks LoS). MB = 10^6 bytes "
        "of `ArrayRecord.count_bytes()` over all rounds and clients (training messages; "
        "evaluation downlink excluded)",
        f"- {st['workers']} worker processes, 1 torch thread each",
    ]


def _ranks(rows: list[dict], strategies: list[str], partitions: list[str]) -> dict[str, float]:
    ranks: dict[str, list[int]] = {s: [] for s in strategies}
    for p in partitions:
        means = {
            s: _mean([_num(r["final_metric"]) for r in rows if (r["strategy"], r["partition"]) == (s, p)])
            for s in strategies
        }
        order = sorted(strategies, key=lambda s: -means[s] if not math.isnan(means[s]) else math.inf)
        for i, s in enumerate(order, start=1):
            ranks[s].append(i)
    return {s: _mean([float(x) for x in v]) for s, v in ranks.items()}


def main_lines(rows: list[dict]) -> list[str]:
    lines = []
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        metric = task_rows[0]["metric"]
        partitions = _sorted_partitions(task_rows)
        strategies = sorted({r["strategy"] for r in task_rows})
        ranks = _ranks(task_rows, strategies, partitions)
        body = []
        for s in sorted(strategies, key=lambda s: (ranks[s], s)):
            mine = [r for r in task_rows if r["strategy"] == s]
            first = [r for r in mine if r["partition"] == partitions[0]]
            body.append(
                [
                    s,
                    *(_ci([r for r in mine if r["partition"] == p], "final_metric") for p in partitions),
                    _ci(first, "worst_client_metric"),
                    _ci(first, "mean_client_metric"),
                    f"{ranks[s]:.1f}",
                    f"{_mean([_num(r['mb_up']) for r in mine]):.2f}",
                    f"{_mean([_num(r['mb_down']) for r in mine]):.2f}",
                ]
            )
        header = [
            "strategy", *(f"{metric} `{p}`" for p in partitions),
            f"worst client (`{partitions[0]}`)", f"client mean (`{partitions[0]}`)",
            "mean rank", "MB up / run", "MB down / run",
        ]
        lines += common.section(
            f"Task `{task}`: final global {metric} (higher is better)",
            common.table(header, body),
            level=3,
        )
    return lines


def partition_lines(rows: list[dict]) -> list[str]:
    """Per task and partition: every strategy's final/best/worst/mean, bytes and wall time."""
    lines = []
    keys = ("final_metric", "best_metric", "worst_client_metric", "mean_client_metric",
            "rounds_to_target", "mb_up", "mb_down", "wall_time_s")
    for task in sorted({r["task"] for r in rows}):
        for p in _sorted_partitions([r for r in rows if r["task"] == task]):
            mine = [r for r in rows if (r["task"], r["partition"]) == (task, p)]
            strategies = sorted(
                {r["strategy"] for r in mine},
                key=lambda s: -_mean([_num(r["final_metric"]) for r in mine if r["strategy"] == s]),
            )
            body = []
            for rank, s in enumerate(strategies, start=1):
                runs = [r for r in mine if r["strategy"] == s]
                body.append([str(rank), s, str(len(runs)), *(_ci(runs, k) for k in keys)])
            header = ["rank", "strategy", "seeds", "final", "best", "worst client", "client mean",
                      "rounds to target", "MB up", "MB down", "wall s"]
            lines += common.section(f"`{task}`, partition `{p}`", common.table(header, body, "rl" + "r" * 9), level=4)
    return lines


def robust_lines(s: dict) -> list[str]:
    robust = s["robust"]
    if not robust:
        return []
    attacks = s["settings"]["robust"]["attacks"]
    names = sorted(robust, key=lambda a: (attacks[a].get("attack.fraction", 0.0) > 0, a))
    clean, attacked = names[0], names[1:]
    strategies = sorted({r["strategy"] for rows in robust.values() for r in rows})
    body = []
    for strategy in strategies:
        values = {a: [_num(r["final_metric"]) for r in robust[a] if r["strategy"] == strategy] for a in names}
        base = _mean(values[clean])
        body.append(
            [
                strategy,
                *(common.fmt_ci(values[a]) for a in names),
                *(f"{base - _mean(values[a]):+.3f}" if values[a] else "—" for a in attacked),
            ]
        )
    params = s["settings"]["robust"]["params"]
    described = "; ".join(
        f"`{a}`: " + ", ".join(f"{k} = {v}" for k, v in attacks[a].items()) for a in names
    )
    header = ["strategy", *(f"`{a}`" for a in names), *(f"drop under `{a}`" for a in attacked)]
    return common.section(
        f"Robustness: {s['settings']['robust']['task']}, partition "
        f"`{s['settings']['robust']['partition']}`",
        [
            f"Final global {s['settings']['metrics'][s['settings']['robust']['task']]}. "
            + ", ".join(f"`{k}` = {v}" for k, v in params.items())
            + f". Attacks: {described} (attackers train honestly, then replace their update: "
            "sign-flip sends `-factor x update`, gaussian sends N(0, factor^2) noise)."
        ],
        common.table(header, body),
    )


def hetero_lines(s: dict) -> list[str]:
    rows = s["hetero"]
    if not rows:
        return []
    tasks = sorted({r["task"] for r in rows})
    metrics = s["settings"]["metrics"]
    body = []
    for strategy in sorted({r["strategy"] for r in rows}):
        mine = [r for r in rows if r["strategy"] == strategy]
        body.append(
            [
                strategy,
                *(_ci([r for r in mine if r["task"] == t], "final_metric") for t in tasks),
                f"{_mean([_num(r['mb_up']) for r in mine]):.2f}",
                f"{_mean([_num(r['mb_down']) for r in mine]):.2f}",
            ]
        )
    params = s["settings"]["hetero"]["params"]
    return common.section(
        "Heterogeneous ranks",
        [
            f"Partitions train the ranks `lora.client-ranks = {params['lora.client-ranks']}` in "
            f"turn, global `lora.r = {params['lora.r']}`, natural split. FLoRA stacks the "
            "mixed-rank adapters exactly and folds them into the base (dense downlink); HetLoRA "
            "zero-pads to the global rank, norm-weights and truncates back to each rank."
        ],
        common.table(
            ["strategy", *(f"{metrics[t]} `{t}`" for t in tasks), "MB up / run", "MB down / run"],
            body,
        ),
    )


def wall_lines(s: dict) -> list[str]:
    entries = s.get("wall-s") or []
    parts = sorted({k for e in entries for k in e if isinstance(e[k], (int, float))})
    if not parts:
        return []
    body = [
        [e.get("finished") or e.get("started") or "—", *(common.fmt(e.get(p), 0) for p in parts)]
        for e in entries
    ]
    return common.section(
        "Wall time per invocation (s; finished runs are skipped by later invocations)",
        common.table(["invocation", *parts], body),
    )


def markdown(s: dict) -> str:
    """The whole ``strategies.md`` from the results JSON."""
    plots = [
        f"![{name.replace('_', ' ')}]({PLOTS}/{name}.png)"
        for name in ("metric_vs_round_beam", "metric_vs_mb_beam", "metric_vs_round_los")
    ]
    main = s["main"]
    lines = [
        "# Strategy comparison",
        "",
        *common.provenance_lines(s["provenance"]),
        "",
        *common.section("Settings", settings_lines(s)),
    ]
    if main:
        lines += common.section("Main comparison", [common.ci_note(_seeds(main))])
        lines += [*main_lines(main), *("\n\n".join(plots).split("\n")), ""]
    lines += [*robust_lines(s), *hetero_lines(s)]
    if main:
        lines += common.section("Per partition", ["Rank by mean final metric."])
        lines += partition_lines(main)
    lines += wall_lines(s)
    return "\n".join(lines).rstrip() + "\n"
