"""Strategy comparison benchmark (issue 16 part 4) on the ``default`` preset, natural split.

Every strategy runs at a learning rate tuned on validation, for a fixed round budget,
over seeds that also draw their own split (``partition.seed`` = the run seed), through
:func:`rantune.simulations.compare.grid.run_grid` (the engine behind ``rantune compare``),
one worker process, one torch thread. Same data, rows, rounds, local epochs, batch and
evaluation rows for every strategy; only the lr differs, and it is chosen the same way.

Parts (each resumable: a finished run is recorded under ``--work`` and skipped):

``tune``    seed 0, every strategy at every lr of its grid (:func:`lr_grid`), with
            ``client-validation`` on: each client also scores the model its station
            uses (the global one, or the personalized one where the strategy keeps
            parameters local) on its own validation rows. The lr with the best client
            mean validation metric in the last round wins (:func:`select_lr`); the test
            sets play no part in the choice.
``main``    seeds 1 and 2 at each strategy's tuned lr (seed 1 of every strategy first;
            with ``all``, task after task: a task is tuned and run before the next);
            seed 0 is the tuning run at that lr (the same config: its record is reused).
``extend``  FedAvg at its tuned lr, every seed, resumed from its main run and continued
            to :data:`EXTEND_FACTOR` x the round budget (does its curve flatten?);
``variants`` :data:`VARIANTS` (another hyper-parameter of a strategy, e.g. QFedAvg's
            step size), tuned and run the same way in ``variants/<name>``;
``report``  targets (:data:`TARGET_FRACTION` of FedAvg's mean final metric), the grid's
            ``results.csv`` / plots, ``benchmarks/results/strategies.json`` (every run's
            row, the tuning table, chance levels, provenance) and ``strategies.md``
            generated from it (``--render`` rewrites it from the committed JSON).

Usage::

    python benchmarks/strategies.py all          # tune + main + extend + report (~50 CPU-minutes)
    python benchmarks/strategies.py tune
    python benchmarks/strategies.py report
    python benchmarks/strategies.py --render
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import common
from strategies_report import markdown

NAME = "strategies"
PLOTS = Path("strategies") / "plots"  # under the results folder
WORK = common.ROOT / "runs" / "bench-strategies"

STRATEGIES = (
    "fedavg",
    "fedprox",
    "fedadam",
    "qfedavg",
    "multikrum",
    "ffa-lora",
    "fedsa-lora",
    "flora",
    "hetlora",
    "fedex-lora",
    "fed-sb",
    "lora-fair",
)
"""The compared strategies. Krum and FedMedian (robust rules whose point is an attack,
not clean data) are left out for the CPU budget; MultiKrum stands for them."""
TASKS = ("los", "beam-spatial")
METRICS = {"los": "auc", "beam-spatial": "top1"}
"""The compared metric per task (LoS is imbalanced: AUC, not accuracy)."""
LR_GRID = (0.003, 0.01, 0.03)
"""Local AdamW learning rates tried per strategy (the run default is 0.003)."""
LR_GRIDS: dict[str, tuple[float, ...]] = {}
"""Per-strategy grids replacing :data:`LR_GRID` (none: every strategy gets the same one)."""
STRATEGY_PARAMS: dict[str, dict] = {"multikrum": {"strategy.num-malicious-nodes": 2}}
"""Strategy keys other than the registry defaults: Multi-Krum with f = 0 keeps every
update (FedAvg); f = 2 of 8 keeps the n - f = 6 best-scored updates."""
VARIANTS: dict[str, dict] = {
    "qfedavg (L = 1)": {
        "strategy": "qfedavg",
        "params": {"strategy.qffl-learning-rate": 1.0},
        "tasks": ("los",),
        "why": "q-FFL estimates the Lipschitz constant as L = 1/lr, assuming a local update "
        "of lr x gradient; after AdamW steps ||L dw||^2 dominates its normaliser h and the "
        "global step shrinks; qffl-learning-rate = 1 (L = 1) keeps the step near FedAvg's",
    },
}
"""Strategies with other hyper-parameters, tuned and run like the rest in their own
folder (``variants/<name>``), reported as rows of their own."""
TUNE_SEED = 0
MAIN_SEEDS = (1, 2)
TARGET_FRACTION = 0.95
"""Rounds-to-target: the first round whose ranked metric reaches this fraction of
FedAvg's mean final global metric (same task)."""
BASE = "fedavg"
EXTEND_FACTOR = 2
"""The flattening check continues FedAvg's runs to this multiple of ``--rounds``."""


def lr_grid(strategy: str) -> tuple[float, ...]:
    return LR_GRIDS.get(strategy, LR_GRID)


def chance_levels(preset: str) -> dict[str, float]:
    """Metric of a predictor without information: AUC 0.5; top-1 1 / codebook size."""
    from rantune.presets import load_preset

    return {"los": 0.5, "beam-spatial": 1.0 / load_preset(preset).radio.num_beams}


def overrides(args) -> dict:
    """Run-config keys every run shares (the lr is added per grid)."""
    return {
        "model.pretrained": args.pretrained,
        "data.max-train-rows": args.train_rows,
        "data.max-eval-rows": args.eval_rows,
        "data.max-global-test-rows": args.global_test_rows,
        "local-epochs": args.local_epochs,
        "batch-size": args.batch_size,
        "client-validation": True,
    }


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def progress(outcome: dict, done: int, total: int) -> None:
    status = "ok" if outcome["ok"] else f"FAILED {outcome['error']}"
    log(f"{done}/{total} {outcome['job']} {status} ({outcome['seconds']:.1f} s)")


def _spec(args, tasks, strategies, seeds, lr: float):
    from rantune.simulations.compare.grid import GridSpec

    return GridSpec(
        preset=args.preset,
        tasks=tuple(tasks),
        strategies=tuple(strategies),
        partitions=("natural",),
        seeds=tuple(seeds),
        rounds=args.rounds,
        overrides={
            **overrides(args),
            **{k: v for s in strategies for k, v in STRATEGY_PARAMS.get(s, {}).items()},
            **getattr(args, "extra", {}),
            "lr": lr,
        },
        metric=METRICS,
        split_seed=True,
    )


def tune_dir(work: Path, lr: float) -> Path:
    return work / "tune" / f"lr-{lr:g}"


def _run(spec, out: Path) -> None:
    from rantune.simulations.compare.grid import run_grid

    result = run_grid(spec, out, workers=1, plots=False, progress=progress)
    if result.failed:
        log(f"{out}: {len(result.failed)} run(s) failed: {result.failed}")


def run_tune(args, tasks) -> None:
    """Every lr of every (task, strategy), one cell after the other (a cell's grid is
    complete before the next starts)."""
    for task in tasks:
        for strategy in args.strategies:
            for lr in lr_grid(strategy):
                spec = _spec(args, (task,), (strategy,), (TUNE_SEED,), lr)
                _run(spec, tune_dir(args.work, lr))


# ------------------------------------------------------------------ lr selection
def tuning_table(args) -> dict:
    """``{task: {strategy: {"grid": {lr: {val, final}}, "lr": chosen}}}`` from the tune records.

    ``val`` is the client mean validation metric of the last round (the selection
    criterion), ``final`` the final global test metric (shown, never used to choose).
    """
    from rantune.simulations.compare.records import load_runs
    from rantune.simulations.compare.report import run_row

    table: dict = {}
    for task in args.tasks:
        for strategy in args.strategies:
            grid = {}
            for lr in lr_grid(strategy):
                folder = tune_dir(args.work, lr)
                runs = [
                    r
                    for r in (load_runs(folder) if (folder / "runs").exists() else [])
                    if (r.task, r.strategy, r.seed) == (task, strategy, TUNE_SEED)
                ]
                if runs:
                    row = run_row(runs[0])
                    grid[f"{lr:g}"] = {
                        "val": _finite(row["mean_client_val_metric"]),
                        "final": _finite(row["final_metric"]),
                        "rank": _finite(row["rank_metric"]),
                        "wall-s": _finite(row["wall_time_s"]),
                    }
            if grid:
                chosen = select_lr(grid)
                table.setdefault(task, {})[strategy] = {
                    "grid": grid,
                    "lr": chosen,
                    "complete": len(grid) == len(lr_grid(strategy)),
                    "at-edge": chosen is not None
                    and float(chosen) in (min(lr_grid(strategy)), max(lr_grid(strategy))),
                }
    return table


def _finite(value) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def select_lr(grid: dict[str, dict]) -> str | None:
    """The lr (key of ``grid``) with the highest validation metric; a tie goes to the
    smaller lr; ``None`` when no lr has a validation value."""
    scored = [(v["val"], -float(lr), lr) for lr, v in grid.items() if v["val"] is not None]
    return max(scored)[2] if scored else None


# ------------------------------------------------------------------------ main runs
def run_main(args, tasks) -> None:
    """Seeds 1 then 2 of every (task, strategy) at its tuned lr; seed 0's record is the
    tuning run's at that lr."""
    from rantune.simulations.compare.records import record_path

    table = tuning_table(args)
    main = args.work / "main"
    for upto in range(1, len(MAIN_SEEDS) + 1):
        seeds = (TUNE_SEED, *MAIN_SEEDS[:upto])
        for task in tasks:
            for strategy in args.strategies:
                entry = table.get(task, {}).get(strategy)
                if not entry or not entry["complete"] or entry["lr"] is None:
                    log(f"main {task}/{strategy}: tuning unfinished, skipped")
                    continue
                lr = float(entry["lr"])
                source = record_path(tune_dir(args.work, lr), task, strategy, "natural", TUNE_SEED)
                target = record_path(main, task, strategy, "natural", TUNE_SEED)
                if source.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)  # same config: the grid skips seed 0
                _run(_spec(args, (task,), (strategy,), seeds, lr), main)


def main_work_dir(args, task: str, strategy: str, seed: int, lr: float) -> Path:
    """Where the run of (task, strategy, seed) at ``lr`` lives: seed 0 in its tuning grid."""
    from rantune.simulations.compare.grid import RunJob

    folder = tune_dir(args.work, lr) if seed == TUNE_SEED else args.work / "main"
    return RunJob(task, strategy, "natural", seed, ()).work_dir(folder)


def run_extend(args, tasks) -> None:
    """FedAvg's main runs copied under ``extend/`` and resumed to the longer budget."""
    from rantune.simulations.compare.grid import RunJob

    table = tuning_table(args)
    folder = args.work / "extend"
    seeds = (TUNE_SEED, *MAIN_SEEDS)
    for task in tasks:
        entry = table.get(task, {}).get(BASE)
        if not entry or entry["lr"] is None:
            continue
        lr = float(entry["lr"])
        for seed in seeds:
            source = main_work_dir(args, task, BASE, seed, lr)
            target = RunJob(task, BASE, "natural", seed, ()).work_dir(folder)
            if source.exists() and not target.exists():
                shutil.copytree(source, target)
        spec = _spec(args, (task,), (BASE,), seeds, lr)
        _run(replace(spec, rounds=EXTEND_FACTOR * args.rounds), folder)


def extended(args) -> dict:
    """Per task: FedAvg's global metric per seed at the budget and at the longer one."""
    from rantune.simulations.compare.records import load_runs

    folder = args.work / "extend"
    out: dict = {}
    for run in load_runs(folder) if (folder / "runs").exists() else []:
        by_round = {r.round: _finite(r.global_metric) for r in run.history}
        cell = out.setdefault(
            run.task, {"rounds": [args.rounds, EXTEND_FACTOR * args.rounds], "seeds": [],
                       "at-budget": [], "at-extended": []}
        )
        cell["seeds"].append(run.seed)
        cell["at-budget"].append(by_round.get(args.rounds))
        cell["at-extended"].append(by_round.get(EXTEND_FACTOR * args.rounds))
    return out


# --------------------------------------------------------------------------- report
def targets_from(rows: list[dict]) -> dict[str, float]:
    """:data:`TARGET_FRACTION` x FedAvg's mean final global metric, per task."""
    out = {}
    for task in {r["task"] for r in rows}:
        finals = [r["final_metric"] for r in rows if (r["task"], r["strategy"]) == (task, BASE)]
        finals = [v for v in finals if v is not None and math.isfinite(v)]
        if finals:
            out[task] = TARGET_FRACTION * sum(finals) / len(finals)
    return out


def main_rows(args) -> tuple[list[dict], dict[str, float]]:
    """The main grid's rows (targets filled) and targets; rewrites its report and plots."""
    from rantune.simulations.compare.records import load_runs
    from rantune.simulations.compare.report import build_rows, write_report

    folder = args.work / "main"
    runs = load_runs(folder) if (folder / "runs").exists() else []
    if not runs:
        return [], {}
    targets = targets_from(build_rows(runs))
    write_report(runs, folder, targets, plots=True)
    rows = [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        for row in build_rows(runs, targets)
    ]
    plots = folder / "plots"
    if plots.exists():
        shutil.rmtree(args.out / PLOTS, ignore_errors=True)  # only this grid's plots
        shutil.copytree(plots, args.out / PLOTS)
    return rows, targets


def curves(args, rows: list[dict]) -> dict:
    """Per task and strategy: the ranked metric per round, mean over the main seeds
    (to show where FedAvg's curve flattens)."""
    from rantune.simulations.compare.records import load_runs

    folder = args.work / "main"
    runs = load_runs(folder) if (folder / "runs").exists() else []
    out: dict = {}
    for run in runs:
        personalized = bool(run.extra.get("personalized"))
        for r in run.history:
            if personalized:
                values = [v for v in r.client_metrics.values() if math.isfinite(v)]
                value = sum(values) / len(values) if values else math.nan
            else:
                value = r.global_metric
            cell = out.setdefault(run.task, {}).setdefault(run.strategy, {})
            cell.setdefault(str(r.round), []).append(value)
    return {
        task: {
            s: [_finite(sum(v) / len(v)) for _, v in sorted(c.items(), key=lambda kv: int(kv[0]))]
            for s, c in cells.items()
        }
        for task, cells in out.items()
    }


def diagnostics(args, rows: list[dict]) -> dict:
    """Per main run (``task/strategy/seed``): the global model's metric at round 0 (its
    initialization, before any training) and how far training moved it,
    ``||w_R - w_0||_2`` over the global adapter + head tensors (checkpoints of rounds 0
    and R). Explains a metric at or below chance: a global model that hardly moved
    scores what its initialization scores."""
    import numpy as np
    from safetensors.numpy import load_file

    table = tuning_table(args)
    out = {}
    for row in rows:
        task, strategy, seed = row["task"], row["strategy"], int(row["seed"])
        lr = (table.get(task, {}).get(strategy) or {}).get("lr")
        if lr is None:
            continue
        work = main_work_dir(args, task, strategy, seed, float(lr))
        history = common.load_json(work / "history.json") or {}
        first = next((r for r in history.get("rounds", []) if r["round"] == 0), {})
        ckpt = work / "checkpoints"
        last = ckpt / f"round_{args.rounds:03d}.safetensors"
        drift = None
        if (ckpt / "round_000.safetensors").exists() and last.exists():
            w0, w1 = load_file(str(ckpt / "round_000.safetensors")), load_file(str(last))
            keys = sorted(set(w0) & set(w1))
            drift = float(np.sqrt(sum(float(np.sum((w1[k] - w0[k]) ** 2)) for k in keys)))
        out[f"{task}/{strategy}/{seed}"] = {
            "init": _finite((first.get("server") or {}).get(row["metric"])),
            "drift": drift,
        }
    return out


def variant_args(args, name: str):
    """``args`` of one variant: its own work folder, strategy and extra run-config keys."""
    v = VARIANTS[name]
    return argparse.Namespace(
        **{**vars(args), "work": args.work / "variants" / slug_name(name),
           "strategies": (v["strategy"],), "extra": v["params"]}
    )


def slug_name(name: str) -> str:
    from rantune.simulations.compare.records import slug

    return slug(name)


def run_variants(args, tasks) -> None:
    for name, v in VARIANTS.items():
        mine = tuple(t for t in tasks if t in v["tasks"])
        if mine:
            sub = variant_args(args, name)
            run_tune(sub, mine)
            run_main(sub, mine)


def variant_results(args, targets: dict) -> tuple[list[dict], dict, dict]:
    """Rows, tuning entries and diagnostics of every variant, under the variant's name."""
    from rantune.simulations.compare.records import load_runs
    from rantune.simulations.compare.report import build_rows

    rows, tuning, diag = [], {}, {}
    for name, v in VARIANTS.items():
        sub = variant_args(args, name)
        folder = sub.work / "main"
        runs = load_runs(folder) if (folder / "runs").exists() else []
        mine = [
            {**{k: (None if isinstance(x, float) and not math.isfinite(x) else x)
                for k, x in row.items()}, "strategy": name}
            for row in (build_rows(runs, targets) if runs else [])
        ]
        rows += mine
        for task, cells in tuning_table(sub).items():
            if v["strategy"] in cells:
                tuning.setdefault(task, {})[name] = cells[v["strategy"]]
        found = diagnostics(sub, [{**r, "strategy": v["strategy"]} for r in mine])
        diag.update({k.replace(f"/{v['strategy']}/", f"/{name}/"): d for k, d in found.items()})
    return rows, tuning, diag


def _provenance_log(work: Path) -> list[dict]:
    return common.load_json(work / "provenance.json") or []


def write_report(args, timing: dict) -> None:
    path = args.out / f"{NAME}.json"
    walls = common.load_json(args.work / "wall.json") or []
    if timing:  # one entry per measuring invocation, kept with the runs it measured
        walls = [*walls, timing]
        common.save_json(args.work / "wall.json", walls)
    rows, targets = main_rows(args)
    extra_rows, extra_tuning, extra_diag = variant_results(args, targets)
    tuning = tuning_table(args)
    for task, cells in extra_tuning.items():
        tuning.setdefault(task, {}).update(cells)
    config = next((args.work / "main").glob("work/**/config.json"), None)
    lora = {}
    if config is not None:
        flat = common.run_flat_config(config.parent)
        lora = {k: flat[k] for k in ("lora.r", "lora.alpha", "lora.targets", "model.head")}
    summary = {
        "settings": {
            "preset": args.preset,
            "partition": "natural",
            "tasks": list(args.tasks),
            "strategies": list(args.strategies),
            "strategies-per-task": {
                task: sorted({r["strategy"] for r in rows if r["task"] == task})
                for task in args.tasks
            },
            "rounds": args.rounds,
            "tune-seed": TUNE_SEED,
            "main-seeds": list(MAIN_SEEDS),
            "split-seed": "partition.seed = seed",
            "local-epochs": args.local_epochs,
            "data.max-train-rows": args.train_rows,
            "data.max-eval-rows": args.eval_rows,
            "data.max-global-test-rows": args.global_test_rows,
            "batch-size": args.batch_size,
            "lr-grid": {s: list(lr_grid(s)) for s in args.strategies},
            "strategy-params": {s: STRATEGY_PARAMS[s] for s in args.strategies if s in STRATEGY_PARAMS},
            "variants": {
                name: {"strategy": v["strategy"], "params": v["params"], "why": v["why"]}
                for name, v in VARIANTS.items()
            },
            "model.pretrained": args.pretrained,
            "lora": lora,
            "metrics": METRICS,
            "target-fraction": TARGET_FRACTION,
            "target-base": BASE,
            "workers": 1,
        },
        "chance": chance_levels(args.preset),
        "targets": targets,
        "tuning": tuning,
        "main": rows + extra_rows,
        "curves": curves(args, rows),
        "extended": extended(args),
        "diagnostics": {**diagnostics(args, rows), **extra_diag},
        "wall-s": walls,
        "provenance": _provenance_log(args.work) or [common.provenance()],
    }
    common.save_json(path, summary)
    common.render(path, args.out / f"{NAME}.md", markdown)  # from the JSON as stored
    log(f"wrote {path} and {NAME}.md")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", nargs="?", choices=("all", "tune", "main", "extend", "variants", "report"))
    parser.add_argument("--preset", default="default")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--train-rows", type=int, default=64)
    parser.add_argument("--eval-rows", type=int, default=32)
    parser.add_argument("--global-test-rows", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    common.add_common_flags(parser, WORK)
    args = common.parse_args(parser, argv, NAME, markdown, part_required=True)
    if args is None:
        return
    args.strategies = tuple(args.strategies.split(","))
    args.tasks = tuple(args.tasks.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    import logging

    import torch

    torch.set_num_threads(1)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    timing: dict = {}
    if args.part in ("all", "tune", "main", "extend", "variants"):  # the measuring commit, at the start
        common.save_json(args.work / "provenance.json", [*_provenance_log(args.work), common.provenance()])
    # Task after task (the first, LoS, is complete before the next starts), tuning first.
    for task in args.tasks:
        parts = (("tune", run_tune), ("main", run_main), ("extend", run_extend), ("variants", run_variants))
        for part, run in parts:
            if args.part in ("all", part):
                t = time.perf_counter()
                run(args, (task,))
                timing[part] = timing.get(part, 0.0) + time.perf_counter() - t
    if timing:  # one entry per invocation (finished runs are skipped by later ones)
        timing = {"finished": datetime.now(UTC).isoformat(timespec="seconds"), **timing}
    write_report(args, timing)


if __name__ == "__main__":
    main()
