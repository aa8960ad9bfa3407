"""Model quality from delayed labels, and the quality service that computes it from Kafka.

Predictions are remembered by request key; when a label arrives (the labels topic
`strata.<model>.labels`, or the drift monitor's `/v1/labels` endpoint) it is joined with
its prediction, and the most recent `window` joined pairs give live accuracy and ROC AUC.
Degradation is relative to the version's own offline evaluation (the `metrics` of its
`version.json` in the registry export), so a model that was always 0.80 is not
"degraded" at 0.80:

    degradation = (baseline - live) / baseline      (higher-is-better metrics)

The service::

    python -m workloads.monitoring.quality --bootstrap 127.0.0.1:19092 --model fraud \
        --team payments-risk --registry .strata/registry --port 9110

consumes the scored topic (`strata.<model>.scored`, written by the stream worker: key,
version, scores, prediction) and the labels topic (`strata.<model>.labels`: record key =
the scored record's key, value `{"label": 1}` or `{"key": "...", "label": 1}`) in one
consumer group, joins them by key whichever arrives first (both sides bounded), and
exports the contract's `strata_model_quality_*` metrics per version on `/metrics`.
Malformed label records are skipped and counted (`GET /v1/status`), never fatal.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Mapping

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


def _predicted_classes(scores: np.ndarray, threshold: float) -> tuple[np.ndarray, bool]:
    """Predicted class ids from scores, and whether the scores are probabilities."""
    probability = bool(scores.size) and bool(np.all((scores >= 0) & (scores <= 1))) and bool(
        np.any((scores > 0) & (scores < 1)))
    return ((scores >= threshold).astype(np.float64) if probability else scores), probability


class QualityTracker:
    """Joins predictions with delayed labels; bounded memory on every side.

    `hold_labels`: keep labels whose prediction has not been seen yet (a consumer of two
    topics sees them in either order) and join them when it arrives."""

    def __init__(self, baseline: Mapping[str, float] | None = None, window: int = 10_000,
                 pending_limit: int = 1_000_000, binary_threshold: float = 0.5, hold_labels: bool = False):
        self.baseline = dict(baseline or {})
        self.binary_threshold = binary_threshold
        self.hold_labels = hold_labels
        # id -> (score, predicted class, scores are probabilities, t)
        self._pending: OrderedDict[Hashable, tuple[float, float, bool, float]] = OrderedDict()
        self._labels: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # id -> (label, t)
        self._pending_limit = pending_limit
        self._joined: deque[tuple[float, float, float, bool]] = deque(maxlen=window)  # score, class, label, prob
        self._lock = threading.Lock()
        self.labeled_total = 0

    def observe_predictions(self, ids, scores, now: float | None = None,
                            predicted=None) -> tuple[int, list[float]]:
        """Remember predictions (`predicted`: class ids; default: scores thresholded when
        they are probabilities, else the scores themselves). Returns labels joined now."""
        now = time.time() if now is None else now
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        derived, probability = _predicted_classes(scores, self.binary_threshold)
        classes = derived if predicted is None else np.asarray(predicted, dtype=np.float64).reshape(-1)
        joined, delays = 0, []
        with self._lock:
            for key, score, klass in zip(ids, scores, classes):
                held = self._labels.pop(key, None) if self._labels else None
                if held is not None:
                    label, labeled_at = held
                    self._joined.append((float(score), float(klass), label, probability))
                    delays.append(max(0.0, labeled_at - now))
                    joined += 1
                    continue
                self._pending[key] = (float(score), float(klass), probability, now)
                if len(self._pending) > self._pending_limit:
                    self._pending.popitem(last=False)  # oldest unlabeled prediction
            self.labeled_total += joined
        return joined, delays

    def observe_labels(self, ids, labels, now: float | None = None) -> tuple[int, list[float]]:
        """Returns (joined, delays in seconds); labels for unknown ids are dropped (or held
        until their prediction arrives, with `hold_labels`)."""
        now = time.time() if now is None else now
        joined, delays = 0, []
        with self._lock:
            for key, label in zip(ids, labels):
                found = self._pending.pop(key, None)
                if found is None:
                    if self.hold_labels:
                        self._labels[key] = (float(label), now)
                        if len(self._labels) > self._pending_limit:
                            self._labels.popitem(last=False)
                    continue
                score, klass, probability, predicted_at = found
                self._joined.append((score, klass, float(label), probability))
                delays.append(max(0.0, now - predicted_at))
                joined += 1
            self.labeled_total += joined
        return joined, delays

    @property
    def pending(self) -> tuple[int, int]:
        """(predictions waiting for a label, labels waiting for a prediction)."""
        with self._lock:
            return len(self._pending), len(self._labels)

    def snapshot(self) -> QualitySnapshot:
        with self._lock:
            pairs = np.array(self._joined, dtype=np.float64).reshape(-1, 4)
        scores, classes, labels, probability = pairs[:, 0], pairs[:, 1], pairs[:, 2], pairs[:, 3] > 0
        metrics: dict[str, float] = {}
        if labels.size:
            metrics["accuracy"] = accuracy(labels, classes)
            binary = set(np.unique(labels).tolist()) <= {0.0, 1.0}
            if binary and probability.all():
                metrics["auc"] = roc_auc(labels, scores)
        drops = {
            name: degradation(value, self.baseline[name])
            for name, value in metrics.items()
            if name in self.baseline
        }
        return QualitySnapshot(int(labels.size), metrics, drops)


# -------------------------------------------------------------------- the service

QUALITY_METRICS = ("accuracy", "auc")  # what live labels can measure; baselines beyond these are ignored


def version_baseline(registry_dir: str | Path, model: str, version: str) -> dict[str, float]:
    """The version's own evaluation (`metrics` of `version.json` in the registry export),
    restricted to the metrics live labels can measure. Missing: {} (no degradation)."""
    from workloads.serving import registry

    path = Path(registry_dir) / model / "versions" / str(version) / registry.VERSION_INFO
    if not path.is_file():
        return {}
    try:
        stored = json.loads(path.read_text()).get("metrics") or {}
    except (ValueError, AttributeError) as error:
        raise ValueError(f"{path}: unreadable version info ({error})") from None
    return {name: float(stored[name]) for name in QUALITY_METRICS
            if isinstance(stored.get(name), (int, float)) and np.isfinite(stored[name])}


@dataclass(frozen=True)
class ScoredRecord:
    key: str
    version: str
    score: float  # P(positive) for binary models, else the top-class probability
    predicted: float  # class id
    probability: bool


def parse_scored(value: bytes, fallback_key: str) -> ScoredRecord:
    """One record of the scored topic (workloads.streaming.worker's output value)."""
    record = json.loads(value)
    if not isinstance(record, dict):
        raise ValueError("scored record is not a JSON object")
    scores = record.get("scores")
    if not isinstance(scores, dict) or not scores:
        raise ValueError("scored record has no `scores` object")
    probabilities = {str(k): float(v) for k, v in scores.items()}
    if len(probabilities) == 2 and "proba_1" in probabilities:
        score = probabilities["proba_1"]
    else:
        score = max(probabilities.values())
    predicted = record.get("prediction")
    if not isinstance(predicted, (int, float)):
        raise ValueError("scored record has no numeric `prediction`")
    return ScoredRecord(str(record.get("key") or fallback_key), str(record.get("version", "")),
                        score, float(predicted), True)


def parse_label(key: bytes | None, value: bytes) -> tuple[str, float]:
    """One record of the labels topic -> (join key, label)."""
    record = json.loads(value)
    if isinstance(record, (int, float)) and not isinstance(record, bool):
        record = {"label": record}
    if not isinstance(record, dict):
        raise ValueError("label record is not a JSON object or number")
    label = record.get("label")
    if isinstance(label, bool) or not isinstance(label, (int, float)) or not np.isfinite(label):
        raise ValueError("label record needs a numeric `label`")
    join_key = record.get("key") or (key.decode() if key else None)
    if not join_key:
        raise ValueError("label record has no key (record key or `key` field)")
    return str(join_key), float(label)


class QualityService:
    """Per-version quality of one model from its scored and labels topics."""

    def __init__(self, model: str, team: str, registry_dir: str | Path | None = None,
                 window: int = 10_000, registry: Any = None,
                 baselines: Mapping[str, Mapping[str, float]] | None = None):
        import prometheus_client as pc

        from workloads.monitoring import metrics as contract

        self.model, self.team = model, team
        self.registry_dir = registry_dir
        self.window = window
        self.registry = registry if registry is not None else pc.CollectorRegistry()
        names = ("strata_model_quality_ratio", "strata_model_quality_baseline_ratio",
                 "strata_model_quality_degradation_ratio", "strata_model_quality_labeled_predictions_total",
                 "strata_model_quality_label_delay_seconds")
        self.m = {name: contract.create(name, self.registry) for name in names}
        self._baselines = {str(v): dict(b) for v, b in (baselines or {}).items()}
        self.pending_limit = 1_000_000
        self._versions: OrderedDict[str, str] = OrderedDict()  # key -> version of its unlabeled prediction
        self._held: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (label, t): came first
        self._trackers: dict[str, QualityTracker] = {}
        self._lock = threading.Lock()
        self.invalid = {"scored": 0, "labels": 0}

    def _tracker(self, version: str) -> QualityTracker:
        tracker = self._trackers.get(version)
        if tracker is None:
            baseline = self._baselines.get(version)
            if baseline is None:
                baseline = version_baseline(self.registry_dir, self.model, version) if self.registry_dir else {}
            tracker = self._trackers[version] = QualityTracker(baseline, window=self.window)
            for name, value in baseline.items():
                self.m["strata_model_quality_baseline_ratio"].labels(
                    model=self.model, version=version, team=self.team, metric=name).set(value)
        return tracker

    def on_scored(self, records: list[ScoredRecord], at: float) -> int:
        with self._lock:
            joined = 0
            for record in records:
                tracker = self._tracker(record.version)
                tracker.observe_predictions([record.key], [record.score], now=at, predicted=[record.predicted])
                held = self._held.pop(record.key, None)
                if held is None:
                    self._versions[record.key] = record.version
                    while len(self._versions) > self.pending_limit:
                        self._versions.popitem(last=False)
                    continue
                label, labeled_at = held
                tracker.observe_labels([record.key], [label], now=at)
                self._observed(record.version, max(0.0, labeled_at - at))
                joined += 1
            return joined

    def _observed(self, version: str, delay: float) -> None:
        self.m["strata_model_quality_labeled_predictions_total"].labels(
            model=self.model, version=version, team=self.team).inc()
        self.m["strata_model_quality_label_delay_seconds"].labels(model=self.model, team=self.team).observe(delay)

    def on_labels(self, labels: list[tuple[str, float]], at: float) -> int:
        with self._lock:
            joined = 0
            for key, label in labels:
                version = self._versions.pop(key, None)
                if version is None:  # the label came first: hold it until its prediction arrives
                    self._held[key] = (label, at)
                    while len(self._held) > self.pending_limit:
                        self._held.popitem(last=False)
                    continue
                count, delays = self._tracker(version).observe_labels([key], [label], now=at)
                for delay in delays:
                    self._observed(version, delay)
                joined += count
            return joined

    def export(self) -> dict[str, dict[str, Any]]:
        """Set the quality gauges from each version's window; returns what was set."""
        out = {}
        with self._lock:
            trackers = dict(self._trackers)
        for version, tracker in trackers.items():
            snapshot = tracker.snapshot()
            ids = {"model": self.model, "version": version, "team": self.team}
            for name, value in snapshot.metrics.items():
                self.m["strata_model_quality_ratio"].labels(**ids, metric=name).set(value)
            for name, value in snapshot.degradation.items():
                self.m["strata_model_quality_degradation_ratio"].labels(**ids, metric=name).set(value)
            out[version] = {"labeled": snapshot.labeled, "metrics": dict(snapshot.metrics),
                            "degradation": dict(snapshot.degradation), "baseline": tracker.baseline}
        return out

    def status(self) -> dict[str, Any]:
        with self._lock:
            predictions, labels = len(self._versions), len(self._held)
        return {"model": self.model, "versions": self.export(), "waiting": {"predictions": predictions, "labels": labels},
                "invalid": dict(self.invalid)}

    def consume(self, polled: Mapping[Any, list[Any]], scored_topic: str) -> None:
        """One poll of the consumer (both topics) -> joins."""
        for tp, records in polled.items():
            if not records:
                continue
            if tp.topic == scored_topic:
                parsed = []
                for record in records:
                    try:
                        parsed.append(parse_scored(record.value, f"{tp.topic}:{tp.partition}:{record.offset}"))
                    except (ValueError, TypeError):
                        self.invalid["scored"] += 1
                self.on_scored(parsed, records[-1].timestamp / 1000.0)
            else:
                labels = []
                for record in records:
                    try:
                        labels.append(parse_label(record.key, record.value))
                    except (ValueError, TypeError, UnicodeDecodeError):
                        self.invalid["labels"] += 1
                self.on_labels(labels, records[-1].timestamp / 1000.0)


def _handler(service: QualityService) -> type:
    from workloads.monitoring.http import JsonHandler

    import prometheus_client as pc

    class Handler(JsonHandler):

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/metrics":
                service.export()
                self._send(200, pc.generate_latest(service.registry), pc.CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._send(200, json.dumps({"status": "ok", "model": service.model}).encode())
            elif self.path == "/v1/status":
                self._send(200, json.dumps(service.status()).encode())
            else:
                self._send(404, json.dumps({"error": f"no route {self.path}"}).encode())

    return Handler


def main(argv: list[str] | None = None) -> int:
    import argparse
    import signal
    from http.server import ThreadingHTTPServer

    from kafka import KafkaConsumer

    from workloads.streaming.topics import labels_topic_for, topics_for

    parser = argparse.ArgumentParser(description="Strata model-quality service (delayed labels from Kafka)")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--team", required=True)
    parser.add_argument("--registry", default="", help="registry export root (version.json baselines); default $STRATA_REGISTRY_DIR")
    parser.add_argument("--scored-topic", help="default strata.<model>.scored")
    parser.add_argument("--labels-topic", help="default strata.<model>.labels")
    parser.add_argument("--group", default="", help="default strata-<model>-quality")
    parser.add_argument("--window", type=int, default=10_000, help="joined predictions per version in the window")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9110)
    from workloads.streaming import tls

    tls.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error("--window must be >= 1")
    from workloads.serving import registry

    scored = args.scored_topic or topics_for(args.model).output
    labels = args.labels_topic or labels_topic_for(args.model)
    service = QualityService(args.model, args.team, args.registry or registry.default_root(), args.window)
    server = ThreadingHTTPServer((args.host, args.port), _handler(service))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="quality-http", daemon=True).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    consumer = KafkaConsumer(
        scored, labels, bootstrap_servers=args.bootstrap, group_id=args.group or f"strata-{args.model}-quality",
        enable_auto_commit=True, auto_offset_reset="earliest", value_deserializer=lambda raw: raw,
        **tls.security_options(args.ssl_cafile, args.ssl_certfile, args.ssl_keyfile),
    )
    print(f"quality service for {args.model}: {scored} + {labels} on http://{args.host}:{server.server_port}", flush=True)
    try:
        while not stop.is_set():
            service.consume(consumer.poll(timeout_ms=500, max_records=1000), scored)
    finally:
        consumer.close()
        server.shutdown()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
