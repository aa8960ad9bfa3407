"""Model quality from delayed labels.

Predictions are remembered by request id; when a label arrives (from the labels topic or
the `/v1/labels` endpoint) it is joined with its prediction, and the most recent
`window` joined pairs give live accuracy and ROC AUC. Degradation is relative to the
version's own offline evaluation (stored with the model version), so a model that was
always 0.80 is not "degraded" at 0.80:

    degradation = (baseline - live) / baseline      (higher-is-better metrics)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Hashable, Mapping

import numpy as np


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.size == 0:
        return float("nan")
    return float(np.mean(labels == predicted))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC AUC by the rank-sum (Mann-Whitney U) identity, ties averaged."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    _, first, counts = np.unique(ordered, return_index=True, return_counts=True)
    average_rank = first + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty_like(scores)
    ranks[order] = np.repeat(average_rank, counts)
    u = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def degradation(live: float, baseline: float, higher_is_better: bool = True) -> float:
    """Relative drop vs the baseline (positive = worse); NaN when either is unknown."""
    if not np.isfinite(live) or not np.isfinite(baseline) or baseline == 0:
        return float("nan")
    change = (baseline - live) / abs(baseline)
    return float(change if higher_is_better else -change)


@dataclass(frozen=True)
class QualitySnapshot:
    labeled: int
    metrics: Mapping[str, float]  # accuracy, auc (binary only)
    degradation: Mapping[str, float]


class QualityTracker:
    """Joins predictions with delayed labels; bounded memory on both sides."""

    def __init__(self, baseline: Mapping[str, float] | None = None, window: int = 10_000,
                 pending_limit: int = 1_000_000, binary_threshold: float = 0.5):
        self.baseline = dict(baseline or {})
        self.binary_threshold = binary_threshold
        self._pending: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # id -> (score, t)
        self._pending_limit = pending_limit
        self._joined: deque[tuple[float, float]] = deque(maxlen=window)  # (score, label)
        self._lock = threading.Lock()
        self.labeled_total = 0

    def observe_predictions(self, ids, scores, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            for key, score in zip(ids, np.asarray(scores, dtype=np.float64).reshape(-1)):
                self._pending[key] = (float(score), now)
                if len(self._pending) > self._pending_limit:
                    self._pending.popitem(last=False)  # oldest unlabeled prediction

    def observe_labels(self, ids, labels, now: float | None = None) -> tuple[int, list[float]]:
        """Returns (joined, delays in seconds); labels for unknown ids are dropped."""
        now = time.time() if now is None else now
        joined, delays = 0, []
        with self._lock:
            for key, label in zip(ids, labels):
                found = self._pending.pop(key, None)
                if found is None:
                    continue
                score, predicted_at = found
                self._joined.append((score, float(label)))
                delays.append(max(0.0, now - predicted_at))
                joined += 1
            self.labeled_total += joined
        return joined, delays

    def snapshot(self) -> QualitySnapshot:
        with self._lock:
            pairs = np.array(self._joined, dtype=np.float64).reshape(-1, 2)
        scores, labels = pairs[:, 0], pairs[:, 1]
        metrics: dict[str, float] = {}
        if labels.size:
            distinct = np.unique(labels)
            binary = set(distinct.tolist()) <= {0.0, 1.0}
            continuous = binary and np.any((scores > 0) & (scores < 1))
            if continuous:
                metrics["accuracy"] = accuracy(labels, (scores >= self.binary_threshold).astype(float))
                metrics["auc"] = roc_auc(labels, scores)
            else:
                metrics["accuracy"] = accuracy(labels, scores)  # scores are class ids
        drops = {
            name: degradation(value, self.baseline[name])
            for name, value in metrics.items()
            if name in self.baseline
        }
        return QualitySnapshot(int(labels.size), metrics, drops)
