"""Channel prediction: the CSI ``horizon`` slots ahead from noisy estimates of the past slots.

Inputs are LS estimates of slots ``0 .. T - 1 - horizon`` of ``csi_sequence`` at the
sample's SNR (never the noiseless slots: noise is what makes prediction hard); the
target is the noiseless slot ``T - 1``. NMSE in dB overall and per speed band
(:data:`SPEED_BANDS_MPS`, via :meth:`PredictionTask.subsets` and the baseline's
``[band]`` keys). Baselines (:mod:`rantune.tasks.baselines.prediction`):
sample-and-hold, linear extrapolation, per-sample AR(p) on the sample's own past and a
Wiener/LS predictor fitted on the station's training rows.
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
from rantune.tasks.baselines import prediction as bp
from rantune.tasks.metrics import nmse_db
from rantune.tasks.observation import ls_estimate, own_norm, row_norm, sample_keys
from rantune.tasks.settings import TaskSettings

SEQUENCE_NOISE = "sequence"  # purpose of the past slots' noise (rantune.tasks.observation)
# Speed bands (m/s) of the per-band NMSE: pedestrian, urban, vehicular, high speed.
SPEED_BANDS_MPS = {
    "speed 0-3 m/s": (0.0, 3.0),
    "speed 3-10 m/s": (3.0, 10.0),
    "speed 10-25 m/s": (10.0, 25.0),
    "speed >=25 m/s": (25.0, float("inf")),
}


def observed_slots(data: ChannelDataset, horizon: int, task: str) -> int:
    """``T_in = T - horizon`` observed slots of the data's ``csi_sequence`` (checked)."""
    if "csi_sequence" not in data:
        raise InputError(
            f"the {task} task needs csi_sequence: use a preset with "
            "radio.num_time_steps >= 3 (e.g. smoke or default)"
        )
    num_inputs = data["csi_sequence"].shape[1] - horizon
    if num_inputs < 1:
        raise InputError(
            f"csi_sequence has {data['csi_sequence'].shape[1]} slots; horizon {horizon} "
            "needs more: raise radio.num_time_steps or lower task-options.horizon"
        )
    return num_inputs


def slots_for_radio(radio: RadioConfig, horizon: int, task: str) -> int:
    """``T_in`` for a preset's radio block (checked)."""
    num_inputs = radio.num_time_steps - horizon
    if num_inputs < 1:
        raise InputError(
            f"the {task} task needs radio.num_time_steps > horizon ({horizon}); "
            f"the preset has {radio.num_time_steps}: use a preset with time series or "
            "lower task-options.horizon"
        )
    return num_inputs


def speed_masks(speed: np.ndarray) -> dict[str, np.ndarray]:
    """``{band: bool mask}`` over ``speed`` ``[N]`` (m/s), one per :data:`SPEED_BANDS_MPS`."""
    return {name: (speed >= low) & (speed < high) for name, (low, high) in SPEED_BANDS_MPS.items()}


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
    """Predict slot ``T - 1`` of ``csi_sequence`` from noisy slots ``0 .. T - 1 - horizon``.

    Inputs ``[B, T_in, 2, A, S]`` float32 with ``T_in = T - horizon`` (LS estimates at
    the sample's SNR); targets and output ``[B, 2, A, S]`` (noiseless). Loss: per-sample
    NMSE. Primary metric ``nmse_db`` (lower is better).
    """

    name = "prediction"
    primary_metric = "nmse_db"
    higher_is_better = False
    input_rank = 5
    regression = True

    def __init__(self, settings: TaskSettings | None = None, head: str = "mixing") -> None:
        if head not in PREDICTION_HEADS:
            raise InputError(
                f"prediction head {head!r} is unknown: choose {list(PREDICTION_HEADS)}"
            )
        self.settings = settings or TaskSettings()
        self.horizon = self.settings.horizon
        self.head = head

    def past_and_target(
        self, data: ChannelDataset, index: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Noisy past slots ``[N, T_in, A, S]`` and the noiseless target ``[N, A, S]``
        (complex), both scaled so that the first observed (noisy) slot has unit norm
        (:func:`rantune.tasks.observation.own_norm`: what a station can compute)."""
        num_inputs = observed_slots(data, self.horizon, self.name)
        sequence = data["csi_sequence"][index]  # [N, T, A, S]
        keys = sample_keys(data["csi"][index])
        past = ls_estimate(sequence[:, :num_inputs], data["snr_db"][index], keys, SEQUENCE_NOISE)
        norm = row_norm(past[:, 0])[:, None, None]  # [N, 1, 1]
        return own_norm(past), (sequence[:, -1] / norm).astype(np.complex64)

    def tensors(self, data: ChannelDataset, index: np.ndarray) -> tuple[Tensor, Tensor]:
        past, target = self.past_and_target(data, index)
        return csi_to_real(past), csi_to_real(target)

    def build_head(self, cfg: ModelConfig, radio: RadioConfig) -> nn.Module:
        num_inputs = slots_for_radio(radio, self.horizon, self.name)
        return PREDICTION_HEADS[self.head](
            cfg, num_inputs, (radio.num_bs_antennas, radio.num_subcarriers)
        )

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        err = (output - target).pow(2).flatten(1).sum(1)
        ref = target.pow(2).flatten(1).sum(1).clamp_min(1e-12)
        return (err / ref).mean()

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, float]:
        return {"nmse_db": nmse_db(output.numpy(), target.numpy())}

    def subsets(self, data: ChannelDataset, index: np.ndarray) -> dict[str, np.ndarray]:
        """Speed bands of rows ``index`` (:data:`SPEED_BANDS_MPS`), non-empty ones only."""
        return {k: m for k, m in speed_masks(data["speed"][index]).items() if m.any()}

    def baseline(
        self, data: ChannelDataset, train: np.ndarray, test: np.ndarray
    ) -> dict[str, float]:
        """Hold, linear, per-sample AR(p) and the per-station Wiener/LS predictor; each
        with ``nmse_db`` overall and ``nmse_db[band]`` per speed band."""
        past, target = self.past_and_target(data, test)
        past_train, target_train = self.past_and_target(data, train)
        predictions = {
            "sample_and_hold": bp.hold(past),
            "linear": bp.linear(past, self.horizon),
            "ar": bp.ar_predict(past, self.horizon),
            "wiener": bp.wiener_by_site(
                data["site_index"], train, past_train, target_train, test, past
            ),
        }
        bands = self.subsets(data, test)
        methods = {}
        for name, pred in predictions.items():
            metrics = {"nmse_db": nmse_db(pred, target)}
            for band, mask in bands.items():
                metrics[f"nmse_db[{band}]"] = nmse_db(pred[mask], target[mask])
            methods[name] = metrics
        return best_of(methods, self.primary_metric, self.higher_is_better)
