"""Markdown of the scale benchmark, generated from ``benchmarks/results/scale.json``.

Every number below comes from that JSON (or from :data:`TARGETS`, the acceptance
thresholds of issue 14); ``python benchmarks/scale.py --render`` rewrites ``scale.md``
from it without measuring.
"""

from __future__ import annotations

import statistics

import common

TARGETS = {
    "memory-ratio": 1.2,  # peak RSS at the largest size / at 64 stations (same clients per round)
    "workers-speedup": 1.7,  # time per round, 1 worker / 2 workers
    "engine-over-ray": 3.0,  # end to end, flwr run (Ray) / engine with 2 workers
}
RUNS = (("engine-w1", "engine, 1 worker"), ("engine-w2", "engine, 2 workers"), ("ray", "flwr run (Ray)"))
MIB = 2**20


def _mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _mean_round(entry: dict) -> float:
    """Mean time of a round after the first (which also starts workers or Ray actors)."""
    rounds = entry["round-s"]
    return statistics.fmean(rounds[1:] if len(rounds) > 1 else rounds)


def _all_rounds(entry: dict) -> float:
    return statistics.fmean(entry["round-s"])


def _ok(entry: dict | None) -> bool:
    return bool(entry) and "error" not in entry


def _completed(entry: dict) -> bool:
    return entry["answered-per-round"] == entry["sampled-per-round"]


def _loads(payload: dict) -> list[float]:
    return [
        load[0]
        for size in payload["sizes"].values()
        for entry in size.values()
        if _ok(entry)
        for load in entry["load"]
    ]


def run_table(payload: dict) -> list[str]:
    rows = []
    for stations, size in sorted(payload["sizes"].items(), key=lambda kv: int(kv[0])):
        for key, label in RUNS:
            entry = size.get(key)
            if entry is None:
                continue
            if not _ok(entry):
                rows.append([f"{int(stations):,}", label, "failed", *["—"] * 7])
                continue
            pss, cpu = entry.get("peak-pss-bytes"), entry.get("cpu-s")
            before, after = entry["load"]
            rows.append(
                [
                    f"{int(stations):,}",
                    label,
                    "/".join(str(n) for n in entry["sampled-per-round"]),
                    ", ".join(f"{s:.1f}" for s in entry["round-s"]),
                    f"{_mean_round(entry):.1f}",
                    f"{entry['total-s']:.1f}",
                    f"{entry['peak-rss-bytes'] / MIB:,.0f}",
                    "—" if pss is None else f"{pss / MIB:,.0f}",
                    "—" if cpu is None else f"{cpu / entry['total-s']:.2f}",
                    f"{before[0]:.1f} → {after[0]:.1f}",
                ]
            )
    header = [
        "stations", "run", "clients per round", "round s", "mean of rounds 2+ s",
        "end to end s", "peak RSS MiB", "peak PSS MiB", "CPU cores used", "load (1 min)",
    ]  # fmt: skip
    return common.table(header, rows, "llrrrrrrrr")


def ratio_table(payload: dict) -> list[str]:
    rows = []
    for stations, size in sorted(payload["sizes"].items(), key=lambda kv: int(kv[0])):
        one, two, ray = size.get("engine-w1"), size.get("engine-w2"), size.get("ray")
        workers = _mean_round(one) / _mean_round(two) if _ok(one) and _ok(two) else None
        workers_all = _all_rounds(one) / _all_rounds(two) if _ok(one) and _ok(two) else None
        e2e = ray["total-s"] / two["total-s"] if _ok(ray) and _ok(two) else None
        per_round = _mean_round(ray) / _mean_round(two) if _ok(ray) and _ok(two) else None
        memory = ray["peak-rss-bytes"] / two["peak-rss-bytes"] if _ok(ray) and _ok(two) else None
        rows.append(
            [
                f"{int(stations):,}",
                common.fmt(workers, 2),
                common.fmt(workers_all, 2),
                common.fmt(e2e, 2),
                common.fmt(per_round, 2),
                common.fmt(memory, 2),
            ]
        )
    header = [
        "stations", "2 workers vs 1 (rounds 2+)", "2 workers vs 1 (all rounds)",
        "engine vs Ray (end to end)", "engine vs Ray (rounds 2+)", "Ray / engine peak RSS",
    ]  # fmt: skip
    return common.table(header, rows)


def memory_lines(payload: dict) -> tuple[list[str], dict]:
    sizes = {int(k): v for k, v in payload["sizes"].items()}
    smallest, largest = min(sizes), max(sizes)
    ratios = {}
    rows = []
    for key, label in RUNS:
        low, high = sizes[smallest].get(key), sizes[largest].get(key)
        if _ok(low) and _ok(high) and largest != smallest:
            ratios[key] = high["peak-rss-bytes"] / low["peak-rss-bytes"]
            rows.append(
                [
                    label,
                    f"{low['peak-rss-bytes'] / MIB:,.0f}",
                    f"{high['peak-rss-bytes'] / MIB:,.0f}",
                    f"{ratios[key]:.2f}",
                ]
            )
    header = ["run", f"peak MiB at {smallest:,}", f"peak MiB at {largest:,}", "ratio"]
    return common.table(header, rows), {"smallest": smallest, "largest": largest, **ratios}


def targets(payload: dict, memory: dict) -> list[str]:
    sizes = {int(k): v for k, v in payload["sizes"].items()}
    largest = sizes[memory["largest"]]
    lines = []
    done = [k for k, _ in RUNS[:2] if _ok(largest.get(k)) and _completed(largest[k])]
    lines.append(
        f"- {memory['largest']:,} stations complete on the engine ({', '.join(done) or 'none'}; "
        f"every sampled client answered every round): {_mark(len(done) == 2)}"
    )
    for key in ("engine-w1", "engine-w2"):
        if key in memory:
            ok = memory[key] <= TARGETS["memory-ratio"]
            lines.append(
                f"- {key}: peak memory at {memory['largest']:,} within "
                f"{TARGETS['memory-ratio']}x of {memory['smallest']:,} ({memory[key]:.2f}x): "
                f"{_mark(ok)}"
            )
    for stations, size in sorted(sizes.items()):
        one, two, ray = size.get("engine-w1"), size.get("engine-w2"), size.get("ray")
        if _ok(one) and _ok(two):
            speed = _mean_round(one) / _mean_round(two)
            lines.append(
                f"- {stations:,} stations: 2 workers {speed:.2f}x faster per round than 1 "
                f"(rounds 2+; target {TARGETS['workers-speedup']}x): "
                f"{_mark(speed >= TARGETS['workers-speedup'])}"
            )
        if _ok(ray) and _ok(two):
            speed = ray["total-s"] / two["total-s"]
            lines.append(
                f"- {stations:,} stations: engine {speed:.2f}x faster than Ray end to end "
                f"(target {TARGETS['engine-over-ray']}x): "
                f"{_mark(speed >= TARGETS['engine-over-ray'])}"
            )
        elif ray is not None and not _ok(ray):
            lines.append(f"- {stations:,} stations: flwr run (Ray) failed: {ray['error'][-200:]}")
    return lines


def markdown(payload: dict) -> str:
    loads = _loads(payload)
    memory_table, memory = memory_lines(payload)
    intro = [
        f"Natural partitioning (one client per base station), task `los`, encoder "
        f"`{payload['pretrained']}`, {payload['clients-per-round']} clients sampled per round "
        f"for training and as many for evaluation, {payload['rounds']} rounds, 1 local "
        f"epoch, the server's global test set capped at {payload['global-test-rows']} rows. "
        f"Each station has {payload['samples-per-station']} TR 38.901 samples (16 x 32 CSI); "
        f"the first {payload['generated-stations']} are generated with Sionna and every "
        f"further station is a tiled copy (its own cache key, name and seed; a hard link to "
        f"station i mod {payload['generated-stations']}'s shard, so its channels repeat that "
        "station's). Memory and time depend on the number and size of the shards, not on "
        "their values.",
        "",
        "Peak RSS is summed over the whole process tree of a run (the engine's process and "
        "its workers; for `flwr run`, the SuperLink, the ServerApp and the Ray processes), "
        "sampled every 0.2 s; it counts a page shared by several processes (forked "
        "workers share their parent's) once per process, PSS splits it between them. Engine runs are fresh processes (end to end includes Python "
        "and torch start-up); `flwr run` is timed from submission to exit against a warm "
        "local simulation SuperLink, with 2 CPUs for its actors (the parallelism of 2 workers). "
        "Round 1 also starts the workers' jobs or Ray's actors; the per-round comparisons "
        "use the mean of rounds 2 and later.",
    ]
    load_note = []
    if loads:
        load_note.append(
            f"1-minute load average around the runs: {min(loads):.1f} to {max(loads):.1f} on "
            f"{payload['provenance']['machine']['cores']} cores."
        )
        if payload.get("autogroup"):
            load_note.append(
                "The kernel schedules with autogroup (`sched_autogroup_enabled` = 1): CPU "
                "time is shared fairly between sessions, and each run is one session (as "
                "`flwr run`'s Ray processes are, under their SuperExec), so while other "
                "sessions are busy a run's processes split one share between them, however "
                "many there are. CPU cores used = the CPU seconds of the run's process tree "
                "/ its end-to-end seconds."
            )
        if max(loads) > payload["provenance"]["machine"]["cores"]:
            load_note.append(
                "Other jobs shared the cores during some runs (a load above the core count): "
                "two workers cannot be twice as fast when the second core is taken, so a "
                "missed speed-up there measures the contention as much as the engine."
            )
    lines = [
        "# Scale: 64 to 10,000 base stations",
        "",
        *common.provenance_lines(payload["provenance"]),
        "",
        *intro,
        "",
        *common.section("Runs", run_table(payload), load_note),
        *common.section("Ratios in the same run", ratio_table(payload)),
        *common.section("Memory against the number of stations", memory_table),
        *common.section("Targets (issue 14)", targets(payload, memory)),
    ]
    return "\n".join(lines)
