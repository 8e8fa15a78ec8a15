"""Markdown of the privacy benchmark, generated from ``benchmarks/results/privacy.json``.

Every number below comes from that JSON (or from :data:`CLOSE`, the AUC margin the
summary uses); ``python benchmarks/privacy.py --render`` rewrites ``privacy.md``.
"""

from __future__ import annotations

import math

import common

CLOSE = 0.02
"""AUC margin to the no-DP run within which a DP run counts as "close" (LoS is
imbalanced: AUC, not accuracy, says whether the model separates the classes)."""
CHANCE_AUC = 0.5


def fmt(value, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits; ∞ for a missing or infinite epsilon."""
    if value is None:
        return "∞"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        if abs(value) >= 1000:
            return f"{value:.3g}"
        return f"{value:.{digits}g}"
    return str(value)


def _stages(results: dict) -> int | None:
    sa = results.get("secagg") or {}
    row = next(iter(sa.values()), None)
    return len(row["secagg-stages"]) if row else None


def summary_lines(results: dict) -> list[str]:
    """The headline findings, computed from the numbers below."""
    lines = []
    dp = results.get("dp")
    if dp:
        none = dp["runs"]["none"]
        private = [r for r in dp["runs"].values() if r.get("mode") != "none"]
        finite = [r for r in private if r.get("epsilon") is not None]
        close = [r for r in finite if r["auc"] >= none["auc"] - CLOSE]
        rounds = dp["config"]["num-server-rounds"]
        best = min(close, key=lambda r: r["epsilon"]) if close else None
        worst = min(finite, key=lambda r: r["epsilon"]) if finite else None
        if best is not None:
            lines.append(
                f"- **DP, {dp['clients']} base stations, every one every round:** staying within "
                f"{CLOSE} AUC of no-DP ({fmt(none['auc'])}) took z = "
                f"{fmt(best['noise-multiplier'])}, i.e. epsilon = {fmt(best['epsilon'], 3)} at "
                f"delta = {dp['config']['dp.delta']:g} after {rounds} rounds."
            )
        if worst is not None:
            verdict = " (below chance)" if worst["auc"] < CHANCE_AUC else ""
            lines.append(
                f"- The strongest setting tried, z = {fmt(worst['noise-multiplier'])} (epsilon = "
                f"{fmt(worst['epsilon'], 3)}), ends at AUC {fmt(worst['auc'])}{verdict}, "
                f"accuracy {fmt(worst['accuracy'])}. The noise std on the mean, z·C/n, shrinks "
                "only with more base stations per round (see the accounting table for what "
                "sampling buys)."
            )
    sa = results.get("secagg")
    if sa:
        row = sa.get("default") or next(iter(sa.values()))
        lines.append(
            f"- **SecAgg+ ({row['clients']} clients, in-process):** "
            f"{row['secagg-train-s-per-round'] / row['plain-train-s-per-round']:.2f}x the "
            f"training-phase time, {row['secagg-bytes-up'] / row['plain-bytes-up']:.1f}x the "
            f"upload (masked integers), "
            f"{row['secagg-bytes-down'] / row['plain-bytes-down']:.2f}x the download; the "
            "aggregate matches plain FedAvg within the quantization bound "
            f"({fmt(row['error-bound-last-round'], 2)} per parameter)."
        )
    dep = results.get("deployment")
    if dep:
        ratio = dep["secagg"]["train-s-per-round"] / dep["plain"]["train-s-per-round"]
        stages = _stages(results)
        lines.append(
            f"- **SecAgg+ on the deployment engine:** {ratio:.1f}x the training-phase time per "
            "round"
            + (f", from {stages} ClientApp process starts per round instead of one." if stages else ".")
        )
    return common.section("Summary", lines) if lines else []


def dp_lines(dp: dict) -> list[str]:
    cfg = dp["config"]
    rows = []
    runs = sorted(
        dp["runs"].items(),
        key=lambda kv: (kv[1].get("mode") != "none", kv[1].get("noise-multiplier") or 0.0),
    )
    for name, run in runs:
        private = run.get("mode") != "none"
        rows.append(
            [
                name,
                fmt(run["noise-multiplier"]) if private else "—",
                fmt(run.get("noise-stddev"), 3) if private else "—",
                ", ".join(fmt(e, 3) for e in run["epsilon-per-round"]) if private else "—",
                fmt(run["accuracy"]),
                fmt(run["auc"]),
                f"{run['wall-s']:.0f}",
            ]
        )
    none = dp["runs"]["none"]
    return common.section(
        "Accuracy vs epsilon (LoS, central DP with server-side fixed clipping)",
        [
            f"`{cfg['data.preset']}` preset, `{cfg['partition.scheme']}` split: {dp['clients']} "
            f"base stations, all sampled each round (q = 1), {cfg['num-server-rounds']} rounds "
            f"of {cfg['local-epochs']} local epoch(s), encoder `{cfg['model.pretrained']}` + "
            f"LoRA r = {cfg['lora.r']} on `{cfg['lora.targets']}` + head "
            f"({dp['adapter-parameters']} trained parameters), rows capped at "
            f"{cfg['data.max-train-rows']} train / {cfg['data.max-global-test-rows']} global "
            f"test. Clipping norm C = {dp['clipping-norm']:.4g} = median L2 norm of the "
            "clients' round-1 updates without DP. Noise std per parameter on the mean: "
            f"z·C/{dp['clients']}. epsilon at delta = {cfg['dp.delta']:g}, client-level (one "
            "base station = one unit), RDP accountant."
        ],
        common.table(
            ["run", "z", "noise std / param", "epsilon after each round", "final accuracy",
             "final AUC", "wall s"],
            rows,
            align="lrrlrrr",
        ),
        [
            "Accuracy before federated training (round 0, the shipped encoder and head): "
            f"{fmt(none['accuracy-per-round'][0])}; without DP the {cfg['num-server-rounds']} "
            f"rounds reach {fmt(none['accuracy'])}. A DP run that ends near the round-0 "
            "value gained nothing from federated training."
        ],
    )


def accounting_lines(acc: dict) -> list[str]:
    # JSON keys are sorted as text: order rows by (q descending, z) and rounds numerically
    rows = sorted(acc["table"].items(), key=lambda item: (-item[1]["q"], item[1]["z"]))
    horizons = sorted(rows[0][1]["epsilon"], key=int)
    qs = sorted({row["q"] for _, row in rows}, reverse=True)
    return common.section(
        "What a noise multiplier buys (accounting only)",
        [
            f"epsilon at delta = {acc['delta']:g} after R rounds, sampling rates q = "
            f"{', '.join(f'{q:g}' for q in qs)} (q = 1: every base station every round, as in "
            "this federation; q < 1: a larger federation sampling that share of its base "
            "stations per round, amplification by sampling). The noise std per parameter "
            "is z·C/n for n clients per round, so a federation with k times more base "
            "stations per round can afford a k times larger z at the same utility."
        ],
        common.table(
            ["sampling, z", *(f"R={r}" for r in horizons)],
            [[key, *(fmt(row["epsilon"][r], 3) for r in horizons)] for key, row in rows],
        ),
    )


def secagg_lines(sa: dict) -> list[str]:
    rows, stages = [], []
    for preset, row in sa.items():
        ratio = row["secagg-train-s-per-round"] / row["plain-train-s-per-round"]
        rows.append(
            [
                preset, str(row["clients"]), f"{row['plain-train-s-per-round']:.2f}",
                f"{row['secagg-train-s-per-round']:.2f}", f"{ratio:.2f}x",
                f"{row['plain-bytes-up'] / 1e3:.1f}", f"{row['secagg-bytes-up'] / 1e3:.1f}",
                f"{row['plain-bytes-down'] / 1e3:.1f}", f"{row['secagg-bytes-down'] / 1e3:.1f}",
                f"{row['max-adapter-difference-round-1']:.2g}",
                fmt(row["error-bound-last-round"], 2), f"{row['max-adapter-difference']:.2g}",
            ]
        )
        for stage, s in row["secagg-stages"].items():
            stages.append(
                [preset, stage, f"{s['bytes-down'] / 1e3:.1f}", f"{s['bytes-up'] / 1e3:.1f}",
                 f"{s['seconds']:.2f}"]
            )
    reps = {row["reps"] for row in sa.values()}
    return common.section(
        "SecAgg+ overhead vs plain FedAvg (in-process engine)",
        [
            f"Same config, {', '.join(map(str, sorted(reps)))} interleaved repetitions, "
            "medians. Bytes: every record of every message (arrays, configs, metrics) per "
            "client per round, training phase and SecAgg+ stages; evaluation disabled. "
            "Train s: wall time of the training phase per round (client training + protocol "
            "crypto, one process)."
        ],
        common.table(
            ["preset", "clients", "plain train s/round", "SecAgg+ train s/round", "ratio",
             "plain KB up", "SecAgg+ KB up", "plain KB down", "SecAgg+ KB down",
             "max abs Δ after round 1", "bound per round", "max abs Δ at the end"],
            rows,
        ),
        [
            "After round 1 (same inputs) SecAgg+ and plain FedAvg differ by the Δ of the "
            "round-1 column, to compare with the quantization bound. From round 2 on the "
            "clients train from slightly different global adapters and local training "
            "amplifies the difference.",
            "",
            "SecAgg+ stages (first SecAgg+ run, all rounds, all clients; the masked-vector "
            "stage includes the clients' local training):",
        ],
        common.table(["preset", "stage", "KB down", "KB up", "s"], stages, align="llrrr"),
    )


def deployment_lines(dep: dict, stages: int | None) -> list[str]:
    rows = [
        [
            label, f"{r['train-s-per-round']:.1f}", f"{r['wall-s']:.0f}",
            f"{r['bytes-up-per-client-round']:.0f}", fmt(r["accuracy"]),
        ]
        for label, r in (("plain FedAvg", dep["plain"]), ("SecAgg+", dep["secagg"]))
    ]
    per_round = f"{stages} train messages per round" if stages else "one message per stage"
    return common.section(
        "SecAgg+ overhead on the deployment engine",
        [
            f"SuperLink + {dep['clients']} SuperNodes on loopback (TLS + node auth), smoke "
            f"preset, {dep['rounds']} rounds, evaluation off. Each Flower message starts a "
            "`flwr-clientapp` process on the SuperNode (imports torch, loads the model), and "
            f"SecAgg+ sends {per_round} instead of one."
        ],
        common.table(
            ["", "train phase s/round", "run wall s", "bytes up per client-round (history)",
             "final accuracy"],
            rows,
        ),
        [
            "(history's plain bytes count arrays only; SecAgg+ rows count every record of "
            "all stages.)"
        ],
    )


def markdown(results: dict) -> str:
    """The whole ``privacy.md`` from the results JSON."""
    lines = [
        "# Privacy benchmark: central DP and SecAgg+",
        "",
        *common.provenance_lines(results["provenance"].values()),
        "",
        *summary_lines(results),
    ]
    if results.get("dp"):
        lines += dp_lines(results["dp"])
    if results.get("accounting"):
        lines += accounting_lines(results["accounting"])
    if results.get("secagg"):
        lines += secagg_lines(results["secagg"])
    if results.get("deployment"):
        lines += deployment_lines(results["deployment"], _stages(results))
    return "\n".join(lines).rstrip() + "\n"
