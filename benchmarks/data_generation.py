"""Channel data generation speed: TR 38.901 per scenario, ray tracing per scene, cache reloads.

Measures, on this machine, at the project's input shape (16 BS antennas x 32
subcarriers, 16 beams), with and without 6-slot ``csi_sequence``:

- Sionna TR 38.901 throughput (samples/s) for UMi, UMa and RMa (median of repeats);
- Sionna RT throughput per scene (samples/s of one whole site: scene load, radio map,
  drops and path tracing) for the ray-traced stations of the ``default`` preset and
  the ``rt-smoke`` street canyon, with the candidate positions each drop tried;
- the time to reload a TR 38.901 and a ray-traced site from the checksummed cache
  (sha256 check included) and the speed-up over generating it;
- optionally (``--preset default``) the wall time of a whole preset, split by kind.

The machine may be shared: the load average is recorded with the results.

Usage::

    python benchmarks/data_generation.py                     # writes benchmarks/results/
    python benchmarks/data_generation.py --preset default    # + the whole default preset
    python benchmarks/data_generation.py --render            # Markdown from the JSON
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import common

from rantune.channels import load_site_info, load_sites, site_kind
from rantune.channels.raytraced import generate_rt_site
from rantune.channels.sionna_generator import generate_site
from rantune.config import RT_SCENARIO, DataConfig, RadioConfig, SiteConfig
from rantune.presets import load_preset

NAME = "data_generation"
SCENARIOS = ("umi", "uma", "rma")
DISTANCES = {"umi": (10.0, 200.0), "uma": (35.0, 500.0), "rma": (35.0, 2000.0)}
TIME_STEPS = (0, 6)


def tr_site(scenario: str, samples: int) -> SiteConfig:
    return SiteConfig(
        name=f"bench-{scenario}",
        scenario=scenario,
        num_samples=samples,
        speed_range_mps=(0.0, 15.0),
        indoor_probability=0.3,
        distance_range_m=DISTANCES[scenario],
        seed=4242,
    )


def rt_sites(samples: int) -> list:
    """One ray-traced site per scene: default's stations, then rt-smoke's canyon."""
    sites = [s for s in load_preset("default").sites if s.scenario == RT_SCENARIO]
    sites.append(load_preset("rt-smoke").sites[0])
    return [replace(s, num_samples=samples) for s in sites]


def timed(func) -> tuple[float, object]:
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure_tr(samples: int, repeats: int) -> list[dict]:
    rows = []
    for steps in TIME_STEPS:
        radio = RadioConfig(num_time_steps=steps)
        for scenario in SCENARIOS:
            site = tr_site(scenario, samples)
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
                f"  TR {scenario} T={steps}: {statistics.median(rate):7.1f} samples/s", flush=True
            )
    return rows


def measure_rt(samples: int, repeats: int) -> list[dict]:
    """Each ray-traced site with and without sequences, interleaved so both see the same load.

    With one Dr.Jit thread every repeat gives the same samples; only the time varies.
    """
    seconds: dict[tuple[str, int], list[float]] = {}
    infos: dict[str, dict] = {}
    sites = rt_sites(samples)
    for _ in range(repeats):
        for site in sites:
            for steps in TIME_STEPS:
                radio = RadioConfig(num_time_steps=steps)
                took, (_, info) = timed(lambda s=site, r=radio: generate_rt_site(s, r))
                seconds.setdefault((site.name, steps), []).append(took)
                infos[site.name] = info
    rows = []
    for steps in TIME_STEPS:
        for site in sites:
            took = seconds[(site.name, steps)]
            rate = [samples / t for t in took]
            rows.append(
                {
                    "site": site.name,
                    "scene": site.scene,
                    "num_time_steps": steps,
                    "samples": samples,
                    "seconds": spread(took),
                    "samples_per_s": spread(rate),
                    "candidates": infos[site.name]["candidates"],
                    "no_path": infos[site.name]["no_path"],
                }
            )
            print(f"  RT {site.scene} T={steps}: {statistics.median(rate):7.1f} samples/s")
    return rows


def measure_cache(cfg: DataConfig, root: Path, repeats: int) -> dict:
    """Generation + save through ``load_sites`` (a miss), then reloads (hits)."""
    generate_s, _ = timed(lambda: load_sites(cfg, cache_root=root, progress=False))
    reloads = [
        timed(lambda: load_sites(cfg, cache_root=root, progress=False))[0]
        for _ in range(max(repeats, 5))
    ]
    shard = next((root / "sites").glob("*.safetensors"))
    reload_s = statistics.median(reloads)
    print(f"  {site_kind(cfg.sites[0])} reload speed-up {generate_s / reload_s:.0f}x", flush=True)
    return {
        "kind": site_kind(cfg.sites[0]),
        "site": asdict(cfg.sites[0]),
        "num_time_steps": cfg.radio.num_time_steps,
        "shard_bytes": shard.stat().st_size,
        "generate_and_save_s": generate_s,
        "reload_s": spread(reloads),
        "speedup": generate_s / reload_s,
    }


def measure_preset(name: str, root: Path) -> dict:
    cfg = load_preset(name)
    seconds, sites = timed(lambda: load_sites(cfg, cache_root=root, progress=False))
    info = load_site_info(cfg, cache_root=root)
    rt = [i for s, i in zip(cfg.sites, info, strict=True) if s.scenario == RT_SCENARIO]
    reload_s, _ = timed(lambda: load_sites(cfg, cache_root=root, progress=False))
    return {
        "preset": name,
        "sites": len(sites),
        "samples": sum(len(s) for s in sites),
        "raytraced_sites": len(rt),
        "raytraced_samples": sum(i["generation"]["accepted"] for i in rt),
        "raytraced_s": sum(i["generation"]["seconds"] for i in rt),
        "num_time_steps": cfg.radio.num_time_steps,
        "generate_s": seconds,
        "reload_s": reload_s,
    }


def markdown(result: dict) -> str:
    radio = result["radio"]
    lines = [
        "# Channel data generation benchmark",
        "",
        *common.provenance_lines(result["provenance"]),
        "",
        f"Radio: {radio['num_bs_antennas']} BS antennas x {radio['num_subcarriers']} "
        f"subcarriers, {radio['num_beams']} beams. Warm-up before timing: "
        f"{result['warmup_s']:.1f} s (imports, first call per scenario/scene and shape).",
        "",
    ]
    tr_rows = [
        [
            r["scenario"],
            r["num_time_steps"],
            f"{r['samples_per_s']['median']:.0f}",
            f"{r['samples_per_s']['min']:.0f}-{r['samples_per_s']['max']:.0f}",
            f"{r['seconds']['median']:.2f}",
        ]
        for r in result["tr38901"]
    ]
    lines += common.section(
        "TR 38.901 (Sionna) throughput",
        [f"{result['tr_samples']} samples per scenario, median of {result['repeats']} run(s)."],
        common.table(["scenario", "time steps", "samples/s", "min-max", "seconds"], tr_rows),
    )
    rt_rows = [
        [
            r["scene"],
            r["site"],
            r["num_time_steps"],
            f"{r['samples_per_s']['median']:.1f}",
            f"{r['samples_per_s']['min']:.1f}-{r['samples_per_s']['max']:.1f}",
            f"{r['seconds']['median']:.1f}",
            r["candidates"],
            r["no_path"],
        ]
        for r in result["raytraced"]
    ]
    lines += common.section(
        "Ray-traced (Sionna RT) throughput per scene",
        [
            f"{result['rt_samples']} users per site, median of {result['repeats']} run(s), "
            "with and without sequences interleaved (one Dr.Jit thread, so the same seed "
            "gives the same bytes). A site's time includes loading the scene, its "
            "radio map, the drops and the path tracing; `candidates` = positions drawn from "
            "the radio map, `no path` = traced positions without any path.",
        ],
        common.table(
            [
                "scene",
                "site",
                "time steps",
                "samples/s",
                "min-max",
                "seconds",
                "candidates",
                "no path",
            ],
            rt_rows,
            align="llrrrrrr",
        ),
    )
    cache_rows = [
        [
            c["kind"],
            c["site"]["name"],
            c["site"]["num_samples"],
            c["num_time_steps"],
            f"{c['shard_bytes'] / 1e6:.1f}",
            f"{c['generate_and_save_s']:.2f}",
            f"{c['reload_s']['median']:.4f}",
            f"{c['speedup']:.0f}x",
        ]
        for c in result["cache"]
    ]
    lines += common.section(
        "Cache reload",
        [
            "Reload = read + sha256 check + safetensors parse (the shard is in the OS page "
            "cache; a ray-traced reload also hashes the scene files, remembered per process)."
        ],
        common.table(
            [
                "kind",
                "site",
                "samples",
                "time steps",
                "shard MB",
                "generate + save s",
                "reload s",
                "speed-up",
            ],
            cache_rows,
            align="llrrrrrr",
        ),
    )
    if result.get("preset"):
        p = result["preset"]
        lines += common.section(
            "Whole preset",
            [
                f"`{p['preset']}`: {p['sites']} sites, {p['samples']} samples "
                f"({p['num_time_steps']} time steps) generated in {p['generate_s']:.1f} s, of "
                f"which {p['raytraced_sites']} ray-traced sites ({p['raytraced_samples']} "
                f"samples) took {p['raytraced_s']:.1f} s; reload {p['reload_s']:.2f} s."
            ],
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=512, help="TR 38.901 samples per scenario")
    parser.add_argument("--rt-samples", type=int, default=256, help="users per ray-traced site")
    parser.add_argument("--repeats", type=int, default=2, help="runs per TR 38.901 measurement")
    parser.add_argument("--preset", default=None, help="also time a whole preset, e.g. default")
    common.add_common_flags(parser)
    args = common.parse_args(parser, argv, NAME, markdown)
    if args is None:
        return None
    import torch

    torch.set_num_threads(1)
    provenance = common.provenance(argv)
    print("warm-up (imports, first call per scenario/scene and shape)...", flush=True)
    warmup_s, _ = timed(
        lambda: [
            [generate_site(tr_site(s, 32), RadioConfig(num_time_steps=t)) for s in SCENARIOS]
            + [
                generate_rt_site(replace(s, seed=1), RadioConfig(num_time_steps=t))
                for s in rt_sites(8)
            ]
            for t in TIME_STEPS
        ]
    )
    print("TR 38.901:", flush=True)
    tr_rows = measure_tr(args.samples, args.repeats)
    print("ray-traced:", flush=True)
    rt_rows = measure_rt(args.rt_samples, args.repeats)
    print("cache:", flush=True)
    radio = RadioConfig(num_time_steps=6)
    with tempfile.TemporaryDirectory(prefix="rantune-bench-") as tmp:
        cache = [
            measure_cache(
                DataConfig(name="bench-tr", radio=radio, sites=(tr_site("umi", args.samples),)),
                Path(tmp) / "tr",
                args.repeats,
            ),
            measure_cache(
                DataConfig(name="bench-rt", radio=radio, sites=(rt_sites(args.rt_samples)[1],)),
                Path(tmp) / "rt",
                args.repeats,
            ),
        ]
        preset = None
        if args.preset:
            print(f"preset {args.preset}:", flush=True)
            preset = measure_preset(args.preset, Path(tmp) / "preset")
    result = {
        "benchmark": NAME,
        "provenance": provenance,
        "load_after": common.provenance(argv)["load"],
        "radio": asdict(replace(RadioConfig(), num_time_steps=0)),
        "tr_samples": args.samples,
        "rt_samples": args.rt_samples,
        "repeats": args.repeats,
        "warmup_s": warmup_s,
        "tr38901": tr_rows,
        "raytraced": rt_rows,
        "cache": cache,
        "preset": preset,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    common.save_json(args.out / f"{NAME}.json", result)
    common.save_text(args.out / f"{NAME}.md", markdown(result))
    print(f"wrote {args.out / NAME}.json and .md", flush=True)
    return result


if __name__ == "__main__":
    main()
