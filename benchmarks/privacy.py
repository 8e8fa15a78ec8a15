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
``deployment``  plain vs SecAgg+ over a real SuperLink + 3 SuperNodes (loopback, TLS +
                auth), smoke preset (one node per station, each with its own data): where the time goes when every message starts a
                ClientApp process.
``accounting``  epsilon after 1/3/10/30/100 rounds for the noise multipliers above,
                with every client sampled (q = 1, as here) and with a larger
                federation sampling 10% per round (q = 0.1): what the same z buys.

Writes ``benchmarks/results/privacy.json`` and ``privacy.md`` (generated from the JSON;
``--render`` rewrites the Markdown without measuring).

Usage::

    python benchmarks/privacy.py all                 # ~15-20 min on 2 busy cores
    python benchmarks/privacy.py dp --rounds 3
    python benchmarks/privacy.py report              # Markdown from the JSON
    python benchmarks/privacy.py --render            # the same
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import common
from privacy_report import markdown

NAME = "privacy"
WORK = common.ROOT / "runs" / "bench-privacy"
NOISE = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
DELTA = 1e-5
# Run-config keys of the DP runs named in the report (read back from the run directory).
REPORTED_KEYS = ("lora.r", "lora.alpha", "lora.targets", "model.head")


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
    reference = common.load_json(ref_path)
    if reference is None:
        recorder = NormRecorder()
        start = time.perf_counter()
        history = run_simulation({**base, "out-dir": str(work / "none")}, client_app=recorder)
        reference = {
            **_summary(history, time.perf_counter() - start),
            "clients": history["num-clients"],
            "update-norms": {str(k): v for k, v in recorder.norms.items()},
        }
        common.save_json(ref_path, reference)
    norms = reference["update-norms"]["1"]
    clip = float(statistics.median(norms))
    entries["none"] = {"mode": "none", "noise-multiplier": None, **reference}
    for z in args.noise:
        name = f"server-fixed-z{z:g}"
        path = work / f"{name}.json"
        entry = common.load_json(path)
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
            common.save_json(path, entry)
        entries[name] = entry
    flat = common.run_flat_config(work / "none")
    return {
        "config": {**base, "dp.delta": DELTA, **{k: flat[k] for k in REPORTED_KEYS}},
        "clients": reference["clients"],
        "clipping-norm": clip,
        "update-norms-round-1": norms,
        "adapter-parameters": _num_parameters(work / "none" / "global_adapter.safetensors"),
        "runs": entries,
    }


def _num_parameters(adapter: Path) -> int:
    """Trained parameters of a run: the tensors of its global adapter file."""
    from safetensors.numpy import load_file

    return int(sum(v.size for v in load_file(str(adapter)).values()))


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
    cached = common.load_json(path)
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
    common.save_json(path, entry)
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
    """Plain vs SecAgg+ over a real SuperLink + one SuperNode per smoke station (TLS +
    auth, loopback; each node holds only its own station's data)."""
    from rantune.presets import load_preset
    from rantune.simulations.federation import launcher
    from rantune.simulations.federation.runner import start_run

    work = args.work / "deployment"
    cached = common.load_json(work / "result.json")
    if cached is not None:
        return cached
    stations = len(load_preset("smoke").sites)  # one SuperNode per base station
    fed = launcher.up(
        launcher.LaunchConfig(
            out_dir=work / "federation",
            num_nodes=stations,
            use_tls=True,
            use_auth=True,
            preset="smoke",
            name="bench-privacy",
            flwr_home=work / "flwr-home",
            timeout_s=180.0,
        )
    )
    result = {"clients": stations, "rounds": args.secagg_rounds}
    try:
        for secure in (False, True):
            name = "secagg" if secure else "plain"
            out = work / name
            config = {
                "data.preset": "smoke",
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
            history = common.load_json(out / "history.json")
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
    common.save_json(work / "result.json", result)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "part", nargs="?", choices=("all", "dp", "secagg", "deployment", "accounting", "report")
    )
    parser.add_argument("--preset", default="default")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--noise", type=lambda s: [float(x) for x in s.split(",")], default=list(NOISE)
    )
    parser.add_argument("--max-train-rows", type=int, default=300)
    parser.add_argument("--max-eval-rows", type=int, default=200)
    parser.add_argument("--max-test-rows", type=int, default=1000)
    parser.add_argument(
        "--secagg-presets", type=lambda s: s.split(","), default=["smoke", "default"]
    )
    parser.add_argument("--secagg-rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2)
    common.add_common_flags(parser, WORK)
    args = common.parse_args(parser, argv, NAME, markdown, part_required=True)
    if args is None:
        return
    os.environ.setdefault("RANTUNE_CACHE", str(Path.home() / ".cache" / "rantune"))

    path = args.out / f"{NAME}.json"
    results = common.load_json(path) or {}
    parts = {
        "accounting": run_accounting,
        "dp": run_dp,
        "secagg": run_secagg,
        "deployment": run_deployment,
    }
    # one record per part (older records of parts that no longer exist are dropped)
    provenance = {k: v for k, v in results.get("provenance", {}).items() if k in parts}
    results["provenance"] = provenance
    for part, run in parts.items():
        if args.part in ("all", part):
            started = common.provenance(argv)  # the code that runs, before its output lands
            results[part] = run(args)
            provenance[part] = started
            common.save_json(path, results)
    common.save_json(path, results)
    common.save_text(args.out / f"{NAME}.md", markdown(results))
    print(f"wrote {path} and {NAME}.md", flush=True)


if __name__ == "__main__":
    main()
