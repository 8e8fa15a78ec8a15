"""``rantune demo``: the whole story on one preset, resumable stage by stage.

Stages (each reuses what a previous run finished):

1. data: channels per base station (Sionna TR 38.901 or Sionna RT ray tracing, cached),
   per-site summary and plots;
2. compare: federated LoRA fine-tuning of the LoS and beam tasks with a small
   strategy comparison on the in-process engine (finished runs are skipped);
3. compress: the best global model per task -> fp32 and int8 ONNX artifacts with
   manifests and a Pareto plot (skipped when the artifact set already matches);
4. edge: the int8 artifact benchmarked with the torch-free edge runtime;
5. report: ``DIR/report.md`` + ``DIR/report.json`` tying it together.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rantune.errors import InputError
from rantune.fileio import atomic_write_json
from rantune.simulations.compare.grid import GridSpec

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoPlan:
    """What the demo runs: the strategy grid and the compression of its best models;
    :func:`demo_plan` gives the full and the quick plan."""

    grid: GridSpec
    variants: tuple[str, ...] = ("fp32", "int8-dynamic", "int8-static")
    compress_tasks: tuple[str, ...] = ("los", "beam")
    compress_max_train: int = 1024
    compress_max_eval: int = 1024
    bench_repeats: int = 50


def demo_plan(quick: bool) -> DemoPlan:
    """The full demo (``default`` preset, ~15 min on 2 cores) or ``--quick`` (smoke, ~2 min)."""
    axes = {
        "tasks": ("los", "beam"),
        "strategies": ("fedavg", "fedprox", "flora", "fedsa-lora"),
        "partitions": ("natural",),
        "seeds": (0,),
    }
    if quick:
        grid = GridSpec("smoke", **axes, rounds=3, overrides={"local-epochs": 3, "batch-size": 32})
        return DemoPlan(
            grid,
            variants=("fp32", "int8-dynamic"),
            compress_tasks=("los",),
            compress_max_train=128,
            compress_max_eval=128,
            bench_repeats=20,
        )
    overrides = {
        "local-epochs": 2,
        "batch-size": 32,
        "data.max-train-rows": 256,
        "data.max-eval-rows": 256,
        "data.max-global-test-rows": 1024,
    }
    return DemoPlan(GridSpec("default", **axes, rounds=6, overrides=overrides))


def data_stage(plan: DemoPlan, out: Path, log: Log) -> dict:
    """Generate/load the preset's channels; write ``out/data/summary.json`` and plots."""
    from rantune.channels import load_site_info, load_sites, site_kind
    from rantune.partition import PartitionConfig
    from rantune.presets import load_preset
    from rantune.simulations.commands.data import site_summary
    from rantune.simulations.demo.plots import plot_sites
    from rantune.simulations.partition_report import partition_report

    cfg = load_preset(plan.grid.preset)
    kinds = ", ".join(
        f"{sum(site_kind(s) == k for s in cfg.sites)} {k}"
        for k in sorted({site_kind(s) for s in cfg.sites})
    )
    log(f"[bold]1/5 data[/]: preset {cfg.name}, {len(cfg.sites)} base stations ({kinds})")
    sites = load_sites(cfg)
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = site_summary(cfg, sites, load_site_info(cfg))
    partitions = partition_report(cfg, sites, PartitionConfig(scheme="natural"), data_dir)
    plot_sites(rows, data_dir / "sites.png")
    summary = {
        "preset": cfg.name,
        "config_hash": cfg.config_hash(),
        "sites": rows,
        "partition": partitions,
    }
    atomic_write_json(data_dir / "summary.json", summary)
    return summary


def compare_stage(plan: DemoPlan, out: Path, log: Log, workers: int) -> dict:
    """Run (or resume) the strategy grid; returns the parsed ``results.csv`` rows."""
    from rantune.simulations.compare.grid import run_grid

    spec = plan.grid
    total = len(spec.tasks) * len(spec.strategies) * len(spec.partitions) * len(spec.seeds)
    log(
        f"[bold]2/5 federated fine-tuning[/]: {total} runs ({', '.join(spec.tasks)} x "
        f"{', '.join(spec.strategies)}), {spec.rounds} rounds each"
    )

    def progress(outcome: dict, done: int, pending: int) -> None:
        state = "done" if outcome["ok"] else f"[red]failed[/]: {outcome['error']}"
        log(f"  {done}/{pending} {outcome['job']}: {state} ({outcome['seconds']:.0f} s)")

    result = run_grid(spec, out / "compare", workers=workers, progress=progress)
    if result.skipped:
        log(f"  reused {len(result.skipped)} finished run(s)")
    if result.failed:
        raise RuntimeError(
            "federated runs failed: "
            + "; ".join(f"{job}: {err}" for job, err in result.failed.items())
        )
    with open(out / "compare" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {"rows": rows, "ran": len(result.ran), "reused": len(result.skipped)}


def best_run(rows: list[dict], task: str) -> dict:
    """The run of ``task`` with the best final global metric (direction-aware)."""
    candidates = [r for r in rows if r["task"] == task and r["final_metric"] not in ("", "nan")]
    if not candidates:
        raise InputError(f"no finished run of task {task!r} to compress")
    higher = candidates[0]["higher_is_better"].lower() == "true"
    return sorted(candidates, key=lambda r: float(r["final_metric"]), reverse=higher)[0]


def run_dir_of(out: Path, row: dict) -> Path:
    from rantune.simulations.compare.grid import RunJob

    job = RunJob(row["task"], row["strategy"], row["partition"], int(row["seed"]), ())
    return job.work_dir(out / "compare")


def compress_stage(plan: DemoPlan, out: Path, rows: list[dict], log: Log) -> dict:
    """Compress each task's best global model; reuse artifacts made from the same run."""
    from rantune.compression.pipeline import CompressSettings, compress

    log(f"[bold]3/5 compression[/]: {', '.join(plan.variants)}")
    settings = CompressSettings(
        bench_repeats=plan.bench_repeats,
        max_train=plan.compress_max_train,
        max_eval=plan.compress_max_eval,
    )
    reports = {}
    for task in plan.compress_tasks:
        row = best_run(rows, task)
        run_dir = run_dir_of(out, row)
        art = out / "artifacts" / task
        marker = art / "demo_source.json"
        source = {"run": str(run_dir), "variants": list(plan.variants)}
        if marker.exists() and json.loads(marker.read_text()) == source:
            log(f"  {task}: reusing artifacts of {row['strategy']}")
            reports[task] = json.loads((art / "report.json").read_text())
        else:
            log(f"  {task}: best global model is {row['strategy']} ({row['final_metric']})")
            reports[task] = compress(
                run_dir, art, plan.variants, settings, overwrite=True, log=lambda m: log(f"    {m}")
            )
            atomic_write_json(marker, source)
        reports[task]["demo_strategy"] = row["strategy"]
    return reports


def edge_stage(plan: DemoPlan, out: Path, log: Log) -> dict:
    """Benchmark each task's int8 artifact with the torch-free edge runtime."""
    from rantune.compression.edge import EdgeModel

    log("[bold]4/5 edge runtime[/]: onnxruntime latency of the int8 artifacts")
    benches = {}
    for task in plan.compress_tasks:
        artifact = out / "artifacts" / task / "int8-dynamic"
        result_path = out / "artifacts" / task / "edge_bench.json"
        if result_path.exists():
            benches[task] = json.loads(result_path.read_text())
            continue
        model = EdgeModel(artifact)
        benches[task] = model.bench(batch_sizes=(1, 64), threads=(1, 2), repeats=plan.bench_repeats)
        atomic_write_json(result_path, benches[task])
    return benches


def run_demo(out: Path, quick: bool = False, workers: int = 2, log: Log = print) -> dict:
    """Run every stage into ``out`` and write ``out/report.md`` and ``out/report.json``."""
    from rantune.simulations.demo.report import write_demo_report

    plan = demo_plan(quick)
    start = time.perf_counter()
    data = data_stage(plan, out, log)
    comparison = compare_stage(plan, out, log, workers)
    compression = compress_stage(plan, out, comparison["rows"], log)
    edge = edge_stage(plan, out, log)
    log("[bold]5/5 report[/]")
    summary = {
        "plan": {**asdict(plan.grid), **{k: v for k, v in asdict(plan).items() if k != "grid"}},
        "data": data,
        "comparison": comparison["rows"],
        "compression": compression,
        "edge": edge,
        "wall_s": time.perf_counter() - start,
        "reused_runs": comparison["reused"],
    }
    write_demo_report(out, summary)
    return summary
