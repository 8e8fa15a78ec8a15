"""The data compression uses: client rows for calibration and recovery, the global test set
for measuring.

Rows come from the run's own preset and partitioning
(:class:`rantune.federated.splits.FederatedData`), so calibration uses client data
the run trained on and accuracy is measured on the held-out global test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from rantune.errors import InputError
from rantune.federated.run_config import RunConfig
from rantune.federated.splits import FederatedData
from rantune.tasks import get_task


def _subsample(rows: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    if max_rows is None or len(rows) <= max_rows:
        return rows
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=max_rows, replace=False))


def pooled_split(
    cfg: RunConfig,
    split: str,
    max_rows: int | None = None,
    seed: int = 0,
    clients: Sequence[int] | None = None,
    data: FederatedData | None = None,
) -> tuple[Tensor, Tensor]:
    """Inputs and targets of every client's ``split`` rows pooled (``train``/``val``/``test``).

    ``max_rows`` caps the count with a seeded random subset (stratification is left to
    the partitioning: every client contributes in proportion to its size). ``clients``
    (partition ids) pools only those clients' rows; default all. ``data``: the run's
    stations when already loaded.
    """
    data = data or FederatedData.load(cfg.data, cfg.partition)
    chosen = data.parts.clients if clients is None else [data.parts.clients[c] for c in clients]
    rows = np.concatenate([getattr(client, split) for client in chosen])
    rows = _subsample(np.sort(rows), max_rows, seed)
    return data.tensors_of(get_task(cfg.task, cfg.task_options), rows)


@dataclass
class CompressionData:
    """Tensors for one compression job.

    Attributes
    ----------
    train_x, train_y : client training rows (pruning recovery, distillation; labels are
        used where a variant asks for them).
    calib_x : client rows for static-quantization calibration (float32 numpy); may be
        ``None``, then ``int8-static`` refuses to run.
    eval_x, eval_y : global test rows: every variant is measured on them.
    """

    train_x: Tensor
    train_y: Tensor | None
    calib_x: np.ndarray | None
    eval_x: Tensor
    eval_y: Tensor

    def __post_init__(self) -> None:
        if len(self.eval_x) == 0:
            raise InputError("no evaluation rows: the global test set is empty")
        if self.calib_x is not None and len(self.calib_x) == 0:
            self.calib_x = None


def run_data(
    cfg: RunConfig,
    max_train: int | None = 4096,
    max_calib: int = 256,
    max_eval: int | None = 2048,
    seed: int = 0,
) -> CompressionData:
    """Client training rows, calibration rows and the global test set of a run."""
    data = FederatedData.load(cfg.data, cfg.partition)
    train_x, train_y = pooled_split(cfg, "train", max_rows=max_train, seed=seed, data=data)
    calib_x, _ = pooled_split(cfg, "train", max_rows=max_calib, seed=seed + 1, data=data)
    test_rows = _subsample(data.parts.global_test, max_eval, seed + 2)
    eval_x, eval_y = data.tensors_of(get_task(cfg.task, cfg.task_options), test_rows)
    return CompressionData(train_x, train_y, calib_x.numpy(), eval_x, eval_y)
