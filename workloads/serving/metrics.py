"""The model server's Prometheus metrics, named and labelled by the metrics contract
(workloads/monitoring/metrics.py).

Seldon runs REST (a gunicorn worker) and gRPC in separate processes, so the collectors
live in prometheus-client's multiprocess mode: the launcher sets
`PROMETHEUS_MULTIPROC_DIR` to a fresh directory, every process writes its own files, and
`GET /metrics` on the REST port aggregates them. Without that variable (unit tests, one
process) they are ordinary in-process collectors.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from workloads.monitoring import metrics as contract

# Not in the contract yet (asked for): the distribution of the served scores, watched for
# prediction drift between the drift monitor's evaluations.
PREDICTION_SCORE = contract.Metric(
    name="strata_serving_prediction_score",
    kind=contract.Kind.HISTOGRAM,
    unit="",
    labels=contract.SERVING_LABELS,
    help="Served scores (P(positive) for binary models, top-class probability otherwise), per row.",
    emitter=contract.Emitter.SERVING,
    buckets=tuple(round(0.05 * i, 2) for i in range(1, 21)),
)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def _collector(metric: contract.Metric, registry: Any, buckets=None, **extra: Any) -> Any:
    import prometheus_client as pc

    kwargs: dict[str, Any] = {"labelnames": metric.labels, "registry": registry, **extra}
    if metric.kind is contract.Kind.COUNTER:
        return pc.Counter(metric.client_name, metric.help, **kwargs)
    if metric.kind is contract.Kind.GAUGE:
        return pc.Gauge(metric.client_name, metric.help, **kwargs)
    return pc.Histogram(metric.client_name, metric.help, buckets=tuple(buckets or metric.buckets), **kwargs)


class ServingMetrics:
    """Pre-labelled children for one served version; cheap to call per request."""

    def __init__(
        self,
        model: str,
        version: str,
        predictor: str,
        team: str,
        latency_targets_seconds: tuple[float, ...] = (),
        registry: Any = None,
    ):
        import prometheus_client as pc

        if registry is None:
            registry = pc.CollectorRegistry(auto_describe=True) if not multiprocess_dir() else None
        self.registry = registry  # None in multiprocess mode: values live in the mmap files
        reg = registry if registry is not None else pc.CollectorRegistry()  # throwaway for names
        m = contract.metric
        self._requests = _collector(m("serving_requests_total"), reg)
        self._duration = _collector(
            m("serving_request_duration_seconds"), reg, buckets=contract.latency_buckets(*latency_targets_seconds)
        )
        gauge_kwargs = {"multiprocess_mode": "livesum"} if multiprocess_dir() else {}
        self._in_flight = _collector(m("serving_in_flight_requests"), reg, **gauge_kwargs)
        self._rejected = _collector(m("serving_rejected_requests_total"), reg)
        self._rows = _collector(m("serving_batch_rows"), reg)
        self._scores = _collector(PREDICTION_SCORE, reg)
        # one series per live process (gunicorn workers and the gRPC process follow the alias apart)
        loaded_kwargs = {"multiprocess_mode": "liveall"} if multiprocess_dir() else {}
        self._loaded = _collector(m("serving_loaded_version_info"), reg, **loaded_kwargs)
        self.base = (model, version, predictor, team)
        self.in_flight = self._in_flight.labels(model, predictor, team)
        self.rows = self._rows.labels(model, predictor, team)
        self.scores = self._scores.labels(*self.base)
        self._score_edges = np.asarray(PREDICTION_SCORE.buckets, dtype=np.float64)
        self._children: dict[tuple, Any] = {}

    def _child(self, collector: Any, *extra: str) -> Any:
        key = (id(collector), *extra)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = collector.labels(*self.base, *extra)
        return child

    def mark_loaded(self, serving: bool = True) -> None:
        """This process serves (or no longer serves) the version these metrics are labelled with."""
        self._loaded.labels(*self.base).set(1 if serving else 0)

    def observe_request(self, protocol: str, code: int, seconds: float, reason: str | None = None) -> None:
        self._child(self._requests, protocol, str(code)).inc()
        self._child(self._duration, protocol).observe(seconds)
        if reason is not None:
            self._child(self._rejected, reason).inc()

    def observe_predictions(self, rows: int, scores: np.ndarray) -> None:
        self.rows.observe(rows)
        observe_many(self.scores, self._score_edges, scores)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every process's values (multiprocess) or this registry's."""
        import prometheus_client as pc

        if self.registry is None:
            from prometheus_client import multiprocess

            registry = pc.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        return pc.generate_latest(registry), pc.CONTENT_TYPE_LATEST


def observe_many(histogram_child: Any, edges: np.ndarray, values: np.ndarray) -> None:
    """Observe many values at once: one increment per bucket instead of one per value.

    Uses the child's bucket values directly (prometheus-client keeps per-bucket, not
    cumulative, counts and a sum); falls back to `observe` if that layout ever changes."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return
    buckets = getattr(histogram_child, "_buckets", None)
    total = getattr(histogram_child, "_sum", None)
    if values.size <= 4 or buckets is None or total is None or len(buckets) != edges.size + 1:
        for value in values:
            histogram_child.observe(float(value))
        return
    index = np.searchsorted(edges, values, side="left")  # bucket i: value <= edges[i]
    counts = np.bincount(index, minlength=edges.size + 1)
    for i in np.flatnonzero(counts):
        buckets[i].inc(int(counts[i]))
    total.inc(float(values.sum()))


class Timer:
    __slots__ = ("start",)

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start
