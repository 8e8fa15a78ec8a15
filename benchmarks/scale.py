"""Scale: peak memory and round time at 64, 1,000 and 10,000 base stations.

For each federation size it runs the same workload (natural partitioning, one client
per station, ``--clients`` sampled per round for training and for evaluation,
``--rounds`` rounds, the global test set capped at ``--global-test-rows``) on

- the in-process engine with 1 and with 2 worker processes
  (``run_simulation(workers=...)``), each in a fresh process;
- Flower's Ray simulation (``flwr run .`` against a warm local simulation SuperLink,
  2 CPUs for the actors: the same parallelism as 2 workers), for the sizes in
  ``--ray-stations``;

and records the peak RSS and PSS summed over the run's whole process tree and the
CPU seconds it used (sampled from /proc every 0.2 s; this light driver process
itself is not counted), the wall time of each round (``history.json``) and end to
end, and the machine's load average around each run. Each run has its own session
(with the kernel's autogroup scheduling, a session's processes share one fair share
of the CPU between them, as Ray's processes under their SuperExec do). Results: ``benchmarks/results/scale.json`` and ``scale.md``
(written by :mod:`scale_report`; ``--render`` rewrites the Markdown only).

Data: every station has ``--samples`` TR 38.901 samples (16 antennas x 32
subcarriers, no time series). The first 64 stations are generated with Sionna (the
same 64 site configs for every size). Station ``i >= 64`` is a tiled copy: its cache
entry, under its own key (its own name and seed), is a hard link to station
``i mod 64``'s shard with that station's channels. Generating 640,000 samples would
take 5 to 100 minutes here; what is measured (memory and time per process, rows read
per client) depends on the shards' sizes and number, not on their values.

    python benchmarks/scale.py                       # measure everything (~20 min)
    python benchmarks/scale.py --stations 64,1000 --ray-stations 64
    python benchmarks/scale.py --render
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import common
from scale_report import markdown

NAME = "scale"
WORK = common.ROOT / "runs" / "bench-scale"
GENERATED = 64  # stations generated with Sionna; the rest are tiled copies of these
TEMPLATES = (
    ("umi-dense", "umi", (0.0, 2.0), 0.7, (10.0, 120.0), (5.0, 25.0), 7000),
    ("uma-urban", "uma", (1.0, 15.0), 0.5, (35.0, 350.0), (0.0, 20.0), 7100),
    ("rma-farm", "rma", (0.0, 10.0), 0.3, (35.0, 1500.0), (0.0, 15.0), 7200),
    ("uma-road", "uma", (15.0, 33.0), 0.0, (35.0, 500.0), (-5.0, 10.0), 7300),
)


# ------------------------------------------------------------------------- data
def preset_text(stations: int, samples: int) -> str:
    """A preset of ``stations`` TR 38.901 sites cycling through :data:`TEMPLATES`."""
    lines = [
        f'name = "scale-{stations}"',
        f'description = "{stations} base stations of {samples} samples: the scale benchmark"',
        "[radio]",
        "num_bs_antennas = 16",
        "num_subcarriers = 32",
        "num_beams = 16",
        "num_time_steps = 0",
        "[generate]",
        f"count = {stations}",
    ]
    for name, scenario, speed, indoor, distance, snr, seed in TEMPLATES:
        lines += [
            "[[generate.templates]]",
            f'name = "{name}"',
            f'scenario = "{scenario}"',
            f"num_samples = {samples}",
            f"speed_range_mps = [{speed[0]}, {speed[1]}]",
            f"indoor_probability = {indoor}",
            f"distance_range_m = [{distance[0]}, {distance[1]}]",
            f"snr_range_db = [{snr[0]}, {snr[1]}]",
            f"seed = {seed}",
        ]
    return "\n".join(lines) + "\n"


def prepare(stations: int, samples: int, work: Path) -> Path:
    """Write the preset of ``stations`` stations and fill its cache (once); returns
    the preset's path."""
    from rantune.channels import cache_key, load_sites
    from rantune.channels.cache import ShardCache
    from rantune.fileio import atomic_write_json
    from rantune.presets import load_preset

    path = work / "presets" / f"scale-{stations}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(preset_text(stations, samples))
    cfg = load_preset(path)
    cache = ShardCache(work / "cache")
    base = replace(cfg, sites=cfg.sites[: min(GENERATED, stations)])
    load_sites(base, cache_root=cache.root, progress=False)  # generates only missing ones
    base_keys = [cache_key(cfg, site) for site in base.sites]
    t0, tiled = time.perf_counter(), 0
    for i in range(len(base.sites), stations):
        key = cache_key(cfg, cfg.sites[i])
        if cache.contains(key):
            continue
        source = base_keys[i % len(base_keys)]
        src_shard, src_meta = cache.paths(source)
        shard, meta = cache.paths(key)
        try:
            os.link(src_shard, shard)
        except OSError:  # another file system: a copy
            shutil.copyfile(src_shard, shard)
        record = json.loads(src_meta.read_text())
        record.update(key=key, site=asdict(cfg.sites[i]), tiled_from=source)
        atomic_write_json(meta, record)
        tiled += 1
    if tiled:
        print(f"scale-{stations}: {tiled} tiled stations in {time.perf_counter() - t0:.1f} s")
    return path


# ------------------------------------------------------------------------- runs
def run_config(args, preset: Path, stations: int, out: Path) -> dict:
    """The one workload of every run at a size (flat run-config keys)."""
    share = min(1.0, args.clients / stations)
    return {
        "data.preset": str(preset),
        "task": "los",
        "model.pretrained": args.pretrained,
        "num-server-rounds": args.rounds,
        "fraction-train": share,
        "fraction-evaluate": share,
        "min-train-clients": 2,
        "min-evaluate-clients": 2,
        "min-available-clients": 2,
        "data.max-global-test-rows": args.global_test_rows,
        "local-epochs": 1,
        "out-dir": str(out),
    }


def child(args) -> None:
    """One engine run in this (fresh) process: ``--child STATIONS`` with ``--workers``."""
    import logging

    from rantune.simulations.engine import run_simulation
    from rantune.simulations.quiet import quiet_third_party

    quiet_third_party()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    preset = args.work / "presets" / f"scale-{args.child}.toml"
    out = Path(args.run_out)
    run_simulation(run_config(args, preset, args.child, out), workers=args.workers)


def _entry(history: dict, total_s: float, sampler: common.PeakSampler, load: list) -> dict:
    rounds = [r for r in history["rounds"] if r["round"] > 0]
    return {
        "clients": history["num-clients"],
        "sampled-per-round": [len(r["train"]["sampled"]) for r in rounds],
        "answered-per-round": [len(r["train"]["answered"]) for r in rounds],
        "round-s": [r["wall-time-s"] for r in rounds],
        "phase-s": [r["phase-s"] for r in rounds],
        "total-s": total_s,
        "peak-rss-bytes": sampler.peak,
        "peak-pss-bytes": sampler.peak_pss,
        "cpu-s": sampler.cpu_s,
        "load": load,
        "final": history["final"],
    }


def _autogroup() -> bool | None:
    """Whether the kernel shares CPU fairly between sessions (sched_autogroup)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return None


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_engine(args, stations: int, workers: int) -> dict:
    """The engine at ``stations`` with ``workers`` workers, in a child process."""
    out = args.work / f"engine-{stations}-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "RANTUNE_CACHE": str(args.work / "cache")}
    command = [
        sys.executable, __file__, "--child", str(stations), "--workers", str(workers),
        "--run-out", str(out), "--work", str(args.work), "--clients", str(args.clients),
        "--rounds", str(args.rounds), "--global-test-rows", str(args.global_test_rows),
        "--pretrained", args.pretrained,
    ]  # fmt: skip
    before = _load()
    with common.PeakSampler(os.getpid(), 0.2, include_root=False) as sampler:
        t0 = time.perf_counter()
        # its own session, as flwr run's SuperExec (its scheduling group under autogroup)
        done = subprocess.run(
            command, env=env, timeout=args.timeout, check=False, start_new_session=True
        )
        total = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"engine run ({stations} stations, {workers} workers) failed")
    history = json.loads((out / "history.json").read_text())
    return _entry(history, total, sampler, [before, _load()])


def run_ray(args, stations: int, preset: Path) -> dict:
    """``flwr run .`` (Ray) at ``stations`` against a warm local simulation SuperLink."""
    from rantune.simulations.engine.flwr_cli import flwr_simulation

    out = args.work / f"ray-{stations}"
    shutil.rmtree(out, ignore_errors=True)
    config = run_config(args, preset, stations, out)
    before = _load()
    extra = {"RANTUNE_CACHE": str(args.work / "cache")}
    with flwr_simulation(extra_env=extra) as sim:
        with common.PeakSampler(os.getpid(), 0.2, include_root=False) as sampler:
            result = sim.run(config, num_supernodes=stations, timeout=args.timeout)
    if result.returncode != 0 or not (out / "history.json").exists():
        raise RuntimeError(f"flwr run ({stations} stations) failed:\n{result.output[-3000:]}")
    history = json.loads((out / "history.json").read_text())
    entry = _entry(history, result.total_s, sampler, [before, _load()])
    entry["submit-s"] = result.submitted_s
    return entry


def measure(args) -> None:
    started = common.provenance()  # the code that runs: its state now, not at the end
    path = args.out / f"{NAME}.json"
    result = common.load_json(path) or {}
    result.pop("provenance", None)
    result.update(
        {
            "samples-per-station": args.samples,
            "generated-stations": GENERATED,
            "clients-per-round": args.clients,
            "rounds": args.rounds,
            "global-test-rows": args.global_test_rows,
            "pretrained": args.pretrained,
            "autogroup": _autogroup(),
        }
    )
    sizes = result.setdefault("sizes", {})
    for stations in args.stations:
        preset = prepare(stations, args.samples, args.work)
        entry = sizes.setdefault(str(stations), {})
        for workers in (1, 2):
            print(f"{stations} stations, engine with {workers} worker(s) ...", flush=True)
            entry[f"engine-w{workers}"] = run_engine(args, stations, workers)
            _save(path, result, started)
        if stations in args.ray_stations:
            print(f"{stations} stations, flwr run (Ray) ...", flush=True)
            try:
                entry["ray"] = run_ray(args, stations, preset)
            except (RuntimeError, TimeoutError) as err:
                entry["ray"] = {"error": str(err)[-500:]}
            _save(path, result, started)
    common.render(path, args.out / f"{NAME}.md", markdown)


def _save(path: Path, result: dict, provenance: dict) -> None:
    common.save_json(path, {**result, "provenance": provenance})


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=_ints, default=[64, 1000, 10000])
    parser.add_argument("--ray-stations", type=_ints, default=[64, 1000])
    parser.add_argument("--clients", type=int, default=50, help="clients sampled per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=64, help="samples per station")
    parser.add_argument("--global-test-rows", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--run-out", default=None, help=argparse.SUPPRESS)
    common.add_common_flags(parser, WORK)
    args = common.parse_args(parser, argv, NAME, markdown)
    if args is None:
        return
    if args.child is not None:
        child(args)
        return
    measure(args)


if __name__ == "__main__":
    main()
