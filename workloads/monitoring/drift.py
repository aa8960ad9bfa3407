"""Feature and prediction drift against a cached reference profile.

The reference profile is computed ONCE per model version (at registration, by
`workloads.data.profile` -- the one builder; `ReferenceProfile.build` goes through it too)
and stored with it as `reference_profile.json`: per feature, bin edges + reference bin
counts (for PSI) and a sorted reference sample (for KS), cached here as the distinct
sample values with their cumulative counts. Evaluating a live
window then costs one sort per feature (numpy's SIMD sort) plus a few `searchsorted`
calls of reference size -- no re-sorting of the reference, no per-row Python.

Statistics are effect sizes, not p-values: PSI (population stability index) and the
two-sample Kolmogorov-Smirnov statistic D = sup |F_ref - F_live|. With a large window a
p-value flags every trivial shift; a threshold on D or PSI states how big a shift matters.

KS with ties: between two distinct reference values F_ref is constant, so the supremum
over live points in that interval is reached at its ends; evaluating |F_ref - F_live|
at every distinct reference value (F_live with `side="right"`) and just before it
(`side="left"`) gives exactly scipy.stats.ks_2samp's statistic, ties included.

Windows: a 2-D array (rows, features). Column-major (Fortran order, or `window.T` of a
(features, rows) buffer) avoids a strided copy per feature; `WindowBuffer` keeps windows
that way, as float32 (the model's input dtype; sorting float32 is about twice as fast).
float32 and float64 windows are evaluated in their own dtype: the statistics are exact
for the values given.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from workloads.data import profile as reference_data
from workloads.data.profile import DEFAULT_BINS

PSI_EPSILON = 1e-4  # floor for empty bins (avoids log(0)); the usual choice for PSI


@dataclass(frozen=True)
class ColumnProfile:
    """The cached reference of one column."""

    edges: np.ndarray  # interior bin edges, sorted; bin k = [edges[k-1], edges[k])
    counts: np.ndarray  # reference rows per bin (len(edges) + 1)
    values: np.ndarray  # sorted distinct reference values (the KS sample)
    cum_counts: np.ndarray  # rows <= values[i] in the KS sample (int64)

    @property
    def ks_rows(self) -> int:
        return int(self.cum_counts[-1]) if len(self.cum_counts) else 0

    @property
    def cdf(self) -> np.ndarray:
        return self.cum_counts / self.ks_rows

    def ks_sample(self) -> np.ndarray:
        """The (sorted) reference sample the KS statistic compares against."""
        return np.repeat(self.values, np.diff(self.cum_counts, prepend=0))

    @classmethod
    def from_arrays(cls, inner_edges: np.ndarray, counts: np.ndarray, ks_sample: np.ndarray) -> "ColumnProfile":
        """From a stored reference: edges, counts and the sorted KS sample."""
        sample = np.sort(np.asarray(ks_sample, dtype=np.float64))
        values, first = np.unique(sample, return_index=True)
        return cls(np.asarray(inner_edges, dtype=np.float64), np.asarray(counts, dtype=np.int64),
                   values, np.append(first[1:], sample.size).astype(np.int64))

    @classmethod
    def from_reference(cls, reference: reference_data.ColumnReference) -> "ColumnProfile":
        return cls.from_arrays(reference.inner_edges, reference.counts, reference.ks_sample)


def profile_column(column: np.ndarray, bins: int = DEFAULT_BINS, ks_sample: int | None = None,
                   seed: int = 0) -> ColumnProfile:
    """One column's profile, through the shared builder (`workloads.data.profile`)."""
    column = np.asarray(column, dtype=np.float64).reshape(-1)
    index = reference_data.sample_rows(column.size, ks_sample, seed)
    reference, _ = reference_data.reference_column(column, bins, index)
    return ColumnProfile.from_reference(reference)


@dataclass(frozen=True)
class ReferenceProfile:
    """Per-feature reference of one model version (+ the reference predictions)."""

    features: tuple[str, ...]
    columns: tuple[ColumnProfile, ...]
    prediction: ColumnProfile | None = None
    rows: int = 0

    @classmethod
    def build(cls, data: np.ndarray, features: Sequence[str] | None = None,
              predictions: np.ndarray | None = None, bins: int = DEFAULT_BINS,
              ks_sample: int | None = None, seed: int = 0) -> "ReferenceProfile":
        """The same profile `workloads.data.profile.build_profile` writes, without the JSON
        round trip. `ks_sample=None` keeps every reference row in the KS sample (a version
        ships `reference_data.DEFAULT_KS_SAMPLE` rows)."""
        data = np.asarray(data)
        if data.ndim != 2:
            raise ValueError(f"reference data must be 2-D (rows, features), got shape {data.shape}")
        names = tuple(features) if features is not None else tuple(f"f{i}" for i in range(data.shape[1]))
        columns, prediction, _ = reference_data.profile_columns(data, names, bins, ks_sample, seed, predictions)
        return cls(names, tuple(ColumnProfile.from_reference(c) for c in columns),
                   None if prediction is None else ColumnProfile.from_reference(prediction), int(data.shape[0]))

    # ---------------------------------------------------------------- storage
    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "features": np.array(self.features, dtype=str),
            "rows": np.array(self.rows),
        }
        named = list(zip(self.features, self.columns))
        if self.prediction is not None:
            named.append(("__prediction__", self.prediction))
            arrays["has_prediction"] = np.array(True)
        for index, (_, column) in enumerate(named):
            for part in ("edges", "counts", "values", "cum_counts"):
                arrays[f"c{index}_{part}"] = getattr(column, part)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceProfile":
        with np.load(Path(path), allow_pickle=False) as npz:
            features = tuple(str(f) for f in npz["features"])
            count = len(features) + (1 if "has_prediction" in npz else 0)
            columns = [
                ColumnProfile(*(npz[f"c{i}_{part}"] for part in ("edges", "counts", "values", "cum_counts")))
                for i in range(count)
            ]
            rows = int(npz["rows"])
        prediction = columns.pop() if count > len(features) else None
        return cls(features, tuple(columns), prediction, rows)

    @classmethod
    def from_version_profile(cls, raw: Mapping[str, Any]) -> "ReferenceProfile":
        """The profile a registered model version ships (`reference_profile.json`, written by
        `workloads.data.profile.build_profile`): its edges, bin counts and KS sample as they are."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("features"), Mapping):
            raise ValueError("not a reference profile: no `features` object")
        names, columns = [], []
        for name in raw.get("featureOrder") or list(raw["features"]):
            feature = raw["features"][name]
            columns.append(ColumnProfile.from_arrays(feature["innerEdges"], feature["counts"], feature["ksSample"]))
            names.append(name)
        stored = raw.get(reference_data.PREDICTION)
        prediction = None
        if isinstance(stored, Mapping):
            prediction = ColumnProfile.from_arrays(stored["innerEdges"], stored["counts"], stored["ksSample"])
        return cls(tuple(names), tuple(columns), prediction, int(raw.get("rows", 0)))

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for column in self.columns:
            digest.update(column.edges.tobytes())
            digest.update(column.counts.tobytes())
        return digest.hexdigest()[:16]


_CACHE: dict[tuple[str, int, int], ReferenceProfile] = {}
_CACHE_LOCK = threading.Lock()


def load_profile(path: str | Path) -> ReferenceProfile:
    """Load a stored profile once per (path, mtime, size); later calls hit the cache."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is None:
        if path.suffix == ".json":  # what a model version ships (workloads.data.profile)
            cached = ReferenceProfile.from_version_profile(json.loads(path.read_text()))
        else:
            cached = ReferenceProfile.load(path)
        with _CACHE_LOCK:
            _CACHE[key] = cached
    return cached


# -------------------------------------------------------------------- statistics


def psi(reference_counts: np.ndarray, live_counts: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """PSI = sum((live% - ref%) * ln(live% / ref%)), empty bins floored at `epsilon`."""
    ref = np.maximum(reference_counts / max(reference_counts.sum(), 1), epsilon)
    live = np.maximum(live_counts / max(live_counts.sum(), 1), epsilon)
    return float(np.sum((live - ref) * np.log(live / ref)))


@dataclass(frozen=True)
class ColumnDrift:
    psi: float
    ks: float
    rows: int  # finite live values used


def _sorted_finite(live: np.ndarray) -> np.ndarray:
    """The finite live values, sorted: float32 stays float32 (half the sort work), any
    other dtype becomes float64."""
    live = np.asarray(live)
    if live.dtype != np.float32:
        live = live.astype(np.float64, copy=False)
    ordered = np.sort(live, kind="quicksort")  # numpy's SIMD sort; NaN sorts last
    infinity = ordered.dtype.type(np.inf)
    start = int(np.searchsorted(ordered, -infinity, side="right"))  # drop -inf
    stop = int(np.searchsorted(ordered, infinity, side="left"))  # drop +inf and NaN
    return ordered[start:stop]


def _float32_bounds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(largest float32 <= v, smallest float32 >= v) for each float64 v. For a float32 x:
    x <= v  <=>  x <= down(v)   and   x < v  <=>  x < up(v)   -- exactly, so a float32
    column is compared with float64 reference values without widening it."""
    with np.errstate(over="ignore"):  # beyond float32's range: +-inf, the right bound there
        nearest = values.astype(np.float32)
        wide = nearest.astype(np.float64)
        down = np.where(wide > values, np.nextafter(nearest, np.float32(-np.inf)), nearest)
        up = np.where(wide < values, np.nextafter(nearest, np.float32(np.inf)), nearest)
    return down.astype(np.float32), up.astype(np.float32)


_BOUNDS_CACHE: dict[int, tuple[np.ndarray, ...]] = {}


def _keys(profile: ColumnProfile, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edge keys for `<`, value keys for `<=`, value keys for `<`) in the live dtype."""
    if dtype != np.float32:
        return profile.edges, profile.values, profile.values
    cached = _BOUNDS_CACHE.get(id(profile))
    if cached is None or cached[0] is not profile:
        _, edges_up = _float32_bounds(profile.edges)
        values_down, values_up = _float32_bounds(profile.values)
        cached = (profile, edges_up, values_down, values_up)
        if len(_BOUNDS_CACHE) > 4096:
            _BOUNDS_CACHE.clear()
        _BOUNDS_CACHE[id(profile)] = cached
    return cached[1], cached[2], cached[3]


def column_drift(profile: ColumnProfile, live: np.ndarray) -> ColumnDrift:
    """PSI and KS of one live column against its cached profile: one sort of the live
    column, then `searchsorted` of the (small) reference arrays into it."""
    ordered = _sorted_finite(live)
    n = ordered.size
    if n == 0:
        return ColumnDrift(float("nan"), float("nan"), 0)
    edges_lt, values_le, values_lt = _keys(profile, ordered.dtype)
    bounds = np.searchsorted(ordered, edges_lt, side="left")  # rows < edge
    live_counts = np.diff(bounds, prepend=0, append=n)
    le = np.searchsorted(ordered, values_le, side="right") / n
    lt = np.searchsorted(ordered, values_lt, side="left") / n
    cdf = profile.cum_counts / profile.ks_rows
    cdf_before = np.concatenate(([0.0], cdf[:-1]))
    ks = max(float(np.max(np.abs(cdf - le))), float(np.max(np.abs(cdf_before - lt))))
    return ColumnDrift(psi(profile.counts, live_counts), ks, n)


@dataclass(frozen=True)
class DriftReport:
    features: tuple[str, ...]
    psi: np.ndarray  # per feature
    ks: np.ndarray  # per feature
    rows: int
    prediction_psi: float | None = None
    prediction_ks: float | None = None
    per_feature_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "features": {
                name: {"psi": float(p), "ks": float(k)}
                for name, p, k in zip(self.features, self.psi, self.ks)
            },
            "prediction": None if self.prediction_psi is None else
            {"psi": self.prediction_psi, "ks": self.prediction_ks},
        }


def _workers(workers: int | None) -> int:
    return max(1, workers if workers is not None else min(4, os.cpu_count() or 1))


def evaluate(profile: ReferenceProfile, window: np.ndarray | Mapping[str, np.ndarray],
             predictions: np.ndarray | None = None, workers: int | None = None) -> DriftReport:
    """PSI + KS for every feature of `window` (rows, features) vs the cached profile.

    Features run in a small thread pool (numpy releases the GIL while sorting)."""
    if isinstance(window, Mapping):
        missing = [name for name in profile.features if name not in window]
        if missing:
            raise ValueError(f"window lacks features {missing}")
        columns = [np.asarray(window[name]) for name in profile.features]
        rows = len(columns[0]) if columns else 0
    else:
        window = np.asarray(window)
        if window.ndim != 2 or window.shape[1] != len(profile.features):
            raise ValueError(
                f"window must be (rows, {len(profile.features)}) for features {list(profile.features)}, "
                f"got shape {window.shape}"
            )
        columns = [window[:, j] for j in range(window.shape[1])]
        rows = window.shape[0]
    jobs = list(zip(profile.columns, columns))
    if predictions is not None and profile.prediction is not None:
        jobs.append((profile.prediction, np.asarray(predictions).reshape(-1)))
    count = _workers(workers)
    if count == 1 or len(jobs) == 1:
        results = [column_drift(p, c) for p, c in jobs]
    else:
        with ThreadPoolExecutor(max_workers=count) as pool:
            results = list(pool.map(lambda job: column_drift(*job), jobs))
    prediction = results.pop() if len(results) > len(profile.columns) else None
    return DriftReport(
        features=profile.features,
        psi=np.array([r.psi for r in results]),
        ks=np.array([r.ks for r in results]),
        rows=rows,
        prediction_psi=None if prediction is None else prediction.psi,
        prediction_ks=None if prediction is None else prediction.ks,
        per_feature_rows=np.array([r.rows for r in results], dtype=np.int64),
    )


class WindowBuffer:
    """A bounded, column-major ring buffer of the most recent live rows (+ predictions).

    Rows are kept as float32 by default: the dtype the model itself receives (the serving
    and streaming input contract casts to float32), half the memory, and half the sort
    work per evaluation. Drift is computed on exactly these values."""

    def __init__(self, features: int, capacity: int, dtype: Any = np.float32):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._data = np.empty((features, capacity), dtype=dtype)
        self._pred = np.empty(capacity, dtype=np.float64)
        self._next = 0
        self._size = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def append(self, rows: np.ndarray, predictions: np.ndarray | None = None) -> None:
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self._data.shape[0]:
            raise ValueError(f"rows must be (n, {self._data.shape[0]}), got shape {rows.shape}")
        preds = np.full(rows.shape[0], np.nan) if predictions is None else np.asarray(predictions, np.float64).reshape(-1)
        if preds.shape[0] != rows.shape[0]:
            raise ValueError(f"{preds.shape[0]} predictions for {rows.shape[0]} rows")
        rows, preds = rows[-self.capacity:], preds[-self.capacity:]
        with self._lock:
            n = rows.shape[0]
            first = min(n, self.capacity - self._next)
            self._data[:, self._next:self._next + first] = rows[:first].T
            self._pred[self._next:self._next + first] = preds[:first]
            if n > first:
                self._data[:, : n - first] = rows[first:].T
                self._pred[: n - first] = preds[first:]
            self._next = (self._next + n) % self.capacity
            self._size = min(self.capacity, self._size + n)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, features) column-major copy and the predictions, order irrelevant to drift."""
        with self._lock:
            return self._data[:, : self._size].copy().T, self._pred[: self._size].copy()

    def clear(self) -> None:
        with self._lock:
            self._next = self._size = 0
