"""Model quality from delayed labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from workloads.monitoring.quality import QualityTracker, accuracy, degradation, roc_auc


@pytest.mark.parametrize("seed", range(10))
def test_roc_auc_equals_the_mann_whitney_u(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=500)
    scores = np.round(rng.uniform(size=500) + 0.3 * labels, 2)  # with ties
    u = stats.mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
    assert roc_auc(labels, scores) == pytest.approx(u / (labels.sum() * (500 - labels.sum())), rel=1e-12)


def test_degradation_is_relative_to_the_versions_own_evaluation():
    assert degradation(0.90, 0.95) == pytest.approx(0.0526, abs=1e-4)
    assert degradation(0.96, 0.95) < 0
    assert np.isnan(degradation(float("nan"), 0.9))
    assert accuracy(np.array([1, 0, 1]), np.array([1, 1, 1])) == pytest.approx(2 / 3)


def test_tracker_joins_delayed_labels():
    tracker = QualityTracker(baseline={"auc": 0.9, "accuracy": 0.9}, window=1000)
    rng = np.random.default_rng(0)
    ids = [f"r{i}" for i in range(400)]
    labels = rng.integers(0, 2, size=400)
    scores = np.clip(labels * 0.6 + rng.uniform(size=400) * 0.5, 0.01, 0.99)
    tracker.observe_predictions(ids, scores, now=100.0)
    joined, delays = tracker.observe_labels(ids[:300] + ["unknown"], list(labels[:300]) + [1], now=160.0)
    assert joined == 300 and delays == [60.0] * 300
    snapshot = tracker.snapshot()
    assert snapshot.labeled == 300
    assert snapshot.metrics["auc"] == pytest.approx(roc_auc(labels[:300], scores[:300]))
    assert set(snapshot.degradation) == {"auc", "accuracy"}
    # a label joins once
    assert tracker.observe_labels(ids[:10], list(labels[:10]))[0] == 0
