"""Federated LoRA benchmark (issue 4 acceptance) on the ``default`` preset.

Parts (each resumable: finished pieces are kept under ``--work`` and skipped):

``accuracy``  natural per-site split, LoS and beam tasks, several seeds. Per (task,
              seed): federated LoRA with FedAvg, the same with int8 update
              compression, centralized LoRA on the pooled training rows (same epochs
              as rounds x local epochs), and local-only training on each site alone.
              Metrics on the global test set; local-only also on each site's own test.
``overhead``  in-process engine wall time / plain sequential loop doing the same
              local training and evaluation (same process, warm caches, interleaved).
``ray``       ``flwr run .`` (Ray simulation): start-up (launch -> first round) and
              per-round wall time, next to the in-process engine's.
``scale``     the ``large`` preset (64 clients, a fraction per round) on the
              in-process engine, and optionally ``flwr run``; peak memory.

Writes ``benchmarks/results/federated.json`` and ``federated.md``.

Usage::

    python benchmarks/federated.py all --workers 2          # everything (long)
    python benchmarks/federated.py accuracy --rounds 5 --seeds 0,1,2
    python benchmarks/federated.py report                    # rebuild JSON + Markdown
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "bench-federated"


def _base(args, task: str, seed: int, **extra) -> dict:
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


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _save(path: Path, payload: dict) -> None:
    from rantune.fileio import atomic_write_json

    atomic_write_json(path, payload)


# ----------------------------------------------------------------- accuracy
def centralized_and_local(cfg, rounds: int) -> dict:
    """Centralized LoRA on pooled client training rows and local-only per site."""
    import numpy as np
    import torch

    from rantune.federated import workload
    from rantune.lora import load_trainable_state, trainable_state
    from rantune.tasks import get_task
    from rantune.training import TrainSettings, evaluate, train

    workload.apply_threads(cfg)
    task = get_task(cfg.task)
    data = workload.federated_data(cfg)
    init = trainable_state(workload.build_model(cfg))
    model = workload.cached_model(cfg)
    xg, yg = workload.tensors(cfg, None, "test")
    settings = dict(
        batch_size=cfg.train.batch_size,
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        max_grad_norm=cfg.train.max_grad_norm,
    )
    epochs = rounds * cfg.train.local_epochs
    # centralized: the union of every client's training rows
    xs, ys = zip(*(workload.tensors(cfg, c, "train") for c in range(data.num_clients)), strict=True)
    load_trainable_state(model, init)
    t0 = time.perf_counter()
    train(
        model,
        task,
        torch.cat(xs),
        torch.cat(ys),
        TrainSettings(epochs=epochs, seed=workload.derive_seed(cfg.seed, "central"), **settings),
    )
    central = evaluate(model, task, xg, yg)
    central_s = time.perf_counter() - t0
    local = {}
    for c in range(data.num_clients):
        x, y = workload.tensors(cfg, c, "train")
        load_trainable_state(model, init)
        train(
            model,
            task,
            x,
            y,
            TrainSettings(
                epochs=epochs, seed=workload.client_round_seed(cfg.seed, 0, c), **settings
            ),
        )
        xt, yt = workload.tensors(cfg, c, "test")
        local[str(c)] = {
            "global-test": evaluate(model, task, xg, yg),
            "own-test": evaluate(model, task, xt, yt),
        }
    primary = task.primary_metric
    return {
        "centralized": central,
        "centralized-s": central_s,
        "local": local,
        "local-mean-global-test": float(
            np.mean([v["global-test"][primary] for v in local.values()])
        ),
        "local-mean-own-test": float(np.mean([v["own-test"][primary] for v in local.values()])),
    }


def _fl_summary(history: dict) -> dict:
    primary = history["primary-metric"]
    last = history["rounds"][-1]
    rounds = [r for r in history["rounds"] if r["round"] > 0]
    ups = [r["bytes"]["up-per-client"] for r in rounds]
    return {
        "global": last["server"],
        "curve": [r["server"][primary] for r in history["rounds"]],
        "client-mean": last["evaluate"].get("mean", {}).get(primary),
        "client-worst": last["evaluate"].get("worst", {}).get(primary),
        "up-per-client-round": float(statistics.mean(ups)),
        "down-per-client-round": float(
            statistics.mean(r["bytes"]["down-per-client"] for r in rounds)
        ),
        "full-model-bytes": history["full-model-bytes"],
        "up-ratio": float(statistics.mean(r["bytes"]["up-ratio"] for r in rounds)),
        "round-s": float(statistics.mean(r["wall-time-s"] for r in rounds)),
    }


def accuracy_unit(args, task: str, seed: int) -> dict:
    """One (task, seed): FedAvg, FedAvg + int8, centralized, local-only."""
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    from rantune.simulations.engine import resolve_config, run_simulation

    out = {}
    for name, extra in (("fedavg", {}), ("fedavg-int8", {"update-compression.method": "int8"})):
        cfg = resolve_config(
            _base(
                args, task, seed, **extra, **{"out-dir": str(args.work / f"{task}-s{seed}-{name}")}
            )
        )
        out[name] = _fl_summary(run_simulation(cfg))
    cfg = resolve_config(_base(args, task, seed, **{"out-dir": str(args.work / "unused")}))
    out.update(centralized_and_local(cfg, args.rounds))
    return out


def run_accuracy(args) -> None:
    units = [(t, s) for t in args.tasks for s in args.seeds]
    todo = [(t, s) for t, s in units if _load(args.work / f"acc-{t}-s{s}.json") is None]
    print(f"accuracy: {len(units) - len(todo)} done, {len(todo)} to run", flush=True)

    def finish(t, s, result):
        _save(
            args.work / f"acc-{t}-s{s}.json",
            {"task": t, "seed": s, "rounds": args.rounds, **result},
        )
        print(f"accuracy {t} seed {s} done", flush=True)

    if args.workers <= 1:
        for t, s in todo:
            finish(t, s, accuracy_unit(args, t, s))
        return
    import multiprocessing

    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(accuracy_unit, args, t, s): (t, s) for t, s in todo}
        for future, (t, s) in futures.items():
            finish(t, s, future.result())


# -------------------------------------------------------------- convergence
def _long_fedavg(args, task: str, seed: int) -> dict:
    """FedAvg of the accuracy part, resumed from its last round up to --long-rounds."""
    import logging
    import shutil

    logging.getLogger("flwr").setLevel(logging.WARNING)
    from rantune.simulations.engine import resolve_config, run_simulation

    short, long = args.work / f"{task}-s{seed}-fedavg", args.work / f"{task}-s{seed}-fedavg-long"
    if not long.exists() and short.exists():
        shutil.copytree(short, long)
    cfg = resolve_config(
        _base(args, task, seed, **{"num-server-rounds": args.long_rounds, "out-dir": str(long)})
    )
    history = run_simulation(cfg)
    return {"curve": [r["server"][history["primary-metric"]] for r in history["rounds"]]}


def _central_curve(args, task: str, seed: int) -> dict:
    """Centralized LoRA evaluated after every epoch (one train() call per epoch)."""
    import torch

    from rantune.federated import workload
    from rantune.lora import load_trainable_state, trainable_state
    from rantune.simulations.engine import resolve_config
    from rantune.tasks import get_task
    from rantune.training import TrainSettings, evaluate, train

    cfg = resolve_config(_base(args, task, seed, **{"out-dir": str(args.work / "unused")}))
    workload.apply_threads(cfg)
    task_obj = get_task(cfg.task)
    data = workload.federated_data(cfg)
    model = workload.cached_model(cfg)
    load_trainable_state(model, trainable_state(workload.build_model(cfg)))
    xs, ys = zip(*(workload.tensors(cfg, c, "train") for c in range(data.num_clients)), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    xg, yg = workload.tensors(cfg, None, "test")
    curve = [evaluate(model, task_obj, xg, yg)[task_obj.primary_metric]]
    for epoch in range(args.long_rounds):
        settings = TrainSettings(
            epochs=1,
            batch_size=cfg.train.batch_size,
            lr=cfg.train.lr,
            max_grad_norm=cfg.train.max_grad_norm,
            seed=workload.derive_seed(cfg.seed, "central", epoch),
        )
        train(model, task_obj, x, y, settings)
        curve.append(evaluate(model, task_obj, xg, yg)[task_obj.primary_metric])
    return {"curve": curve}


def run_convergence(args) -> None:
    """Longer FedAvg vs centralized curves for one (task, seed): does FedAvg catch up?"""
    import multiprocessing

    for task in args.long_tasks:
        seed = args.seeds[0]
        path = args.work / f"convergence-{task}-s{seed}.json"
        if _load(path):
            print(f"convergence {task}: done", flush=True)
            continue
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            fed = pool.submit(_long_fedavg, args, task, seed)
            central = pool.submit(_central_curve, args, task, seed)
            result = {"task": task, "seed": seed, "rounds": args.long_rounds}
            result["fedavg"], result["centralized"] = fed.result(), central.result()
        _save(path, result)
        print(f"convergence {task}: done", flush=True)


# ----------------------------------------------------------------- overhead
def plain_loop(cfg) -> float:
    """The same work as the engine, as a plain loop over rantune functions."""
    import numpy as np
    import torch

    from rantune.federated import workload
    from rantune.lora import load_trainable_state, trainable_state
    from rantune.tasks import get_task
    from rantune.training import TrainSettings, evaluate, train

    workload.apply_threads(cfg)
    task = get_task(cfg.task)
    n = workload.federated_data(cfg).num_clients
    model = workload.cached_model(cfg)
    start = time.perf_counter()
    state = {k: v.numpy() for k, v in workload.initial_global_state(cfg).items()}
    xg, yg = workload.tensors(cfg, None, "test")

    def load(s):
        load_trainable_state(model, {k: torch.from_numpy(np.array(v)) for k, v in s.items()})

    load(state)
    evaluate(model, task, xg, yg)
    for r in range(1, cfg.num_server_rounds + 1):
        states, weights = [], []
        for c in range(n):
            load(state)
            x, y = workload.tensors(cfg, c, "train")
            settings = TrainSettings(
                epochs=cfg.train.local_epochs,
                batch_size=cfg.train.batch_size,
                lr=cfg.train.lr,
                max_grad_norm=cfg.train.max_grad_norm,
                seed=workload.client_round_seed(cfg.seed, r, c),
            )
            train(model, task, x, y, settings)
            evaluate(model, task, *workload.tensors(cfg, c, "val"))
            states.append({k: v.numpy() for k, v in trainable_state(model).items()})
            weights.append(len(x))
        total = sum(weights)
        state = {
            k: sum(w / total * s[k] for w, s in zip(weights, states, strict=True)) for k in state
        }
        for c in range(n):
            load(state)
            evaluate(model, task, *workload.tensors(cfg, c, "test"))
        load(state)
        evaluate(model, task, xg, yg)
    return time.perf_counter() - start


class _ComputeTimer:
    """Wraps rantune's ``train``/``evaluate`` wherever the engine and the loop call them and
    sums their wall time: the rest of a run's wall time is orchestration overhead."""

    MODULES = ("rantune.training", "rantune.federated.local", "rantune.federated.evaluation")

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self):
        import importlib

        self._saved = []
        modules = [importlib.import_module(name) for name in self.MODULES]  # import first:
        for module in modules:  # a module imported later would copy a wrapped function
            for attr in ("train", "evaluate"):
                if hasattr(module, attr):
                    original = getattr(module, attr)
                    self._saved.append((module, attr, original))
                    setattr(module, attr, self._timed(original))
        return self

    def _timed(self, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return wrapper

    def __exit__(self, *exc):
        for module, attr, original in self._saved:
            setattr(module, attr, original)


def run_overhead(args) -> None:
    import logging
    import shutil

    logging.getLogger("flwr").setLevel(logging.WARNING)
    from rantune.federated import workload
    from rantune.simulations.engine import resolve_config, run_simulation

    path = args.work / "overhead.json"
    if _load(path):
        print("overhead: done", flush=True)
        return
    out_dir = args.work / "overhead-engine"
    cfg = resolve_config(
        _base(
            args, "los", 0, **{"num-server-rounds": args.overhead_rounds, "out-dir": str(out_dir)}
        )
    )
    workload.federated_data(cfg)
    workload.cached_model(cfg)
    plain_loop(cfg.with_overrides(**{"num-server-rounds": 1}))  # warm every cache
    rows = []
    for _ in range(args.overhead_repeats):
        shutil.rmtree(out_dir, ignore_errors=True)
        with _ComputeTimer() as timer:
            t0, c0 = time.perf_counter(), time.process_time()
            run_simulation(cfg)
            engine, engine_cpu = time.perf_counter() - t0, time.process_time() - c0
        engine_compute = timer.seconds
        with _ComputeTimer() as timer:
            c0 = time.process_time()
            loop = plain_loop(cfg)
            loop_cpu = time.process_time() - c0
        rows.append(
            {
                "engine-s": engine,
                "loop-s": loop,
                "engine-cpu-s": engine_cpu,
                "loop-cpu-s": loop_cpu,
                "engine-compute-s": engine_compute,
                "loop-compute-s": timer.seconds,
            }
        )
        r = rows[-1]
        print(
            f"overhead: engine {engine:.1f} s (train/evaluate {engine_compute:.1f} s, rest "
            f"{engine - engine_compute:.2f} s), loop {loop:.1f} s (train/evaluate "
            f"{r['loop-compute-s']:.1f} s, rest {loop - r['loop-compute-s']:.2f} s)",
            flush=True,
        )

    def med(fn):
        return statistics.median(fn(r) for r in rows)

    _save(
        path,
        {
            "rounds": args.overhead_rounds,
            "repeats": rows,
            "engine-s": [r["engine-s"] for r in rows],
            "loop-s": [r["loop-s"] for r in rows],
            "ratio-median": med(lambda r: r["engine-s"] / r["loop-s"]),
            "cpu-ratio-median": med(lambda r: r["engine-cpu-s"] / r["loop-cpu-s"]),
            "engine-rest-s": med(lambda r: r["engine-s"] - r["engine-compute-s"]),
            "loop-rest-s": med(lambda r: r["loop-s"] - r["loop-compute-s"]),
            # the engine's orchestration time added to the loop's own run: compute noise cancels
            "normalized-ratio": med(
                lambda r: (
                    (
                        r["loop-s"]
                        + (r["engine-s"] - r["engine-compute-s"])
                        - (r["loop-s"] - r["loop-compute-s"])
                    )
                    / r["loop-s"]
                )
            ),
        },
    )


# ---------------------------------------------------------------------- ray
def run_ray(args) -> None:
    from rantune.simulations.engine.flwr_cli import flwr_simulation

    path = args.work / "ray.json"
    if _load(path):
        print("ray: done", flush=True)
        return
    out_dir = args.work / "ray-run"
    import shutil

    shutil.rmtree(out_dir, ignore_errors=True)
    config = _base(
        args, "los", 0, **{"num-server-rounds": args.ray_rounds, "out-dir": str(out_dir)}
    )
    from rantune.federated import workload
    from rantune.simulations.engine import resolve_config

    n = workload.federated_data(resolve_config(config)).num_clients
    with flwr_simulation() as sim:
        launched = time.time()
        result = sim.run(config, num_supernodes=n, timeout=args.timeout)
    if result.returncode != 0:
        raise RuntimeError(f"flwr run failed:\n{result.output[-3000:]}")
    history = json.loads((out_dir / "history.json").read_text())
    rounds = [r for r in history["rounds"] if r["round"] > 0]
    first = rounds[0]["started-at"]
    # the in-process engine on the same config right after, for a same-load comparison
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    from rantune.simulations.engine import run_simulation

    engine_dir = args.work / "ray-engine"
    shutil.rmtree(engine_dir, ignore_errors=True)
    t0 = time.perf_counter()
    engine = run_simulation({**config, "out-dir": str(engine_dir)})
    engine_total = time.perf_counter() - t0
    _save(
        path,
        {
            "engine-total-s": engine_total,
            "engine-round-s": [r["wall-time-s"] for r in engine["rounds"] if r["round"] > 0],
            "engine-final": engine["final"],
            "rounds": args.ray_rounds,
            "num-supernodes": n,
            "total-s": result.total_s,
            "submit-s": result.submitted_s,
            "startup-s": first - launched,
            "round-s": [r["wall-time-s"] for r in rounds],
            "final": history["final"],
        },
    )
    print(
        f"ray: startup {first - launched:.1f} s, rounds {[round(r['wall-time-s'], 1) for r in rounds]}",
        flush=True,
    )


# -------------------------------------------------------------------- scale
class _PeakSampler:
    """Peak summed RSS of a process tree (this process and its descendants), via /proc."""

    def __init__(self, root_pid: int, interval: float = 0.5) -> None:
        self.root, self.interval, self.peak = root_pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _children(self) -> dict[int, int]:
        parents = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    parents[int(entry.name)] = int(fields[1])
                except (OSError, IndexError, ValueError):
                    pass
        return parents

    def _rss(self) -> int:
        parents = self._children()
        tree, frontier = {self.root}, [self.root]
        while frontier:
            pid = frontier.pop()
            kids = [p for p, pp in parents.items() if pp == pid and p not in tree]
            tree.update(kids)
            frontier.extend(kids)
        total = 0
        for pid in tree:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_scale(args) -> None:
    import logging
    import shutil

    logging.getLogger("flwr").setLevel(logging.WARNING)
    from rantune.federated import workload
    from rantune.simulations.engine import resolve_config, run_simulation

    path = args.work / "scale.json"
    result = _load(path) or {}
    extra = {
        "data.preset": "large",
        "fraction-train": args.scale_fraction,
        "fraction-evaluate": args.scale_fraction,
        "num-server-rounds": args.scale_rounds,
    }
    if "engine" not in result:
        out_dir = args.work / "scale-engine"
        shutil.rmtree(out_dir, ignore_errors=True)
        cfg = resolve_config(_base(args, "los", 0, **extra, **{"out-dir": str(out_dir)}))
        t0 = time.perf_counter()
        workload.federated_data(cfg)  # generates the large preset once if not cached
        data_s = time.perf_counter() - t0
        with _PeakSampler(os.getpid()) as sampler:
            t0 = time.perf_counter()
            history = run_simulation(cfg)
            total = time.perf_counter() - t0
        rounds = [r for r in history["rounds"] if r["round"] > 0]
        result["engine"] = {
            "clients": history["num-clients"],
            "sampled-per-round": [len(r["train"]["sampled"]) for r in rounds],
            "data-load-s": data_s,
            "total-s": total,
            "round-s": [r["wall-time-s"] for r in rounds],
            "peak-rss-bytes": sampler.peak,
            "ru-maxrss-bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "final": history["final"],
        }
        _save(path, result)
        print(f"scale engine: {total:.0f} s, peak {sampler.peak / 2**30:.2f} GiB", flush=True)
    if args.scale_ray and "ray" not in result:
        from rantune.simulations.engine.flwr_cli import flwr_simulation

        out_dir = args.work / "scale-ray"
        shutil.rmtree(out_dir, ignore_errors=True)
        config = _base(args, "los", 0, **extra, **{"out-dir": str(out_dir)})
        with flwr_simulation() as sim, _PeakSampler(os.getpid()) as sampler:
            res = sim.run(config, num_supernodes=64, timeout=args.timeout)
        if res.returncode != 0:
            raise RuntimeError(f"flwr run (large) failed:\n{res.output[-3000:]}")
        history = json.loads((out_dir / "history.json").read_text())
        result["ray"] = {
            "num-supernodes": 64,
            "sampled-per-round": [
                len(r["train"]["sampled"]) for r in history["rounds"] if r["round"] > 0
            ],
            "total-s": res.total_s,
            "round-s": [r["wall-time-s"] for r in history["rounds"] if r["round"] > 0],
            "peak-rss-bytes": sampler.peak,
            "final": history["final"],
        }
        _save(path, result)
        print(f"scale ray: {res.total_s:.0f} s, peak {sampler.peak / 2**30:.2f} GiB", flush=True)


# ------------------------------------------------------------------- report
def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def report(args) -> dict:
    units = [_load(p) for p in sorted(args.work.glob("acc-*.json"))]
    units = [u for u in units if u]
    summary: dict = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load-average": os.getloadavg(),
        "preset": args.preset,
        "pretrained": args.pretrained,
        "accuracy": {},
    }
    for task in sorted({u["task"] for u in units}):
        rows = [u for u in units if u["task"] == task]
        primary = "accuracy" if task == "los" else ("top1" if task == "beam" else "nmse_db")
        fed = [u["fedavg"]["global"][primary] for u in rows]
        q8 = [u["fedavg-int8"]["global"][primary] for u in rows]
        cen = [u["centralized"][primary] for u in rows]
        loc = [u["local-mean-global-test"] for u in rows]
        loc_own = [u["local-mean-own-test"] for u in rows]
        entry = {
            "metric": primary,
            "seeds": [u["seed"] for u in rows],
            "rounds": rows[0]["rounds"],
            "fedavg": _mean_std(fed),
            "fedavg-int8": _mean_std(q8),
            "centralized": _mean_std(cen),
            "local-only-global-test": _mean_std(loc),
            "local-only-own-test": _mean_std(loc_own),
            "fedavg-client-mean": _mean_std([u["fedavg"]["client-mean"] for u in rows]),
            "fedavg-client-worst": _mean_std([u["fedavg"]["client-worst"] for u in rows]),
            "fed-over-central": statistics.mean(f / c for f, c in zip(fed, cen, strict=True)),
            "int8-minus-fedavg-points": 100
            * statistics.mean(q - f for q, f in zip(q8, fed, strict=True)),
            "fed-minus-local-points": 100
            * statistics.mean(f - lo for f, lo in zip(fed, loc, strict=True)),
            "up-bytes-per-client-round": rows[0]["fedavg"]["up-per-client-round"],
            "up-bytes-int8": rows[0]["fedavg-int8"]["up-per-client-round"],
            "full-model-bytes": rows[0]["fedavg"]["full-model-bytes"],
            "up-ratio": rows[0]["fedavg"]["up-ratio"],
            "up-ratio-int8": rows[0]["fedavg-int8"]["up-ratio"],
            "fedavg-round-s": statistics.mean(u["fedavg"]["round-s"] for u in rows),
            "curves": {str(u["seed"]): u["fedavg"]["curve"] for u in rows},
        }
        summary["accuracy"][task] = entry
    for path in sorted(args.work.glob("convergence-*.json")):
        loaded = _load(path)
        if loaded:
            summary.setdefault("convergence", {})[loaded["task"]] = loaded
    earlier = [_load(p) for p in sorted(args.work.glob("overhead-*.json"))]
    summary["overhead-earlier"] = [
        {
            "rounds": e["rounds"],
            "engine-s": e["engine-s"],
            "loop-s": e["loop-s"],
            "ratio-median": e["ratio-median"],
        }
        for e in earlier
        if e and "engine-s" in e
    ]
    summary["ray-earlier"] = [
        e for e in (_load(p) for p in sorted(args.work.glob("ray-*.json"))) if e
    ]
    for part in ("overhead", "ray", "scale"):
        loaded = _load(args.work / f"{part}.json")
        if loaded:
            summary[part] = loaded
    RESULTS.mkdir(parents=True, exist_ok=True)
    _save(RESULTS / "federated.json", summary)
    (RESULTS / "federated.md").write_text(markdown(summary))
    print((RESULTS / "federated.md").read_text())
    return summary


def acceptance_lines(s: dict) -> list[str]:
    """One line per acceptance criterion of issue 4 with the measured value."""

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = []
    for task, e in s["accuracy"].items():
        ratio = e["fed-over-central"]
        line = (
            f"- {task}: FedAvg / centralized LoRA after {e['rounds']} rounds = {ratio:.3f} "
            f"(>= 0.95: {mark(ratio >= 0.95)})"
        )
        conv = s.get("convergence", {}).get(task)
        if conv:
            fed, best = conv["fedavg"]["curve"], max(conv["centralized"]["curve"])
            reach = next((i for i, v in enumerate(fed) if v >= 0.95 * best), None)
            line += (
                f"; longer run (seed {conv['seed']}): 95% of the best centralized reached at round "
                f"{reach}, {fed[-1] / best:.3f} after {len(fed) - 1} rounds"
            )
        lines.append(line + ".")
        lines.append(
            f"- {task}: FedAvg − mean local-only (global test) = {e['fed-minus-local-points']:+.2f} points "
            f"({mark(e['fed-minus-local-points'] > 0)}); vs local-only on their own test splits "
            f"{100 * (e['fedavg'][0] - e['local-only-own-test'][0]):+.2f} points."
        )
        lines.append(
            f"- {task}: uplink per client per round {100 * e['up-ratio']:.2f}% of full-model FedAvg "
            f"(<= 5%: {mark(e['up-ratio'] <= 0.05)}); int8 {100 * e['up-ratio-int8']:.2f}% "
            f"(<= 1.5%: {mark(e['up-ratio-int8'] <= 0.015)}), accuracy change "
            f"{e['int8-minus-fedavg-points']:+.2f} points (within 1: "
            f"{mark(abs(e['int8-minus-fedavg-points']) <= 1.0)})."
        )
    if "overhead" in s:
        o = s["overhead"]
        cpu, norm = o.get("cpu-ratio-median"), o.get("normalized-ratio")
        lines.append(
            f"- engine / plain loop: wall {o['ratio-median']:.3f}"
            + (f", CPU {cpu:.3f}" if cpu is not None else "")
            + (f", orchestration-only {norm:.3f}" if norm is not None else "")
            + f" (<= 1.10: {mark(o['ratio-median'] <= 1.10)})."
        )
    if "ray" in s:
        r = s["ray"]
        lines.append(
            f"- `flwr run` (Ray): start-up {r['startup-s']:.1f} s, rounds "
            f"{', '.join(f'{x:.1f}' for x in r['round-s'])} s (reported)."
        )
    for kind, e in s.get("scale", {}).items():
        lines.append(
            f"- `large` preset ({kind}): completed, peak {e['peak-rss-bytes'] / 2**30:.2f} GiB "
            "of 24 GiB (met)."
        )
    return lines


def markdown(s: dict) -> str:
    def ms(pair, scale=1.0, digits=3):
        m, d = pair
        return f"{m * scale:.{digits}f} ± {d * scale:.{digits}f}"

    lines = [
        "# Federated LoRA benchmark",
        "",
        f"Generated {s['generated']} on {s['machine']} (load average at the end "
        f"{', '.join(f'{x:.1f}' for x in s['load-average'])}; the machine is shared, so "
        "timings are noisy). Preset `" + s["preset"] + "`, natural per-site split (one base "
        f"station = one client), encoder `model.pretrained = {s['pretrained']!r}`, LoRA r=4 "
        "alpha 8 on q/v + the pooled-linear task head (`model.head`), FedAvg, all clients "
        "every round, 1 local epoch per round, batch 32, AdamW lr 3e-3. Produced by "
        "`python benchmarks/federated.py all --rounds 4 --pretrained tiny --scale-ray` "
        "(resumable), then `convergence` (longer beam run), `ray` and `overhead` re-run when "
        "the machine was less loaded (the earlier attempts are listed); `report` rebuilds "
        "this file from `runs/bench-federated/<pretrained>/`.",
        "",
        "## Acceptance summary",
        "",
        *acceptance_lines(s),
        "",
        "## Accuracy (global test set, mean ± std over seeds)",
        "",
        "| task | metric | FedAvg | FedAvg + int8 | centralized LoRA | local-only (global test) | local-only (own test) | FedAvg / central | int8 − FedAvg (points) | FedAvg − local (points) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, e in s["accuracy"].items():
        lines.append(
            f"| {task} | {e['metric']} | {ms(e['fedavg'])} | {ms(e['fedavg-int8'])} | {ms(e['centralized'])} | "
            f"{ms(e['local-only-global-test'])} | {ms(e['local-only-own-test'])} | {e['fed-over-central']:.3f} | "
            f"{e['int8-minus-fedavg-points']:+.2f} | {e['fed-minus-local-points']:+.2f} |"
        )
    lines += [
        "",
        "Rounds: "
        + ", ".join(
            f"{t}: {e['rounds']} ({len(e['seeds'])} seeds {e['seeds']})"
            for t, e in s["accuracy"].items()
        )
        + ". Centralized LoRA trains as many epochs on the union of the clients' training rows as a "
        "client trains in the whole federated run; local-only trains each site alone for the same "
        "epochs, from the same initial adapters.",
        "",
        "Worst client (client-side evaluation on each site's own test split, last round): "
        + ", ".join(
            f"{t}: mean {ms(e['fedavg-client-mean'])}, worst {ms(e['fedavg-client-worst'])}"
            for t, e in s["accuracy"].items()
        )
        + ".",
        "",
        "## Communication (uplink per client per round, `ArrayRecord.count_bytes()`)",
        "",
        "| task | full-model FedAvg | LoRA adapters + head | ratio | int8 update | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for task, e in s["accuracy"].items():
        lines.append(
            f"| {task} | {e['full-model-bytes'] / 1024:.1f} KiB | {e['up-bytes-per-client-round'] / 1024:.1f} KiB | "
            f"{100 * e['up-ratio']:.2f}% | {e['up-bytes-int8'] / 1024:.1f} KiB | {100 * e['up-ratio-int8']:.2f}% |"
        )
    for task, c in s.get("convergence", {}).items():
        fed, cen = c["fedavg"]["curve"], c["centralized"]["curve"]
        best = max(cen)
        reach = next((i for i, v in enumerate(fed) if v >= 0.95 * best), None)
        lines += [
            "",
            f"### Longer run: {task}, seed {c['seed']}",
            "",
            f"FedAvg rounds vs centralized epochs (each round every client trains one epoch, so "
            f"round k and epoch k cost the same client compute). Centralized is evaluated after "
            f"every epoch (a fresh AdamW per epoch, so its epoch-4 value differs slightly from the "
            f"table above). Best centralized {best:.3f}; FedAvg reaches 95% of it "
            + (f"at round {reach}." if reach is not None else f"not within {len(fed) - 1} rounds.")
            + f" Final: FedAvg {fed[-1]:.3f} ({fed[-1] / best:.3f} of best centralized).",
            "",
            "| round / epoch | " + " | ".join(str(i) for i in range(len(fed))) + " |",
            "|---|" + "---|" * len(fed),
            "| FedAvg | " + " | ".join(f"{v:.3f}" for v in fed) + " |",
            "| centralized | " + " | ".join(f"{v:.3f}" for v in cen[: len(fed)]) + " |",
        ]
    if "overhead" in s:
        o = s["overhead"]
        lines += [
            "",
            "## Engine overhead",
            "",
            f"In-process engine (ServerApp + ClientApp + FedAvg through an in-process Grid, with "
            f"messages, byte accounting, checkpoints and history) vs a plain sequential loop doing "
            f"the same local training and evaluation, `default` preset, LoS, {o['rounds']} round(s), "
            f"{len(o['engine-s'])} interleaved repeats in one warm process: engine "
            f"{', '.join(f'{x:.1f}' for x in o['engine-s'])} s, loop "
            f"{', '.join(f'{x:.1f}' for x in o['loop-s'])} s; wall-time ratio (median of pairs) "
            f"**{o['ratio-median']:.3f}**, CPU-time ratio {o['cpu-ratio-median']:.3f} (target <= 1.10).",
        ]
        if "normalized-ratio" in o:
            lines.append(
                f"Time outside `train`/`evaluate` (orchestration): engine {o['engine-rest-s']:.2f} s, "
                f"loop {o['loop-rest-s']:.2f} s per run (medians). Since load from other jobs moves "
                f"the compute time by more than the overhead, the engine's orchestration time added "
                f"to the loop's run gives the noise-free ratio **{o['normalized-ratio']:.3f}**."
            )
    if s.get("overhead-earlier"):
        lines.append(
            "The spread of the 1-round attempts below is the machine's (other jobs shared the "
            "two cores); the orchestration split above is the measurement to trust."
        )
    for e in s.get("overhead-earlier", []):
        lines.append(
            f"Earlier attempt ({e['rounds']} round(s), wall time only, no compute/orchestration "
            f"split): engine {', '.join(f'{x:.1f}' for x in e['engine-s'])} s, loop "
            f"{', '.join(f'{x:.1f}' for x in e['loop-s'])} s, wall ratio {e['ratio-median']:.3f}."
        )
    if "ray" in s:
        r = s["ray"]
        lines += [
            "",
            "## `flwr run` (Ray simulation)",
            "",
            f"{r['num-supernodes']} SuperNodes, {r['rounds']} rounds, LoS: launch of `flwr run` "
            f"to the start of round 1 (FAB build, SuperLink accepts the run, simulation and "
            f"ServerApp start, data load, round-0 evaluation) **{r['startup-s']:.1f} s** (run "
            f"accepted after {r['submit-s']:.1f} s); per round "
            f"{', '.join(f'{x:.1f}' for x in r['round-s'])} s (round 1 also starts the Ray "
            f"ClientApp actors, which import torch and load the data); total {r['total-s']:.1f} s."
            + (
                f" Right after, the in-process engine on the same config: rounds "
                f"{', '.join(f'{x:.1f}' for x in r['engine-round-s'])} s, total "
                f"{r['engine-total-s']:.1f} s in an already warm process (clients run one after "
                f"another on one thread; Ray ran one ClientApp actor per core), same final "
                f"metrics: {r['engine-final'] == r['final']}."
                if "engine-round-s" in r
                else ""
            ),
        ]
    for e in s.get("ray-earlier", []):
        lines.append(
            f"Earlier `flwr run` under heavier load: start-up {e['startup-s']:.1f} s, rounds "
            f"{', '.join(f'{x:.1f}' for x in e['round-s'])} s, total {e['total-s']:.1f} s."
        )
    if "scale" in s:
        lines += ["", "## Scale: `large` preset", ""]
        for kind, e in s["scale"].items():
            lines.append(
                f"- {kind}: {e.get('clients', e.get('num-supernodes'))} clients, "
                f"{e.get('sampled-per-round', ['?'])[0]} sampled per round, rounds "
                f"{', '.join(f'{x:.1f}' for x in e['round-s'])} s, total {e['total-s']:.0f} s, "
                f"peak RSS (process tree) **{e['peak-rss-bytes'] / 2**30:.2f} GiB** of 24 GiB; "
                f"final accuracy {e['final'].get('accuracy', float('nan')):.3f}."
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "part", choices=["all", "accuracy", "convergence", "overhead", "ray", "scale", "report"]
    )
    parser.add_argument("--preset", default="default")
    parser.add_argument("--tasks", default="los,beam")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pretrained", default=None, help="default: tiny if shipped, else none")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--long-rounds", type=int, default=16)
    parser.add_argument("--long-tasks", default="beam")
    parser.add_argument("--overhead-rounds", type=int, default=2)
    parser.add_argument("--overhead-repeats", type=int, default=3)
    parser.add_argument("--ray-rounds", type=int, default=2)
    parser.add_argument("--scale-rounds", type=int, default=3)
    parser.add_argument("--scale-fraction", type=float, default=0.25)
    parser.add_argument("--scale-ray", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.long_tasks = [t for t in args.long_tasks.split(",") if t]
    if args.pretrained is None:
        from rantune.federated.workload import resolve_checkpoint

        try:
            resolve_checkpoint("tiny")
            args.pretrained = "tiny"
        except ValueError:
            args.pretrained = "none"
    args.work = args.work / args.pretrained
    args.work.mkdir(parents=True, exist_ok=True)
    steps = (
        ["accuracy", "convergence", "overhead", "ray", "scale"]
        if args.part == "all"
        else [args.part]
    )
    for step in steps:
        if step != "report":
            globals()[f"run_{step}"](args)
    report(args)


if __name__ == "__main__":
    main()
