"""``beam-temporal`` (3GPP BM-Case2): the best beam ``horizon`` slots ahead from past observations.

Slots ``0 .. T_in - 1`` of ``csi_sequence`` (``T_in = T - horizon``) are observed as noisy
LS estimates at the sample's SNR, each through the beam tasks' partial observation
(Set B RSRPs or partial CSI, :mod:`rantune.tasks.observation`); the target is Set A's
best beam on the noiseless slot ``T - 1``. Choose ``radio.slot_duration_s`` and
``num_time_steps`` so that ``horizon`` slots are the look-ahead you want (e.g. 5-20 ms
at vehicular speed).

Baselines: keep the current best beam (chosen on the last observed slot: best of Set B,
or exhaustive search on the partial CSI) and linear extrapolation of the observed beam
gains to the target slot.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from rantune.channels.beams import beam_gains
from rantune.channels.dataset import ChannelDataset
from rantune.config import RadioConfig
from rantune.model.config import ModelConfig
from rantune.tasks.baselines import best_of
from rantune.tasks.beam_spatial import BeamObservingTask
from rantune.tasks.metrics import beam_metrics
from rantune.tasks.observation import BeamObservation, ls_estimate, sample_keys
from rantune.tasks.prediction import SEQUENCE_NOISE, observed_slots, slots_for_radio


class TemporalBeamHead(nn.Module):
    """Per-slot ``[CLS, mean(patches)]`` of ``T_in`` slots -> LayerNorm -> linear.

    ``cls`` ``[B, T, d]``, ``patches`` ``[B, T, P, d]`` -> ``[B, T * 2d]`` -> ``[B, K]``.
    """

    def __init__(self, d_model: int, num_slots: int, num_beams: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(num_slots * 2 * d_model)
        self.classifier = nn.Linear(num_slots * 2 * d_model, num_beams)

    def forward(self, x: Tensor, cls: Tensor, patches: Tensor) -> Tensor:
        pooled = torch.cat([cls, patches.mean(dim=2)], dim=-1)  # [B, T, 2d]
        return self.classifier(self.norm(pooled.flatten(1)))  # [B, K]


class BeamTemporalTask(BeamObservingTask):
    """BM-Case2: Set A's best beam ``horizon`` slots after the last observed slot.

    Inputs ``[B, T_in, 2, A, S]`` float32 (observation grids, normalized jointly over the
    slots); targets ``[B, K]`` noiseless gains of slot ``T - 1``.
    """

    name = "beam-temporal"
    input_rank = 5

    def _observed(
        self, data: ChannelDataset, index: np.ndarray
    ) -> tuple[BeamObservation, np.ndarray, np.ndarray, np.ndarray]:
        """The observation, noisy past slots ``[N, T_in, A, S]``, target gains ``[N, K]``
        and the samples' noise keys ``[N]``."""
        num_inputs = observed_slots(data, self.settings.horizon, self.name)
        obs = self.observation(data)
        sequence = data["csi_sequence"][index]  # [N, T, A, S]
        keys = sample_keys(data["csi"][index])
        past = ls_estimate(sequence[:, :num_inputs], data["snr_db"][index], keys, SEQUENCE_NOISE)
        return obs, past, beam_gains(sequence[:, -1], obs.codebook), keys

    def tensors(self, data: ChannelDataset, index: np.ndarray) -> tuple[Tensor, Tensor]:
        obs, past, target, keys = self._observed(data, index)
        return obs.model_input(past, keys, purpose="rsrp-sequence"), torch.as_tensor(target)

    def build_head(self, cfg: ModelConfig, radio: RadioConfig) -> nn.Module:
        num_inputs = slots_for_radio(radio, self.settings.horizon, self.name)
        return TemporalBeamHead(cfg.d_model, num_inputs, radio.num_beams)

    def baseline(
        self, data: ChannelDataset, train: np.ndarray, test: np.ndarray
    ) -> dict[str, float]:
        obs, past, gains, keys = self._observed(data, test)
        if obs.kind == "rsrp":
            rsrp = obs.measure_rsrp(past, keys, purpose="rsrp-sequence")  # [N, T_in, Bm]
            last = rsrp[:, -1]
            previous = rsrp[:, -2] if rsrp.shape[1] > 1 else last
            scores = {
                "hold": obs.set_a_scores(last),
                "linear": obs.set_a_scores(
                    np.maximum(last + self.settings.horizon * (last - previous), 0.0)
                ),
            }
        else:
            per_slot = beam_gains(obs.masked(past), obs.codebook)  # [N, T_in, K]
            last = per_slot[:, -1]
            previous = per_slot[:, -2] if per_slot.shape[1] > 1 else last
            scores = {
                "hold": last,
                "linear": last + self.settings.horizon * (last - previous),
            }
        methods = {name: beam_metrics(s, gains) for name, s in scores.items()}
        return best_of(methods, self.primary_metric, self.higher_is_better)
