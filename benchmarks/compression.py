"""Compression benchmark: every edge variant per task, from a federated run on `default`.

Per task (``los``, ``beam-spatial``, ``prediction``) the script trains its own teacher
(a FedAvg run on the ``default`` preset through the library's engine,
:func:`rantune.simulations.engine.run_simulation`; ``--run task=PATH`` uses a given run
directory instead), then per distillation mode (``federated``: each station distils on
its own rows, the server averages; ``server``: teacher outputs on channels the server
generates) runs :func:`rantune.compression.pipeline.compress` with every variant the
pipeline makes. Within one ``compress`` call the PyTorch eager fp32 teacher and every
artifact are timed back to back (interleaved, 1 thread), so their ratios are meaningful;
the edge-runtime grid (batch 1/64, 1/2 threads) follows per artifact.

Resumable: the teacher run and each (task, mode) piece are saved under ``--work`` as
soon as they finish, and a rerun with the same settings skips them. Writes
``benchmarks/results/compression.{json,md}``.

    python benchmarks/compression.py                           # everything (~20 CPU-min)
    python benchmarks/compression.py --tasks los --modes federated
    python benchmarks/compression.py --render                  # Markdown from the JSON
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from pathlib import Path

import common
import onnx
import onnxruntime as ort
import torch
from compression_report import markdown, provenance_records

from rantune.compression.distill import DistillSettings
from rantune.compression.edge import EdgeModel
from rantune.compression.merge import ADAPTER_NAME
from rantune.compression.pipeline import VARIANTS, CompressSettings, compress
from rantune.federated.rundir import json_safe

NAME = "compression"
TASKS = ("los", "beam-spatial", "prediction")
MODES = ("federated", "server")
TEACHER = {
    "data.preset": "default",
    "partition.scheme": "natural",
    "strategy.name": "fedavg",
    "batch-size": 32,
    "data.max-eval-rows": 256,
    "data.max-global-test-rows": 1024,
}
"""Run-config overrides every teacher shares (the demo's federated settings)."""


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    return sum(
        u.ru_utime + u.ru_stime
        for u in (resource.getrusage(resource.RUSAGE_SELF),
                  resource.getrusage(resource.RUSAGE_CHILDREN))
    )  # fmt: skip


def teacher_overrides(task: str, args) -> dict:
    return {
        **TEACHER,
        "task": task,
        "seed": 0,
        "model.pretrained": args.pretrained,
        "num-server-rounds": args.rounds,
        "local-epochs": args.local_epochs,
        "data.max-train-rows": args.max_train_rows,
    }


def federated_teacher(task: str, args) -> dict:
    """The task's FedAvg run (made once, then reused while its settings stay the same)."""
    from rantune.simulations.engine import run_simulation

    overrides = teacher_overrides(task, args)
    run_dir = args.work / "teachers" / task
    piece = args.work / f"teacher-{task}.json"
    done = common.load_json(piece)
    if done and done["overrides"] == overrides and (run_dir / ADAPTER_NAME).exists():
        return done
    logging.getLogger("flwr").setLevel(logging.WARNING)
    start, cpu = time.time(), _cpu_seconds()
    history = run_simulation({**overrides, "out-dir": str(run_dir)})
    primary = history["primary-metric"]
    last = history["rounds"][-1]
    record = {
        "kind": "federated run (FedAvg, rantune.simulations.engine.run_simulation)",
        "run_dir": str(run_dir),
        "overrides": overrides,
        "num_clients": history.get("num-clients"),
        "primary_metric": primary,
        "server_final": last["server"],
        "curve": [r["server"].get(primary) for r in history["rounds"]],
        "seconds": time.time() - start,
        "cpu_seconds": _cpu_seconds() - cpu,
        "provenance": common.provenance(),
    }
    common.save_json(piece, json_safe(record))
    return record


def given_teacher(path: str) -> dict:
    return {"kind": "given run directory", "run_dir": str(Path(path).resolve())}


def settings_for(mode: str, args) -> CompressSettings:
    return CompressSettings(
        distill=DistillSettings(epochs=args.distill_epochs),
        distill_rounds=args.distill_rounds,
        recover_rounds=args.recover_rounds,
        distill_mode=mode,
        server_rows=args.server_rows,
        student_layers=args.student_layers,
        bench_repeats=args.repeats,
        bench_warmup=10,
        max_train=None,  # each station's rows as the run capped them (data.max-train-rows)
    )


def edge_grid(art: Path, variants: list[str], repeats: int) -> dict:
    return {
        name: EdgeModel(art / name).bench((1, 64), (1, 2), warmup=5, repeats=repeats)["results"]
        for name in variants
    }


def overhead_share(path: Path) -> float:
    """Share of a quantized file that is not int8 weights (fp32 params, scales, graph)."""
    proto = onnx.load(str(path))
    int8 = sum(len(i.raw_data) for i in proto.graph.initializer if i.data_type == 3)
    return 1.0 - int8 / path.stat().st_size


def miss_reasons(report: dict, art: Path) -> list[str]:
    """Why a target was missed, from the measurements (size split, rows behind a drop)."""
    reasons = []
    for check in report["targets"]:
        if check["met"]:
            continue
        name, unit = check["variant"], check["drop_unit"]
        if check["size_ratio"] > check["max_size_ratio"]:
            share = overhead_share(art / name / "model.onnx")
            params = report["reference"]["parameters"] / 1e6
            size = next(v for v in report["variants"] if v["variant"] == name)["size_bytes"]
            limit = check["max_size_ratio"] * report["reference"]["size_bytes"]
            reasons.append(
                f"{name}: size {check['size_ratio']:.4f}x > {check['max_size_ratio']}x "
                f"({size:,} bytes, {size - limit:,.0f} over the limit): "
                f"{share:.0%} of the file is not int8 weights (fp32 LayerNorm/bias/positional "
                f"parameters, per-channel scales, graph); at {params:.1f}M parameters this "
                "fixed part weighs more than in large models"
            )
        if check["drop"] > check["max_drop"]:
            variant = next(v for v in report["variants"] if v["variant"] == name)
            detail = ""
            if report["higher_is_better"] and "agreement_with_teacher" in variant:
                detail = f"; top-1 agreement with the teacher {variant['agreement_with_teacher']:.1%}"
            elif "nmse_vs_teacher_db" in variant:
                detail = f"; NMSE to the teacher's output {variant['nmse_vs_teacher_db']:.1f} dB"
            reasons.append(
                f"{name}: drop {check['drop']:+.2f} {unit} > {check['max_drop']:g} {unit} on "
                f"{report['eval_rows']} test rows{detail}"
            )
        if check.get("speedup_b1", 1e9) < check.get("min_speedup_b1", 0):
            reasons.append(
                f"{name}: batch-1 speed-up {check['speedup_b1']:.1f}x < "
                f"{check['min_speedup_b1']:g}x vs torch eager"
            )
    return reasons


def piece_settings(mode: str, teacher: dict, args) -> dict:
    s = settings_for(mode, args)
    return {
        "teacher": teacher["run_dir"],
        "teacher_overrides": teacher.get("overrides"),
        "variants": list(VARIANTS),
        "distill_mode": mode,
        "distill_rounds": s.distill_rounds,
        "distill_local_epochs": s.distill.epochs,
        "recover_rounds": s.recover_rounds,
        "recover_local_epochs": s.recover.epochs,
        "student_layers": s.student_layers,
        "server_rows": s.server_rows if mode == "server" else None,
        "max_calib": s.max_calib,
        "max_eval": s.max_eval,
        "bench_repeats": s.bench_repeats,
        "grid_repeats": args.grid_repeats,
    }


def compress_piece(task: str, mode: str, teacher: dict, args) -> dict:
    """One (task, mode): every variant built, measured and its targets checked."""
    path = args.work / f"piece-{task}-{mode}.json"
    wanted = piece_settings(mode, teacher, args)
    done = common.load_json(path)
    if done and done["settings"] == wanted:
        print(f"[{task}/{mode}] done before, kept", flush=True)
        art = done.get("artifacts")
        if art and Path(art).is_dir():  # the reasons re-read from the artifacts
            done["misses"] = miss_reasons(done["report"], Path(art))
        return done
    start, cpu = time.time(), _cpu_seconds()
    provenance = common.provenance()
    art = args.work / "art" / task / mode
    report = compress(
        teacher["run_dir"], art, "all", settings_for(mode, args), overwrite=True,
        log=lambda m: print(f"[{task}/{mode}] {m}", flush=True),
    )  # fmt: skip
    piece = {
        "task": task,
        "mode": mode,
        "settings": wanted,
        "artifacts": str(art),
        "report": report,
        "misses": miss_reasons(report, art),
        "edge_grid": edge_grid(art, [v["variant"] for v in report["variants"]], args.grid_repeats),
        "seconds": time.time() - start,
        "cpu_seconds": _cpu_seconds() - cpu,
        "provenance": provenance,
    }
    common.save_json(path, json_safe(piece))
    print(f"[{task}/{mode}] done in {piece['seconds']:.0f} s", flush=True)
    return piece


def save(results: dict, out: Path) -> None:
    """The JSON, and the Markdown rendered from it as stored (what ``--render`` gives)."""
    common.save_json(out / f"{NAME}.json", json_safe(results))
    common.save_text(out / f"{NAME}.md", markdown(common.load_json(out / f"{NAME}.json")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--modes", default=",".join(MODES), help="distillation modes")
    parser.add_argument("--run", action="append", default=[], help="task=RUN_DIR (no training)")
    parser.add_argument("--rounds", type=int, default=6, help="teacher: FedAvg rounds")
    parser.add_argument("--local-epochs", type=int, default=2, help="teacher: local epochs")
    parser.add_argument(
        "--max-train-rows", type=int, default=256, help="teacher: training rows per station"
    )
    parser.add_argument(
        "--distill-epochs", type=int, default=1, help="local epochs per distillation round"
    )
    parser.add_argument("--distill-rounds", type=int, default=4)
    parser.add_argument("--recover-rounds", type=int, default=2, help="pruning recovery rounds")
    parser.add_argument("--server-rows", type=int, default=2048, help="--distill server: rows")
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100, help="latency calls per model")
    parser.add_argument("--grid-repeats", type=int, default=50, help="edge-grid calls")
    common.add_common_flags(parser, common.ROOT / "runs" / "bench-compression")
    args = common.parse_args(parser, argv, NAME, markdown)
    if args is None:
        return
    torch.set_num_threads(1)
    start, cpu = time.time(), _cpu_seconds()
    given = dict(item.split("=", 1) for item in args.run)
    tasks, modes = args.tasks.split(","), args.modes.split(",")
    kept = 0
    results = {
        "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__},
        "provenance": [common.provenance(argv)],
        "tasks": {},
    }
    earlier = (common.load_json(args.out / f"{NAME}.json") or {}).get("provenance", [])
    for task in tasks:
        teacher = given_teacher(given[task]) if task in given else federated_teacher(task, args)
        print(f"[{task}] teacher {teacher['run_dir']} ({teacher['kind']})", flush=True)
        entry = {"teacher": teacher, "modes": {}}
        results["tasks"][task] = entry
        for mode in modes:
            entry["modes"][mode] = compress_piece(task, mode, teacher, args)
            measured = (entry["modes"][mode].get("provenance") or {}).get("date", "")
            kept += measured < results["provenance"][0]["date"]  # measured before this run
            results["wall_seconds"] = time.time() - start
            results["cpu_seconds"] = _cpu_seconds() - cpu
            save(results, args.out)
    results["complete"] = set(tasks) == set(TASKS) and set(modes) == set(MODES)
    results["provenance"] = provenance_records(results)  # + where kept pieces were measured
    if kept:  # the invocations that measured the kept pieces
        results["provenance"] = provenance_records({**results, "provenance": [
            *results["provenance"], *(p for p in earlier if isinstance(p, dict))]})
    save(results, args.out)


if __name__ == "__main__":
    main()
