"""The federated benchmark's results JSON, collected from the pieces under ``--work``.

``benchmarks/federated.py`` saves one JSON per (task, seed, method) under
``<work>/accuracy/<task>-s<seed>/``; :func:`summarize` aggregates them over seeds
(mean and 95% Student-t half-width, :func:`common.mean_ci`, stored as
``[mean, half-width, n]``) into what ``federated_report.py`` renders. Scores are
direction-aware: ``gain`` of FedAvg over a reference is positive when FedAvg is better,
and the FedAvg/centralized ratio is ``fed / central`` for higher-is-better metrics and
``central / fed`` for lower-is-better ones (so >= 0.95 means the same in both).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import common

METRICS = {
    "beam-spatial": ("top1", "top3", "gain_loss_db", "gain_loss_db_p90"),
    "positioning": ("error_p90_m", "error_p50_m", "error_mean_m"),
    "los": ("auc", "accuracy"),
}
"""Metrics shown per task (the primary first)."""
LEARNED = ("fedavg", "centralized", "local-only")


def ci(values) -> list[float]:
    """``[mean, 95% half-width, n]`` over seeds (NaN/None skipped)."""
    return list(common.mean_ci(values))


def ratio(fed: float, central: float, higher: bool) -> float:
    """FedAvg's share of centralized: ``fed / central`` (higher is better) or ``central / fed``."""
    return fed / central if higher else central / fed


def gain(fed: float, ref: float, higher: bool) -> float:
    """How much FedAvg is better than ``ref`` (positive = better) in the metric's unit."""
    return fed - ref if higher else ref - fed


def baseline_methods(metrics: dict, primary: str) -> list[str]:
    """Names of the baselines in a ``Task.baseline`` result (``{name}_{primary}`` keys)."""
    suffix = f"_{primary}"
    return sorted(k[: -len(suffix)] for k in metrics if k.endswith(suffix))


def best_baseline(metrics: dict, primary: str) -> str | None:
    """The baseline whose primary metric is the plain one (``best_of`` picked it)."""
    for name in baseline_methods(metrics, primary):
        if metrics[f"{name}_{primary}"] == metrics.get(primary):
            return name
    return None


def _load_seed(folder: Path) -> dict | None:
    """One (task, seed)'s pieces, or ``None`` when it is not complete."""
    pieces = {p.stem: common.load_json(p) for p in folder.glob("*.json")}
    if not {"fedavg", "config", "centralized", "baselines"} <= set(pieces):
        return None
    n = len(pieces["fedavg"]["clients"])
    if any(f"local-{c}" not in pieces for c in range(n)):
        return None
    return pieces


def task_entry(task: str, seeds: list[dict]) -> dict:
    """Aggregate of one task over its complete seeds."""
    from rantune.presets import load_preset
    from rantune.tasks import get_task

    spec = get_task(task)
    primary, higher = spec.primary_metric, spec.higher_is_better
    metrics = METRICS.get(task, (primary,))
    first = seeds[0]
    n = len(first["fedavg"]["clients"])
    clients = [str(c) for c in range(n)]
    config = {k: v for k, v in first["config"].items() if k not in ("task", "seed", "method", "provenance", "wall-s")}
    stations = [s.name for s in load_preset(config["data.preset"]).sites]

    def local(u: dict, c: str) -> dict:
        return u[f"local-{c}"]

    glob: dict[str, dict[str, list[float]]] = {}
    for m in metrics:
        glob.setdefault("fedavg", {})[m] = ci(u["fedavg"]["global"][m] for u in seeds)
        glob.setdefault("centralized", {})[m] = ci(u["centralized"]["global"][m] for u in seeds)
        glob.setdefault("local-only", {})[m] = ci(
            statistics.fmean(local(u, c)["global"][m] for c in clients) for u in seeds
        )
    names = baseline_methods(first["baselines"]["global"], primary)
    for name in names:
        glob[f"baseline: {name}"] = {
            m: ci(u["baselines"]["global"].get(f"{name}_{m}") for u in seeds) for m in metrics
        }

    def own(u: dict, method: str, c: str) -> float:
        if method == "fedavg":
            return u["fedavg"]["clients"][c][primary]
        if method == "centralized":
            return u["centralized"]["clients"][c][primary]
        if method == "local-only":
            return local(u, c)["own"][primary]
        return u["baselines"]["clients"][c][primary]

    methods = [*LEARNED, "best baseline"]
    station_rows = {
        stations[int(c)]: {m: ci(own(u, m, c) for u in seeds) for m in methods} for c in clients
    }
    for c in clients:
        picks = [best_baseline(u["baselines"]["clients"][c], primary) for u in seeds]
        station_rows[stations[int(c)]]["best baseline name"] = sorted({p for p in picks if p})
    client_mean = {
        m: [statistics.fmean(own(u, m, c) for c in clients) for u in seeds] for m in methods
    }
    fed_g = [u["fedavg"]["global"][primary] for u in seeds]
    cen_g = [u["centralized"]["global"][primary] for u in seeds]
    loc_g = [statistics.fmean(local(u, c)["global"][primary] for c in clients) for u in seeds]
    base_g = [u["baselines"]["global"][primary] for u in seeds]
    curves = [u["fedavg"]["curve"] for u in seeds]
    client_curves = [u["fedavg"]["client-mean-curve"] for u in seeds]
    fed = [u["fedavg"] for u in seeds]
    return {
        "metric": primary,
        "higher-is-better": higher,
        "metrics": list(metrics),
        "seeds": [u["fedavg"]["seed"] for u in seeds],
        "rounds": first["config"]["rounds"],
        "config": {k: v for k, v in config.items() if k != "rounds"},
        "stations": [stations[int(c)] for c in clients],
        "global": glob,
        "stations-own-test": station_rows,
        "client-mean-own-test": {m: ci(v) for m, v in client_mean.items()},
        "fedavg": ci(fed_g),
        "centralized": ci(cen_g),
        "local-only-global-test": ci(loc_g),
        "local-only-own-test": ci(client_mean["local-only"]),
        "best-baseline-global": ci(base_g),
        "fed-over-central": statistics.fmean(
            ratio(f, c, higher) for f, c in zip(fed_g, cen_g, strict=True)
        ),
        "fed-over-central-per-seed": [ratio(f, c, higher) for f, c in zip(fed_g, cen_g, strict=True)],
        "fed-gain-over-local-own": ci(
            gain(f, lo, higher)
            for f, lo in zip(client_mean["fedavg"], client_mean["local-only"], strict=True)
        ),
        "fed-gain-over-local-global": ci(
            gain(f, lo, higher) for f, lo in zip(fed_g, loc_g, strict=True)
        ),
        "fed-gain-over-baseline-global": ci(
            gain(f, b, higher) for f, b in zip(fed_g, base_g, strict=True)
        ),
        "curve": [ci(v) for v in zip(*curves, strict=True)],
        "client-mean-curve": [ci(v) for v in zip(*client_curves, strict=True)],
        "up-bytes-per-client-round": fed[0]["up-per-client-round"],
        "full-model-bytes": fed[0]["full-model-bytes"],
        "up-ratio": fed[0]["up-ratio"],
        "fedavg-round-s": statistics.fmean(f["round-s"] for f in fed),
        "wall-s": {
            "fedavg": sum(u["fedavg"]["wall-s"] for u in seeds),
            "centralized": sum(u["centralized"]["wall-s"] for u in seeds),
            "local-only": sum(local(u, c)["wall-s"] for u in seeds for c in clients),
            "baselines": sum(u["baselines"]["wall-s"] for u in seeds),
        },
    }


def summarize(work: Path, preset: str, pretrained: str) -> dict:
    """The results JSON of every finished piece under ``work``."""
    by_task: dict[str, list[dict]] = {}
    provenance: list[dict] = []

    def keep(record: dict | None) -> None:
        key = record and (record["command"], record["commit"], record["dirty"])
        if record and key not in {(r["command"], r["commit"], r["dirty"]) for r in provenance}:
            provenance.append(record)

    for folder in sorted((Path(work) / "accuracy").glob("*-s*")):
        pieces = _load_seed(folder)
        if pieces is None:
            continue
        for piece in pieces.values():
            keep(piece.pop("provenance", None))
        by_task.setdefault(pieces["fedavg"]["task"], []).append(pieces)
    summary: dict = {
        "preset": preset,
        "pretrained": pretrained,
        "accuracy": {
            t: task_entry(t, sorted(s, key=lambda u: u["fedavg"]["seed"]))
            for t, s in sorted(by_task.items())
        },
        "scale": "moved to benchmarks/scale.py (issue 14)",
    }
    for path in sorted(Path(work).glob("convergence-*.json")):
        loaded = common.load_json(path)
        keep(loaded.pop("provenance", None))
        summary.setdefault("convergence", {})[loaded["task"]] = loaded
    for part in ("overhead", "ray"):
        loaded = common.load_json(Path(work) / f"{part}.json")
        if loaded:
            keep(loaded.pop("provenance", None))
            summary[part] = loaded
    summary["provenance"] = provenance
    return summary
