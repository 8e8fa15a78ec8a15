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
