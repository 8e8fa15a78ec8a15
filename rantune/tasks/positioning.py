"""``positioning``: a user's horizontal position from its CSI at one base station (ray-traced only).

Runs on ray-traced stations (:mod:`rantune.channels.raytraced`), whose channels follow
the station's streets and buildings so that a position leaves a learnable fingerprint
in the CSI. On TR 38.901 stations a user's position is not encoded in its channel
beyond geometry (every drop's clusters are drawn at random), so the task refuses data
without ray-traced rows; in a preset that mixes both kinds the TR 38.901 rows have no
target (NaN) and are left out of the loss, the metrics and the baselines.

Inputs ``[B, 2, A, S]`` (``csi_noisy``); targets ``[B, 2]`` float32, ``ut_position``'s
``(x, y)`` in metres relative to the BS (NaN where not ray-traced); output ``[B, 2]``
metres. Metrics: horizontal error mean, 50th and 90th percentile (primary, lower is
better). Baselines: LoS geometry (angle of the strongest path from the CSI, range from
its delay, front or back of the array from the received power) and k-nearest-neighbour
fingerprinting on the station's training rows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from rantune.channels.dataset import ChannelDataset
from rantune.config import RadioConfig
from rantune.errors import InputError
from rantune.model.config import ModelConfig
from rantune.model.encoder import csi_to_real
from rantune.tasks.base import Task
from rantune.tasks.baselines import best_of
from rantune.tasks.baselines import positioning as bl
from rantune.tasks.classification import CLASSIFICATION_HEADS, _check_head
from rantune.tasks.metrics import position_metrics
from rantune.tasks.observation import own_norm

RT_DELAY_FIELD = "delay_s"  # strongest path's delay: ray-traced stations only
POSITION_SCALE_M = 100.0  # the head predicts position / scale (unit-scale regression)


class PositionHead(nn.Module):
    """A classification-style head with 2 outputs, scaled to metres: ``[B, 2]``."""

    def __init__(self, head: str, d_model: int) -> None:
        super().__init__()
        self.inner = CLASSIFICATION_HEADS[head](d_model, 2)

    def forward(self, x: Tensor, cls: Tensor, patches: Tensor) -> Tensor:
        return POSITION_SCALE_M * self.inner(x, cls, patches)  # [B, 2] metres


def located_rows(data: ChannelDataset) -> np.ndarray:
    """Bool ``[N]``: rows from ray-traced stations (a finite strongest-path delay).

    Raises
    ------
    InputError
        If the data set holds no ray-traced rows.
    """
    hint = (
        "the positioning task runs on ray-traced stations only: on TR 38.901 stations a "
        "user's position is not encoded in its channel beyond geometry. Use a preset with "
        'ray-traced (scenario = "rt") sites, e.g. rt-smoke'
    )
    if RT_DELAY_FIELD not in data:
        raise InputError(f"{hint} (this data set has no {RT_DELAY_FIELD!r} field)")
    located = np.isfinite(data[RT_DELAY_FIELD]) & np.isfinite(data["ut_position"][:, :2]).all(1)
    if not located.any():
        raise InputError(f"{hint} (no row of this data set is ray-traced)")
    return located


class PositioningTask(Task):
    """Horizontal UE position from ``csi_noisy`` at one ray-traced station."""

    name = "positioning"
    primary_metric = "error_p90_m"
    higher_is_better = False
    regression = True

    def __init__(self, head: str = "token-mlp") -> None:
        self.head = _check_head(head)

    def tensors(self, data: ChannelDataset, index: np.ndarray) -> tuple[Tensor, Tensor]:
        located = located_rows(data)[index]
        target = data["ut_position"][index, :2].astype(np.float32)
        target[~located] = np.nan
        return csi_to_real(own_norm(data["csi_noisy"][index])), torch.as_tensor(target)

    def build_head(self, cfg: ModelConfig, radio: RadioConfig) -> nn.Module:
        return PositionHead(self.head, cfg.d_model)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean squared horizontal error in units of ``POSITION_SCALE_M`` over rows with a
        target (0 with a zero gradient when a batch has none)."""
        valid = torch.isfinite(target).all(dim=1)
        if not bool(valid.any()):
            return output.sum() * 0.0
        err = (output[valid] - target[valid]) / POSITION_SCALE_M
        return err.pow(2).sum(dim=1).mean()

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, float]:
        return position_metrics(output.double().numpy(), target.double().numpy())

    def baseline(
        self, data: ChannelDataset, train: np.ndarray, test: np.ndarray
    ) -> dict[str, float]:
        located = located_rows(data)
        train, test = train[located[train]], test[located[test]]
        if len(train) == 0 or len(test) == 0:
            raise InputError("positioning baselines need ray-traced training and test rows")
        position, sites = data["ut_position"], data["site_index"]
        estimates = {
            "los_geometry": bl.los_geometry(
                data["csi_noisy"],
                data[RT_DELAY_FIELD],
                data["csi_norm"],
                position,
                data["los"],
                sites,
                train,
                test,
            ),
            "knn": bl.knn_fingerprinting(data["csi_noisy"], position, sites, train, test),
        }
        truth = position[test, :2].astype(np.float64)
        methods = {name: position_metrics(est, truth) for name, est in estimates.items()}
        return best_of(methods, self.primary_metric, self.higher_is_better)
