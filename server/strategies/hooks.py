"""Server-side use of a rule's dense deltas (:meth:`Rule.dense_deltas`, read by the round loop).

FLoRA, FedEx-LoRA: the global model is the pretrained base plus
a cumulative dense update of the adapted projections, plus the global adapters and
head. :func:`evaluate_global` folds it in for server-side evaluation (a separate
model copy: :class:`rantune.federated.downlink.ModelPool`), and
:func:`write_dense_deltas` stores it next to the run's global adapter as
``OUT/global_dense_deltas.safetensors`` (``{prefix}.dense_delta`` float32 keys), so
the saved run is the whole model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rantune.aggregation.dense import DENSE_FILE, DENSE_SUFFIX
from rantune.fileio import atomic_write_bytes
from rantune.server.strategies.template import Rule

__all__ = ["DENSE_FILE", "evaluate_global", "write_dense_deltas"]


def evaluate_global(evaluator, rule: Rule, state: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``evaluator(state)`` (a :class:`rantune.federated.evaluation.GlobalEvaluator`),
    with the rule's dense deltas folded into the base when it has any."""
    return evaluator(state, rule.dense_deltas())


def write_dense_deltas(out_dir: str | Path, rule: Rule) -> Path | None:
    """Write ``OUT/global_dense_deltas.safetensors`` when the rule has dense deltas."""
    deltas = rule.dense_deltas()
    if deltas is None:
        return None
    from safetensors.numpy import save

    path = Path(out_dir) / DENSE_FILE
    payload = save(
        {
            p + DENSE_SUFFIX: np.ascontiguousarray(v, dtype=np.float32)
            for p, v in sorted(deltas.items())
        }
    )
    atomic_write_bytes(path, payload)
    return path
