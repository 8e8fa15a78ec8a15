"""Channel prediction: the CSI ``horizon`` slots ahead from the past slots."""

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


class SlotMixingPredictionHead(nn.Module):
    """Data-adaptive linear predictor: per patch, complex weights over the input slots.

    From each patch's slot embeddings ``[B, P, T_in * d]`` an MLP predicts ``T_in``
    complex coefficients ``c_t`` and a residual; the output patch is
    ``sum_t c_t * x_t + residual`` (complex product over the patch's entries), i.e. an
    autoregressive predictor whose taps adapt to each sample's Doppler. Starts as
    sample-and-hold (``c_last = 1``, others and the residual 0). Output ``[B, 2, A, S]``.
    """

    def __init__(self, cfg: ModelConfig, num_inputs: int, data_shape: tuple[int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_inputs = num_inputs
        self.data_shape = data_shape
        self.mix = nn.Linear(num_inputs * cfg.d_model, cfg.d_model)
        self.act = nn.GELU()
        self.coef = nn.Linear(cfg.d_model, 2 * num_inputs)
        self.out = nn.Linear(cfg.d_model, cfg.patch_dim)
        for layer in (self.coef, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.coef.bias[num_inputs - 1] = 1.0  # real part of the last slot's weight

    def _patches(self, x: Tensor) -> Tensor:
        """``[B, T, 2, A, S]`` -> ``[B, T, P, 2, pa * ps]``."""
        cfg = self.cfg
        batch, slots, _, antennas, subcarriers = x.shape
        rows, cols = antennas // cfg.patch_antennas, subcarriers // cfg.patch_subcarriers
        x = x.reshape(batch, slots, 2, rows, cfg.patch_antennas, cols, cfg.patch_subcarriers)
        x = x.permute(0, 1, 3, 5, 2, 4, 6)  # [B, T, rows, cols, 2, pa, ps]
        return x.reshape(batch, slots, rows * cols, 2, -1)

    def forward(self, x: Tensor, cls: Tensor, patches: Tensor) -> Tensor:
        batch, slots, num_patches, d = patches.shape
        per_patch = patches.permute(0, 2, 1, 3).reshape(batch, num_patches, slots * d)
        hidden = self.act(self.mix(per_patch))  # [B, P, d]
        coef = self.coef(hidden).view(batch, num_patches, 2, slots)  # [B, P, (re, im), T]
        c_re = coef[:, :, 0].transpose(1, 2)[..., None]  # [B, T, P, 1]
        c_im = coef[:, :, 1].transpose(1, 2)[..., None]  # [B, T, P, 1]
        xp = self._patches(x)  # [B, T, P, 2, n]
        re = (c_re * xp[:, :, :, 0] - c_im * xp[:, :, :, 1]).sum(1)  # [B, P, n]
        im = (c_re * xp[:, :, :, 1] + c_im * xp[:, :, :, 0]).sum(1)  # [B, P, n]
        mixed = torch.cat([re, im], dim=-1)  # [B, P, patch_dim] in (2, pa, ps) order
        patch_out = mixed + self.out(hidden)  # [B, P, patch_dim]
        cfg = self.cfg
        antennas, subcarriers = self.data_shape
        rows, cols = antennas // cfg.patch_antennas, subcarriers // cfg.patch_subcarriers
        out = patch_out.reshape(batch, rows, cols, 2, cfg.patch_antennas, cfg.patch_subcarriers)
        return out.permute(0, 3, 1, 4, 2, 5).reshape(batch, 2, antennas, subcarriers)


PREDICTION_HEADS = {"mixing": SlotMixingPredictionHead, "residual": ResidualPredictionHead}


class PredictionTask(Task):
    """Predict slot ``T - 1`` of ``csi_sequence`` from slots ``0 .. T - 1 - horizon``.

    Inputs ``[B, T_in, 2, A, S]`` float32 with ``T_in = T - horizon``; targets and
    output ``[B, 2, A, S]``. Loss: per-sample NMSE. Primary metric ``nmse_db`` (lower
    is better).
    """

    name = "prediction"
    primary_metric = "nmse_db"
    higher_is_better = False

    def __init__(self, horizon: int = 2, head: str = "mixing") -> None:
        if horizon < 1:
            raise InputError(f"prediction horizon={horizon} is invalid: expected >= 1 slot")
        if head not in PREDICTION_HEADS:
            raise InputError(
                f"prediction head {head!r} is unknown: choose {list(PREDICTION_HEADS)}"
            )
        self.horizon = horizon
        self.head = head

    def _split(self, data: ChannelDataset) -> int:
        if "csi_sequence" not in data:
            raise InputError(
                "the prediction task needs csi_sequence: use a preset with "
                "radio.num_time_steps >= 3 (e.g. smoke or default)"
            )
        num_inputs = data["csi_sequence"].shape[1] - self.horizon
        if num_inputs < 1:
            raise InputError(
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
            raise InputError(
                f"the prediction task needs radio.num_time_steps > horizon ({self.horizon}); "
                f"the preset has {radio.num_time_steps}: use a preset with time series"
            )
        return PREDICTION_HEADS[self.head](
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
