"""Server-side evaluation of the global model and summaries of per-client metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from rantune.federated.downlink import ModelPool
from rantune.federated.messages import BOOKKEEPING_METRICS, NUM_EXAMPLES
from rantune.federated.run_config import RunConfig
from rantune.federated.splits import FederatedData
from rantune.federated.workload import apply_threads, model_spec
from rantune.lora import load_trainable_state
from rantune.tasks import get_task
from rantune.training import evaluate

# Metric names where a lower value is better (losses, NMSE, beam gain loss, position error).
LOWER_IS_BETTER = (
    "loss", "nmse_db", "nmse", "gain_loss_db", "gain_loss_db_p90",
    "error_mean_m", "error_p50_m", "error_p90_m",
)


def lower_is_better(metric: str) -> bool:
    """Direction of a metric name (``val-loss``, ``personalized-nmse_db`` ... included)."""
    return any(
        metric == m or metric.endswith("-" + m) or metric.endswith("_" + m) for m in LOWER_IS_BETTER
    )


class GlobalEvaluator:
    """Evaluates global adapter + head tensors on the held-out global test set.

    Built once by the server: it reads the global test rows (the held-out share of
    every station, ``data.max-global-test-rows`` capping them; memory-mapped reads of
    only those rows) and keeps only their tensors, and keeps its own models
    (:class:`~rantune.federated.downlink.ModelPool`: a plain one, and a separate one
    for strategies whose global model carries dense deltas); each call loads the
    state. With ``server-evaluation = false`` it opens no data at all and every call
    returns ``{}``.

    Attributes
    ----------
    task : the run's task.
    spec : the global model (rank ``lora.r``).
    enabled : ``server-evaluation``.
    x, y : inputs and targets of the global test rows (task shapes); ``None`` when off.
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.task = get_task(cfg.task, cfg.task_options)
        self.spec = model_spec(cfg)
        self.threads = cfg.torch_threads
        self.enabled = cfg.server_evaluation
        self.x = self.y = None
        if self.enabled:
            data = FederatedData.load(cfg.data, cfg.partition)
            self.x, self.y = data.tensors(self.task, None, "test")
        self.models = ModelPool()

    def __call__(
        self,
        state: Mapping[str, np.ndarray],
        dense_deltas: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, float]:
        """Metrics of the global model ``state`` (``{key: ndarray}``), with the dense
        deltas ``{module prefix: [d_out, d_in]}`` folded into the base where given;
        ``{}`` when server-side evaluation is off."""
        if not self.enabled:
            return {}
        apply_threads(self.threads)
        model = self.models.model(self.spec, dense_deltas)
        load_trainable_state(model, {k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        result = evaluate(model, self.task, self.x, self.y)
        result[NUM_EXAMPLES] = int(result.pop("num_examples"))
        return {k: (int(v) if k == NUM_EXAMPLES else float(v)) for k, v in result.items()}


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
