"""Reference data profile for drift monitoring (numpy + json only).

Computed from the training split at registration time and shipped with the model
version as `reference_profile.json`:

* per feature: quantile bin edges (deciles by default, de-duplicated so discrete
  features get fewer bins), the training counts per bin (for PSI), summary stats;
* per feature: a sorted sample of the training values (for the KS statistic).

Bins are right-open `[e_i, e_{i+1})` over the interior edges, with the outermost
bins open to -inf/+inf, i.e. `np.searchsorted(inner_edges, x, side="right")` gives the
bin index of `x`. Monitoring counts live data with exactly that rule.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

PROFILE_VERSION = 1


def bin_index(inner_edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value; len(inner_edges)+1 bins, outer bins unbounded."""
    return np.searchsorted(inner_edges, values, side="right")


def build_profile(
    features: np.ndarray,
    names: list[str],
    bins: int = 10,
    ks_sample_size: int = 2048,
    seed: int = 0,
) -> dict[str, Any]:
    if features.shape[1] != len(names):
        raise ValueError(f"{len(names)} names for {features.shape[1]} columns")
    rows = features.shape[0]
    rng = np.random.default_rng(seed)
    sample_index = rng.choice(rows, size=min(ks_sample_size, rows), replace=False)
    quantiles = np.linspace(0, 1, bins + 1)[1:-1]
    out: dict[str, Any] = {
        "profileVersion": PROFILE_VERSION,
        "rows": int(rows),
        "bins": bins,
        "binRule": "searchsorted(innerEdges, x, side='right'); outer bins open",
        "ksSampleSize": int(sample_index.size),
        "featureOrder": list(names),  # the column order (the file is written with sorted keys)
        "features": {},
    }
    for column, name in enumerate(names):
        values = features[:, column].astype(np.float64)
        inner = np.unique(np.quantile(values, quantiles))
        counts = np.bincount(bin_index(inner, values), minlength=inner.size + 1)
        sample = np.sort(values[sample_index])
        out["features"][name] = {
            "innerEdges": inner.tolist(),
            "counts": counts.astype(int).tolist(),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
            "quantiles": {str(q): float(v) for q, v in zip((0.01, 0.5, 0.99), np.quantile(values, (0.01, 0.5, 0.99)))},
            "ksSample": sample.tolist(),
        }
    return out


def write_profile(profile: dict[str, Any], path: Path | str) -> Path:
    path = Path(path)
    path.write_text(json.dumps(profile, separators=(",", ":"), sort_keys=True))
    return path


def read_profile(path: Path | str) -> dict[str, Any]:
    """Load a profile and turn its lists back into numpy arrays."""
    raw = json.loads(Path(path).read_text())
    for feature in raw["features"].values():
        feature["innerEdges"] = np.asarray(feature["innerEdges"], dtype=np.float64)
        feature["counts"] = np.asarray(feature["counts"], dtype=np.int64)
        feature["ksSample"] = np.asarray(feature["ksSample"], dtype=np.float64)
    return raw
