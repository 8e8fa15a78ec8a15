"""Privacy benchmark (issue 7): accuracy vs epsilon under central DP, and SecAgg+ overhead.

Parts (each resumable: finished runs are kept under ``--work`` and reused):

``dp``          LoS task, ``default`` preset, natural split (8 base stations, all
                sampled every round), in-process engine. A run without DP gives the
                reference and the clients' update norms; the clipping norm C is their
                median in round 1. Then server-side fixed clipping with C and several
                noise multipliers z (z = 0: clipping only). Final accuracy/AUC on the
                global test set against epsilon at delta (RDP accountant).
``secagg``      plain FedAvg vs SecAgg+ on the in-process engine (smoke: 3 clients;
                default: 8), same config, interleaved repetitions: wall time of the
                training phase per round, bytes per client per round (every record of
                every message, both directions), and the largest difference of the
                final adapters (quantization).
``deployment``  plain vs SecAgg+ over a real SuperLink + 2 SuperNodes (loopback, TLS +
                auth), smoke preset: where the time goes when every message starts a
                ClientApp process.
``accounting``  epsilon after 1/3/10/30/100 rounds for the noise multipliers above,
                with every client sampled (q = 1, as here) and with a larger
                federation sampling 10% per round (q = 0.1): what the same z buys.

Writes ``benchmarks/results/privacy.json`` and ``benchmarks/privacy.md``.

Usage::

    python benchmarks/privacy.py all                 # ~15-20 min on 2 busy cores
    python benchmarks/privacy.py dp --rounds 3
    python benchmarks/privacy.py report              # rebuild JSON + Markdown
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "bench-privacy"
NOISE = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
DELTA = 1e-5


def _pretrained() -> str:
    from rantune.simulations.federation.checks import pretrained_or_none

    return pretrained_or_none()


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _save(path: Path, payload: dict) -> None:
    from rantune.fileio import atomic_write_json

    atomic_write_json(path, payload)


# ------------------------------------------------------------------------------ dp


class NormRecorder:
    """The shipped ClientApp, recording the L2 norm of every train update it sends."""

    def __init__(self) -> None:
        from rantune.client.app import app

        self.app = app
        self.norms: dict[int, list[float]] = {}

    def __call__(self, message, context):
        import numpy as np

        from rantune.federated.messages import record_to_state

        reply = self.app(message, context)
        if message.metadata.message_type == "train" and not reply.has_error():
            sent = record_to_state(message.content["arrays"])
            got = record_to_state(reply.content["arrays"])
            norm = math.sqrt(sum(float(np.sum((got[k] - sent[k]) ** 2)) for k in sent))
            server_round = int(message.content["config"]["server-round"])
            self.norms.setdefault(server_round, []).append(norm)
        return reply


def _dp_base(args) -> dict:
    return {
        "data.preset": args.preset,
        "partition.scheme": "natural",
        "task": "los",
        "seed": args.seed,
        "num-server-rounds": args.rounds,
        "model.pretrained": args.pretrained,
        "local-epochs": 1,
        "data.max-train-rows": args.max_train_rows,
        "data.max-eval-rows": args.max_eval_rows,
        "data.max-global-test-rows": args.max_test_rows,
        "min-available-clients": 2,
        "fraction-evaluate": 0.0,
        "min-evaluate-clients": 0,
        "torch-threads": 1,
    }


def _summary(history: dict, wall: float) -> dict:
    final = history["final"]
    rounds = history["rounds"][1:]
    eps = [((r.get("train") or {}).get("metrics") or {}).get("dp-epsilon") for r in rounds]
    return {
        "accuracy": final.get("accuracy"),
        "auc": final.get("auc"),
        "f1": final.get("f1"),
        "loss": final.get("loss"),
        "accuracy-per-round": [r["server"].get("accuracy") for r in history["rounds"]],
        "epsilon-per-round": eps,
        "epsilon": eps[-1] if eps else None,
        "wall-s": wall,
    }


def run_dp(args) -> dict:
    from rantune.simulations.engine import run_simulation

    work = args.work / "dp"
    base = _dp_base(args)
    entries = {}
    ref_path = work / "reference.json"
    reference = _load(ref_path)
    if reference is None:
        recorder = NormRecorder()
        start = time.perf_counter()
        history = run_simulation({**base, "out-dir": str(work / "none")}, client_app=recorder)
        reference = {
            **_summary(history, time.perf_counter() - start),
            "clients": history["num-clients"],
            "update-norms": {str(k): v for k, v in recorder.norms.items()},
        }
        _save(ref_path, reference)
    norms = reference["update-norms"]["1"]
    clip = float(statistics.median(norms))
    entries["none"] = {"mode": "none", "noise-multiplier": None, **reference}
    for z in args.noise:
        name = f"server-fixed-z{z:g}"
        path = work / f"{name}.json"
        entry = _load(path)
        if entry is None:
            overrides = {
                **base,
                "dp.mode": "server-fixed",
                "dp.noise-multiplier": float(z),
                "dp.clipping-norm": clip,
                "dp.delta": DELTA,
                "dp.reproducible-noise": True,
                "out-dir": str(work / name),
            }
            print(f"[dp] {name} (C = {clip:.4g})", flush=True)
            start = time.perf_counter()
            history = run_simulation(overrides)
            last = history["rounds"][-1]["train"]["metrics"]
            entry = {
                "mode": "server-fixed",
                "noise-multiplier": float(z),
                "clipping-norm": clip,
                "noise-stddev": last.get("dp-noise-stddev"),
                **_summary(history, time.perf_counter() - start),
            }
            _save(path, entry)
        entries[name] = entry
    num_params = _num_adapter_params(base)
    return {
        "config": {**base, "dp.delta": DELTA},
        "clients": reference["clients"],
        "clipping-norm": clip,
        "update-norms-round-1": norms,
        "adapter-parameters": num_params,
        "runs": entries,
    }


def _num_adapter_params(base: dict) -> int:
    from rantune.federated import workload
    from rantune.simulations.engine import resolve_config

    state = workload.initial_global_state(resolve_config({**base, "out-dir": "/tmp/unused"}))
    return int(sum(v.numel() for v in state.values()))


# -------------------------------------------------------------------------- secagg


def _metered_server(store: list):
    """A ServerApp stand-in that counts every message's bytes (MeteringGrid) around
    the real ServerApp."""
    from rantune.server.app import app as server_app
    from rantune.server.secagg_metering import MeteringGrid

    def run(grid, context):
        meter = MeteringGrid(grid)
        store.append(meter)
        return server_app(meter, context)

    return run


def _secagg_once(args, preset: str, secure: bool, rep: int) -> dict:
    import numpy as np
    from safetensors.numpy import load_file

    from rantune.simulations.engine import run_simulation

    name = f"{preset}-{'secagg' if secure else 'plain'}-rep{rep}"
    path = args.work / "secagg" / f"{name}.json"
    cached = _load(path)
    if cached is not None:
        return cached
    out = args.work / "secagg" / name
    overrides = {
        "data.preset": preset,
        "partition.scheme": "natural",
        "task": "los",
        "num-server-rounds": args.secagg_rounds,
        "model.pretrained": args.pretrained,
        "fraction-evaluate": 0.0,
        "min-evaluate-clients": 0,
        "data.max-train-rows": args.max_train_rows,
        "data.max-global-test-rows": args.max_test_rows,
        "secagg.enabled": secure,
        "out-dir": str(out),
    }
    meters: list = []
    print(f"[secagg] {name}", flush=True)
    start = time.perf_counter()
    history = run_simulation(overrides, server_app=_metered_server(meters))
    wall = time.perf_counter() - start
    meter = meters[0]
    rounds = history["rounds"][1:]
    clients = history["num-clients"]
    n_rounds = len(rounds)
    up = sum(meter.up.values()) / (clients * n_rounds)
    down = sum(meter.down.values()) / (clients * n_rounds)
    adapter = load_file(str(out / "global_adapter.safetensors"))
    entry = {
        "preset": preset,
        "secagg": secure,
        "rep": rep,
        "clients": clients,
        "rounds": n_rounds,
        "wall-s": wall,
        "train-s-per-round": [r["phase-s"]["train"] for r in rounds],
        "bytes-up-per-client-round": up,
        "bytes-down-per-client-round": down,
        "stages": {k: dict(v) for k, v in meter.stages.items()},
        "final": history["final"],
        "adapter": {k: v.astype(np.float64).ravel().tolist() for k, v in adapter.items()},
        "error-bound": (rounds[-1]["train"].get("secagg") or {}).get("error-bound"),
    }
    _save(path, entry)
    return entry


def run_secagg(args) -> dict:
    import numpy as np
    from safetensors.numpy import load_file

    results = {}
    for preset in args.secagg_presets:
        runs = []
        for rep in range(args.reps):
            for secure in (False, True):
                runs.append(_secagg_once(args, preset, secure, rep))
        plain = [r for r in runs if not r["secagg"]]
        secure = [r for r in runs if r["secagg"]]

        def med(rs, key):
            return statistics.median(statistics.mean(r[key]) for r in rs)

        diffs = [
            max(
                float(np.max(np.abs(np.array(s["adapter"][k]) - np.array(p["adapter"][k]))))
                for k in p["adapter"]
            )
            for p, s in zip(plain, secure, strict=True)
        ]
        first_round = []
        for rep in range(args.reps):
            states = [
                load_file(
                    str(
                        args.work
                        / "secagg"
                        / f"{preset}-{kind}-rep{rep}"
                        / "checkpoints"
                        / "round_001.safetensors"
                    )
                )
                for kind in ("plain", "secagg")
            ]
            first_round.append(
                max(float(np.max(np.abs(states[0][k] - states[1][k]))) for k in states[0])
            )
        results[preset] = {
            "max-adapter-difference-round-1": max(first_round),
            "clients": plain[0]["clients"],
            "rounds": plain[0]["rounds"],
            "reps": args.reps,
            "plain-train-s-per-round": med(plain, "train-s-per-round"),
            "secagg-train-s-per-round": med(secure, "train-s-per-round"),
            "plain-bytes-up": statistics.median(r["bytes-up-per-client-round"] for r in plain),
            "secagg-bytes-up": statistics.median(r["bytes-up-per-client-round"] for r in secure),
            "plain-bytes-down": statistics.median(r["bytes-down-per-client-round"] for r in plain),
            "secagg-bytes-down": statistics.median(
                r["bytes-down-per-client-round"] for r in secure
            ),
            "secagg-stages": secure[0]["stages"],
            "plain-accuracy": plain[0]["final"].get("accuracy"),
            "secagg-accuracy": secure[0]["final"].get("accuracy"),
            "max-adapter-difference": max(diffs),
            "error-bound-last-round": secure[0]["error-bound"],
        }
    return results


# ---------------------------------------------------------------------- deployment


def run_deployment(args) -> dict:
    """Plain vs SecAgg+ over a real SuperLink + 2 SuperNodes (TLS + auth, loopback)."""
    from rantune.simulations.federation import launcher
    from rantune.simulations.federation.runner import start_run

    work = args.work / "deployment"
    cached = _load(work / "result.json")
    if cached is not None:
        return cached
    fed = launcher.up(
        launcher.LaunchConfig(
            out_dir=work / "federation",
            num_nodes=2,
            use_tls=True,
            use_auth=True,
            preset="smoke",
            name="bench-privacy",
            flwr_home=work / "flwr-home",
            timeout_s=180.0,
        )
    )
    result = {"clients": 2, "rounds": args.secagg_rounds}
    try:
        for secure in (False, True):
            name = "secagg" if secure else "plain"
            out = work / name
            config = {
                "data.preset": "smoke",
                "partition.scheme": "iid",
                "partition.num-clients": 2,
                "task": "los",
                "num-server-rounds": args.secagg_rounds,
                "model.pretrained": args.pretrained,
                "fraction-evaluate": 0.0,
                "min-evaluate-clients": 0,
                "secagg.enabled": secure,
                "out-dir": str(out),
            }
            print(f"[deployment] {name}", flush=True)
            start = time.perf_counter()
            with start_run(fed, config) as run:
                run.wait(1800)
            wall = time.perf_counter() - start
            history = _load(out / "history.json")
            if history is None or len(history["rounds"]) != args.secagg_rounds + 1:
                raise RuntimeError(f"deployment run {name} failed:\n{run.output[-3000:]}")
            rounds = history["rounds"][1:]
            result[name] = {
                "wall-s": wall,
                "train-s-per-round": statistics.mean(r["phase-s"]["train"] for r in rounds),
                "bytes-up-per-client-round": statistics.mean(
                    r["bytes"]["up-per-client"] for r in rounds
                ),
                "accuracy": history["final"].get("accuracy"),
            }
    finally:
        launcher.down(fed.out_dir)
    _save(work / "result.json", result)
    return result


# ---------------------------------------------------------------------- accounting


def run_accounting(args) -> dict:
    from rantune.federated.dp_accounting import RdpAccountant

    table = {}
    for q in (1.0, 0.1):
        for z in [z for z in args.noise if z > 0] + [3.0]:
            row = {}
            accountant = RdpAccountant()
            done = 0
            for rounds in (1, 3, 10, 30, 100):
                accountant.compose(z, q, rounds - done)
                done = rounds
                row[str(rounds)] = accountant.epsilon(DELTA)
            table[f"q={q:g} z={z:g}"] = {"q": q, "z": z, "epsilon": row}
    return {"delta": DELTA, "table": table}


# -------------------------------------------------------------------------- report


def _fmt(value, digits=4) -> str:
    if value is None:
        return "∞"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        if abs(value) >= 1000:
            return f"{value:.3g}"
        return f"{value:.{digits}g}"
    return str(value)


def write_report(results: dict) -> str:
    lines = [
        "# Privacy benchmark: central DP and SecAgg+",
        "",
        f"Machine: {results['machine']}. Generated {results['generated']} by "
        "`python benchmarks/privacy.py all`; raw numbers in `benchmarks/results/privacy.json`.",
        "",
    ]
    lines += _summary_lines(results)
    dp = results.get("dp")
    if dp:
        cfg = dp["config"]
        lines += [
            "## Accuracy vs epsilon (LoS, central DP with server-side fixed clipping)",
            "",
            f"`{cfg['data.preset']}` preset, natural split: {dp['clients']} base stations, all sampled each "
            f"round (q = 1), {cfg['num-server-rounds']} rounds of 1 local epoch, encoder "
            f"`{cfg['model.pretrained']}` + LoRA r=4 on q/v + head "
            f"({dp['adapter-parameters']} trained parameters), rows capped at "
            f"{cfg['data.max-train-rows']} train / {cfg['data.max-global-test-rows']} global test. "
            f"Clipping norm C = {dp['clipping-norm']:.4g} = median L2 norm of the clients' "
            f"round-1 updates without DP. Noise std per parameter on the mean: z·C/{dp['clients']}. "
            f"epsilon at delta = {cfg['dp.delta']:g}, client-level (one base station = one unit), "
            "RDP accountant.",
            "",
            "| run | z | noise std / param | epsilon after each round | final accuracy | final AUC | wall s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, run in dp["runs"].items():
            private = run.get("mode") != "none"
            eps = ", ".join(_fmt(e, 3) for e in run["epsilon-per-round"]) if private else "—"
            z = _fmt(run["noise-multiplier"]) if private else "—"
            std = _fmt(run.get("noise-stddev"), 3) if private else "—"
            lines.append(
                f"| {name} | {z} | {std} | {eps} | "
                f"{_fmt(run['accuracy'])} | {_fmt(run['auc'])} | {run['wall-s']:.0f} |"
            )
        none = dp["runs"]["none"]
        lines += [
            "",
            f"Accuracy before federated training (round 0, the shipped encoder and head): "
            f"{_fmt(none['accuracy-per-round'][0])}; without DP the {cfg['num-server-rounds']} "
            f"rounds reach {_fmt(none['accuracy'])}. A DP run that ends near the round-0 "
            "value gained nothing from federated training.",
            "",
        ]
    acc = results.get("accounting")
    if acc:
        lines += [
            "## What a noise multiplier buys (accounting only)",
            "",
            f"epsilon at delta = {acc['delta']:g} after R rounds. q = 1: every base station "
            "every round (this federation). q = 0.1: a federation sampling 10% of its base "
            "stations per round (amplification by sampling). The noise std per parameter is "
            "z·C/n for n clients per round, so a federation with 10-100x more base stations "
            "per round can afford a 10-100x larger z at the same utility.",
            "",
            "| sampling, z | R=1 | R=3 | R=10 | R=30 | R=100 |",
            "|---|---|---|---|---|---|",
        ]
        for key, row in acc["table"].items():
            e = row["epsilon"]
            lines.append(
                f"| {key} | "
                + " | ".join(_fmt(e[r], 3) for r in ("1", "3", "10", "30", "100"))
                + " |"
            )
        lines.append("")
    sa = results.get("secagg")
    if sa:
        lines += [
            "## SecAgg+ overhead vs plain FedAvg (in-process engine)",
            "",
            "Same config, interleaved repetitions, medians. Bytes: every record of every "
            "message (arrays, configs, metrics) per client per round, training phase and "
            "SecAgg+ stages; evaluation disabled. Train s: wall time of the training phase "
            "per round (client training + protocol crypto, one process).",
            "",
            "| preset | clients | plain train s/round | SecAgg+ train s/round | ratio | plain KB up | SecAgg+ KB up | plain KB down | SecAgg+ KB down | max abs Δ after round 1 | bound per round | max abs Δ at the end |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for preset, row in sa.items():
            ratio = row["secagg-train-s-per-round"] / row["plain-train-s-per-round"]
            lines.append(
                f"| {preset} | {row['clients']} | {row['plain-train-s-per-round']:.2f} | "
                f"{row['secagg-train-s-per-round']:.2f} | {ratio:.2f}x | "
                f"{row['plain-bytes-up'] / 1e3:.1f} | {row['secagg-bytes-up'] / 1e3:.1f} | "
                f"{row['plain-bytes-down'] / 1e3:.1f} | {row['secagg-bytes-down'] / 1e3:.1f} | "
                f"{row['max-adapter-difference-round-1']:.2g} | "
                f"{_fmt(row['error-bound-last-round'], 2)} | {row['max-adapter-difference']:.2g} |"
            )
        lines += [
            "",
            "After round 1 (same inputs) SecAgg+ and plain FedAvg differ by less than the "
            "quantization bound. From round 2 on the clients train from slightly different "
            "global adapters and local training amplifies the difference; it stays far below "
            "the adapters' scale and the final accuracy is the same.",
            "",
            "SecAgg+ stages (first SecAgg+ run, all rounds, all clients; the masked-vector "
            "stage includes the clients' local training):",
            "",
        ]
        lines += ["| preset | stage | KB down | KB up | s |", "|---|---|---|---|---|"]
        for preset, row in sa.items():
            for stage, s in row["secagg-stages"].items():
                lines.append(
                    f"| {preset} | {stage} | {s['bytes-down'] / 1e3:.1f} | "
                    f"{s['bytes-up'] / 1e3:.1f} | {s['seconds']:.2f} |"
                )
        lines.append("")
    dep = results.get("deployment")
    if dep:
        p, q = dep["plain"], dep["secagg"]
        lines += [
            "## SecAgg+ overhead on the deployment engine",
            "",
            f"SuperLink + {dep['clients']} SuperNodes on loopback (TLS + node auth), smoke "
            f"preset, {dep['rounds']} rounds, evaluation off. Each Flower message starts a "
            "`flwr-clientapp` process on the SuperNode (imports torch, loads the model), and "
            "SecAgg+ sends four train messages per round instead of one, so in deployment its "
            "cost is dominated by process start-up, not by cryptography.",
            "",
            "| | train phase s/round | run wall s | bytes up per client-round (history) | final accuracy |",
            "|---|---|---|---|---|",
            f"| plain FedAvg | {p['train-s-per-round']:.1f} | {p['wall-s']:.0f} | "
            f"{p['bytes-up-per-client-round']:.0f} | {_fmt(p['accuracy'])} |",
            f"| SecAgg+ | {q['train-s-per-round']:.1f} | {q['wall-s']:.0f} | "
            f"{q['bytes-up-per-client-round']:.0f} | {_fmt(q['accuracy'])} |",
            "",
            "(history's plain bytes count arrays only; SecAgg+ rows count every record of all "
            "four stages.)",
            "",
        ]
    lines += results.get("notes", [])
    return "\n".join(lines) + "\n"


def _summary_lines(results: dict) -> list[str]:
    """The headline findings, computed from the numbers below."""
    lines = ["## Summary", ""]
    dp = results.get("dp")
    if dp:
        none = dp["runs"]["none"]
        private = [r for r in dp["runs"].values() if r.get("mode") != "none"]
        finite = [r for r in private if r.get("epsilon") is not None]
        close = [r for r in finite if r["accuracy"] >= none["accuracy"] - 0.02]
        best = min(close, key=lambda r: r["epsilon"]) if close else None
        worst = min(finite, key=lambda r: r["epsilon"]) if finite else None
        rounds = dp["config"]["num-server-rounds"]
        if best is not None:
            lines.append(
                f"- **DP, {dp['clients']} base stations, every one every round:** staying within "
                f"0.02 accuracy of no-DP ({_fmt(none['accuracy'])}) took z = "
                f"{_fmt(best['noise-multiplier'])}, i.e. epsilon = {_fmt(best['epsilon'], 3)} at "
                f"delta = {dp['config']['dp.delta']:g} after {rounds} rounds: no meaningful "
                "guarantee."
            )
        if worst is not None:
            lines.append(
                f"- The strongest setting tried, z = {_fmt(worst['noise-multiplier'])} "
                f"(epsilon = {_fmt(worst['epsilon'], 3)}), ends at accuracy "
                f"{_fmt(worst['accuracy'])} (before training: {_fmt(none['accuracy-per-round'][0])}). "
                "The noise std on the mean, z·C/n, shrinks only with more base stations per "
                "round: client-level DP needs federations of hundreds of base stations "
                "(see the accounting table), or a looser unit (user-level DP inside each site)."
            )
    sa = results.get("secagg")
    if sa:
        row = sa.get("default") or next(iter(sa.values()))
        lines.append(
            f"- **SecAgg+ ({row['clients']} clients, in-process):** "
            f"{row['secagg-train-s-per-round'] / row['plain-train-s-per-round']:.2f}x the "
            f"training-phase time, {row['secagg-bytes-up'] / row['plain-bytes-up']:.1f}x the "
            f"upload (64-bit masked integers), {row['secagg-bytes-down'] / row['plain-bytes-down']:.2f}x "
            f"the download; the aggregate matches plain FedAvg within the quantization bound "
            f"({_fmt(row['error-bound-last-round'], 2)} per parameter), same final accuracy."
        )
    dep = results.get("deployment")
    if dep:
        ratio = dep["secagg"]["train-s-per-round"] / dep["plain"]["train-s-per-round"]
        lines.append(
            f"- **SecAgg+ on the deployment engine:** {ratio:.1f}x the training-phase time per "
            "round, from four ClientApp process starts per round instead of one."
        )
    return lines + [""] if len(lines) > 2 else []


def _machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load:.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "part", choices=("all", "dp", "secagg", "deployment", "accounting", "report")
    )
    parser.add_argument("--preset", default="default")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--noise", type=lambda s: [float(x) for x in s.split(",")], default=list(NOISE)
    )
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--max-train-rows", type=int, default=300)
    parser.add_argument("--max-eval-rows", type=int, default=200)
    parser.add_argument("--max-test-rows", type=int, default=1000)
    parser.add_argument(
        "--secagg-presets", type=lambda s: s.split(","), default=["smoke", "default"]
    )
    parser.add_argument("--secagg-rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args(argv)
    args.pretrained = args.pretrained or _pretrained()
    os.environ.setdefault("RANTUNE_CACHE", str(Path.home() / ".cache" / "rantune"))

    path = RESULTS / "privacy.json"
    results = _load(path) or {}
    if args.part in ("all", "accounting"):
        results["accounting"] = run_accounting(args)
    if args.part in ("all", "dp"):
        results["dp"] = run_dp(args)
    if args.part in ("all", "secagg"):
        results["secagg"] = run_secagg(args)
    if args.part in ("all", "deployment"):
        results["deployment"] = run_deployment(args)
    if args.part != "report" or "machine" not in results:
        results["machine"] = _machine()
        results["generated"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    RESULTS.mkdir(parents=True, exist_ok=True)
    _save(path, results)
    (ROOT / "benchmarks" / "privacy.md").write_text(write_report(results))
    print(f"wrote {path} and benchmarks/privacy.md")


if __name__ == "__main__":
    main()
