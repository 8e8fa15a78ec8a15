"""``rantune demo``: the whole story on one preset, resumable stage by stage.

Stages (each reuses what a previous run finished):

1. data: channels per base station (Sionna TR 38.901 or Sionna RT ray tracing, cached),
   per-site summary and plots;
2. compare: federated LoRA fine-tuning of each task with a small strategy comparison on
   the in-process engine (finished runs are skipped);
3. references: per task, centralized LoRA, local-only LoRA and the strongest classical
   baseline on the same rows (:mod:`rantune.simulations.demo.references`);
4. compress: the best global model per task -> fp32 and int8 ONNX artifacts with
   manifests and a Pareto plot (skipped when the artifact set already matches);
5. edge: the int8 artifact benchmarked with the torch-free edge runtime;
6. report: ``DIR/report.md`` + ``DIR/report.json``: per task one table of every
   strategy (global and per-station metrics) and the references, plots with the
   reference lines, and the measured wall time of this invocation (with the load).
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from rantune.errors import InputError
from rantune.fileio import atomic_write_json, sha256_file
from rantune.simulations.compare.grid import GridSpec

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoPlan:
    """What the demo runs: the strategy grid (its tasks get references too) and the
    compression of its best models; :func:`demo_plan` gives the full and the quick plan."""

    grid: GridSpec
    variants: tuple[str, ...] = ("fp32", "int8-dynamic", "int8-static")
    compress_tasks: tuple[str, ...] = ("los", "beam-spatial")
    compress_max_train: int = 1024
    compress_max_eval: int = 1024
    bench_repeats: int = 50


DEMO_TASKS = ("los", "beam-spatial")
"""The demo's tasks (positioning does not fit the full demo's 10-minute budget on 2 cores)."""
DEMO_STRATEGIES = ("fedavg", "flora", "fedsa-lora")
"""FedAvg, a LoRA-exact rule (FLoRA) and a personalized one (FedSA-LoRA). FedProx is left
out to fit the time budget: at its default mu it tracked FedAvg within 0.01 on both tasks
(``rantune compare --strategies fedavg,fedprox,...`` runs it)."""
LEFT_OUT = (
    "the `positioning` task and FedProx are left out to fit the full demo in 10 minutes on "
    "2 cores (`rantune compare --task positioning --strategies fedavg,fedprox,...` runs them)"
)


def demo_plan(quick: bool) -> DemoPlan:
    """The full demo (mixed ``default`` preset) or ``--quick`` (``smoke``, TR 38.901 only)."""
    axes = {
        "tasks": DEMO_TASKS,
        "strategies": DEMO_STRATEGIES,
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


PARALLEL_GENERATION_SAMPLES = 2000
"""Below this many samples to generate, one process is faster than starting workers."""


def _generate_site(cfg, index: int) -> str:
    """Generate station ``index`` of preset ``cfg`` into the channel cache (a worker
    process). The station's shard is keyed by its own config (radio block + site), so
    generating it alone gives the shard :func:`rantune.channels.load_sites` then loads for
    the whole preset: the same arrays as sequential generation (checked on ``rt-smoke``
    and ``default``) except the stored ``site_index``, which every load overwrites."""
    import torch

    from rantune.channels import load_sites
    from rantune.simulations.quiet import quiet_third_party

    quiet_third_party()
    torch.set_num_threads(1)
    load_sites(replace(cfg, sites=(cfg.sites[index],)), progress=False)
    return cfg.sites[index].name


def generate_sites(cfg, indices: list[int], workers: int, log: Log) -> None:
    """Generate the missing stations ``indices`` on ``workers`` processes, ray-traced and
    larger ones first (they take longest); in this process when they are few samples."""
    from rantune.config import RT_SCENARIO

    order = sorted(
        indices, key=lambda i: (cfg.sites[i].scenario != RT_SCENARIO, -cfg.sites[i].num_samples)
    )
    small = sum(cfg.sites[i].num_samples for i in order) < PARALLEL_GENERATION_SAMPLES
    if workers <= 1 or len(order) == 1 or small:
        for i in order:
            log(f"  {_generate_site(cfg, i)}: generated")
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(order)), mp_context=context) as pool:
        for future in as_completed([pool.submit(_generate_site, cfg, i) for i in order]):
            log(f"  {future.result()}: generated")


def data_stage(plan: DemoPlan, out: Path, log: Log, workers: int = 1) -> dict:
    """Generate/load the preset's channels; write ``out/data/summary.json`` and plots."""
    from rantune.channels import cache_key, load_site_info, load_sites, site_kind
    from rantune.channels.cache import ShardCache
    from rantune.config import IMPORT_SCENARIO
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
    log(f"[bold]1/6 data[/]: preset {cfg.name}, {len(cfg.sites)} base stations ({kinds})")
    cache = ShardCache()
    missing = [
        i
        for i, s in enumerate(cfg.sites)
        if s.scenario != IMPORT_SCENARIO and not cache.contains(cache_key(cfg, s))
    ]
    generated = [cfg.sites[i].name for i in missing]
    if missing:
        log(f"  generating {len(missing)} station(s) (the rest from the cache)")
        generate_sites(cfg, missing, workers, log)
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
    return {**summary, "generated": generated}


def compare_stage(plan: DemoPlan, out: Path, log: Log, workers: int) -> dict:
    """Run (or resume) the strategy grid; returns the parsed ``results.csv`` rows."""
    from rantune.simulations.compare.grid import run_grid

    spec = plan.grid
    total = len(spec.tasks) * len(spec.strategies) * len(spec.partitions) * len(spec.seeds)
    log(
        f"[bold]2/6 federated fine-tuning[/]: {total} runs ({', '.join(spec.tasks)} x "
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


def task_flats(plan: DemoPlan, out: Path) -> dict[str, dict]:
    """``{task: flat run config}`` of each task's federated runs (strategy keys at their
    defaults): what the references train and score with."""
    from rantune.federated.run_config import DEFAULTS
    from rantune.simulations.compare.grid import plan as grid_plan

    flats = {}
    for job, cfg in grid_plan(plan.grid, out / "compare"):
        if job.task not in flats:
            flat = cfg.flat_dict()
            flat.update({k: v for k, v in DEFAULTS.items() if k.startswith("strategy.")})
            flats[job.task] = flat
    return flats


def reference_stage(plan: DemoPlan, out: Path, log: Log, workers: int) -> dict:
    """Centralized, local-only and classical references of every task (reused when done)."""
    from rantune.simulations.demo import references

    log(
        "[bold]3/6 references[/]: centralized LoRA, local-only LoRA per client, classical "
        "baseline, on the federated runs' rows"
    )
    return references.reference_stage(task_flats(plan, out), out, log, workers)


def task_tables(plan: DemoPlan, out: Path, rows: list[dict], refs: dict) -> dict[str, dict]:
    """Per task: the table of :mod:`rantune.simulations.demo.tables` and its plots."""
    from rantune.simulations.demo.plots import plot_task_curves
    from rantune.simulations.demo.tables import curves, task_table

    out_tables = {}
    for task in plan.grid.tasks:
        task_rows = [r for r in rows if r["task"] == task]
        histories = {
            r["strategy"]: json.loads((run_dir_of(out, r) / "history.json").read_text())
            for r in task_rows
        }
        first = next(iter(histories.values()))
        table = task_table(
            task,
            first["primary-metric"],
            bool(first["higher-is-better"]),
            {r["strategy"]: (histories[r["strategy"]], r) for r in task_rows},
            refs[task],
        )
        series = {s: curves(h, table["primary"]) for s, h in histories.items()}
        table["plots"] = [
            str(p.relative_to(out)) for p in plot_task_curves(table, series, out / "plots")
        ]
        table["curves"] = series
        out_tables[task] = table
    return out_tables


def best_run(rows: list[dict], table: dict) -> dict:
    """The ``results.csv`` row of the task's best global model (direction-aware) among
    the strategies whose stations use the global model (FedSA-LoRA's stations keep
    their own B: its global model is not deployed anywhere)."""
    primary, higher = table["primary"], table["higher_is_better"]
    shared = [
        r["label"]
        for r in table["rows"]
        if r["kind"] == "federated" and not r["personalized"] and r["global"][primary] is not None
    ]
    candidates = [r for r in rows if r["task"] == table["task"] and r["strategy"] in shared]
    if not candidates:
        raise InputError(f"no finished run of task {table['task']!r} with a global model to compress")
    return sorted(candidates, key=lambda r: float(r["final_metric"]), reverse=higher)[0]


def run_dir_of(out: Path, row: dict) -> Path:
    from rantune.simulations.compare.grid import RunJob

    job = RunJob(row["task"], row["strategy"], row["partition"], int(row["seed"]), ())
    return job.work_dir(out / "compare")


def compress_stage(
    plan: DemoPlan, out: Path, rows: list[dict], tables: dict[str, dict], log: Log
) -> dict:
    """Compress each task's best global model; reuse artifacts made from the same run."""
    from rantune.compression.pipeline import CompressSettings, compress

    log(f"[bold]4/6 compression[/]: {', '.join(plan.variants)}")
    settings = CompressSettings(
        bench_repeats=plan.bench_repeats,
        max_train=plan.compress_max_train,
        max_eval=plan.compress_max_eval,
    )
    reports = {}
    for task in plan.compress_tasks:
        row = best_run(rows, tables[task])
        run_dir = run_dir_of(out, row)
        art = out / "artifacts" / task
        marker = art / "demo_source.json"
        source = {
            "run": str(run_dir),
            "config-hash": json.loads((run_dir / "config.json").read_text()).get("config-hash"),
            "variants": list(plan.variants),
            "max-train": plan.compress_max_train,
            "max-eval": plan.compress_max_eval,
        }
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

    log("[bold]5/6 edge runtime[/]: onnxruntime latency of the int8 artifacts")
    benches = {}
    for task in plan.compress_tasks:
        artifact = out / "artifacts" / task / "int8-dynamic"
        result_path = out / "artifacts" / task / "edge_bench.json"
        model_sha = sha256_file(artifact / "model.onnx")
        if result_path.exists():
            stored = json.loads(result_path.read_text())
            if stored.get("model_sha256") == model_sha:
                benches[task] = stored
                continue
        model = EdgeModel(artifact)
        result = model.bench(batch_sizes=(1, 64), threads=(1, 2), repeats=plan.bench_repeats)
        benches[task] = {**result, "model_sha256": model_sha}
        atomic_write_json(result_path, benches[task])
    return benches


def _load() -> list[float]:
    """1/5/15-minute load average (the machine may be shared)."""
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children (the
    worker processes): what the demo cost, whatever else runs on the machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_demo(out: Path, quick: bool = False, workers: int = 2, log: Log = print) -> dict:
    """Run every stage into ``out`` and write ``out/report.md`` and ``out/report.json``.

    The summary's ``timing`` holds this invocation's wall time, per-stage seconds and
    the load average at start and end; ``out/invocations.json`` keeps every
    invocation's (the first one from an empty cache, the reruns).
    """
    from rantune.simulations.demo.report import write_demo_report

    plan = demo_plan(quick)
    start, cpu_start, load_start, stages = time.perf_counter(), _cpu_s(), _load(), {}

    def timed(name: str, stage: Callable[[], object]):
        begin = time.perf_counter()
        result = stage()
        stages[name] = round(time.perf_counter() - begin, 2)
        return result

    data = timed("data", lambda: data_stage(plan, out, log, workers))
    comparison = timed("compare", lambda: compare_stage(plan, out, log, workers))
    refs = timed("references", lambda: reference_stage(plan, out, log, workers))
    tables = timed("tables", lambda: task_tables(plan, out, comparison["rows"], refs))
    compression = timed(
        "compress", lambda: compress_stage(plan, out, comparison["rows"], tables, log)
    )
    edge = timed("edge", lambda: edge_stage(plan, out, log))
    log("[bold]6/6 report[/]")
    timing = {
        "wall_s": round(time.perf_counter() - start, 2),
        "cpu_s": round(_cpu_s() - cpu_start, 2),
        "stages": stages,
        "load_start": load_start,
        "load_end": _load(),
        "cpus": os.cpu_count(),
        "quick": quick,
        "workers": workers,
        "stations_generated": len(data["generated"]),
        "runs_reused": comparison["reused"],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    history_path = out / "invocations.json"
    invocations = json.loads(history_path.read_text()) if history_path.exists() else []
    invocations.append(timing)
    atomic_write_json(history_path, invocations)
    summary = {
        "plan": {
            **asdict(plan.grid),
            **{k: v for k, v in asdict(plan).items() if k != "grid"},
            "left_out": LEFT_OUT,
        },
        "data": data,
        "comparison": comparison["rows"],
        "tasks": tables,
        "compression": compression,
        "edge": edge,
        "timing": timing,
        "invocations": invocations,
        "wall_s": timing["wall_s"],
        "reused_runs": comparison["reused"],
    }
    write_demo_report(out, summary)
    return summary
