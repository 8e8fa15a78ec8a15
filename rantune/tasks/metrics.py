"""Metrics shared by the tasks (numpy, no sklearn dependency)."""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, label: np.ndarray) -> float:
    return float((pred == label).mean()) if len(label) else float("nan")


def f1_score(pred: np.ndarray, label: np.ndarray) -> float:
    """F1 of the positive class (label 1)."""
    tp = float(((pred == 1) & (label == 1)).sum())
    fp = float(((pred == 1) & (label == 0)).sum())
    fn = float(((pred == 0) & (label == 1)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); NaN if one class."""
    pos, neg = int((label == 1).sum()), int((label == 0).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    ranks[order] = np.arange(1, len(score) + 1)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        if count > 1:
            ranks[order[start : start + count]] = start + (count + 1) / 2.0
    return float((ranks[label == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def topk_accuracy(scores: np.ndarray, label: np.ndarray, k: int) -> float:
    """Share of rows whose ``label`` is among the ``k`` largest ``scores`` ``[N, K]``."""
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == label[:, None]).any(axis=1).mean()) if len(label) else float("nan")


def gain_ratio(choice: np.ndarray, gains: np.ndarray) -> float:
    """Mean beamforming-gain ratio g(chosen) / g(best) over rows of ``gains`` ``[N, K]``."""
    chosen = gains[np.arange(len(choice)), choice]
    return float((chosen / np.maximum(gains.max(axis=1), 1e-30)).mean())


def nmse_db(pred: np.ndarray, target: np.ndarray) -> float:
    """10 log10 of the mean per-sample NMSE; arrays ``[N, ...]`` real or complex."""
    axes = tuple(range(1, target.ndim))
    err = (np.abs(pred - target) ** 2).sum(axis=axes)
    ref = np.maximum((np.abs(target) ** 2).sum(axis=axes), 1e-30)
    return float(10.0 * np.log10(np.mean(err / ref)))


def gain_loss_db(choice: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Per-row beamforming-gain (L1-RSRP) loss ``10 log10(g_best / g_chosen)`` in dB, ``[N]``."""
    chosen = np.maximum(gains[np.arange(len(choice)), choice], 1e-30)
    return 10.0 * np.log10(np.maximum(gains.max(axis=1), 1e-30) / chosen)


def beam_metrics(scores: np.ndarray, gains: np.ndarray) -> dict[str, float]:
    """Top-1 / top-3 accuracy and gain loss (mean, 90th percentile, dB) of beam ``scores``.

    ``scores`` ``[N, K]`` rank the beams (higher = chosen first); ``gains`` ``[N, K]`` are
    the true (noiseless) codebook gains that define the label ``argmax``.
    """
    if len(gains) == 0:
        return {
            "top1": float("nan"),
            "top3": float("nan"),
            "gain_loss_db": float("nan"),
            "gain_loss_db_p90": float("nan"),
            "gain_ratio": float("nan"),
        }
    label = gains.argmax(axis=1)
    choice = scores.argmax(axis=1)
    loss = gain_loss_db(choice, gains)
    return {
        "top1": topk_accuracy(scores, label, 1),
        "top3": topk_accuracy(scores, label, 3),
        "gain_loss_db": float(loss.mean()),
        "gain_loss_db_p90": float(np.percentile(loss, 90)),
        "gain_ratio": gain_ratio(choice, gains),
    }


def position_metrics(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Horizontal error (m) mean, 50th and 90th percentile over rows with a finite truth.

    ``estimate``, ``truth``: ``[N, 2]`` horizontal positions in metres.
    """
    valid = np.isfinite(truth).all(axis=1)
    error = np.linalg.norm(estimate[valid] - truth[valid], axis=1)
    if len(error) == 0:
        return {
            "error_mean_m": float("nan"),
            "error_p50_m": float("nan"),
            "error_p90_m": float("nan"),
        }
    return {
        "error_mean_m": float(error.mean()),
        "error_p50_m": float(np.percentile(error, 50)),
        "error_p90_m": float(np.percentile(error, 90)),
    }
