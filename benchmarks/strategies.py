"""Strategy comparison benchmark (issue 5 acceptance) on the ``default`` preset.

Parts (each resumable: finished runs are recorded under ``--work`` and skipped):

``main``    >= 10 strategies x {natural, dirichlet-0.1, dirichlet-1.0} x seeds x
            {los, beam}, homogeneous LoRA rank, through :func:`simulations.compare.grid.run_grid`
            (the engine behind ``rantune compare``).
``robust``  20 % Byzantine clients (2 of 8 sites) on ``beam``/natural: FedAvg vs
            FedMedian / FedTrimmedAvg / Krum / MultiKrum, without attack and under a
            sign-flip (x10) and a Gaussian-noise attack.
``hetero``  heterogeneous ranks (partitions train r = 2, 4, 8 in turn; global r = 8):
            FLoRA vs HetLoRA, natural split, both tasks.
``report``  rebuild the grid reports under ``--work``, copy the plots to
            ``benchmarks/results/strategies/plots/`` and write ``benchmarks/results/
            strategies.json`` (every run's row) and ``strategies.md`` (generated from it;
            ``--render`` rewrites the Markdown from the committed JSON).

Usage::

    python benchmarks/strategies.py all --workers 2            # ~40 min on a loaded 2-core box
    python benchmarks/strategies.py main --rounds 3 --seeds 0,1,2
    python benchmarks/strategies.py report
    python benchmarks/strategies.py --render
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import common
from strategies_report import markdown

NAME = "strategies"
PLOTS = Path("strategies") / "plots"  # under the results folder
WORK = common.ROOT / "runs" / "bench-strategies"

STRATEGIES = (
    "fedavg",
    "fedadam",
    "fedmedian",
    "krum",
    "qfedavg",
    "ffa-lora",
    "fedsa-lora",
    "flora",
    "hetlora",
    "fedex-lora",
)
PARTITIONS = ("natural", "dirichlet-0.1", "dirichlet-1.0")
TASKS = ("los", "beam")
# LoS accuracy sits at the majority class (NLoS) for weak models, so AUC ranks the
# strategies; beam uses its primary metric.
METRICS = {"los": "auc", "beam": "top1"}
ROBUST_STRATEGIES = ("fedavg", "fedmedian", "fedtrimmedavg", "krum")
ATTACKS = {
    "none": {"attack.fraction": 0.0},
    "sign-flip-x10": {"attack.fraction": 0.2, "attack.kind": "sign-flip", "attack.factor": 10.0},
    "gaussian-0.5": {"attack.fraction": 0.2, "attack.kind": "gaussian", "attack.factor": 0.5},
}
ROBUST_PARAMS = {"strategy.num-malicious-nodes": 2, "strategy.trim-beta": 0.25}
HETERO_STRATEGIES = ("flora", "hetlora")
HETERO_PARAMS = {"lora.r": 8, "lora.client-ranks": "2,4,8"}


def overrides(args) -> dict:
    return {
        "model.pretrained": args.pretrained,
        "data.max-train-rows": args.train_rows,
        "data.max-eval-rows": args.eval_rows,
        "data.max-global-test-rows": args.global_test_rows,
        "local-epochs": args.local_epochs,
        "batch-size": args.batch_size,
        "lr": args.lr,
    }


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def progress(outcome: dict, done: int, total: int) -> None:
    status = "ok" if outcome["ok"] else f"FAILED {outcome['error']}"
    log(f"{done}/{total} {outcome['job']} {status} ({outcome['seconds']:.1f} s)")


def _grid(args, folder: str, tasks, strategies, partitions, extra: dict | None = None) -> None:
    """One strategy grid through :func:`rantune.simulations.compare.grid.run_grid`."""
    from rantune.simulations.compare.grid import GridSpec, run_grid

    spec = GridSpec(
        preset=args.preset,
        tasks=tuple(tasks),
        strategies=tuple(strategies),
        partitions=tuple(partitions),
        seeds=tuple(int(s) for s in args.seeds.split(",")),
        rounds=args.rounds,
        overrides={**overrides(args), **(extra or {})},
        metric=METRICS,
    )
    result = run_grid(spec, args.work / folder, workers=args.workers, progress=progress)
    log(
        f"{folder}: ran {len(result.ran)}, skipped {len(result.skipped)}, "
        f"failed {len(result.failed)}"
    )


def run_main(args) -> None:
    _grid(args, "main", TASKS, args.strategies.split(","), PARTITIONS)


def run_robust(args) -> None:
    for name, attack in ATTACKS.items():
        _grid(args, f"robust-{name}", ("beam",), ROBUST_STRATEGIES, ("natural",),
              {**ROBUST_PARAMS, **attack})


def run_hetero(args) -> None:
    _grid(args, "hetero", TASKS, HETERO_STRATEGIES, ("natural",), HETERO_PARAMS)


# ---------------------------------------------------------------------------- report
def _read_rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def refresh_grid_reports(args) -> None:
    """Rebuild each grid's results.csv / report.md / plots from its run records."""
    from rantune.simulations.compare.records import load_runs
    from rantune.simulations.compare.report import write_report as grid_report

    for name in ("main", "hetero", *(f"robust-{a}" for a in ATTACKS)):
        folder = args.work / name
        runs = load_runs(folder) if (folder / "runs").exists() else []
        if runs:
            grid_report(runs, folder, plots=name == "main")


def _run_settings(work: Path) -> dict:
    """LoRA / head keys of one finished run (of the main grid if it ran), from its
    ``config.json``."""
    config = next((work / "main").glob("**/config.json"), None) or next(
        work.glob("**/config.json"), None
    )
    if config is None:
        return {}
    flat = common.run_flat_config(config.parent)
    return {k: flat[k] for k in ("lora.r", "lora.alpha", "lora.targets", "model.head")}


def write_report(args, timing: dict) -> None:
    """``strategies.json`` (every run's row, settings, provenance) and ``strategies.md``."""
    refresh_grid_reports(args)
    path = args.out / f"{NAME}.json"
    previous = common.load_json(path) or {}
    grid = {
        name: _read_rows(args.work / name / "results.csv")
        for name in ("main", "hetero", *(f"robust-{a}" for a in ATTACKS))
        if (args.work / name / "results.csv").exists()
    }
    plots = args.work / "main" / "plots"
    if plots.exists():
        shutil.copytree(plots, args.out / PLOTS, dirs_exist_ok=True)
    settings = {
        "preset": args.preset,
        "rounds": args.rounds,
        "seeds": args.seeds,
        "local-epochs": args.local_epochs,
        "data.max-train-rows": args.train_rows,
        "data.max-eval-rows": args.eval_rows,
        "data.max-global-test-rows": args.global_test_rows,
        "batch-size": args.batch_size,
        "lr": args.lr,
        "model.pretrained": args.pretrained,
        "lora": _run_settings(args.work),
        "metrics": METRICS,
        "robust": {"attacks": ATTACKS, "params": ROBUST_PARAMS, "task": "beam", "partition": "natural"},
        "hetero": {"params": HETERO_PARAMS},
        "workers": args.workers,
    }
    summary = {
        "settings": settings,
        "main": grid.get("main", []),
        "robust": {a: grid[f"robust-{a}"] for a in ATTACKS if f"robust-{a}" in grid},
        "hetero": grid.get("hetero", []),
        "wall-s": [*previous.get("wall-s", []), timing] if timing else previous.get("wall-s", []),
        "provenance": common.provenance(),
    }
    common.save_json(path, summary)
    common.save_text(args.out / f"{NAME}.md", markdown(summary))
    log(f"wrote {path} and {NAME}.md")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", nargs="?", choices=("all", "main", "robust", "hetero", "report"))
    parser.add_argument("--preset", default="default")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--train-rows", type=int, default=48)
    parser.add_argument("--eval-rows", type=int, default=32)
    parser.add_argument("--global-test-rows", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=2)
    common.add_common_flags(parser, WORK)
    args = common.parse_args(parser, argv, NAME, markdown, part_required=True)
    if args is None:
        return
    args.work.mkdir(parents=True, exist_ok=True)
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    timing = {}
    for part, run in (("main", run_main), ("robust", run_robust), ("hetero", run_hetero)):
        if args.part in ("all", part):
            t = time.perf_counter()
            run(args)
            timing[part] = time.perf_counter() - t
    if timing:  # one entry per invocation (finished runs are skipped by later ones)
        timing = {"finished": datetime.now(UTC).isoformat(timespec="seconds"), **timing}
    write_report(args, timing)


if __name__ == "__main__":
    main()
