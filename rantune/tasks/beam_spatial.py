"""``beam-spatial`` (3GPP BM-Case1): the best beam of the full codebook from a partial observation.

The station measures a Set B of beams (RSRPs with measurement noise) or noisy CSI on a
subset of antennas / pilot subcarriers (``task-options.*``,
:mod:`rantune.tasks.settings`); the target is the best beam of Set A (the preset's DFT
codebook) on the noiseless channel. The model sees the observation grid
(:mod:`rantune.tasks.observation`), never the full estimate or the noiseless gains.

Metrics: top-1 (primary), top-3, beamforming-gain loss in dB (mean and 90th
percentile) and the gain ratio. Baselines: RSRP -- best of Set B, single-path
interpolation of the Set B gains, LMMSE map from Set B to Set A gains fitted on the
station's training rows; CSI -- exhaustive search on the partial estimate, LMMSE
reconstruction of the full CSI with the station's own covariance, then search.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rantune.channels.dataset import ChannelDataset
from rantune.config import RadioConfig
from rantune.model.config import ModelConfig
from rantune.tasks.base import Task
from rantune.tasks.baselines import beams as bb
from rantune.tasks.baselines import best_of
from rantune.tasks.classification import CLASSIFICATION_HEADS, _check_head
from rantune.tasks.metrics import beam_metrics
from rantune.tasks.observation import BeamObservation, sample_keys
from rantune.tasks.settings import TaskSettings


class BeamObservingTask(Task):
    """Shared parts of the beam-management tasks: observation, loss and metrics.

    Targets are the noiseless Set A gains ``[B, K]`` float32 (label = argmax); outputs
    are logits ``[B, K]``.
    """

    primary_metric = "top1"

    def __init__(self, settings: TaskSettings | None = None, head: str = "token-mlp") -> None:
        self.settings = settings or TaskSettings()
        self.head = _check_head(head)

    def observation(self, data: ChannelDataset | RadioConfig) -> BeamObservation:
        """The observation for a data set (checked against its beam labels) or a radio block."""
        if isinstance(data, RadioConfig):
            return BeamObservation(
                self.settings, (data.num_bs_antennas, data.num_subcarriers), data.num_beams
            )
        obs = BeamObservation(self.settings, data.shape, data["beam_gains"].shape[1])
        obs.check_data(data["beam_gains"], data["csi"])
        return obs

    def input_gate(self, radio: RadioConfig) -> nn.Module:
        return self.observation(radio).gate()

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target.argmax(dim=-1))

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, float]:
        return beam_metrics(output.float().numpy(), target.numpy())


class BeamSpatialTask(BeamObservingTask):
    """BM-Case1: Set A's best beam from this snapshot's partial observation.

    Inputs ``[B, 2, A, S]`` float32 (the observation grid); targets ``[B, K]`` gains.
    """

    name = "beam-spatial"

    def tensors(self, data: ChannelDataset, index: np.ndarray) -> tuple[Tensor, Tensor]:
        obs = self.observation(data)
        x = obs.model_input(data["csi_noisy"][index], sample_keys(data["csi"][index]))
        return x, torch.as_tensor(data["beam_gains"][index])

    def build_head(self, cfg: ModelConfig, radio: RadioConfig) -> nn.Module:
        return CLASSIFICATION_HEADS[self.head](cfg.d_model, radio.num_beams)

    def baseline(
        self, data: ChannelDataset, train: np.ndarray, test: np.ndarray
    ) -> dict[str, float]:
        obs = self.observation(data)
        gains = data["beam_gains"][test]
        noisy, sites = data["csi_noisy"], data["site_index"]
        if obs.kind == "rsrp":
            rsrp_test = obs.measure_rsrp(noisy[test], sample_keys(data["csi"][test]))
            rsrp_train = obs.measure_rsrp(noisy[train], sample_keys(data["csi"][train]))
            scores = {
                "best_of_set_b": bb.best_of_set_b(obs, rsrp_test),
                "interpolation": bb.single_path_fit(obs, rsrp_test),
                "lmmse": bb.gain_lmmse(
                    obs, sites, train, rsrp_train, data["beam_gains"][train], test, rsrp_test
                ),
            }
        else:
            scores = {
                "exhaustive": bb.exhaustive_partial(obs, noisy[test]),
                "lmmse": bb.csi_lmmse(obs, data["csi"], noisy, data["snr_db"], sites, train, test),
            }
        methods = {name: beam_metrics(s, gains) for name, s in scores.items()}
        return best_of(methods, self.primary_metric, self.higher_is_better)
