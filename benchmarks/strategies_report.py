"""Markdown of the strategy benchmark, generated from ``benchmarks/results/strategies.json``.

Every number below comes from that JSON (one row per run, as the grid's
``results.csv`` writes it, the tuning table, chance levels and mean curves);
``python benchmarks/strategies.py --render`` rewrites ``strategies.md`` from it
without measuring.
"""

from __future__ import annotations

import math
import statistics

import common

PLOTS = "strategies/plots"  # relative to benchmarks/results/
RANKED_BY = {False: "global", True: "personalized client mean"}


def _num(value) -> float:
    if value in ("", None):
        return math.nan
    if isinstance(value, str):
        return {"true": 1.0, "false": 0.0}.get(value.lower(), float(value) if value else math.nan)
    return float(value)


def _flag(value) -> bool:
    return value is True or str(value).lower() == "true"


def _mean(values) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.fmean(finite) if finite else math.nan


def _ci(rows: list[dict], key: str) -> str:
    return common.fmt_ci([_num(r.get(key)) for r in rows])


def _seeds(rows: list[dict]) -> int:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["task"], r["strategy"]), set()).add(r["seed"])
    return min((len(v) for v in groups.values()), default=0)


def settings_lines(s: dict) -> list[str]:
    st = s["settings"]
    lora = st.get("lora") or {}
    metrics = ", ".join(f"`{task}` {metric}" for task, metric in sorted(st["metrics"].items()))
    grids = {tuple(g) for g in st["lr-grid"].values()}
    grid = (
        "lr grid " + ", ".join(f"{x:g}" for x in next(iter(grids))) + " for every strategy"
        if len(grids) == 1
        else "lr grids " + "; ".join(f"{k}: {v}" for k, v in st["lr-grid"].items())
    )
    lines = [
        f"- preset `{st['preset']}`, partition `{st['partition']}` (one client per base "
        "station), every client in every round; tasks "
        + ", ".join(f"`{t}`" for t in st["tasks"]),
        *(
            f"- `{task}`: {len(names)} strategies ({', '.join(names)})"
            + (
                f", a subset of the {len(st['strategies'])} for the CPU budget (one process on a "
                "2-core machine shared with other benchmarks)"
                if len(set(names) & set(st["strategies"])) < len(st["strategies"])
                else ""
            )
            for task, names in sorted((st.get("strategies-per-task") or {}).items())
            if names
        ),
        f"- {st['rounds']} rounds, {st['local-epochs']} local epoch(s), batch {st['batch-size']}, "
        f"at most {st['data.max-train-rows']} training rows per client, "
        f"{st['data.max-eval-rows']} validation and {st['data.max-eval-rows']} test rows per "
        f"client, {st['data.max-global-test-rows']} global test rows (seeded subsets); the same "
        "for every strategy",
        f"- seeds: {st['tune-seed']} (tuning) and {', '.join(str(x) for x in st['main-seeds'])}; "
        f"each seed draws its own split ({st['split-seed']}: every client's train/validation/"
        "test rows and the global test set change with it)",
        f"- {grid}, chosen per task and strategy on seed {st['tune-seed']} by the client mean "
        "validation metric in the last round (each station's own validation rows, scored with "
        "the model that station uses); the seed-"
        f"{st['tune-seed']} run at the chosen lr is that seed's result",
        f"- metrics: {metrics}; chance: "
        + ", ".join(f"`{t}` {v:.4g}" for t, v in sorted(s["chance"].items()))
        + ". MB = 10^6 bytes of `ArrayRecord.count_bytes()` over all rounds and clients "
        "(training messages; evaluation downlink excluded)",
        f"- rounds to target: the first round whose ranked metric reaches "
        f"{st['target-fraction']:g} x {st['target-base']}'s mean final global metric ("
        + ", ".join(f"`{t}` {v:.3f}" for t, v in sorted(s["targets"].items()))
        + ")",
    ]
    if lora:
        lines.append(
            f"- encoder `model.pretrained = {st['model.pretrained']}`, LoRA r = {lora['lora.r']}, "
            f"alpha = {lora['lora.alpha']:g} on `{lora['lora.targets']}`, `{lora['model.head']}` "
            "head trained; strategy hyper-parameters other than the lr at their registry defaults"
            + "".join(
                f", {name}: " + ", ".join(f"`{k} = {v}`" for k, v in params.items())
                for name, params in (st.get("strategy-params") or {}).items()
            )
        )
    for name, v in sorted((st.get("variants") or {}).items()):
        params = ", ".join(f"`{k} = {x}`" for k, x in v["params"].items())
        lines.append(f"- variant `{name}`: {v['strategy']} with {params}, tuned and run the same way ({v['why']})")
    lines.append(f"- {st['workers']} worker process, 1 torch thread")
    return lines


def tuning_lines(s: dict) -> list[str]:
    lines = []
    for task, cells in sorted(s["tuning"].items()):
        metric = s["settings"]["metrics"][task]
        lrs = sorted({lr for c in cells.values() for lr in c["grid"]}, key=float)
        body = []
        for strategy, cell in sorted(cells.items()):
            values = []
            for lr in lrs:
                v = (cell["grid"].get(lr) or {}).get("val")
                text = common.fmt(v)
                values.append(f"**{text}**" if lr == cell["lr"] else text)
            chosen = cell["lr"] or "—"
            note = " (grid edge)" if cell.get("at-edge") else ""
            note += "" if cell.get("complete") else " (grid unfinished)"
            body.append([strategy, *values, f"{chosen}{note}"])
        lines += common.section(
            f"`{task}`: client mean validation {metric} (seed {s['settings']['tune-seed']}, last round)",
            common.table(["strategy", *(f"lr {lr}" for lr in lrs), "chosen lr"], body),
            level=3,
        )
    return lines


def ranked_strategies(rows: list[dict], task: str) -> list[tuple[str, list[dict]]]:
    """``[(strategy, its runs)]`` of ``task``, best mean ranked metric first (the
    personalized client mean for a strategy that keeps parameters local, else the
    final global metric; higher is better), a NaN mean last."""
    mine = [r for r in rows if r["task"] == task]
    runs = {st: [r for r in mine if r["strategy"] == st] for st in sorted({r["strategy"] for r in mine})}
    ranked = {st: _mean([_num(r["rank_metric"]) for r in group]) for st, group in runs.items()}
    order = sorted(runs, key=lambda st: (-ranked[st] if not math.isnan(ranked[st]) else math.inf, st))
    return [(st, runs[st]) for st in order]


def ranking_lines(s: dict) -> list[str]:
    rows, lines = s["main"], []
    tuned = s["tuning"]
    for task in sorted({r["task"] for r in rows}):
        metric = next(r["metric"] for r in rows if r["task"] == task)
        body = []
        for rank, (st, runs) in enumerate(ranked_strategies(rows, task), start=1):
            personalized = any(_flag(r.get("personalized")) for r in runs)
            reached = [r for r in runs if r.get("rounds_to_target") not in ("", None)]
            target = (
                f"{common.fmt_ci([_num(r['rounds_to_target']) for r in reached], 1)} ({len(reached)}/{len(runs)})"
                if reached
                else f"never (0/{len(runs)})"
            )
            body.append(
                [
                    str(rank),
                    f"**{st}**" if rank == 1 else st,
                    (tuned.get(task, {}).get(st) or {}).get("lr") or "—",
                    RANKED_BY[personalized],
                    _ci(runs, "rank_metric"),
                    _ci(runs, "final_metric"),
                    _ci(runs, "mean_client_metric"),
                    _ci(runs, "worst_client_metric"),
                    target,
                    f"{_mean([_num(r['mb_up']) for r in runs]):.2f}",
                    f"{_mean([_num(r['mb_down']) for r in runs]):.2f}",
                    str(len(runs)),
                ]
            )
        header = [
            "rank", "strategy", "lr", "ranked by", f"ranked {metric}", f"global {metric}",
            "client mean", "worst client", "rounds to target", "MB up / run", "MB down / run",
            "seeds",
        ]
        lines += common.section(
            f"Task `{task}`: {metric} (higher is better; chance {s['chance'][task]:.4g})",
            [
                "'global': the global model on the global test rows. 'client mean' / 'worst "
                "client': each station's own test rows scored with the model it uses (the "
                "global one, or its personalized one where the strategy keeps parameters on the "
                "station), last round. A strategy that keeps parameters local is ranked by its "
                "personalized client mean (its global model is what no station uses). The "
                "client mean (per-station metric, averaged over stations) and the global metric "
                "(pooled global test rows) are different statistics: compare 'client mean' "
                "across all strategies for like with like."
            ],
            common.table(header, body, "rllllrrrrrrr"),
            level=3,
        )
    return lines


def convergence_lines(s: dict) -> list[str]:
    """Where the ranked curves flatten: mean over seeds at a few rounds, and the change
    over the last quarter of the rounds."""
    lines = []
    for task, cells in sorted((s.get("curves") or {}).items()):
        rounds = max(len(c) for c in cells.values())
        if rounds < 2:
            continue
        marks = sorted({1, rounds // 4, rounds // 2, 3 * rounds // 4, rounds} - {0})
        tail = max(1, rounds // 4)
        body = []
        for strategy, curve in sorted(cells.items()):
            values = [math.nan if v is None else v for v in curve]
            change = values[-1] - values[-1 - tail] if len(values) > tail else math.nan
            body.append([strategy, *(common.fmt(values[m - 1]) for m in marks), common.fmt(change)])
        lines += common.section(
            f"`{task}`: ranked metric by round (mean over seeds)",
            common.table(
                ["strategy", *(f"round {m}" for m in marks), f"change over the last {tail} rounds"],
                body,
            ),
            level=3,
        )
    return lines


def extended_lines(s: dict) -> list[str]:
    """FedAvg continued past the budget: its global metric at both round counts."""
    cells = s.get("extended") or {}
    if not cells:
        return []
    body = []
    for task, c in sorted(cells.items()):
        pairs = [(a, b) for a, b in zip(c["at-budget"], c["at-extended"], strict=True)
                 if a is not None and b is not None]
        body.append(
            [
                f"`{task}`",
                common.fmt_ci([a for a, _ in pairs]),
                common.fmt_ci([b for _, b in pairs]),
                common.fmt_ci([b - a for a, b in pairs]),
                str(len(pairs)),
            ]
        )
    first = next(iter(cells.values()))["rounds"]
    return [
        f"{s['settings']['target-base']} at its tuned lr, each seed's run resumed and continued "
        f"from round {first[0]} to round {first[1]} (global metric; the gain says how flat the "
        "curve is at the budget):",
        "",
        *common.table(
            ["task", f"round {first[0]}", f"round {first[1]}", "gain", "seeds"], body
        ),
        "",
    ]


def _diag(s: dict, task: str, strategy: str, key: str) -> float:
    diag = s.get("diagnostics") or {}
    return _mean([
        _num(v.get(key)) for k, v in diag.items() if k.rsplit("/", 1)[0] == f"{task}/{strategy}"
    ])


def below_chance_note(s: dict, task: str, strategy: str, personalized: bool, runs: list[dict]) -> str:
    """The measured facts next to a below-chance global metric: where the global model
    started (round 0) and how far it moved, against FedAvg; for a strategy that keeps
    parameters local, what its stations' own models score."""
    parts = []
    if personalized:
        parts.append(
            "its global model is the shared part only (the parameters it keeps stay on the "
            "stations), which no station uses; the stations' own models score "
            f"{_mean([_num(r['rank_metric']) for r in runs]):.3f} (client mean)"
        )
    init, drift = _diag(s, task, strategy, "init"), _diag(s, task, strategy, "drift")
    base = s["settings"]["target-base"]
    if not math.isnan(init):
        text = f"its global model scores {init:.3f} at round 0 (initialization, before training)"
        if not math.isnan(drift):
            text += (
                f" and training moved it by ||w_R - w_0|| = {drift:.3g}"
                f" ({base}: {_diag(s, task, base, 'drift'):.3g})"
            )
        parts.append(text)
    for name, v in sorted((s["settings"].get("variants") or {}).items()):
        mine = [r for r in s["main"] if (r["task"], r["strategy"]) == (task, name)]
        if v["strategy"] == strategy and mine:
            params = ", ".join(f"{k} = {x}" for k, x in v["params"].items())
            parts.append(
                f"with {params} (`{name}`) its global {mine[0]['metric']} is "
                f"{common.fmt_ci([_num(r['final_metric']) for r in mine])} and it moved by "
                f"{_diag(s, task, name, 'drift'):.3g}"
            )
    return "; ".join(parts)


def chance_lines(s: dict) -> list[str]:
    """Every (task, strategy) whose mean global (or personalized) metric is below chance,
    with the measured facts that explain it (:func:`below_chance_note`)."""
    found = []
    for task in sorted({r["task"] for r in s["main"]}):
        chance = s["chance"][task]
        for st in sorted({r["strategy"] for r in s["main"] if r["task"] == task}):
            runs = [r for r in s["main"] if (r["task"], r["strategy"]) == (task, st)]
            personalized = any(_flag(r.get("personalized")) for r in runs)
            checks = (("rank_metric", "personalized"),) if personalized else ()
            for key, what in (*checks, ("final_metric", "global")):
                values = [_num(r[key]) for r in runs]
                value, below = _mean(values), sum(v < chance for v in values)
                if value < chance or below:
                    note = below_chance_note(s, task, st, personalized, runs) if what == "global" else ""
                    relation = "<" if value < chance else ">="
                    found.append(
                        f"- `{task}` {st}: {what} {runs[0]['metric']} {value:.3f} {relation} chance "
                        f"{chance:.4g} (mean; {below} of {len(values)} seeds below chance)"
                        + (f": {note}" if note else "")
                    )
    body = found or [
        "None: every strategy's global and personalized metric is at or above chance in every seed."
    ]
    return common.section("Below chance", body)


def run_seconds(s: dict) -> tuple[float, int]:
    """Summed round wall time of every run measured (each tuning run, and the main runs
    of the other seeds; the tuning run at the chosen lr is seed 0's main run)."""
    tune_seed = s["settings"]["tune-seed"]
    walls = [
        _num(v.get("wall-s"))
        for cells in s["tuning"].values()
        for cell in cells.values()
        for v in cell["grid"].values()
    ]
    walls += [_num(r.get("wall_time_s")) for r in s["main"] if int(r["seed"]) != tune_seed]
    finite = [w for w in walls if not math.isnan(w)]
    return sum(finite), len(finite)


def wall_lines(s: dict) -> list[str]:
    entries = s.get("wall-s") or []
    parts = sorted({k for e in entries for k in e if isinstance(e[k], (int, float))})
    total, count = run_seconds(s)
    lines = []
    if count:
        lines = common.section(
            "Wall time",
            [
                f"{count} runs, their rounds' wall time summed: {total / 60:.0f} min (1 process "
                "on a 2-core machine shared with other benchmarks; run setup not included)"
            ],
        )
    if not parts:
        return lines
    body = [[e.get("finished") or "—", *(common.fmt(e.get(p), 0) for p in parts)] for e in entries]
    return lines + common.section(
        "Wall time per invocation (s; finished runs are skipped by later invocations)",
        common.table(["invocation", *parts], body),
    )


def markdown(s: dict) -> str:
    """The whole ``strategies.md`` from the results JSON."""
    main = s["main"]
    tasks = sorted({r["task"] for r in main})
    plots = [
        f"![{kind} {task}]({PLOTS}/{kind}_{task}.png)"
        for task in tasks
        for kind in ("metric_vs_round", "metric_vs_mb")
    ]
    lines = [
        "# Strategy comparison",
        "",
        *common.provenance_lines(s["provenance"]),
        "",
        *common.section("Settings", settings_lines(s)),
        *common.section("Learning rate tuning (validation only)", []),
        *tuning_lines(s),
    ]
    if main:
        lines += common.section("Ranking", [common.ci_note(_seeds(main))])
        lines += ranking_lines(s)
        lines += common.section("Convergence", [])
        lines += convergence_lines(s)
        lines += extended_lines(s)
        lines += chance_lines(s)
        lines += common.section("Plots", ["\n\n".join(plots)])
    lines += common.section(
        "Not measured here",
        [
            "Byzantine robustness (FedAvg vs FedMedian / FedTrimmedAvg / Krum / MultiKrum under "
            "attack) and heterogeneous ranks (FLoRA vs HetLoRA with mixed client ranks) at these "
            "settings: left out for the CPU budget; `rantune compare` runs them "
            "(`--run-config attack.fraction=...`, `lora.client-ranks=...`)."
        ],
    )
    lines += wall_lines(s)
    return "\n".join(lines).rstrip() + "\n"
