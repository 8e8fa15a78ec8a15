"""Downstream tasks: pretrained+LoRA vs from-scratch vs frozen probe vs every classical baseline.

Tasks ``los``, ``beam-spatial``, ``beam-temporal``, ``prediction`` and ``positioning`` with
their default options (``task-options.*``) on the ``default`` preset's ray-traced stations
(Sionna RT; base stations never seen in pretraining); ``los`` and ``prediction`` also on
its TR 38.901 stations, as a separate group (trained and scored on those stations only).

Per (task, station group, seed): the natural split with ``partition_seed = seed``
(``rantune train``'s ``pooled_split``), the training pool and test rows restricted to
the group's stations; labelled budgets of 1%, 10% and 100% of the pool (seeded by the
seed). Per budget:

- ``lora``: the shipped ``tiny`` encoder + LoRA (``rantune train`` defaults) + the task head;
- ``scratch``: the same architecture from a random init, everything trains;
- ``probe``: the shipped encoder frozen, the head trains (features computed once);
- every classical baseline of the task (``Task.baseline``), fitted baselines fitted on the
  same labelled rows; all methods scored on the same test rows.

Learned models train with early stopping (``rantune.training.fit``): a seeded 20% of the
labelled rows validates after every epoch, training stops after ``patience`` epochs
without improvement of the task's primary metric or at the epoch cap (:data:`STOPPING`,
per budget), and the best epoch's weights are scored. Every finished piece (one task,
group, method, budget, seed) is saved under ``--work`` at once; a rerun skips it.

Usage::

    python benchmarks/tasks.py --workers 1        # writes benchmarks/results/tasks.{json,md}
    python benchmarks/tasks.py --smoke --out /tmp/bench   # tiny caps, 1 seed, 1% labels
    python benchmarks/tasks.py --converged --tasks beam-spatial --out /tmp/c  # 100%, cap 30
    python benchmarks/tasks.py --render           # tasks.md from the committed JSON
    python benchmarks/tasks.py --pretrained tiny-v2 --out /tmp/v2   # another encoder
"""

from __future__ import annotations

import argparse
import time
from multiprocessing import get_context
from pathlib import Path

import common
from tasks_report import markdown

NAME = "tasks"
TASKS = ("los", "beam-spatial", "beam-temporal", "prediction", "positioning")
GROUPS = {"rt": ("rt",), "tr38901": ("umi", "uma", "rma")}
"""Station group -> the site scenarios it holds."""
TASK_GROUPS = {"los": ("rt", "tr38901"), "prediction": ("rt", "tr38901")}
"""Groups of a task (default: ``rt`` only)."""
MODES = ("lora", "scratch", "probe")
BUDGETS = (0.01, 0.1, 1.0)
SEEDS = (0, 1, 2)
STOPPING = {
    0.01: {"patience": 10, "max_epochs": 40},
    0.1: {"patience": 4, "max_epochs": 12},
    1.0: {"patience": 2, "max_epochs": 3},
}
"""Early stopping per label budget. The caps are the CPU budget (about 35 CPU-minutes for
the grid on a shared 2-core machine): a single beam-spatial LoRA run on every labelled
row, patience 4, stopped after 17 epochs (best 13), so at 100% the cap binds."""
SMOKE_STOPPING = {"patience": 1, "max_epochs": 1}
CONVERGED_STOPPING = {1.0: {"patience": 3, "max_epochs": 30}}
"""``--converged``: the 100% column alone, with a cap that early stopping, not the CPU
budget, ends (a separate set of pieces)."""
_STATE: dict = {}


def load(preset: str) -> None:
    """The preset's pooled data and radio block into this process's state."""
    import torch

    from rantune.channels import load_pooled
    from rantune.presets import load_preset

    torch.set_num_threads(1)
    cfg = load_preset(preset)
    _STATE.update(cfg=cfg, data=load_pooled(cfg, progress=False))


def group_split(group: str, seed: int):
    """Training pool and test rows of the natural split (``partition_seed = seed``) on the
    group's stations; ``None`` when the preset has none."""
    import numpy as np

    from rantune.simulations.commands.train import pooled_split

    cfg, data = _STATE["cfg"], _STATE["data"]
    sites = [i for i, s in enumerate(cfg.sites) if s.scenario in GROUPS[group]]
    if not sites:
        return None
    train, test = pooled_split(data, partition_seed=seed)
    keep = lambda rows: rows[np.isin(data["site_index"][rows], sites)]  # noqa: E731
    return keep(train), keep(test)


def piece_path(work: Path, task: str, group: str, method: str, budget: float, seed: int) -> Path:
    return work / task / group / f"{method}-budget{budget:g}-seed{seed}.json"


def run_unit(unit: tuple) -> list[dict]:
    """Every missing piece of one (task, group, seed): baselines and learned modes."""
    from rantune.simulations.commands.train import CentralizedSettings, run_one
    from rantune.tasks import get_task
    from rantune.training import StoppingSettings, label_budget

    task_name, group, seed, work, stopping, commit, checkpoint = unit
    split = group_split(group, seed)
    if split is None:
        return []
    data, cfg = _STATE["data"], _STATE["cfg"]
    task = get_task(task_name)
    subsets = task.subsets(data, split[1])
    cache: dict = {}
    pieces = []
    for budget in BUDGETS:
        for method in ("baselines", *MODES):
            path = piece_path(work, task_name, group, method, budget, seed)
            found = common.load_json(path)
            if found is not None:
                pieces.append(found)
                continue
            started = time.perf_counter()
            if method == "baselines":
                rows = label_budget(split[0], budget, seed)
                result = {"metrics": task.baseline(data, rows, split[1]), "num_train": len(rows)}
            else:
                settings = CentralizedSettings(
                    task=task_name,
                    mode=method,
                    budget=budget,
                    seeds=(seed,),
                    checkpoint=checkpoint,
                    stopping=StoppingSettings(**stopping[budget]),
                )
                result = run_one(settings, seed, data, cfg.radio, split, cache, subsets)
                result["lr"] = settings.learning_rate
            result.update(
                task=task_name, group=group, method=method, budget=budget, seed=seed,
                num_test=int(len(split[1])), commit=commit,
                piece_seconds=round(time.perf_counter() - started, 2),
            )
            common.save_json(path, result)
            pieces.append(result)
            print(f"  {task_name}/{group}/{method}/{budget:g}/seed {seed}: "
                  f"{result['piece_seconds']} s", flush=True)
    return pieces


def settings_record(stopping: dict, checkpoint: str) -> dict:
    """What the learned runs shared: LoRA, learning rates, batch size, early stopping,
    task options and primary metrics."""
    from dataclasses import asdict

    from rantune.simulations.commands.train import DEFAULT_LR, CentralizedSettings
    from rantune.tasks import get_task
    from rantune.training import StoppingSettings

    central = CentralizedSettings(task="los", mode="lora")
    lora = asdict(central.lora)
    return {
        "lr": {m: DEFAULT_LR[m] for m in MODES},
        "batch_size": central.batch_size,
        "checkpoint": checkpoint,
        "lora": {**lora, "targets": list(lora["targets"])},
        "stopping": {str(b): asdict(StoppingSettings(**s)) for b, s in stopping.items()},
        "task_options": asdict(central.task_options),
        "task_info": {
            t: {
                "primary_metric": get_task(t).primary_metric,
                "higher_is_better": get_task(t).higher_is_better,
                "groups": list(TASK_GROUPS.get(t, ("rt",))),
            }
            for t in TASKS
        },
    }


def main(argv: list[str] | None = None) -> None:
    global BUDGETS, SEEDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--workers", type=int, default=1, help="processes (1 torch thread each)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset")
    parser.add_argument(
        "--smoke", action="store_true", help="1 epoch, 1 seed, 1%% labels: checks the pipeline"
    )
    parser.add_argument(
        "--converged",
        action="store_true",
        help="100%% labels only, patience 3, cap 30 epochs (pieces under <work>-converged)",
    )
    common.add_common_flags(parser, work=common.ROOT / "runs" / "bench-tasks")
    args = common.parse_args(parser, argv, NAME, markdown)
    if args is None:
        return
    stopping = STOPPING
    if args.smoke:
        BUDGETS, SEEDS = (0.01,), (0,)
        stopping = {0.01: SMOKE_STOPPING}
        args.work = args.work.with_name(args.work.name + "-smoke")
    elif args.converged:
        BUDGETS, stopping = (1.0,), CONVERGED_STOPPING
        args.work = args.work.with_name(args.work.name + "-converged")
    if args.pretrained == "none":
        parser.error("lora and probe need a pretrained encoder: --pretrained tiny | NAME | PATH")
    if args.pretrained != "tiny":  # another encoder's pieces live apart
        args.work = args.work.with_name(f"{args.work.name}-{Path(args.pretrained).stem}")
    load(args.preset)  # sets torch to 1 thread before provenance records it
    provenance = common.provenance(argv)  # at the start: the commit that runs
    started = time.perf_counter()
    tasks = [t for t in args.tasks.split(",") if t]
    units = [  # seed outermost: an interrupted run has every task at its first seeds
        (t, g, s, args.work, stopping, provenance["commit"], args.pretrained)
        for s in SEEDS
        for t in tasks
        for g in TASK_GROUPS.get(t, ("rt",))
    ]
    if args.workers > 1:
        with get_context("fork").Pool(args.workers, load, (args.preset,)) as pool:
            pieces = [p for chunk in pool.imap_unordered(run_unit, units) for p in chunk]
    else:
        pieces = [p for unit in units for p in run_unit(unit)]
    cfg = _STATE["cfg"]
    report = {
        "provenance": provenance,
        "wall_seconds": time.perf_counter() - started,
        "workers": args.workers,
        "preset": args.preset,
        "groups": {
            g: [s.name for s in cfg.sites if s.scenario in kinds] for g, kinds in GROUPS.items()
        },
        "budgets": list(BUDGETS),
        "seeds": list(SEEDS),
        "tasks": tasks,
        **settings_record(stopping, args.pretrained),
        "pieces": sorted(
            pieces, key=lambda p: (p["task"], p["group"], p["method"], p["budget"], p["seed"])
        ),
    }
    common.save_json(args.out / f"{NAME}.json", report)
    common.save_text(args.out / f"{NAME}.md", markdown(report))
    print(f"wrote {args.out / NAME}.json and .md in {report['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
