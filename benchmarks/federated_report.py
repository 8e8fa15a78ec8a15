"""Markdown of the federated benchmark, generated from ``benchmarks/results/federated.json``.

Every number below comes from that JSON (aggregated by ``federated_summary.py``) or
from :data:`TARGETS`, the acceptance thresholds of issue 13; met / not met is computed
here. ``python benchmarks/federated.py --render`` rewrites ``federated.md`` from the
JSON without measuring.
"""

from __future__ import annotations

import statistics

import common
from federated_summary import LEARNED

TARGETS = {"fed-over-central": 0.95}
"""FedAvg's share of centralized LoRA on the primary metric (``central / fed`` for an
error: FedAvg <= centralized / 0.95)."""
PHASES = ("train", "evaluate", "server-evaluate")  # phase-s keys of a round in history.json


def _mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _ci(triple: list[float], digits: int = 3) -> str:
    return common.fmt_mean_ci(*triple, digits=digits)


def _digits(metric: str) -> int:
    return 1 if metric.endswith("_m") or metric.startswith("gain_loss") else 3


def _direction(e: dict) -> str:
    return "higher is better" if e["higher-is-better"] else "lower is better"


def settings_lines(s: dict) -> list[str]:
    lines = []
    for task, e in s["accuracy"].items():
        cfg = e["config"]
        lines.append(
            f"- `{task}`: preset `{cfg['data.preset'].rsplit('/', 1)[-1]}` ({len(e['stations'])} "
            f"stations: {', '.join(e['stations'])}), partition `{cfg['partition.scheme']}` (one "
            f"base station = one client), encoder `{cfg['model.pretrained']}`, LoRA r = "
            f"{cfg['lora.r']}, alpha = {cfg['lora.alpha']:g} on `{cfg['lora.targets']}`, head "
            f"`{cfg['model.head']}`, `{cfg['strategy.name']}` with fraction-train "
            f"{cfg['fraction-train']:g}, {e['rounds']} rounds x {cfg['local-epochs']} local "
            f"epoch(s), batch {cfg['batch-size']}, AdamW lr {cfg['lr']:g}; seeds {e['seeds']} "
            "(run seed = partition seed: every seed also redraws each station's split)."
        )
    return lines + [
        "",
        "Centralized LoRA trains rounds x local epochs epochs on the union of the clients' "
        "training rows; local-only trains each station alone for as many epochs; both start "
        "from the same initial adapters as FedAvg (the run seed). The classical baselines "
        "(`Task.baseline`) are fitted on the same training rows (per station where the method "
        "is per station) and scored on the same test rows. The `scale` part of the earlier "
        "version of this benchmark is measured by `benchmarks/scale.py` now (`scale.md`).",
    ]


def acceptance_lines(s: dict) -> list[str]:
    """One line per target of issue 13 per task, computed from the JSON."""
    lines = []
    share = TARGETS["fed-over-central"]
    for task, e in s["accuracy"].items():
        metric, d = e["metric"], _digits(e["metric"])
        ratio = e["fed-over-central"]
        how = "FedAvg / centralized" if e["higher-is-better"] else "centralized / FedAvg"
        own, glob = e["fed-gain-over-local-own"], e["fed-gain-over-local-global"]
        base = e["fed-gain-over-baseline-global"]
        mean_own = e["client-mean-own-test"]
        per_seed = e["fed-over-central-per-seed"]
        of_means = (
            e["fedavg"][0] / e["centralized"][0]
            if e["higher-is-better"]
            else e["centralized"][0] / e["fedavg"][0]
        )
        lines += [
            f"- `{task}` ({metric}, {_direction(e)}): {how} = {ratio:.4f} (the mean of the "
            f"per-seed ratios {', '.join(f'{r:.4f}' for r in per_seed)}; "
            f"{_ci(common.mean_ci(per_seed), 3)} with its 95% CI; the ratio of the means is "
            f"{of_means:.4f}) — >= {share}: {_mark(ratio >= share)}.",
            f"- `{task}`: FedAvg vs local-only, client mean on each station's own test rows: "
            f"{_ci(mean_own['fedavg'], d)} vs {_ci(mean_own['local-only'], d)}, FedAvg better by "
            f"{_ci(own, d)} — {_mark(own[0] > 0)}"
            + (" (the interval includes 0)" if own[0] > 0 and own[0] - own[1] <= 0 else "")
            + f"; on the global test rows better by {_ci(glob, d)} ({_mark(glob[0] > 0)}).",
            f"- `{task}`: FedAvg vs the best classical baseline on the global test rows: "
            f"{_ci(e['fedavg'], d)} vs {_ci(e['best-baseline-global'], d)}, FedAvg better by "
            f"{_ci(base, d)} ({'FedAvg wins' if base[0] > 0 else 'the baseline wins'}).",
        ]
    return lines


def global_lines(task: str, e: dict) -> list[str]:
    metrics = e["metrics"]
    glob = e["global"]  # JSON keys are sorted: the learned methods first, then the baselines
    order = [*LEARNED, *sorted(k for k in glob if k not in LEARNED)]
    rows = [[name, *(_ci(glob[name][m], _digits(m)) for m in metrics)] for name in order]
    return common.section(
        f"`{task}`: global test rows",
        [
            f"Primary metric `{e['metric']}` ({_direction(e)}). Local-only: the mean over the "
            "stations' own models. Baselines: every method `Task.baseline` returns. "
            + common.ci_note(len(e["seeds"]))
        ],
        common.table(["method", *metrics], rows),
        level=3,
    )


def station_lines(task: str, e: dict) -> list[str]:
    metric, d = e["metric"], _digits(e["metric"])
    methods = ("fedavg", "centralized", "local-only", "best baseline")
    rows = [
        [
            name,
            *(_ci(v[m], d) for m in methods),
            ", ".join(v["best baseline name"]),
        ]
        for name, v in ((n, e["stations-own-test"][n]) for n in e["stations"])
    ]
    mean = e["client-mean-own-test"]
    rows.append(["**client mean**", *(_ci(mean[m], d) for m in methods), ""])
    sign = 1 if e["higher-is-better"] else -1
    own = e["stations-own-test"]
    local_wins = [
        name for name in e["stations"] if sign * (own[name]["local-only"][0] - own[name]["fedavg"][0]) > 0
    ]
    return common.section(
        f"`{task}`: each station's own test rows ({metric})",
        [
            "FedAvg: the final global model as each client scores it in the last round "
            "(`history.json`); centralized: the pooled model on the same rows; local-only: the "
            "station's own model; best baseline: fitted on the station's own training rows. "
            f"Local-only is better than FedAvg (mean over seeds) on {len(local_wins)} of "
            f"{len(e['stations-own-test'])} stations"
            + (f": {', '.join(local_wins)}." if local_wins else ".")
        ],
        common.table(
            ["station", "FedAvg", "centralized", "local-only", "best baseline", "which"],
            rows,
            align="lrrrrl",
        ),
        level=3,
    )


def _tail_change(curve: list[float]) -> str:
    """How much the last third of the rounds moved a curve (round index ``k`` to the end)."""
    k = len(curve) - 1 - max(1, (len(curve) - 1) // 3)
    change = curve[-1] - curve[k]
    return f"from round {k} to {len(curve) - 1} it moved by {change:+.4g} ({change / curve[k]:+.1%})"


def curve_lines(task: str, e: dict, conv: dict | None) -> list[str]:
    glob = [c[0] for c in e["curve"]]
    rows = [
        ["FedAvg, global test (mean over seeds)", *(common.fmt(v, _digits(e["metric"])) for v in glob)],
        [
            "FedAvg, client mean own test",
            "—",
            *(common.fmt(c[0], _digits(e["metric"])) for c in e["client-mean-curve"]),
        ],
    ]
    text = [
        f"`{e['metric']}` after each round (round 0 = the initial adapters). Global mean: "
        f"{_tail_change(glob)}."
    ]
    blocks = [common.table(["round", *(str(i) for i in range(len(glob)))], rows)]
    if conv:
        long = conv["curve"]
        d = _digits(e["metric"])
        text.append(
            f"Longer run (seed {conv['seed']}, {conv['rounds']} rounds, {conv['wall-s']:.0f} s): "
            f"the curve below is how the number of rounds was chosen; {_tail_change(long)}; "
            f"centralized LoRA at {e['rounds']} epochs: "
            f"{_ci(e['centralized'], d)}."
        )
        blocks.append(
            common.table(
                ["round", *(str(i) for i in range(len(long)))],
                [["FedAvg, global test", *(common.fmt(v, d) for v in long)]],
            )
        )
    return common.section(f"`{task}`: FedAvg per round", [" ".join(text)], *blocks, level=3)


def communication_lines(s: dict) -> list[str]:
    rows = [
        [
            task,
            f"{e['full-model-bytes'] / 1024:.1f} KiB",
            f"{e['up-bytes-per-client-round'] / 1024:.1f} KiB",
            f"{e['up-ratio']:.2%}",
            f"{e['fedavg-round-s']:.1f}",
        ]
        for task, e in s["accuracy"].items()
    ]
    header = ["task", "full-model FedAvg", "LoRA adapters + head", "ratio", "round s (engine)"]
    return common.table(header, rows)


def cost_lines(s: dict) -> list[str]:
    rows = [
        [task, *(f"{e['wall-s'][k]:.0f}" for k in ("fedavg", "centralized", "local-only", "baselines"))]
        for task, e in s["accuracy"].items()
    ]
    return [
        "Wall seconds over all seeds (one process, torch 1 thread, on a 2-core machine shared "
        "with other benchmarks):",
        "",
        *common.table(["task", "FedAvg", "centralized", "local-only", "baselines"], rows),
    ]


def overhead_lines(o: dict) -> list[str]:
    reps = o["repeats"]
    rows = []
    for i, r in enumerate(reps, start=1):
        phases = sum(r["phase-s"].values())
        rows.append(
            [
                str(i), f"{r['total-s']:.1f}", f"{r['cpu-s']:.1f}",
                *(f"{r['phase-s'][k]:.2f}" for k in PHASES if k in r["phase-s"]),
                f"{r['round-0-s']:.2f}", f"{r['total-s'] - phases:.2f}",
                f"{(r['total-s'] - phases) / r['total-s']:.1%}",
            ]
        )
    keys = [k for k in PHASES if k in reps[0]["phase-s"]]
    share = statistics.median((r["total-s"] - sum(r["phase-s"].values())) / r["total-s"] for r in reps)
    return common.section(
        "Engine time split",
        [
            f"In-process engine, `{o['task']}`, {o['rounds']} round(s), {len(reps)} repeats in one "
            "warm process. The phases come from `history.json` (`phase-s`: client training, "
            "client evaluation, server-side evaluation per round, summed over rounds) and "
            "include the in-process Grid's message handling; the rest of the wall time is "
            "set-up, round-0 evaluation, checkpoints and history. Median share outside the "
            f"phases: **{share:.1%}**."
        ],
        common.table(
            ["repeat", "wall s", "CPU s", *(f"{k} s" for k in keys), "round 0 s",
             "outside phases s", "share"],
            rows,
        ),
    )


def ray_lines(r: dict) -> list[str]:
    same = r["engine-final"] == r["final"]
    seconds = ", ".join(f"{x:.1f}" for x in r["round-s"])
    engine = ", ".join(f"{x:.1f}" for x in r["engine-round-s"])
    return common.section(
        "`flwr run` (Ray simulation)",
        [
            f"{r['num-supernodes']} SuperNodes, {r['rounds']} rounds, `{r['task']}`: launch of "
            "`flwr run` to the start of round 1 (FAB build, SuperLink accepts the run, simulation "
            f"and ServerApp start, data load, round-0 evaluation) **{r['startup-s']:.1f} s** (run "
            f"accepted after {r['submit-s']:.1f} s); per round {seconds} s (round 1 also starts "
            f"the Ray ClientApp actors); total {r['total-s']:.1f} s. The in-process engine on "
            f"the same config: rounds {engine} s, total {r['engine-total-s']:.1f} s; same final "
            f"metrics: {same}."
        ],
    )


def markdown(s: dict) -> str:
    """The whole ``federated.md`` from the results JSON."""
    lines = [
        "# Federated LoRA benchmark",
        "",
        *common.provenance_lines(s["provenance"]),
        "",
        *common.section("Settings", settings_lines(s)),
        *common.section("Targets (issue 13)", acceptance_lines(s)),
    ]
    for task, e in s["accuracy"].items():
        lines += [f"## {task}", ""]
        lines += global_lines(task, e)
        lines += station_lines(task, e)
        lines += curve_lines(task, e, s.get("convergence", {}).get(task))
    lines += common.section(
        "Communication (uplink per client per round, `ArrayRecord.count_bytes()`)",
        communication_lines(s),
        cost_lines(s),
    )
    if "overhead" in s:
        lines += overhead_lines(s["overhead"])
    if "ray" in s:
        lines += ray_lines(s["ray"])
    return "\n".join(lines).rstrip() + "\n"
