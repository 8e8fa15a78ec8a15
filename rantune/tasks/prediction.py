"""Channel prediction: the CSI ``horizon`` slots ahead from the past slots."""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

from rantune.channels.dataset import ChannelDataset
from rantune.config import RadioConfig
from rantune.model.config import ModelConfig
from rantune.model.encoder import csi_to_real
from rantune.tasks.base import Task
from rantune.tasks.metrics import nmse_db


class ResidualPredictionHead(nn.Module):
    """Predicts a correction to the last observed slot from all slots' patch embeddings.

    ``patches`` ``[B, T_in, P, d]`` -> per patch ``[B, P, T_in * d]`` -> MLP -> ``[B, P,
    patch_dim]`` -> added to the last input slot: output ``[B, 2, A, S]``.
    """

    def __init__(self, cfg: ModelConfig, num_inputs: int, data_shape: tuple[int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.data_shape = data_shape
        self.mix = nn.Linear(num_inputs * cfg.d_model, cfg.d_model)
        self.act = nn.GELU()
        self.out = nn.Linear(cfg.d_model, cfg.patch_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # starts as sample-and-hold

    def forward(self, x: Tensor, cls: Tensor, patches: Tensor) -> Tensor:
        batch, slots, num_patches, d = patches.shape
        per_patch = patches.permute(0, 2, 1, 3).reshape(
            batch, num_patches, slots * d
        )  # [B, P, T*d]
        delta = self.out(self.act(self.mix(per_patch)))  # [B, P, patch_dim]
        cfg = self.cfg
        antennas, subcarriers = self.data_shape
        rows, cols = antennas // cfg.patch_antennas, subcarriers // cfg.patch_subcarriers
        delta = delta.reshape(batch, rows, cols, 2, cfg.patch_antennas, cfg.patch_subcarriers)
        delta = delta.permute(0, 3, 1, 4, 2, 5).reshape(batch, 2, antennas, subcarriers)
        return x[:, -1] + delta  # [B, 2, A, S]


class PredictionTask(Task):
    """Predict slot ``T - 1`` of ``csi_sequence`` from slots ``0 .. T - 1 - horizon``.

    Inputs ``[B, T_in, 2, A, S]`` float32 with ``T_in = T - horizon``; targets and
    output ``[B, 2, A, S]``. Loss: per-sample NMSE. Primary metric ``nmse_db`` (lower
    is better).
    """

    name = "prediction"
    primary_metric = "nmse_db"
    higher_is_better = False

    def __init__(self, horizon: int = 2) -> None:
        if horizon < 1:
            raise ValueError(f"prediction horizon={horizon} is invalid: expected >= 1 slot")
        self.horizon = horizon

    def _split(self, data: ChannelDataset) -> int:
        if "csi_sequence" not in data:
            raise ValueError(
                "the prediction task needs csi_sequence: use a preset with "
                "radio.num_time_steps >= 3 (e.g. smoke or default)"
            )
        num_inputs = data["csi_sequence"].shape[1] - self.horizon
        if num_inputs < 1:
            raise ValueError(
                f"csi_sequence has {data['csi_sequence'].shape[1]} slots; horizon {self.horizon} "
                "needs more: raise radio.num_time_steps"
            )
        return num_inputs

    def tensors(self, data: ChannelDataset, index: np.ndarray) -> tuple[Tensor, Tensor]:
        num_inputs = self._split(data)
        sequence = data["csi_sequence"][index]  # [B, T, A, S]
        return csi_to_real(sequence[:, :num_inputs]), csi_to_real(sequence[:, -1])

    def build_head(self, cfg: ModelConfig, radio: RadioConfig) -> nn.Module:
        num_inputs = radio.num_time_steps - self.horizon
        if num_inputs < 1:
            raise ValueError(
                f"the prediction task needs radio.num_time_steps > horizon ({self.horizon}); "
                f"the preset has {radio.num_time_steps}: use a preset with time series"
            )
        return ResidualPredictionHead(
            cfg, num_inputs, (radio.num_bs_antennas, radio.num_subcarriers)
        )

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        err = (output - target).pow(2).flatten(1).sum(1)
        ref = target.pow(2).flatten(1).sum(1).clamp_min(1e-12)
        return (err / ref).mean()

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, float]:
        return {"nmse_db": nmse_db(output.numpy(), target.numpy())}

    def baseline(
        self, data: ChannelDataset, train: np.ndarray, test: np.ndarray
    ) -> dict[str, float]:
        """Sample-and-hold and linear extrapolation of the last two observed slots."""
        num_inputs = self._split(data)
        sequence = data["csi_sequence"][test]
        target = sequence[:, -1]
        last = sequence[:, num_inputs - 1]
        result = {
            "nmse_db": nmse_db(last, target),
            "sample_and_hold_nmse_db": nmse_db(last, target),
        }
        if num_inputs >= 2:
            previous = sequence[:, num_inputs - 2]
            linear = last + (self.horizon) * (last - previous)
            result["linear_nmse_db"] = nmse_db(linear, target)
        return result
