"""Federated LoRA benchmark (issue 13): FedAvg vs centralized vs local-only vs classical.

The ``default`` preset's natural split (one client per base station). ``beam-spatial``
runs on all eight stations (4 Sionna RT + 4 TR 38.901); ``positioning`` on the four
ray-traced ones only, through ``benchmarks/presets/default-rt.toml`` (the same site
blocks, so the same cached channels and per-station splits): positioning has no target
on a TR 38.901 row, and a run selects stations only through its preset.

Every run goes through the library's own entry points: FedAvg through
:func:`rantune.simulations.engine.run_simulation` (or ``flwr run`` through
:func:`rantune.simulations.engine.flwr_cli.flwr_simulation`), centralized and local-only
references through :func:`rantune.compression.merge.train_centralized_run` on the same
run config, the classical baselines through ``Task.baseline`` on the same test rows.

Parts (each resumable: every finished piece is kept under ``--work`` and skipped):

``accuracy``     per (task, seed, method): FedAvg (R rounds x E local epochs, every client
                 every round); centralized LoRA on the pooled client training rows
                 (R x E epochs); local-only LoRA (each station alone, R x E epochs); the
                 baselines. All learned runs start from the same initial adapters (the run
                 seed). The seed is also the partition seed: it varies every station's
                 split. Scored on the global test rows and on each station's own test rows.
``convergence``  one longer FedAvg run per task (first seed): the curve that shows where
                 FedAvg flattens (how R was chosen).
``overhead``     where the in-process engine's wall time goes (``phase-s`` of each round).
``ray``          ``flwr run .`` (Ray simulation) next to the in-process engine, same config.

The ``scale`` part moved to ``benchmarks/scale.py`` (issue 14).

Usage::

    # the committed results (about an hour on the shared 2-core machine):
    python benchmarks/federated.py convergence --long-rounds 16
    python benchmarks/federated.py accuracy --tasks beam-spatial --rounds 8 --workers 1
    python benchmarks/federated.py accuracy --tasks positioning --rounds 12 --workers 1
    python benchmarks/federated.py overhead --tasks beam-spatial
    python benchmarks/federated.py ray --tasks beam-spatial
    python benchmarks/federated.py report                   # JSON + Markdown from --work
    python benchmarks/federated.py --render                 # Markdown from the committed JSON
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import common
import numpy as np
from federated_report import PHASES, markdown
from federated_summary import summarize

NAME = "federated"
WORK = common.ROOT / "runs" / "bench-federated"
PARTS = ("accuracy", "convergence", "overhead", "ray")
RT_PRESET = common.ROOT / "benchmarks" / "presets" / "default-rt.toml"
RT_TASKS = ("positioning",)
"""Tasks that run on the ray-traced stations only (``--rt-preset``)."""
HEAD = "token-mlp"
"""Task head of every run: the tasks' own default head (as ``benchmarks/tasks.py``)."""
CONFIG_KEYS = (
    "data.preset", "partition.scheme", "model.pretrained", "model.head", "lora.r",
    "lora.alpha", "lora.targets", "strategy.name", "fraction-train", "local-epochs",
    "batch-size", "lr",
)
"""The run-config keys that describe an accuracy run in the report."""


def _quiet() -> None:
    logging.getLogger("flwr").setLevel(logging.WARNING)


def task_preset(args, task: str) -> str:
    """``--rt-preset`` for the ray-traced-only tasks, ``--preset`` for the others."""
    return args.rt_preset if task in RT_TASKS else args.preset


def _base(args, task: str, seed: int, **extra) -> dict:
    """Flat run-config overrides of one run of this benchmark (seed = run and split seed)."""
    return {
        "data.preset": task_preset(args, task),
        "partition.scheme": "natural",
        "partition.seed": seed,
        "task": task,
        "seed": seed,
        "num-server-rounds": args.rounds,
        "local-epochs": args.local_epochs,
        "model.pretrained": args.pretrained,
        "model.head": HEAD,
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


_PROVENANCE: dict = {}
"""``common.provenance()`` recorded when this run started (:func:`main`)."""


def _save_piece(path: Path, payload: dict) -> None:
    common.save_json(path, {**payload, "provenance": _PROVENANCE or common.provenance()})


def _overrides(flat: dict) -> dict:
    return {k: v for k, v in flat.items() if k != "out-dir"}


# ----------------------------------------------------------------- accuracy
def fl_summary(history: dict) -> dict:
    """Final metrics, curves, per-client metrics, bytes and round time of one FedAvg run."""
    primary = history["primary-metric"]
    last = history["rounds"][-1]
    rounds = [r for r in history["rounds"] if r["round"] > 0]
    return {
        "global": last["server"],
        "curve": [r["server"][primary] for r in history["rounds"]],
        "client-mean-curve": [r["evaluate"]["mean"].get(primary) for r in rounds],
        "clients": {c: e["evaluate"] for c, e in last["clients"].items() if "evaluate" in e},
        "up-per-client-round": statistics.mean(r["bytes"]["up-per-client"] for r in rounds),
        "down-per-client-round": statistics.mean(r["bytes"]["down-per-client"] for r in rounds),
        "full-model-bytes": history["full-model-bytes"],
        "up-ratio": statistics.mean(r["bytes"]["up-ratio"] for r in rounds),
        "round-s": statistics.mean(r["wall-time-s"] for r in rounds),
    }


def per_client_test(run_dir: Path, num_clients: int) -> dict[str, dict]:
    """Metrics of a trained run directory's model on each client's own test rows."""
    from rantune.compression.data import pooled_split
    from rantune.compression.merge import load_run
    from rantune.federated.splits import FederatedData
    from rantune.training import evaluate

    run = load_run(run_dir)
    data = FederatedData.load(run.config.data, run.config.partition)
    return {
        str(c): evaluate(run.model, run.task, *pooled_split(run.config, "test", clients=[c], data=data))
        for c in range(num_clients)
    }


def centralized(work: Path, flat: dict, epochs: int, num_clients: int) -> dict:
    """Centralized LoRA on every client's training rows pooled, scored globally and per client."""
    from rantune.compression.merge import train_centralized_run

    settings = _train_settings(flat, epochs, int(flat["seed"]))
    start = time.perf_counter()
    summary = train_centralized_run(work / "central", _overrides(flat), settings)
    return {
        "global": summary["test"],
        "clients": per_client_test(work / "central", num_clients),
        "epochs": epochs,
        "seconds": time.perf_counter() - start,
    }


def local_only(work: Path, flat: dict, epochs: int, client: int) -> dict:
    """One station trained alone: scored on the global test rows and on its own test rows."""
    from rantune.compression.merge import train_centralized_run

    settings = _train_settings(flat, epochs, int(flat["seed"]))
    summary = train_centralized_run(
        work / f"local-{client}", _overrides(flat), settings, clients=[client]
    )
    return {"global": summary["test"], "own": summary["own-test"], "epochs": epochs}


def baselines(flat: dict) -> dict:
    """``Task.baseline`` on the global test rows (fitted on every client's training rows)
    and on each client's own test rows (fitted on its own training rows)."""
    from rantune.federated.run_config import resolve_run_config
    from rantune.federated.splits import FederatedData
    from rantune.tasks import get_task

    cfg = resolve_run_config(_overrides(flat))
    task = get_task(cfg.task, cfg.task_options)
    data = FederatedData.load(cfg.data, cfg.partition)
    train = {c: data.rows(c, "train") for c in range(data.num_clients)}
    test = {c: data.rows(c, "test") for c in range(data.num_clients)}
    held = data.rows(None, "test")
    rows = np.unique(np.concatenate([*train.values(), *test.values(), held]))
    chosen = data.take(rows)

    def at(pooled: np.ndarray) -> np.ndarray:
        return np.searchsorted(rows, pooled)

    start = time.perf_counter()
    pooled_train = at(np.concatenate(list(train.values())))
    result = {
        "global": task.baseline(chosen, pooled_train, at(held)),
        "clients": {
            str(c): task.baseline(chosen, at(train[c]), at(test[c])) for c in range(data.num_clients)
        },
    }
    result["seconds"] = time.perf_counter() - start
    return result


def accuracy_unit(args, task: str, seed: int) -> None:
    """Every method of one (task, seed); each piece is saved when done and skipped on rerun."""
    from rantune.simulations.engine import run_simulation

    _quiet()
    folder = args.work / "accuracy" / f"{task}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)

    def piece(name: str, compute) -> dict:
        path = folder / f"{name}.json"
        found = common.load_json(path)
        if found is None:
            started = time.perf_counter()
            found = {"task": task, "seed": seed, "method": name, **compute()}
            found["wall-s"] = time.perf_counter() - started
            _save_piece(path, found)
            print(f"accuracy {task} seed {seed} {name}: {found['wall-s']:.0f} s", flush=True)
        return found

    run_dir = args.work / "runs" / f"{task}-s{seed}-fedavg"
    fed = piece(
        "fedavg",
        lambda: fl_summary(run_simulation(_base(args, task, seed, **{"out-dir": str(run_dir)}))),
    )
    flat = common.run_flat_config(run_dir)
    epochs = int(flat["num-server-rounds"]) * int(flat["local-epochs"])
    n = len(fed["clients"])
    ref = args.work / "runs" / f"{task}-s{seed}-ref"
    piece("config", lambda: {k: flat[k] for k in CONFIG_KEYS} | {"rounds": int(flat["num-server-rounds"])})
    piece("centralized", lambda: centralized(ref, flat, epochs, n))
    for c in range(n):
        piece(f"local-{c}", lambda c=c: local_only(ref, flat, epochs, c))
    piece("baselines", lambda: baselines(flat))


def run_accuracy(args) -> None:
    units = [(t, s) for t in args.tasks for s in args.seeds]
    if args.workers <= 1:
        for t, s in units:
            accuracy_unit(args, t, s)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        for future in [pool.submit(accuracy_unit, args, t, s) for t, s in units]:
            future.result()


# -------------------------------------------------------------- convergence
def run_convergence(args) -> None:
    """A longer FedAvg run per task (first seed), its curve per round from history.json."""
    from rantune.simulations.engine import run_simulation

    _quiet()
    for task in args.tasks:
        seed = args.seeds[0]
        path = args.work / f"convergence-{task}-s{seed}.json"
        if common.load_json(path):
            print(f"convergence {task}: done", flush=True)
            continue
        out = args.work / "runs" / f"{task}-s{seed}-long"
        overrides = {"num-server-rounds": args.long_rounds, "out-dir": str(out)}
        started = time.perf_counter()
        history = run_simulation(_base(args, task, seed, **overrides))
        summary = fl_summary(history)
        _save_piece(
            path,
            {
                "task": task,
                "seed": seed,
                "rounds": args.long_rounds,
                "local-epochs": args.local_epochs,
                "curve": summary["curve"],
                "client-mean-curve": summary["client-mean-curve"],
                "wall-s": time.perf_counter() - started,
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
    task = args.tasks[0]
    out_dir = args.work / "runs" / "overhead-engine"
    config = _base(args, task, 0, **{"out-dir": str(out_dir)})
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
    _save_piece(path, {"rounds": args.overhead_rounds, "task": task, "repeats": repeats})


# ---------------------------------------------------------------------- ray
def run_ray(args) -> None:
    from rantune.simulations.engine import run_simulation
    from rantune.simulations.engine.flwr_cli import flwr_simulation

    path = args.work / "ray.json"
    if common.load_json(path):
        print("ray: done", flush=True)
        return
    task = args.tasks[0]
    out_dir, engine_dir = args.work / "runs" / "ray-run", args.work / "runs" / "ray-engine"
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(engine_dir, ignore_errors=True)
    config = _base(args, task, 0, **{"num-server-rounds": args.ray_rounds, "out-dir": str(out_dir)})
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
    _save_piece(
        path,
        {
            "task": task,
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


# ------------------------------------------------------------------- report
def report(args) -> dict:
    """Collect the finished pieces under ``--work`` into the results JSON and Markdown."""
    summary = summarize(args.work, preset=args.preset, pretrained=args.pretrained)
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
    parser.add_argument(
        "--rt-preset", default=str(RT_PRESET), help="preset of the ray-traced-only tasks"
    )
    parser.add_argument("--tasks", default="beam-spatial,positioning")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--long-rounds", type=int, default=16)
    parser.add_argument("--overhead-rounds", type=int, default=2)
    parser.add_argument("--overhead-repeats", type=int, default=2)
    parser.add_argument("--ray-rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600.0)
    common.add_common_flags(parser, WORK)
    args = common.parse_args(parser, argv, NAME, markdown, part_required=True)
    if args is None:
        return
    import torch

    torch.set_num_threads(1)
    _PROVENANCE.clear()
    _PROVENANCE.update(common.provenance(argv))
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.work = args.work / Path(args.pretrained).stem  # one folder per encoder
    args.work.mkdir(parents=True, exist_ok=True)
    for step in PARTS if args.part == "all" else [args.part]:
        if step != "report":
            globals()[f"run_{step}"](args)
    report(args)


if __name__ == "__main__":
    main()
