"""Channel data generation speed per scenario and the cache-reload speed-up.

Measures, on this machine:

- Sionna TR 38.901 generation throughput (samples/s) for UMi, UMa and RMa, with
  and without ``csi_sequence`` time snapshots, at the project's input shape
  (16 BS antennas x 32 subcarriers, 16 beams);
- the time to reload the same site from the checksummed safetensors cache
  (sha256 verification included), and the ratio generation time / reload time
  (target: >= 100x);
- optionally, wall time of a whole preset (``--preset default``).

Each measurement is repeated; the median is reported with the min and max. The
machine may be shared, so the load average before and after is recorded.

Usage::

    python benchmarks/data_generation.py            # writes benchmarks/results/
    python benchmarks/data_generation.py --samples 256 --repeats 1 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rantune.channels import load_sites  # noqa: E402
from rantune.channels.sionna_generator import generate_site  # noqa: E402
from rantune.config import DataConfig, RadioConfig, SiteConfig  # noqa: E402
from rantune.fileio import atomic_write_bytes, atomic_write_json  # noqa: E402
from rantune.presets import load_preset  # noqa: E402

SCENARIOS = ("umi", "uma", "rma")
DISTANCES = {"umi": (10.0, 200.0), "uma": (35.0, 500.0), "rma": (35.0, 2000.0)}


def site_for(scenario: str, samples: int) -> SiteConfig:
    return SiteConfig(
        name=f"bench-{scenario}",
        scenario=scenario,
        num_samples=samples,
        speed_range_mps=(0.0, 15.0),
        indoor_probability=0.3,
        distance_range_m=DISTANCES[scenario],
        seed=4242,
    )


def timed(func) -> tuple[float, object]:
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure_generation(samples: int, repeats: int, time_steps: tuple[int, ...]) -> list[dict]:
    rows = []
    for steps in time_steps:
        radio = RadioConfig(num_time_steps=steps)
        for scenario in SCENARIOS:
            site = site_for(scenario, samples)
            seconds = [
                timed(lambda s=site, r=radio: generate_site(s, r))[0] for _ in range(repeats)
            ]
            rate = [samples / s for s in seconds]
            rows.append(
                {
                    "scenario": scenario,
                    "num_time_steps": steps,
                    "samples": samples,
                    "seconds": spread(seconds),
                    "samples_per_s": spread(rate),
                }
            )
            print(
                f"  {scenario} T={steps}: {statistics.median(rate):7.1f} samples/s "
                f"({statistics.median(seconds):.2f} s)",
                flush=True,
            )
    return rows


def measure_cache(samples: int, repeats: int, root: Path) -> dict:
    """Generation + save through ``load_sites`` (cache miss), then reloads (cache hits)."""
    radio = RadioConfig(num_time_steps=6)
    cfg = DataConfig(name="bench-cache", radio=radio, sites=(site_for("umi", samples),))
    generate_s, _ = timed(lambda: load_sites(cfg, cache_root=root, progress=False))
    reloads = [
        timed(lambda: load_sites(cfg, cache_root=root, progress=False))[0]
        for _ in range(max(repeats, 5))
    ]
    shard = next((root / "sites").glob("*.safetensors"))
    reload_s = statistics.median(reloads)
    return {
        "site": asdict(cfg.sites[0]),
        "num_time_steps": radio.num_time_steps,
        "shard_bytes": shard.stat().st_size,
        "generate_and_save_s": generate_s,
        "reload_s": spread(reloads),
        "speedup": generate_s / reload_s,
        "target_speedup": 100.0,
        "meets_target": generate_s / reload_s >= 100.0,
    }


def measure_preset(name: str, root: Path) -> dict:
    cfg = load_preset(name)
    seconds, sites = timed(lambda: load_sites(cfg, cache_root=root, progress=False))
    total = sum(len(s) for s in sites)
    reload_s, _ = timed(lambda: load_sites(cfg, cache_root=root, progress=False))
    return {
        "preset": name,
        "sites": len(sites),
        "samples": total,
        "num_time_steps": cfg.radio.num_time_steps,
        "generate_s": seconds,
        "samples_per_s": total / seconds,
        "reload_s": reload_s,
    }


def machine() -> dict:
    import numpy
    import sionna
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "sionna": sionna.__version__,
        "numpy": numpy.__version__,
        "git_commit": commit,
    }


def markdown(result: dict) -> str:
    lines = [
        "# Channel data generation benchmark",
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}, commit {result['machine']['git_commit']}, "
        f"{result['machine']['cpu_count']} CPUs, torch {result['machine']['torch']} "
        f"({result['machine']['torch_threads']} threads), Sionna {result['machine']['sionna']}.  ",
        f"Load average before/after: {result['load_before']} / {result['load_after']} "
        "(the machine is shared; higher load means slower numbers).",
        "",
        f"Radio: {result['radio']['num_bs_antennas']} BS antennas x "
        f"{result['radio']['num_subcarriers']} subcarriers, {result['radio']['num_beams']} beams; "
        f"{result['samples']} samples per scenario, median of {result['repeats']} run(s) "
        f"after a warm-up of {result['warmup_s']:.1f} s (imports, first call per scenario and shape).",
        "",
        "## Generation throughput",
        "",
        "| scenario | time steps | samples/s (median) | min-max | seconds (median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["generation"]:
        rate = row["samples_per_s"]
        lines.append(
            f"| {row['scenario']} | {row['num_time_steps']} | {rate['median']:.0f} | "
            f"{rate['min']:.0f}-{rate['max']:.0f} | {row['seconds']['median']:.2f} |"
        )
    cache = result["cache"]
    lines += [
        "",
        "## Cache reload",
        "",
        f"One UMi site, {cache['site']['num_samples']} samples with "
        f"{cache['num_time_steps']}-slot sequences, shard {cache['shard_bytes'] / 1e6:.1f} MB.",
        "",
        "| generate + save (s) | reload (s, median) | speed-up | target |",
        "|---:|---:|---:|---:|",
        f"| {cache['generate_and_save_s']:.2f} | {cache['reload_s']['median']:.4f} | "
        f"{cache['speedup']:.0f}x | >= {cache['target_speedup']:.0f}x "
        f"({'met' if cache['meets_target'] else 'NOT met'}) |",
        "",
        "Reload = read + sha256 check + safetensors parse; the shard is in the OS page cache.",
    ]
    if result.get("preset"):
        p = result["preset"]
        lines += [
            "",
            "## Whole preset",
            "",
            f"`{p['preset']}`: {p['sites']} sites, {p['samples']} samples "
            f"({p['num_time_steps']} time steps) generated in {p['generate_s']:.1f} s "
            f"({p['samples_per_s']:.0f} samples/s); reload {p['reload_s']:.2f} s.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=512, help="samples per scenario")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement")
    parser.add_argument("--preset", default=None, help="also time a whole preset, e.g. default")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    command = "python benchmarks/data_generation.py" + (
        " " + shlex.join(sys.argv[1:] if argv is None else argv)
        if (sys.argv[1:] if argv is None else argv)
        else ""
    )
    load_before = [round(x, 2) for x in os.getloadavg()]
    print("warm-up (Sionna import, first call per scenario and shape)...", flush=True)
    warmup_s, _ = timed(
        lambda: [
            generate_site(site_for(scenario, 32), RadioConfig(num_time_steps=steps))
            for scenario in SCENARIOS
            for steps in (0, 6)
        ]
    )
    print("generation:", flush=True)
    generation = measure_generation(args.samples, args.repeats, time_steps=(0, 6))
    print("cache:", flush=True)
    with tempfile.TemporaryDirectory(prefix="rantune-bench-") as tmp:
        cache = measure_cache(args.samples, args.repeats, Path(tmp) / "cache")
        print(f"  reload speed-up {cache['speedup']:.0f}x", flush=True)
        preset = measure_preset(args.preset, Path(tmp) / "preset") if args.preset else None
    result = {
        "benchmark": "data_generation",
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "radio": asdict(replace(RadioConfig(), num_time_steps=0)),
        "samples": args.samples,
        "repeats": args.repeats,
        "warmup_s": warmup_s,
        "generation": generation,
        "cache": cache,
        "preset": preset,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "data_generation.json", result)
    atomic_write_bytes(args.out / "data_generation.md", markdown(result).encode())
    print(f"wrote {args.out / 'data_generation.json'} and .md", flush=True)
    return result


if __name__ == "__main__":
    main()
