"""LoS/NLoS classification and beam selection from the noisy CSI estimate."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rantune.channels.beams import beam_gains, dft_codebook
from rantune.channels.dataset import ChannelDataset
from rantune.config import RadioConfig
from rantune.errors import InputError
from rantune.model.config import ModelConfig
from rantune.model.encoder import csi_to_real
from rantune.tasks.base import Task
from rantune.tasks.baselines import best_of
from rantune.tasks.baselines.angle_delay import peak_ratio
from rantune.tasks.metrics import accuracy, f1_score, gain_ratio, roc_auc, topk_accuracy
from rantune.tasks.observation import own_norm


class PooledLinearHead(nn.Module):
    """LayerNorm + linear on ``[CLS, mean(patches)]``: ``[B, 2d]`` -> ``[B, num_outputs]``."""

    def __init__(self, d_model: int, num_outputs: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(2 * d_model)
        self.classifier = nn.Linear(2 * d_model, num_outputs)

    def forward(self, x: Tensor, cls: Tensor, patches: Tensor) -> Tensor:
        pooled = torch.cat([cls, patches.mean(dim=1)], dim=-1)  # [B, 2d]
        return self.classifier(self.norm(pooled))  # [B, num_outputs]


class TokenMLPHead(nn.Module):
    """Per-token MLP, then mean over patches (DeepSets-style), then a linear classifier.

    ``patches`` ``[B, P, d]`` -> LayerNorm -> Linear(d, hidden) -> GELU -> mean over P
    ``[B, hidden]``, concatenated with the normed CLS ``[B, d]`` -> LayerNorm -> linear
    ``[B, num_outputs]``. The token-wise non-linearity lets phase-invariant features
    (powers, relative phases) survive the pooling that a plain mean would cancel.
    ``hidden`` = 64 keeps adapters + head under 5% of the model for the uplink budget.
    """

    def __init__(self, d_model: int, num_outputs: int, hidden: int = 64) -> None:
        super().__init__()
        self.token_norm = nn.LayerNorm(d_model)
        self.token_mlp = nn.Linear(d_model, hidden)
        self.norm = nn.LayerNorm(hidden + d_model)
        self.classifier = nn.Linear(hidden + d_model, num_outputs)

    def forward(self, x: Tensor, cls: Tensor, patches: Tensor) -> Tensor:
        tokens = F.gelu(self.token_mlp(self.token_norm(patches)))  # [B, P, hidden]
        pooled = torch.cat([tokens.mean(dim=1), self.token_norm(cls)], dim=-1)  # [B, h + d]
        return self.classifier(self.norm(pooled))  # [B, num_outputs]


CLASSIFICATION_HEADS = {"token-mlp": TokenMLPHead, "pooled-linear": PooledLinearHead}


def _check_head(head: str) -> str:
    if head not in CLASSIFICATION_HEADS:
        raise InputError(f"head {head!r} is unknown: choose one of {list(CLASSIFICATION_HEADS)}")
    return head


def strongest_tap_ratio(csi: np.ndarray) -> np.ndarray:
    """Power of the strongest delay tap over the total, ``[N, A, S]`` -> ``[N]``.

    A Rician-K proxy: LoS channels concentrate power in one tap.
    """
    taps = np.fft.ifft(csi, axis=-1)  # [N, A, S] delay domain
    power = (np.abs(taps) ** 2).sum(axis=1)  # [N, S]
    return power.max(axis=1) / np.maximum(power.sum(axis=1), 1e-30)


def _threshold_classifier(
    score_train: np.ndarray, label_train: np.ndarray, score_test: np.ndarray, label_test: np.ndarray
) -> dict[str, float]:
    """Score >= threshold means LoS (or <=, if the train rows rank that way: on ray-traced
    streets a single strong reflection can be sparser than a LoS path with its
    reflections); the threshold maximizes accuracy on the train rows."""
    direction = -1.0 if roc_auc(score_train, label_train) < 0.5 else 1.0
    score_train, score_test = direction * score_train, direction * score_test
    candidates = np.unique(score_train)
    accs = [accuracy((score_train >= t).astype(np.int64), label_train) for t in candidates]
    threshold = float(candidates[int(np.argmax(accs))]) if len(candidates) else 0.5
    pred = (score_test >= threshold).astype(np.int64)
    return {
        "accuracy": accuracy(pred, label_test),
        "f1": f1_score(pred, label_test),
        "auc": roc_auc(score_test, label_test),
        "threshold": direction * threshold,
        "direction": direction,
    }


class LosTask(Task):
    """LoS/NLoS from ``csi_noisy``.

    Inputs ``[B, 2, A, S]`` float32; targets ``[B]`` int64 (1 = LoS); output logits ``[B, 2]``.
    Primary metric AUC: most users are NLoS, so accuracy rewards the majority class.
    """

    name = "los"
    primary_metric = "auc"
    label_names = ("nlos", "los")

    def __init__(self, head: str = "token-mlp") -> None:
        self.head = _check_head(head)

    def tensors(self, data: ChannelDataset, index: np.ndarray) -> tuple[Tensor, Tensor]:
        return csi_to_real(own_norm(data["csi_noisy"][index])), torch.as_tensor(
            data.require("los", "the los task", index).astype(np.int64)
        )

    def build_head(self, cfg: ModelConfig, radio: RadioConfig) -> nn.Module:
        return CLASSIFICATION_HEADS[self.head](cfg.d_model, 2)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target)

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, float]:
        label = target.numpy()
        score = torch.softmax(output.float(), dim=-1)[:, 1].numpy()
        pred = output.argmax(dim=-1).numpy()
        return {
            "accuracy": accuracy(pred, label),
            "f1": f1_score(pred, label),
            "auc": roc_auc(score, label),
        }

    def baseline(
        self, data: ChannelDataset, train: np.ndarray, test: np.ndarray
    ) -> dict[str, float]:
        """Power-ratio thresholds fitted for accuracy on ``train`` (AUC needs no threshold):
        ``tap_ratio`` (strongest delay tap / total, a Rician-K proxy) and ``angle_delay``
        (strongest 2-D DFT angle-delay bin / total)."""
        noisy, los = data["csi_noisy"], data["los"].astype(np.int64)
        data.require("los", "the los baseline", np.concatenate([train, test]))
        methods = {}
        for method, score in (("tap_ratio", strongest_tap_ratio), ("angle_delay", peak_ratio)):
            methods[method] = _threshold_classifier(
                score(noisy[train]), los[train], score(noisy[test]), los[test]
            )
        return best_of(methods, self.primary_metric, self.higher_is_better)


class BeamTask(Task):
    """Beam selection from ``csi_noisy`` over the preset's DFT codebook.

    Inputs ``[B, 2, A, S]`` float32; targets: noiseless codebook gains ``[B, K]``
    float32 (label = argmax); output logits ``[B, K]``.
    """

    name = "beam"
    primary_metric = "top1"

    def __init__(self, head: str = "token-mlp") -> None:
        self.head = _check_head(head)

    def tensors(self, data: ChannelDataset, index: np.ndarray) -> tuple[Tensor, Tensor]:
        return csi_to_real(own_norm(data["csi_noisy"][index])), torch.as_tensor(
            data["beam_gains"][index]
        )

    def build_head(self, cfg: ModelConfig, radio: RadioConfig) -> nn.Module:
        return CLASSIFICATION_HEADS[self.head](cfg.d_model, radio.num_beams)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target.argmax(dim=-1))

    def metrics(self, output: Tensor, target: Tensor) -> dict[str, float]:
        scores, gains = output.float().numpy(), target.numpy()
        label = gains.argmax(axis=1)
        return {
            "top1": topk_accuracy(scores, label, 1),
            "top3": topk_accuracy(scores, label, 3),
            "gain_ratio": gain_ratio(scores.argmax(axis=1), gains),
        }

    def baseline(
        self, data: ChannelDataset, train: np.ndarray, test: np.ndarray
    ) -> dict[str, float]:
        """Exhaustive codebook search on the noisy estimate (needs no training)."""
        gains = data["beam_gains"][test]
        num_beams = gains.shape[1]
        codebook = _codebook_like(data, num_beams)
        noisy_scores = beam_gains(data["csi_noisy"][test], codebook)
        label = gains.argmax(axis=1)
        return {
            "top1": topk_accuracy(noisy_scores, label, 1),
            "top3": topk_accuracy(noisy_scores, label, 3),
            "gain_ratio": gain_ratio(noisy_scores.argmax(axis=1), gains),
        }


def _codebook_like(data: ChannelDataset, num_beams: int) -> np.ndarray:
    """The DFT codebook that produced ``beam_gains`` (recovered and checked on one row)."""
    antennas = data["csi"].shape[1]
    for spacing in (0.5,):
        codebook = dft_codebook(antennas, num_beams, spacing)
        if np.allclose(beam_gains(data["csi"][:1], codebook), data["beam_gains"][:1], rtol=1e-3):
            return codebook
    raise InputError("cannot reproduce the data set's beam codebook (non-standard element spacing)")
