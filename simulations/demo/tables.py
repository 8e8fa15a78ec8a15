"""Per-task result tables of the demo: every strategy next to its references.

A table (a JSON-able dict) has one row per model a reader compares:

- each federated strategy: its global model on the global test rows, and on each
  client's own test rows the model that station uses (the global model, or the
  personalized one where the strategy keeps parameters local: FedSA-LoRA keeps B);
- centralized LoRA, local-only LoRA and the strongest classical baseline
  (:mod:`rantune.simulations.demo.references`), scored the same way.

Client mean and worst are over the clients that have scored rows (NaN-free); "worst"
follows each metric's direction (:func:`rantune.federated.evaluation.lower_is_better`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from rantune.federated.evaluation import lower_is_better
from rantune.federated.messages import MB

TASK_METRICS = {
    "los": ("auc",),
    "beam": ("top1",),
    "beam-spatial": ("top1", "gain_loss_db"),
    "beam-temporal": ("top1", "gain_loss_db"),
    "prediction": ("nmse_db",),
    "positioning": ("error_p90_m",),
}
"""The metrics each task's table shows (the primary one first)."""

PERSONALIZED = "personalized-"


def task_metrics(task: str) -> tuple[str, ...]:
    """The table's metrics of ``task`` (its primary metric for a task not listed)."""
    if task in TASK_METRICS:
        return TASK_METRICS[task]
    from rantune.tasks import get_task

    return (get_task(task).primary_metric,)


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def client_summary(
    per_client: Mapping[str, Mapping[str, float | None] | None], metrics: tuple[str, ...]
) -> tuple[dict, dict, int]:
    """``(mean {m: v}, worst {m: v}, clients scored)`` over clients with finite values."""
    mean, worst, scored = {}, {}, 0
    for name in metrics:
        values = [
            v
            for entry in per_client.values()
            if entry is not None and (v := _finite(entry.get(name))) is not None
        ]
        scored = max(scored, len(values))
        mean[name] = float(np.mean(values)) if values else None
        pick = max if lower_is_better(name) else min
        worst[name] = pick(values) if values else None
    return mean, worst, scored


def station_metrics(history: Mapping, metrics: tuple[str, ...]) -> tuple[dict, bool]:
    """Each client's last-round metrics of the model its station uses; whether they are
    personalized (``personalized-<metric>`` reported by the client)."""
    last = [r for r in history["rounds"] if r.get("clients")][-1]
    out, personalized = {}, False
    for cid, entry in last["clients"].items():
        values = entry.get("evaluate") or {}
        if any(PERSONALIZED + m in values for m in metrics):
            personalized = True
            out[cid] = {m: values.get(PERSONALIZED + m) for m in metrics}
        else:
            out[cid] = {m: values.get(m) for m in metrics}
    return out, personalized


def curves(history: Mapping, metric: str) -> dict[str, list]:
    """Per training round: global metric, client mean of the stations' models, cumulative
    MB uploaded (``round``, ``global``, ``clients``, ``mb_up``)."""
    rounds, global_, clients, mb, total = [], [], [], [], 0.0
    for rec in history["rounds"]:
        if rec["round"] < 1:
            continue
        total += (rec.get("bytes") or {}).get("up", 0) / MB
        rounds.append(rec["round"])
        global_.append(_finite((rec.get("server") or {}).get(metric)))
        per_client = {
            cid: {
                metric: (e.get("evaluate") or {}).get(
                    PERSONALIZED + metric, (e.get("evaluate") or {}).get(metric)
                )
            }
            for cid, e in (rec.get("clients") or {}).items()
        }
        clients.append(client_summary(per_client, (metric,))[0][metric])
        mb.append(total)
    return {"round": rounds, "global": global_, "clients": clients, "mb_up": mb}


def _row(label: str, kind: str, global_: Mapping, per_client: Mapping, metrics, **extra) -> dict:
    mean, worst, scored = client_summary(per_client, metrics)
    return {
        "label": label,
        "kind": kind,
        "global": {m: _finite(global_.get(m)) for m in metrics},
        "client_mean": mean,
        "client_worst": worst,
        "clients_scored": scored,
        **extra,
    }


def task_table(
    task: str,
    primary: str,
    higher_is_better: bool,
    runs: Mapping[str, tuple[Mapping, Mapping]],
    references: Mapping,
) -> dict:
    """The table of one task.

    Parameters
    ----------
    task, primary, higher_is_better : the task, its primary metric and direction.
    runs : ``{strategy: (history.json, results.csv row)}`` of the federated runs.
    references : the task's :func:`~rantune.simulations.demo.references.reference_stage`
        entry (``central``, ``local``, ``baseline``, ``epochs``).
    """
    metrics = task_metrics(task)
    rows = []
    for strategy, (history, csv_row) in runs.items():
        per_client, personalized = station_metrics(history, metrics)
        rows.append(
            _row(
                strategy,
                "federated",
                history["rounds"][-1].get("server") or {},
                per_client,
                metrics,
                personalized=personalized,
                mb_up=float(csv_row["mb_up"]),
                mb_down=float(csv_row["mb_down"]),
            )
        )
    central, local, base = references["central"], references["local"], references["baseline"]
    rows.append(_row("centralized LoRA", "centralized", central["global"], central["clients"], metrics))
    local_global = {
        m: (
            float(np.mean(vals))
            if (vals := [v for e in local.values() if (v := _finite(e["global"].get(m))) is not None])
            else None
        )
        for m in metrics
    }
    rows.append(
        _row(
            "local-only LoRA",
            "local-only",
            local_global,
            {c: e["own"] for c, e in local.items()},
            metrics,
        )
    )
    rows.append(
        _row(
            f"classical: {base['method']}",
            "baseline",
            base["global"],
            base["clients"],
            metrics,
            method=base["method"],
        )
    )
    return {
        "task": task,
        "primary": primary,
        "higher_is_better": higher_is_better,
        "metrics": list(metrics),
        "epochs": references["epochs"],
        "rows": rows,
    }


def reference_lines(table: Mapping) -> dict[str, dict[str, float | None]]:
    """``{"global": {label: value}, "clients": {label: value}}`` of the primary metric for
    the centralized, local-only (global: the mean of the clients' models) and baseline
    rows: the plots' horizontal lines."""
    primary = table["primary"]
    lines: dict[str, dict[str, float | None]] = {"global": {}, "clients": {}}
    for row in table["rows"]:
        if row["kind"] == "federated":
            continue
        lines["global"][row["label"]] = row["global"][primary]
        lines["clients"][row["label"]] = row["client_mean"][primary]
    return lines
