"""Federated LoRA benchmark (issue 4 acceptance) on the ``default`` preset.

Every run goes through the library's own entry points: federated runs through
:func:`rantune.simulations.engine.run_simulation` (or ``flwr run`` through
:func:`rantune.simulations.engine.flwr_cli.flwr_simulation`), centralized and
local-only references through :func:`rantune.compression.merge.train_centralized_run`
on the same run config. Timings come from outside the library (wall clock around
a call) or from ``history.json`` (``wall-time-s`` and ``phase-s`` per round).

Parts (each resumable: finished pieces are kept under ``--work`` and skipped):

``accuracy``     natural per-site split, LoS and beam, several seeds. Per (task, seed):
                 FedAvg, FedAvg with int8 update compression, centralized LoRA on the
                 pooled client training rows (rounds x local epochs epochs) and
                 local-only training of each site alone (same epochs), all from the
                 same initial adapters; metrics on the global test set (local-only
                 also on each site's own test rows).
``convergence``  a longer FedAvg run (resumed from the accuracy run) next to
                 centralized runs of 1, 2, 4, ... epochs.
``overhead``     where the in-process engine's wall time goes: the train / evaluate /
                 server-evaluate phases of each round (``phase-s``) vs the rest
                 (set-up, round 0, checkpoints, history).
``ray``          ``flwr run .`` (Ray simulation): start-up and per-round wall time, next
                 to the in-process engine on the same config.
``scale``        the ``large`` preset (64 clients, a fraction per round); peak memory.

Writes ``benchmarks/results/federated.json`` and ``federated.md``.

Usage::

    python benchmarks/federated.py all --workers 2          # everything (hours)
    python benchmarks/federated.py accuracy --rounds 4 --seeds 0,1,2
    python benchmarks/federated.py report                   # JSON + Markdown from --work
    python benchmarks/federated.py --render                 # Markdown from the committed JSON
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import resource
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import common
from federated_report import PHASES, markdown

NAME = "federated"
WORK = common.ROOT / "runs" / "bench-federated"
PARTS = ("accuracy", "convergence", "overhead", "ray", "scale")
# The run-config keys that describe an accuracy run in the report.
CONFIG_KEYS = (
    "data.preset", "partition.scheme", "model.pretrained", "model.head", "lora.r",
    "lora.alpha", "lora.targets", "strategy.name", "fraction-train", "local-epochs",
    "batch-size", "lr",
)


def _quiet() -> None:
    logging.getLogger("flwr").setLevel(logging.WARNING)


def _base(args, task: str, seed: int, **extra) -> dict:
    """Flat run-config overrides of one run of this benchmark."""
    return {
        "data.preset": args.preset,
        "partition.scheme": "natural",
        "task": task,
        "seed": seed,
        "num-server-rounds": args.rounds,
        "model.pretrained": args.pretrained,
        "min-available-clients": 2,
        **extra,
    }


def _train_settings(flat: dict, epochs: int, seed: int):
    """The optimisation settings of a federated client, for ``epochs`` epochs."""
    from rantune.training import TrainSettings

    return TrainSettings(
        epochs=epochs,
        batch_size=int(flat["batch-size"]),
        lr=float(flat["lr"]),
        weight_decay=float(flat["weight-decay"]),
        max_grad_norm=float(flat["max-grad-norm"]),
        seed=seed,
    )


def _save_part(path: Path, payload: dict) -> None:
    common.save_json(path, {**payload, "provenance": common.provenance()})


# ----------------------------------------------------------------- accuracy
def fl_summary(history: dict) -> dict:
    """Final metrics, curve, bytes and round time of one federated run's history."""
    primary = history["primary-metric"]
    last = history["rounds"][-1]
    rounds = [r for r in history["rounds"] if r["round"] > 0]
    return {
        "global": last["server"],
        "curve": [r["server"][primary] for r in history["rounds"]],
        "client-mean": last["evaluate"].get("mean", {}).get(primary),
        "client-worst": last["evaluate"].get("worst", {}).get(primary),
        "up-per-client-round": statistics.mean(r["bytes"]["up-per-client"] for r in rounds),
        "down-per-client-round": statistics.mean(r["bytes"]["down-per-client"] for r in rounds),
        "full-model-bytes": history["full-model-bytes"],
        "up-ratio": statistics.mean(r["bytes"]["up-ratio"] for r in rounds),
        "round-s": statistics.mean(r["wall-time-s"] for r in rounds),
    }


def references(work: Path, flat: dict, epochs: int, num_clients: int) -> dict:
    """Centralized LoRA on every client's training rows and local-only per client."""
    from rantune.compression.merge import train_centralized_run
    from rantune.tasks import get_task

    overrides = {k: v for k, v in flat.items() if k != "out-dir"}
    settings = _train_settings(flat, epochs, int(flat["seed"]))
    start = time.perf_counter()
    central = train_centralized_run(work / "central", overrides, settings)["test"]
    central_s = time.perf_counter() - start
    local = {}
    for c in range(num_clients):
        summary = train_centralized_run(work / f"local-{c}", overrides, settings, clients=[c])
        local[str(c)] = {"global-test": summary["test"], "own-test": summary["own-test"]}
    primary = get_task(flat["task"]).primary_metric
    return {
        "centralized": central,
        "centralized-s": central_s,
        "local": local,
        "local-mean-global-test": statistics.mean(v["global-test"][primary] for v in local.values()),
        "local-mean-own-test": statistics.mean(v["own-test"][primary] for v in local.values()),
    }


def accuracy_unit(args, task: str, seed: int) -> dict:
    """One (task, seed): FedAvg, FedAvg + int8, centralized, local-only."""
    from rantune.simulations.engine import run_simulation

    _quiet()
    out: dict = {}
    for name, extra in (("fedavg", {}), ("fedavg-int8", {"update-compression.method": "int8"})):
        run_dir = args.work / f"{task}-s{seed}-{name}"
        history = run_simulation(_base(args, task, seed, **extra, **{"out-dir": str(run_dir)}))
        out[name] = fl_summary(history)
    flat = common.run_flat_config(args.work / f"{task}-s{seed}-fedavg")
    out["config"] = {k: flat[k] for k in CONFIG_KEYS}
    epochs = args.rounds * int(flat["local-epochs"])
    out.update(references(args.work / f"{task}-s{seed}-ref", flat, epochs, history["num-clients"]))
    return out


def run_accuracy(args) -> None:
    units = [(t, s) for t in args.tasks for s in args.seeds]
    todo = [(t, s) for t, s in units if common.load_json(args.work / f"acc-{t}-s{s}.json") is None]
    print(f"accuracy: {len(units) - len(todo)} done, {len(todo)} to run", flush=True)

    def finish(t: str, s: int, result: dict) -> None:
        payload = {"task": t, "seed": s, "rounds": args.rounds, **result}
        _save_part(args.work / f"acc-{t}-s{s}.json", payload)
        print(f"accuracy {t} seed {s} done", flush=True)

    if args.workers <= 1:
        for t, s in todo:
            finish(t, s, accuracy_unit(args, t, s))
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures = {pool.submit(accuracy_unit, args, t, s): (t, s) for t, s in todo}
        for future, (t, s) in futures.items():
            finish(t, s, future.result())


# -------------------------------------------------------------- convergence
def run_convergence(args) -> None:
    """A longer FedAvg run next to centralized runs of ``--central-epochs`` epochs."""
    from rantune.compression.merge import train_centralized_run
    from rantune.simulations.engine import run_simulation

    _quiet()
    for task in args.long_tasks:
        seed = args.seeds[0]
        path = args.work / f"convergence-{task}-s{seed}.json"
        if common.load_json(path):
            print(f"convergence {task}: done", flush=True)
            continue
        short, long = args.work / f"{task}-s{seed}-fedavg", args.work / f"{task}-s{seed}-long"
        if not long.exists() and short.exists():
            shutil.copytree(short, long)  # resume from the accuracy run's last round
        overrides = {"num-server-rounds": args.long_rounds, "out-dir": str(long)}
        history = run_simulation(_base(args, task, seed, **overrides))
        flat = {k: v for k, v in common.run_flat_config(long).items() if k != "out-dir"}
        central = []
        for epochs in args.central_epochs:
            settings = _train_settings(flat, epochs * int(flat["local-epochs"]), seed)
            run_dir = args.work / f"{task}-s{seed}-central-e{epochs}"
            central.append(train_centralized_run(run_dir, flat, settings)["test"])
        primary = history["primary-metric"]
        _save_part(
            path,
            {
                "task": task,
                "seed": seed,
                "rounds": args.long_rounds,
                "fedavg": {"curve": [r["server"][primary] for r in history["rounds"]]},
                "centralized": {
                    "method": "a separate run from the initial adapters per epoch count",
                    "epochs": list(args.central_epochs),
                    "curve": [m[primary] for m in central],
                },
            },
        )
        print(f"convergence {task}: done", flush=True)


# ----------------------------------------------------------------- overhead
def run_overhead(args) -> None:
    """Engine wall time split into the rounds' phases (``history.json``) and the rest."""
    from rantune.simulations.engine import run_simulation

    _quiet()
    path = args.work / "overhead.json"
    if common.load_json(path):
        print("overhead: done", flush=True)
        return
    out_dir = args.work / "overhead-engine"
    config = _base(args, "los", 0, **{"out-dir": str(out_dir)})
    warm = {**config, "num-server-rounds": 1, "out-dir": str(out_dir) + "-warm"}
    shutil.rmtree(warm["out-dir"], ignore_errors=True)
    run_simulation(warm)  # data, model and import caches of this process
    config["num-server-rounds"] = args.overhead_rounds
    repeats = []
    for _ in range(args.overhead_repeats):
        shutil.rmtree(out_dir, ignore_errors=True)
        t0, c0 = time.perf_counter(), time.process_time()
        history = run_simulation(config)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        rounds = [r for r in history["rounds"] if r["round"] > 0]
        phases = {k: sum(r["phase-s"][k] for r in rounds) for k in PHASES}
        repeats.append(
            {
                "total-s": total,
                "cpu-s": cpu,
                "round-0-s": history["rounds"][0]["wall-time-s"],
                "rounds-s": sum(r["wall-time-s"] for r in rounds),
                "phase-s": phases,
            }
        )
        print(f"overhead: {total:.1f} s, phases {sum(phases.values()):.1f} s", flush=True)
    _save_part(path, {"rounds": args.overhead_rounds, "task": "los", "repeats": repeats})


# ---------------------------------------------------------------------- ray
def run_ray(args) -> None:
    from rantune.simulations.engine import run_simulation
    from rantune.simulations.engine.flwr_cli import flwr_simulation

    path = args.work / "ray.json"
    if common.load_json(path):
        print("ray: done", flush=True)
        return
    out_dir, engine_dir = args.work / "ray-run", args.work / "ray-engine"
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(engine_dir, ignore_errors=True)
    config = _base(args, "los", 0, **{"num-server-rounds": args.ray_rounds, "out-dir": str(out_dir)})
    _quiet()
    # the in-process engine on the same config first: it also tells the number of clients
    t0 = time.perf_counter()
    engine = run_simulation({**config, "out-dir": str(engine_dir)})
    engine_total = time.perf_counter() - t0
    n = engine["num-clients"]
    with flwr_simulation() as sim:
        launched = time.time()
        result = sim.run(config, num_supernodes=n, timeout=args.timeout)
    if result.returncode != 0:
        raise RuntimeError(f"flwr run failed:\n{result.output[-3000:]}")
    history = common.load_json(out_dir / "history.json")
    rounds = [r for r in history["rounds"] if r["round"] > 0]
    _save_part(
        path,
        {
            "engine-total-s": engine_total,
            "engine-round-s": [r["wall-time-s"] for r in engine["rounds"] if r["round"] > 0],
            "engine-final": engine["final"],
            "rounds": args.ray_rounds,
            "num-supernodes": n,
            "total-s": result.total_s,
            "submit-s": result.submitted_s,
            "startup-s": rounds[0]["started-at"] - launched,
            "round-s": [r["wall-time-s"] for r in rounds],
            "final": history["final"],
        },
    )
    print(f"ray: rounds {[round(r['wall-time-s'], 1) for r in rounds]} s", flush=True)


# -------------------------------------------------------------------- scale
def _scale_entry(history: dict, total: float, peak: int) -> dict:
    rounds = [r for r in history["rounds"] if r["round"] > 0]
    return {
        "clients": history["num-clients"],
        "sampled-per-round": [len(r["train"]["sampled"]) for r in rounds],
        "total-s": total,
        "round-s": [r["wall-time-s"] for r in rounds],
        "peak-rss-bytes": peak,
        "final": history["final"],
    }


def run_scale(args) -> None:
    from rantune.simulations.engine import run_simulation
    from rantune.simulations.engine.flwr_cli import flwr_simulation

    _quiet()
    path = args.work / "scale.json"
    result = common.load_json(path) or {}
    result.pop("provenance", None)
    extra = {
        "data.preset": "large",
        "fraction-train": args.scale_fraction,
        "fraction-evaluate": args.scale_fraction,
        "num-server-rounds": args.scale_rounds,
    }
    if "engine" not in result:
        out_dir = args.work / "scale-engine"
        shutil.rmtree(out_dir, ignore_errors=True)
        with common.PeakSampler(os.getpid()) as sampler:
            t0 = time.perf_counter()
            history = run_simulation(_base(args, "los", 0, **extra, **{"out-dir": str(out_dir)}))
            total = time.perf_counter() - t0
        result["engine"] = _scale_entry(history, total, sampler.peak)
        result["engine"]["ru-maxrss-bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        _save_part(path, result)
    if args.scale_ray and "ray" not in result:
        out_dir = args.work / "scale-ray"
        shutil.rmtree(out_dir, ignore_errors=True)
        config = _base(args, "los", 0, **extra, **{"out-dir": str(out_dir)})
        clients = result["engine"]["clients"]
        with flwr_simulation() as sim, common.PeakSampler(os.getpid()) as sampler:
            res = sim.run(config, num_supernodes=clients, timeout=args.timeout)
        if res.returncode != 0:
            raise RuntimeError(f"flwr run (large) failed:\n{res.output[-3000:]}")
        history = common.load_json(out_dir / "history.json")
        result["ray"] = _scale_entry(history, res.total_s, sampler.peak)
        _save_part(path, result)


# ------------------------------------------------------------------- report
def _mean_std(values: list[float | None]) -> list[float]:
    values = [v for v in values if v is not None]
    if not values:
        return [float("nan"), float("nan")]
    return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def task_entry(rows: list[dict]) -> dict:
    """Per-task aggregate over the seeds' accuracy units (``[mean, sample std]`` pairs)."""
    from rantune.tasks import get_task

    primary = get_task(rows[0]["task"]).primary_metric
    fed = [u["fedavg"]["global"][primary] for u in rows]
    q8 = [u["fedavg-int8"]["global"][primary] for u in rows]
    cen = [u["centralized"][primary] for u in rows]
    loc = [u["local-mean-global-test"] for u in rows]
    first = rows[0]
    return {
        "metric": primary,
        "seeds": [u["seed"] for u in rows],
        "rounds": first["rounds"],
        "config": first["config"],
        "fedavg": _mean_std(fed),
        "fedavg-int8": _mean_std(q8),
        "centralized": _mean_std(cen),
        "local-only-global-test": _mean_std(loc),
        "local-only-own-test": _mean_std([u["local-mean-own-test"] for u in rows]),
        "fedavg-client-mean": _mean_std([u["fedavg"]["client-mean"] for u in rows]),
        "fedavg-client-worst": _mean_std([u["fedavg"]["client-worst"] for u in rows]),
        "fed-over-central": statistics.mean(f / c for f, c in zip(fed, cen, strict=True)),
        "int8-minus-fedavg-points": 100 * statistics.mean(q - f for q, f in zip(q8, fed, strict=True)),
        "fed-minus-local-points": 100 * statistics.mean(f - lo for f, lo in zip(fed, loc, strict=True)),
        "up-bytes-per-client-round": first["fedavg"]["up-per-client-round"],
        "up-bytes-int8": first["fedavg-int8"]["up-per-client-round"],
        "full-model-bytes": first["fedavg"]["full-model-bytes"],
        "up-ratio": first["fedavg"]["up-ratio"],
        "up-ratio-int8": first["fedavg-int8"]["up-ratio"],
        "fedavg-round-s": statistics.mean(u["fedavg"]["round-s"] for u in rows),
        "curves": {str(u["seed"]): u["fedavg"]["curve"] for u in rows},
    }


def report(args) -> dict:
    """Collect the finished parts under ``--work`` into the results JSON and Markdown."""
    units = [common.load_json(p) for p in sorted(args.work.glob("acc-*.json"))]
    units = [u for u in units if u]
    parts = [*units]
    summary: dict = {"preset": args.preset, "pretrained": args.pretrained, "accuracy": {}}
    for task in sorted({u["task"] for u in units}):
        summary["accuracy"][task] = task_entry([u for u in units if u["task"] == task])
    for path in sorted(args.work.glob("convergence-*.json")):
        loaded = common.load_json(path)
        parts.append(loaded)
        summary.setdefault("convergence", {})[loaded["task"]] = loaded
    for part in ("overhead", "ray", "scale"):
        loaded = common.load_json(args.work / f"{part}.json")
        if loaded:
            parts.append(loaded)
            summary[part] = loaded
    provenance = []
    for p in parts:
        record = p.pop("provenance", None)
        key = record and (record["command"], record["commit"], record["dirty"])
        if record and key not in {(r["command"], r["commit"], r["dirty"]) for r in provenance}:
            provenance.append(record)
    summary["provenance"] = provenance
    common.save_json(args.out / f"{NAME}.json", summary)
    common.save_text(args.out / f"{NAME}.md", markdown(summary))
    print(f"wrote {args.out / NAME}.json and .md", flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", nargs="?", choices=["all", *PARTS, "report"])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--tasks", default="los,beam")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--long-rounds", type=int, default=16)
    parser.add_argument("--long-tasks", default="beam")
    parser.add_argument("--central-epochs", default="1,2,4,8,16")
    parser.add_argument("--overhead-rounds", type=int, default=2)
    parser.add_argument("--overhead-repeats", type=int, default=3)
    parser.add_argument("--ray-rounds", type=int, default=2)
    parser.add_argument("--scale-rounds", type=int, default=3)
    parser.add_argument("--scale-fraction", type=float, default=0.25)
    parser.add_argument("--scale-ray", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600.0)
    common.add_common_flags(parser, WORK)
    args = common.parse_args(parser, argv, NAME, markdown, part_required=True)
    if args is None:
        return
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.long_tasks = [t for t in args.long_tasks.split(",") if t]
    args.central_epochs = [int(e) for e in args.central_epochs.split(",") if e]
    args.work = args.work / args.pretrained
    args.work.mkdir(parents=True, exist_ok=True)
    for step in PARTS if args.part == "all" else [args.part]:
        if step != "report":
            globals()[f"run_{step}"](args)
    report(args)


if __name__ == "__main__":
    main()
