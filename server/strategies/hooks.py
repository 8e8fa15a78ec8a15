"""Server-side uses of the optional strategy hooks (read by ``server/loop.py``).

``dense_deltas()`` (FLoRA, FedEx-LoRA): the global model is the pretrained base plus
a cumulative dense update of the adapted projections, plus the global adapters and
head. :func:`evaluate_global` folds it in for server-side evaluation (a separate
model copy: :func:`rantune.federated.downlink.model_for`), and
:func:`write_dense_deltas` stores it next to the run's global adapter as
``OUT/global_dense_deltas.safetensors`` (``{prefix}.dense_delta`` float32 keys), so
the saved run is the whole model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rantune.aggregation.dense import DENSE_SUFFIX
from rantune.fileio import atomic_write_bytes

DENSE_FILE = "global_dense_deltas.safetensors"


def strategy_dense_deltas(strategy) -> dict[str, np.ndarray] | None:
    hook = getattr(strategy, "dense_deltas", None)
    return hook() if callable(hook) else None


def evaluate_global(evaluator, strategy, state: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``evaluator(state)`` (a :class:`rantune.federated.evaluation.GlobalEvaluator`),
    with the strategy's dense deltas folded into the base when it has any."""
    return evaluator(state, strategy_dense_deltas(strategy))


def write_dense_deltas(out_dir: str | Path, strategy) -> Path | None:
    """Write ``OUT/global_dense_deltas.safetensors`` when the strategy has dense deltas."""
    deltas = strategy_dense_deltas(strategy)
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
