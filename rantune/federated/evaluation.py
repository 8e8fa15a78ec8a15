"""Server-side evaluation of the global model and summaries of per-client metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord

from rantune.federated import workload
from rantune.federated.messages import BOOKKEEPING_METRICS, NUM_EXAMPLES, record_to_state
from rantune.federated.run_config import RunConfig
from rantune.lora import load_trainable_state
from rantune.tasks import get_task
from rantune.training import evaluate

LOWER_IS_BETTER = ("loss", "nmse_db", "nmse")


def lower_is_better(metric: str) -> bool:
    """Direction of a metric name (``val-loss``, ``personalized-nmse_db`` ... included)."""
    return any(
        metric == m or metric.endswith("-" + m) or metric.endswith("_" + m) for m in LOWER_IS_BETTER
    )


class GlobalEvaluator:
    """Evaluates global adapter + head tensors on the held-out global test set.

    The test tensors and the model are built once; each call loads the state.
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.task = get_task(cfg.task)
        self.x, self.y = workload.tensors(cfg, None, "test")

    def __call__(self, state: Mapping[str, np.ndarray]) -> dict[str, float]:
        workload.apply_threads(self.cfg)
        model = workload.cached_model(self.cfg)
        load_trainable_state(model, {k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        result = evaluate(model, self.task, self.x, self.y)
        result[NUM_EXAMPLES] = int(result.pop("num_examples"))
        return {k: (int(v) if k == NUM_EXAMPLES else float(v)) for k, v in result.items()}

    def evaluate_fn(self) -> Callable[[int, ArrayRecord], MetricRecord]:
        """Flower's ``evaluate_fn(server_round, arrays) -> MetricRecord`` form."""

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            return MetricRecord(self(record_to_state(arrays)))

        return evaluate_fn


def summarize_clients(
    per_client: Mapping[str, Mapping[str, float]], primary: str, higher_is_better: bool
) -> dict:
    """Mean, worst and example-weighted metrics over clients.

    Returns ``{"mean": {m: v}, "weighted": {m: v}, "worst": {m: v}, "worst-client": id}``;
    ``worst`` takes each metric's own direction, ``worst-client`` is the client with
    the worst ``primary`` metric.
    """
    if not per_client:
        return {}
    metrics = sorted(
        {k for m in per_client.values() for k in m if k not in (NUM_EXAMPLES, *BOOKKEEPING_METRICS)}
    )
    summary: dict = {"mean": {}, "weighted": {}, "worst": {}}
    weights = {c: float(m.get(NUM_EXAMPLES, 1) or 0) for c, m in per_client.items()}
    for name in metrics:
        values = {c: float(m[name]) for c, m in per_client.items() if name in m}
        finite = {c: v for c, v in values.items() if math.isfinite(v)}
        if not finite:
            continue
        summary["mean"][name] = float(np.mean(list(finite.values())))
        total = sum(weights[c] for c in finite)
        if total > 0:
            summary["weighted"][name] = float(
                sum(weights[c] * v for c, v in finite.items()) / total
            )
        pick = max if lower_is_better(name) else min
        summary["worst"][name] = pick(finite.values())
    scores = {c: float(m[primary]) for c, m in per_client.items() if primary in m}
    scores = {c: v for c, v in scores.items() if math.isfinite(v)}
    if scores:
        pick = min if higher_is_better else max
        summary["worst-client"] = pick(sorted(scores), key=lambda c: scores[c])
    return summary
