"""Reference data profile for drift monitoring (numpy + json only): the ONE builder.

Computed from the training split at registration time and shipped with the model
version as `reference_profile.json`; the drift monitor (`workloads.monitoring.drift`)
builds its cached `ReferenceProfile` through `profile_columns` here too, so the bins and
the KS sample that training writes are exactly the ones monitoring compares against.

* per feature: bin edges -- one bin per value for integer-valued columns with at most
  `MAX_CATEGORIES` distinct values (edges at the midpoints), otherwise quantile edges
  (deciles by default, de-duplicated) -- the training counts per bin (for PSI), summary
  stats;
* per feature: a sorted sample of the training values (for the KS statistic); one row
  sample shared by all features (`ksSampleSize` rows; all rows when the size is None);
* optionally the same for the model's reference predictions (`prediction`).

Bins are right-open `[e_i, e_{i+1})` over the interior edges, with the outermost
bins open to -inf/+inf, i.e. `np.searchsorted(inner_edges, x, side="right")` gives the
bin index of `x`. Monitoring counts live data with exactly that rule. Non-finite values
are left out of edges, counts and samples (the drift monitor counts them as invalid).

File format: `profileVersion` 1. Keys added later (`prediction`, `binMethod`) are
optional, so readers of earlier files and earlier readers of these files keep working.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

PROFILE_VERSION = 1
DEFAULT_BINS = 10
DEFAULT_KS_SAMPLE = 2048
MAX_CATEGORIES = 20  # integer-valued columns with at most this many values get a bin per value
PREDICTION = "prediction"


def bin_index(inner_edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value; len(inner_edges)+1 bins, outer bins unbounded."""
    return np.searchsorted(inner_edges, values, side="right")


@dataclass(frozen=True)
class ColumnReference:
    """The reference of one column, as arrays (what the JSON stores, before `tolist`)."""

    inner_edges: np.ndarray  # float64, sorted
    counts: np.ndarray  # int64, rows per bin (len(inner_edges) + 1)
    ks_sample: np.ndarray  # float64, sorted
    rows: int  # finite rows
    categorical: bool

    def summary(self, ordered: np.ndarray) -> dict[str, Any]:
        return {
            "mean": float(ordered.mean()),
            "std": float(ordered.std()),
            "min": float(ordered[0]),
            "max": float(ordered[-1]),
            "quantiles": {str(q): float(v) for q, v in zip((0.01, 0.5, 0.99), np.quantile(ordered, (0.01, 0.5, 0.99)))},
        }


def inner_edges_of(ordered: np.ndarray, bins: int) -> tuple[np.ndarray, bool]:
    """Interior edges of a sorted, finite column, and whether it was treated as categorical."""
    distinct = np.unique(ordered)
    if distinct.size <= MAX_CATEGORIES and np.all(distinct == np.round(distinct)):
        return (distinct[:-1] + distinct[1:]) / 2.0, True  # one bin per category
    return np.unique(np.quantile(ordered, np.linspace(0.0, 1.0, bins + 1)[1:-1])), False


def reference_column(values: np.ndarray, bins: int = DEFAULT_BINS,
                     sample_index: np.ndarray | None = None, name: str = "column") -> tuple[ColumnReference, np.ndarray]:
    """One column's reference (and its sorted finite values, for summaries).

    `sample_index`: the rows whose values form the KS sample (None: every row)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = np.isfinite(values)
    ordered = np.sort(values[finite])
    if ordered.size == 0:
        raise ValueError(f"reference column {name!r} needs at least one finite value")
    edges, categorical = inner_edges_of(ordered, bins)
    bounds = np.searchsorted(ordered, edges, side="left")  # rows < edge: the bin rule above
    counts = np.diff(np.concatenate(([0], bounds, [ordered.size]))).astype(np.int64)
    if sample_index is None:
        sample = ordered
    else:
        picked = values[sample_index]
        sample = np.sort(picked[np.isfinite(picked)])
        if sample.size == 0:
            sample = ordered[:1]
    return ColumnReference(edges, counts, sample, int(ordered.size), categorical), ordered


def sample_rows(rows: int, ks_sample_size: int | None, seed: int) -> np.ndarray | None:
    """The row sample for the KS reference (None: all rows)."""
    if ks_sample_size is None or ks_sample_size >= rows:
        return None
    if ks_sample_size < 1:
        raise ValueError(f"ks_sample_size must be >= 1 or None, got {ks_sample_size}")
    return np.sort(np.random.default_rng(seed).choice(rows, size=ks_sample_size, replace=False))


def _check(features: np.ndarray, names: Sequence[str]) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"reference data must be 2-D (rows, features), got shape {features.shape}")
    if features.shape[1] != len(names):
        raise ValueError(f"{len(names)} feature names for {features.shape[1]} columns")
    if features.shape[0] == 0:
        raise ValueError("reference data has no rows")
    return features


def profile_columns(
    features: np.ndarray,
    names: Sequence[str],
    bins: int = DEFAULT_BINS,
    ks_sample_size: int | None = DEFAULT_KS_SAMPLE,
    seed: int = 0,
    predictions: np.ndarray | None = None,
    with_summaries: bool = False,
) -> tuple[list[ColumnReference], ColumnReference | None, list[dict[str, Any]]]:
    """Per-feature references (+ the predictions'), as arrays. The one implementation."""
    features = _check(features, names)
    rows = features.shape[0]
    index = sample_rows(rows, ks_sample_size, seed)
    columns, summaries = [], []
    for column, name in enumerate(names):
        reference, ordered = reference_column(features[:, column], bins, index, name)
        columns.append(reference)
        if with_summaries:
            summaries.append(reference.summary(ordered))
    prediction = None
    if predictions is not None:
        predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
        if predictions.size != rows:
            raise ValueError(f"{predictions.size} reference predictions for {rows} rows")
        prediction, _ = reference_column(predictions, bins, index, PREDICTION)
    return columns, prediction, summaries


def _column_json(reference: ColumnReference) -> dict[str, Any]:
    return {
        "innerEdges": reference.inner_edges.tolist(),
        "counts": reference.counts.astype(int).tolist(),
        "binMethod": "categorical" if reference.categorical else "quantile",
        "ksSample": reference.ks_sample.tolist(),
    }


def prediction_score(probabilities: np.ndarray) -> np.ndarray:
    """The one number per row whose distribution prediction drift compares: P(positive) for a
    binary model ([n], [n, 1] or [n, 2] probabilities), the top-class probability otherwise.
    The same definition as the served score (`strata_serving_prediction_score`) and the drift
    feed's, so the reference and the live window measure the same thing."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim == 1:
        return probs
    if probs.ndim != 2 or probs.shape[1] == 0:
        raise ValueError(f"probabilities must be [n] or [n, classes], got shape {probs.shape}")
    if probs.shape[1] == 1:
        return probs[:, 0]
    if probs.shape[1] == 2:
        return probs[:, 1]
    return probs.max(axis=1)


def build_profile(
    features: np.ndarray,
    names: list[str],
    bins: int = DEFAULT_BINS,
    ks_sample_size: int | None = DEFAULT_KS_SAMPLE,
    seed: int = 0,
    predictions: np.ndarray | None = None,
) -> dict[str, Any]:
    """The JSON-ready profile a model version ships (`reference_profile.json`)."""
    columns, prediction, summaries = profile_columns(
        features, names, bins, ks_sample_size, seed, predictions, with_summaries=True)
    rows = int(np.asarray(features).shape[0])
    out: dict[str, Any] = {
        "profileVersion": PROFILE_VERSION,
        "rows": rows,
        "bins": bins,
        "binRule": "searchsorted(innerEdges, x, side='right'); outer bins open",
        "ksSampleSize": rows if ks_sample_size is None else min(int(ks_sample_size), rows),
        "featureOrder": list(names),  # the column order (the file is written with sorted keys)
        "features": {
            name: {**_column_json(reference), **summary}
            for name, reference, summary in zip(names, columns, summaries)
        },
    }
    if prediction is not None:
        out[PREDICTION] = _column_json(prediction)
    return out


def write_profile(profile: dict[str, Any], path: Path | str) -> Path:
    path = Path(path)
    path.write_text(json.dumps(profile, separators=(",", ":"), sort_keys=True))
    return path


def _arrays(entry: dict[str, Any]) -> None:
    entry["innerEdges"] = np.asarray(entry["innerEdges"], dtype=np.float64)
    entry["counts"] = np.asarray(entry["counts"], dtype=np.int64)
    entry["ksSample"] = np.asarray(entry["ksSample"], dtype=np.float64)


def read_profile(path: Path | str) -> dict[str, Any]:
    """Load a profile and turn its lists back into numpy arrays."""
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("features"), dict):
        raise ValueError(f"{path}: not a reference profile (no `features` object)")
    for name, feature in raw["features"].items():
        try:
            _arrays(feature)
        except KeyError as missing:
            raise ValueError(f"{path}: features.{name} lacks {missing}") from None
    if isinstance(raw.get(PREDICTION), dict):
        _arrays(raw[PREDICTION])
    return raw
