"""Compression benchmark: every edge variant per task on models from the `default` preset.

For each task (los, beam, prediction) the script takes a fine-tuning run directory
(``--run task=PATH``, else a finished federated run found under ``runs/`` whose
config says this task and the default preset, else it trains a centralized LoRA run
in the same format with :func:`compression.merge.train_centralized_run`), runs
``compress`` on it and benchmarks every artifact with the edge runtime (p50/p95 at
batch 1/64 with 1/2 threads). Writes ``benchmarks/results/compression.{md,json}``.

    python benchmarks/compression.py                 # all tasks
    python benchmarks/compression.py --tasks los --epochs 1
    python benchmarks/compression.py --server        # add torchao server-core timings
    python benchmarks/compression.py --render        # compression.md from the committed JSON
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common
import onnx
import onnxruntime as ort
import torch
from compression_report import markdown

from rantune.compression.distill import DistillSettings
from rantune.compression.edge import EdgeModel
from rantune.compression.merge import ADAPTER_NAME, load_run, read_run_config, train_centralized_run
from rantune.compression.pipeline import DEFAULT_VARIANTS, CompressSettings, compress
from rantune.federated.rundir import json_safe
from rantune.training import TrainSettings

NAME = "compression"
TASKS = ("los", "beam", "prediction")
SERVER_EVAL_ROWS = 512  # at most this many test rows for the server-core timing and error check


def find_federated_run(task: str, search: Path, notes: list[str]) -> Path | None:
    """A finished run under ``search`` of ``task`` on the default preset that loads with
    the current model code. Preference: no update compression, a pretrained base, the
    natural partition, FedAvg, seed 0, most rounds, newest. Runs that do not load are
    skipped with a note."""
    found = []
    for adapter in search.glob(f"**/{ADAPTER_NAME}"):
        try:
            cfg, raw = read_run_config(adapter.parent)
        except ValueError:
            continue
        if cfg.task != task or cfg.data.preset != "default" or raw.get("mode") == "centralized":
            continue
        rank = (
            cfg.compression.method != "none",
            cfg.model.is_random,
            cfg.partition.scheme != "natural",
            cfg.strategy.name != "fedavg",
            cfg.seed,
            -cfg.num_server_rounds,
            -adapter.stat().st_mtime,
        )
        found.append((rank, str(adapter.parent)))
    for _, run_dir in sorted(found):
        try:
            load_run(run_dir)
        except ValueError as err:
            notes.append(f"- skipped federated run `{run_dir}`: {str(err)[:200]}")
            continue
        return Path(run_dir)
    return None


def centralized_run(task: str, work: Path, args) -> tuple[Path, dict]:
    run_dir = work / "runs" / task
    pretrained = args.pretrained
    overrides = {
        "task": task,
        "seed": 0,
        "data.preset": "default",
        "model.pretrained": pretrained,
        "model.size": "tiny",
        "lora.r": 8,
        "lora.alpha": 16.0,
        "lora.targets": "q_proj,v_proj,fc1,fc2",
    }
    info = {"kind": "centralized LoRA (rantune.training)", "overrides": overrides}
    if (run_dir / ADAPTER_NAME).exists() and not args.retrain:
        cfg, raw = read_run_config(run_dir)
        flat = raw.get("flat", {})
        same = all(flat.get(k) == v for k, v in overrides.items())
        try:
            load_run(run_dir)  # still fits the current model code
        except ValueError:
            same = False
        if same:
            info["summary"] = raw.get("centralized", {}).get("summary")
            return run_dir, info
    settings = TrainSettings(epochs=args.epochs, batch_size=32, lr=args.lr, seed=0)
    start = time.time()
    info["summary"] = train_centralized_run(run_dir, overrides, settings, args.max_train_rows)
    info["train_seconds"] = time.time() - start
    info["train_settings"] = {"epochs": args.epochs, "lr": args.lr, "batch_size": 32}
    return run_dir, info


def edge_grid(art: Path, variants: list[str], repeats: int) -> dict:
    grid = {}
    for name in variants:
        result = EdgeModel(art / name).bench((1, 64), (1, 2), warmup=5, repeats=repeats)
        grid[name] = result["results"]
    return grid


def server_modes(run_dir: Path, compile_modes: bool, repeats: int) -> tuple[list[dict], int]:
    """torchao server core on this CPU: eager fp32 vs int8 modes (+ torch.compile),
    all built first and then timed side by side in interleaved rounds; also returns the
    number of test rows the error check used."""
    from torch._dynamo.utils import counters

    from rantune.compression.data import run_data
    from rantune.compression.measure import interleaved
    from rantune.compression.quantize_server import quantize_for_server

    run = load_run(run_dir)
    data = run_data(run.config, max_train=8, max_calib=8, max_eval=SERVER_EVAL_ROWS)
    x = data.eval_x
    with torch.no_grad():
        reference = run.model(x)
    spread = float(reference.max() - reference.min())
    combos = [(m, False) for m in ("fp32", "int8-weight-only", "int8-dynamic")]
    if compile_modes:
        combos += [("fp32", True), ("int8-weight-only", True), ("int8-dynamic", True)]
    rows, modules = [], {}
    for mode, compiled in combos:
        graphs = counters["stats"]["unique_graphs"]
        start = time.time()
        served = quantize_for_server(run.model, mode, "cpu", compile=compiled)
        out = served(x)  # the first call compiles
        for batch in (x[:1], x[:64]):
            served(batch)  # and the batch sizes timed below
        key = f"{mode}{'+compile' if compiled else ''}"
        modules[key] = served.module
        rows.append(
            {
                "mode": mode,
                "compiled": compiled,
                "setup_s": time.time() - start,
                "graphs_compiled": counters["stats"]["unique_graphs"] - graphs,
                "max_abs_err_rel": float((out - reference).abs().max()) / spread,
            }
        )
    with torch.inference_mode():
        for label, batch in (("b1", x[:1]), ("b64", x[:64])):
            calls = {k: (lambda m=m, b=batch: m(b)) for k, m in modules.items()}
            stats = interleaved(calls, repeats, 3)
            for row, key in zip(rows, modules, strict=True):
                row[label] = stats[key]["p50_ms"]
    for row in rows:
        print(f"server {row}", flush=True)
    return rows, int(len(x))


def overhead_share(path: Path) -> float:
    """Share of a quantized file that is not int8 weights (fp32 params, scales, graph)."""
    proto = onnx.load(str(path))
    int8 = sum(len(i.raw_data) for i in proto.graph.initializer if i.data_type == 3)
    return 1.0 - int8 / path.stat().st_size


def validation_drop(report: dict, art: Path, variant: str) -> str:
    """The same drop measured on the clients' validation rows (not the test set)."""
    from rantune.compression.data import pooled_split

    run = load_run(report["source"]["run_dir"])
    x, y = pooled_split(run.config, "val", max_rows=2048, seed=7)
    key = report["primary_metric"]
    with torch.no_grad():
        teacher = run.task.metrics(run.model(x), y)[key]
    output = torch.from_numpy(EdgeModel(art / variant).predict(x.numpy()))
    value = run.task.metrics(output, y)[key]
    drop = (teacher - value) * 100 if report["higher_is_better"] else value - teacher
    unit = "points" if report["higher_is_better"] else "dB"
    return f"; on {len(x)} client validation rows the drop is {drop:+.2f} {unit}"


def miss_reasons(report: dict, art: Path) -> list[str]:
    reasons = []
    unit = "points" if report["higher_is_better"] else "dB"
    for check in report["targets"]:
        if check["met"]:
            continue
        name = check["variant"]
        if check["size_ratio"] > check["max_size_ratio"]:
            share = overhead_share(art / name / "model.onnx")
            params = report["reference"]["parameters"] / 1e6
            reasons.append(
                f"{name}: size {check['size_ratio']:.3f}x > {check['max_size_ratio']}x: "
                f"{share:.0%} of the int8 file is not int8 weights (fp32 LayerNorm/bias/"
                f"positional parameters, per-channel scales, graph); at {params:.1f}M parameters "
                "this fixed part weighs more than in large models"
            )
        if check["drop"] > check["max_drop"]:
            variant = next(v for v in report["variants"] if v["variant"] == name)
            detail = ""
            if report["higher_is_better"]:
                rows = round(check["drop"] / 100 * report["eval_rows"])
                agree = variant.get("agreement_with_teacher")
                detail = (
                    f" = {rows} of {report['eval_rows']} test rows; top-1 agreement with the "
                    f"teacher {agree:.1%}"
                )
            try:
                detail += validation_drop(report, art, name)
            except (ValueError, OSError) as err:
                detail += f" (validation check unavailable: {err})"
            reasons.append(
                f"{name}: drop {check['drop']:+.2f} {unit} > {check['max_drop']:g} {unit}{detail}"
            )
        if check.get("speedup_b1", 1e9) < check.get("min_speedup_b1", 0):
            reasons.append(
                f"{name}: batch-1 speed-up {check['speedup_b1']:.1f}x < "
                f"{check['min_speedup_b1']:g}x vs torch eager"
            )
    return reasons


def save(results: dict, out: Path) -> None:
    common.save_json(out / f"{NAME}.json", json_safe(results))
    common.save_text(out / f"{NAME}.md", markdown(results))


def add_server_timings(args) -> None:
    """torchao server-core timings for the committed results' run directories."""
    results = common.load_json(args.out / f"{NAME}.json")
    torch.set_num_threads(args.torch_threads)
    for entry in results["tasks"].values():
        if Path(entry["artifacts"]).is_dir():
            entry["misses"] = miss_reasons(entry["report"], Path(entry["artifacts"]))
        entry["server"], entry["server_eval_rows"] = server_modes(
            Path(entry["run_dir"]), args.server_compile, args.repeats
        )
    results["provenance"].append(common.provenance())
    save(results, args.out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--run", action="append", default=[], help="task=RUN_DIR")
    parser.add_argument("--search", type=Path, default=common.ROOT / "runs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-train-rows", type=int, default=None)
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--distill-epochs", type=int, default=6)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch threads for training (1: shared CPUs)"
    )
    parser.add_argument(
        "--server", action="store_true", help="add torchao server timings to the JSON"
    )
    parser.add_argument("--server-compile", action="store_true", help="also torch.compile")
    common.add_common_flags(parser, common.ROOT / "runs" / "bench-compression")
    args = common.parse_args(parser, argv, NAME, markdown)
    if args is None:
        return
    if args.server:
        add_server_timings(args)
        return
    torch.set_num_threads(args.torch_threads)
    given = dict(item.split("=", 1) for item in args.run)
    results = {"versions": {"onnxruntime": ort.__version__}, "tasks": {}, "notes": []}
    results["provenance"] = [common.provenance(argv)]
    settings = CompressSettings(
        distill=DistillSettings(epochs=args.distill_epochs),
        student_layers=args.student_layers,
        bench_repeats=args.repeats,
        bench_warmup=10,
    )
    for task in args.tasks.split(","):
        start = time.time()
        if task in given:
            run_dir, source = Path(given[task]), {"kind": "given run directory"}
        elif (found := find_federated_run(task, args.search, results["notes"])) is not None:
            run_dir, source = found, {"kind": "federated run"}
        else:
            run_dir, source = centralized_run(task, args.work, args)
        print(f"[{task}] run {run_dir} ({source['kind']})", flush=True)
        art = args.work / "art" / task
        variants = [*DEFAULT_VARIANTS, "sparse-int8"]
        report = compress(run_dir, art, variants, settings, overwrite=True, log=print)
        entry = {
            "run_dir": str(run_dir),
            "source": source,
            "artifacts": str(art),
            "report": report,
            "misses": miss_reasons(report, art),
            "edge_grid": edge_grid(art, variants, max(20, args.repeats // 2)),
            "seconds": time.time() - start,
        }
        results["tasks"][task] = entry
        save(results, args.out)
        print(f"[{task}] done in {entry['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
