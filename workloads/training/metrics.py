"""Classification metrics on class-probability matrices (numpy only).

Every metric function takes `probs` [n, k] (rows sum to 1; binary models have k=2)
and integer `labels` [n]. The harness prefixes names with `val_` (per epoch) or
`holdout_` (the evaluation gate).
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    picked = probs[np.arange(labels.size), labels]
    return float(-np.mean(np.log(np.clip(picked, _EPS, 1.0))))


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties (constant scores -> 0.5)."""
    labels = labels.astype(bool)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # average rank within each run of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [scores.size]))
    average = (starts + ends + 1) / 2.0  # 1-based average rank of each run
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    labels = labels.astype(bool)
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(precision[hits].sum() / positives)


def binary_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    score = probs[:, 1]
    return {
        "auc": roc_auc(score, labels),
        "pr_auc": average_precision(score, labels),
        "accuracy": accuracy(probs, labels),
    }


def multiclass_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predicted = np.argmax(probs, axis=1)
    f1s = []
    for cls in range(probs.shape[1]):
        tp = np.sum((predicted == cls) & (labels == cls))
        fp = np.sum((predicted == cls) & (labels != cls))
        fn = np.sum((predicted != cls) & (labels == cls))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": accuracy(probs, labels), "macro_f1": float(np.mean(f1s))}


def prior_probs(train_labels: np.ndarray, num_classes: int, rows: int) -> np.ndarray:
    """The trivial (majority-class / prior) model: every row gets the class frequencies."""
    counts = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
    prior = counts / counts.sum()
    return np.tile(prior, (rows, 1))
