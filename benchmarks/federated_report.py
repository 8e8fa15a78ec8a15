"""Markdown of the federated benchmark, generated from ``benchmarks/results/federated.json``.

Every number below comes from that JSON (or from :data:`TARGETS`, the acceptance
thresholds of issue 4); ``python benchmarks/federated.py --render`` rewrites
``federated.md`` from it without measuring.
"""

from __future__ import annotations

import statistics

import common

TARGETS = {
    "fed-over-central": 0.95,  # FedAvg / centralized LoRA, primary metric
    "up-ratio": 0.05,  # adapters + head upload / full-model upload
    "up-ratio-int8": 0.015,  # the same with int8 update compression
    "int8-points": 1.0,  # |int8 - FedAvg| in points
    "peak-gib": 24.0,  # peak RSS of the large preset
}
GIB = 2**30
PHASES = ("train", "evaluate", "server-evaluate")  # phase-s keys of a round in history.json


def _mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _ms(pair: list[float], n: int, digits: int = 3) -> str:
    """``mean ± 95% CI`` from a stored ``[mean, sample std]`` pair over ``n`` seeds."""
    mean, std = pair
    return common.fmt_mean_ci(mean, common.half_width(std, n), n, digits)


def _seconds(values: list[float], digits: int = 1) -> str:
    return ", ".join(f"{x:.{digits}f}" for x in values)


def _reach(fed: list[float], best: float, share: float) -> int | None:
    return next((i for i, v in enumerate(fed) if v >= share * best), None)


def settings_lines(s: dict) -> list[str]:
    configs = {task: e["config"] for task, e in s["accuracy"].items()}
    cfg = next(iter(configs.values()), None)
    if cfg is None:
        return []
    same = all(c == cfg for c in configs.values())
    return [
        f"Preset `{cfg['data.preset']}`, partition `{cfg['partition.scheme']}` (one base station "
        f"= one client), encoder `model.pretrained = {cfg['model.pretrained']}`, LoRA r = "
        f"{cfg['lora.r']}, alpha = {cfg['lora.alpha']:g} on `{cfg['lora.targets']}` with the "
        f"`{cfg['model.head']}` task head, strategy `{cfg['strategy.name']}` (fraction-train "
        f"{cfg['fraction-train']:g}), {cfg['local-epochs']} local epoch(s) per round, batch "
        f"{cfg['batch-size']}, AdamW lr {cfg['lr']:g}"
        + ("." if same else f" (for {next(iter(configs))}; the tasks' settings differ).")
    ]


def acceptance_lines(s: dict) -> list[str]:
    """One line per acceptance criterion of issue 4 with the measured value."""
    lines = []
    t = TARGETS
    for task, e in s["accuracy"].items():
        ratio = e["fed-over-central"]
        line = (
            f"- {task}: FedAvg / centralized LoRA after {e['rounds']} rounds = {ratio:.3f} "
            f"(>= {t['fed-over-central']}: {_mark(ratio >= t['fed-over-central'])})"
        )
        conv = s.get("convergence", {}).get(task)
        if conv:
            fed, best = conv["fedavg"]["curve"], max(conv["centralized"]["curve"])
            reach = _reach(fed, best, t["fed-over-central"])
            line += (
                f"; longer run (seed {conv['seed']}): {t['fed-over-central']:.0%} of the best "
                f"centralized reached at round {reach}, {fed[-1] / best:.3f} after "
                f"{len(fed) - 1} rounds"
            )
        points = e["int8-minus-fedavg-points"]
        own = 100 * (e["fedavg"][0] - e["local-only-own-test"][0])
        lines += [
            line + ".",
            f"- {task}: FedAvg − mean local-only (global test) = "
            f"{e['fed-minus-local-points']:+.2f} points ({_mark(e['fed-minus-local-points'] > 0)}); "
            f"vs local-only on their own test splits {own:+.2f} points.",
            f"- {task}: uplink per client per round {e['up-ratio']:.2%} of full-model FedAvg "
            f"(<= {t['up-ratio']:.0%}: {_mark(e['up-ratio'] <= t['up-ratio'])}); int8 "
            f"{e['up-ratio-int8']:.2%} (<= {t['up-ratio-int8']:.1%}: "
            f"{_mark(e['up-ratio-int8'] <= t['up-ratio-int8'])}), accuracy change {points:+.2f} "
            f"points (within {t['int8-points']:g}: {_mark(abs(points) <= t['int8-points'])}).",
        ]
    for kind, e in s.get("scale", {}).items():
        peak = e["peak-rss-bytes"] / GIB
        lines.append(
            f"- `large` preset ({kind}): completed, peak {peak:.2f} GiB "
            f"(<= {t['peak-gib']:g} GiB: {_mark(peak <= t['peak-gib'])})."
        )
    return lines


def accuracy_lines(s: dict) -> list[str]:
    header = [
        "task", "metric", "FedAvg", "FedAvg + int8", "centralized LoRA",
        "local-only (global test)", "local-only (own test)", "FedAvg / central",
        "int8 − FedAvg (points)", "FedAvg − local (points)",
    ]
    rows, seeds = [], []
    for task, e in s["accuracy"].items():
        n = len(e["seeds"])
        seeds.append(n)
        rows.append(
            [
                task, e["metric"], *(
                    _ms(e[k], n)
                    for k in ("fedavg", "fedavg-int8", "centralized",
                              "local-only-global-test", "local-only-own-test")
                ),
                f"{e['fed-over-central']:.3f}", f"{e['int8-minus-fedavg-points']:+.2f}",
                f"{e['fed-minus-local-points']:+.2f}",
            ]
        )
    rounds = ", ".join(
        f"{t}: {e['rounds']} rounds, seeds {e['seeds']}" for t, e in s["accuracy"].items()
    )
    worst = ", ".join(
        f"{t}: mean {_ms(e['fedavg-client-mean'], len(e['seeds']))}, worst "
        f"{_ms(e['fedavg-client-worst'], len(e['seeds']))}"
        for t, e in s["accuracy"].items()
    )
    return [
        *common.table(header, rows, align="ll" + "r" * 8),
        "",
        f"{common.ci_note(min(seeds))} {rounds}. Centralized LoRA trains as many epochs on the "
        "union of the clients' training rows as a client trains in the whole federated run; "
        "local-only trains each site alone for the same epochs; all start from the same "
        "initial adapters.",
        "",
        f"Clients' own test splits, last round (FedAvg's global model): {worst}.",
    ]


def communication_lines(s: dict) -> list[str]:
    rows = [
        [
            task,
            f"{e['full-model-bytes'] / 1024:.1f} KiB",
            f"{e['up-bytes-per-client-round'] / 1024:.1f} KiB",
            f"{e['up-ratio']:.2%}",
            f"{e['up-bytes-int8'] / 1024:.1f} KiB",
            f"{e['up-ratio-int8']:.2%}",
        ]
        for task, e in s["accuracy"].items()
    ]
    header = ["task", "full-model FedAvg", "LoRA adapters + head", "ratio", "int8 update", "ratio"]
    return common.table(header, rows)


def convergence_lines(task: str, c: dict) -> list[str]:
    fed, cen = c["fedavg"]["curve"], c["centralized"]
    epochs, curve = cen["epochs"], cen["curve"]
    best = max(curve)
    share = TARGETS["fed-over-central"]
    reach = _reach(fed, best, share)
    reached = f"at round {reach}" if reach is not None else f"not within {len(fed) - 1} rounds"
    shown = [e for e in epochs if e < len(fed)]
    return common.section(
        f"Longer run: {task}, seed {c['seed']}",
        [
            "FedAvg after each round vs centralized LoRA after the same number of epochs "
            "(each round every client trains one local epoch, so round k and epoch k cost "
            f"the same client compute). Centralized: {cen['method']}. Best centralized "
            f"{best:.3f}; FedAvg reaches {share:.0%} of it {reached}. Final: FedAvg "
            f"{fed[-1]:.3f} ({fed[-1] / best:.3f} of the best centralized)."
        ],
        common.table(
            ["round / epoch", *(str(e) for e in shown)],
            [
                ["FedAvg", *(f"{fed[e]:.3f}" for e in shown)],
                ["centralized", *(f"{v:.3f}" for e, v in zip(epochs, curve, strict=True) if e in shown)],
            ],
        ),
        level=3,
    )


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
    return common.section(
        "`flwr run` (Ray simulation)",
        [
            f"{r['num-supernodes']} SuperNodes, {r['rounds']} rounds, LoS: launch of `flwr run` "
            "to the start of round 1 (FAB build, SuperLink accepts the run, simulation and "
            f"ServerApp start, data load, round-0 evaluation) **{r['startup-s']:.1f} s** (run "
            f"accepted after {r['submit-s']:.1f} s); per round {_seconds(r['round-s'])} s (round "
            "1 also starts the Ray ClientApp actors); total "
            f"{r['total-s']:.1f} s. The in-process engine on the same config: rounds "
            f"{_seconds(r['engine-round-s'])} s, total {r['engine-total-s']:.1f} s; same final "
            f"metrics: {same}."
        ],
    )


def scale_lines(scale: dict) -> list[str]:
    rows = [
        [
            kind, str(e["clients"]), str(e["sampled-per-round"][0]), _seconds(e["round-s"]),
            f"{e['total-s']:.0f}", f"{e['peak-rss-bytes'] / GIB:.2f}",
            common.fmt(e["final"].get("accuracy")),
        ]
        for kind, e in scale.items()
    ]
    header = ["engine", "clients", "sampled / round", "round s", "total s",
              "peak RSS GiB (process tree)", "final accuracy"]
    return common.section("Scale: `large` preset", common.table(header, rows))


def markdown(s: dict) -> str:
    """The whole ``federated.md`` from the results JSON."""
    lines = [
        "# Federated LoRA benchmark",
        "",
        *common.provenance_lines(s["provenance"]),
        "",
        *common.section("Settings", settings_lines(s)),
        *common.section("Acceptance summary", acceptance_lines(s)),
        *common.section("Accuracy (global test set)", accuracy_lines(s)),
        *common.section(
            "Communication (uplink per client per round, `ArrayRecord.count_bytes()`)",
            communication_lines(s),
        ),
    ]
    for task, c in s.get("convergence", {}).items():
        lines += convergence_lines(task, c)
    if "overhead" in s:
        lines += overhead_lines(s["overhead"])
    if "ray" in s:
        lines += ray_lines(s["ray"])
    if "scale" in s:
        lines += scale_lines(s["scale"])
    return "\n".join(lines).rstrip() + "\n"
