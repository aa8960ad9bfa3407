"""The metrics contract: every metric Strata emits, in one table.

Each entry names the metric exactly as Prometheus stores it (counters end in `_total`,
durations in `_seconds`, the unit is part of the name), its type, its labels, its unit,
its help text and which workload emits it. The generated rules and dashboards only
reference metrics from this table (a test checks), and workloads create their collectors
through `create()` / `collectors()`, so a metric cannot be emitted under a name or label
set the alerts do not expect.

Import-light on purpose: no numpy, and prometheus-client is imported lazily, so the
serving image (prometheus-client 0.8, its own environment) can use it too.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

PREFIX = "strata_"


class Kind(str, enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Emitter(str, enum.Enum):
    """Which process exports the metric (and so which `/metrics` must contain it)."""

    SERVING = "serving"  # the Seldon model wrapper (REST/gRPC)
    STREAMING = "streaming"  # the Kafka stream worker
    TRAINING = "training"  # Ray Train / Tune driver
    DRIFT = "drift"  # workloads.monitoring.drift_service (drift + data quality + model quality)
    RETRAIN = "retrain"  # workloads.monitoring.retrain
    COST = "cost"  # the platform's cost/spot exporter (Karpenter + pricing)
    ROLLOUT = "rollout"  # workloads.rollout (the rollout controller)
    LAKE = "lake"  # workloads.data (lake steps and the CDC ingester)
    FEATURES = "features"  # online enrichment in the model server and stream worker (workloads.data.features.lookup)
    FEATURE_AGGREGATES = "feature-aggregates"  # streaming features from CDC (workloads.data.features.streaming)


# Units allowed as a name suffix (Prometheus base units; "ratio" for 0..1 values).
UNITS = ("seconds", "bytes", "ratio", "rows", "messages", "requests", "dollars", "nodes", "runs", "")

# Request latency buckets (seconds). Every model's `slos.latencyP99Ms` is added to these
# by `latency_buckets()`, so the latency-SLO rules can select the `le` of the target.
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)
BATCH_ROWS_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
TRAINING_DURATION_BUCKETS: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200, 14400, 28800)
SHORT_DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FEATURE_LOOKUP_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
FEATURE_AGE_BUCKETS: tuple[float, ...] = (1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400,
                                          7 * 86400, 30 * 86400)
FEATURE_FRESHNESS_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LABEL_DELAY_BUCKETS: tuple[float, ...] = (60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)

MODEL_LABELS = ("model", "version", "team")
SERVING_LABELS = ("model", "version", "predictor", "team")
ROLLOUT_LABELS = ("model", "team", "strategy")
# Values of `trigger` on strata_training_runs_total (the training CLI's --trigger).
TRAINING_TRIGGERS = ("schedule", "manual", "retrain", "ci")
# Served-score histogram buckets (the prediction-distribution shift the controller compares).
SCORE_BUCKETS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 21))


@dataclass(frozen=True)
class Metric:
    name: str  # the exposition name, e.g. strata_serving_requests_total
    kind: Kind
    unit: str
    labels: tuple[str, ...]
    help: str
    emitter: Emitter
    buckets: tuple[float, ...] | None = None

    @property
    def client_name(self) -> str:
        """The name prometheus-client wants (it appends `_total` to counters itself)."""
        return self.name.removesuffix("_total") if self.kind is Kind.COUNTER else self.name

    @property
    def series_names(self) -> tuple[str, ...]:
        """The series names this metric produces in the exposition format."""
        if self.kind is Kind.HISTOGRAM:
            return (f"{self.name}_bucket", f"{self.name}_count", f"{self.name}_sum")
        return (self.name,)

    def create(self, registry: Any = None, buckets: Iterable[float] | None = None) -> Any:
        """A prometheus-client collector for this metric (registry=None: the default one)."""
        import prometheus_client as pc

        kwargs: dict[str, Any] = {"labelnames": self.labels}
        if registry is not None:
            kwargs["registry"] = registry
        if self.kind is Kind.COUNTER:
            return pc.Counter(self.client_name, self.help, **kwargs)
        if self.kind is Kind.GAUGE:
            return pc.Gauge(self.client_name, self.help, **kwargs)
        return pc.Histogram(
            self.client_name, self.help, buckets=tuple(buckets or self.buckets or ()), **kwargs
        )


def _m(name, kind, unit, labels, help, emitter, buckets=None) -> Metric:  # noqa: A002
    return Metric(PREFIX + name, Kind(kind), unit, tuple(labels), help, Emitter(emitter), buckets)


C, G, H = "counter", "gauge", "histogram"

CONTRACT: tuple[Metric, ...] = (
    # ---------------------------------------------------------------- serving
    _m("serving_requests_total", C, "requests", SERVING_LABELS + ("protocol", "code"),
       "Prediction requests handled, by protocol (rest|grpc) and status code (HTTP code; gRPC mapped to HTTP).",
       "serving"),
    _m("serving_request_duration_seconds", H, "seconds", SERVING_LABELS + ("protocol",),
       "Time from request received to response sent, including validation and inference.",
       "serving", DEFAULT_LATENCY_BUCKETS),
    _m("serving_in_flight_requests", G, "requests", ("model", "predictor", "team"),
       "Requests currently being processed by this replica.", "serving"),
    _m("serving_rejected_requests_total", C, "requests", SERVING_LABELS + ("reason",),
       "Requests rejected before inference, by reason: a 4xx for bad input (schema, payload_too_large, "
       "batch_too_large, ...), 503 `overloaded` for a request shed after waiting past the queue budget.",
       "serving"),
    _m("serving_batch_rows", H, "rows", ("model", "predictor", "team"),
       "Rows per prediction request.", "serving", BATCH_ROWS_BUCKETS),
    _m("serving_prediction_score", H, "", SERVING_LABELS,
       "Served scores (P(positive) for binary models, top-class probability otherwise), per row.",
       "serving", SCORE_BUCKETS),
    _m("serving_loaded_version_info", G, "", SERVING_LABELS,
       "1 for the version a server process serves now, 0 for the one it swapped out (one series per "
       "process, `pid`, under multiprocess mode): a promotion is done when every process reports it.",
       "serving"),
    # ---------------------------------------------------------------- streaming
    _m("stream_messages_consumed_total", C, "messages", MODEL_LABELS + ("topic",),
       "Messages read from the input topic and processed (scored or dead-lettered).", "streaming"),
    _m("stream_messages_produced_total", C, "messages", MODEL_LABELS + ("topic",),
       "Scored messages written to the output topic.", "streaming"),
    _m("stream_dead_letter_messages_total", C, "messages", MODEL_LABELS + ("topic", "reason"),
       "Messages written to the dead-letter topic, by reason (decode, schema, inference).", "streaming"),
    _m("stream_consumer_lag_messages", G, "messages", ("model", "team", "topic", "partition"),
       "Consumer-group lag per partition (log end offset minus committed offset).", "streaming"),
    _m("stream_batch_duration_seconds", H, "seconds", MODEL_LABELS,
       "Time to consume, score, produce and commit one batch.", "streaming", SHORT_DURATION_BUCKETS),
    _m("stream_rebalances_total", C, "", ("model", "team"),
       "Consumer-group rebalances seen by this worker.", "streaming"),
    # ---------------------------------------------------------------- training
    _m("training_runs_total", C, "runs", ("model", "team", "trigger", "outcome"),
       "Finished training runs by trigger (schedule|manual|retrain|ci) and outcome (succeeded|failed).",
       "training"),
    _m("training_run_duration_seconds", H, "seconds", ("model", "team", "outcome"),
       "Wall time of a training run (including HPO trials).", "training", TRAINING_DURATION_BUCKETS),
    _m("training_runs_in_progress", G, "runs", ("model", "team"),
       "Training runs currently executing.", "training"),
    _m("training_last_success_timestamp_seconds", G, "seconds", ("model", "team"),
       "Unix time of the last successful training run.", "training"),
    _m("training_epoch_duration_seconds", H, "seconds", ("model", "team"),
       "Wall time of one training epoch (all workers).", "training", SHORT_DURATION_BUCKETS + (120.0, 300.0, 900.0)),
    _m("training_worker_restarts_total", C, "", ("model", "team"),
       "Ray Train worker restarts (resumed from the last checkpoint).", "training"),
    # ---------------------------------------------------------------- drift
    _m("drift_feature_psi", G, "", MODEL_LABELS + ("feature",),
       "Population stability index of the live window vs the version's reference profile, per feature.",
       "drift"),
    _m("drift_feature_ks_statistic", G, "", MODEL_LABELS + ("feature",),
       "Two-sample Kolmogorov-Smirnov statistic (effect size, 0..1) of the live window vs the reference, per feature.",
       "drift"),
    _m("drift_prediction_psi", G, "", MODEL_LABELS,
       "Population stability index of the model's predictions vs the reference predictions.", "drift"),
    _m("drift_prediction_ks_statistic", G, "", MODEL_LABELS,
       "Kolmogorov-Smirnov statistic of the model's predictions vs the reference predictions.", "drift"),
    _m("drift_window_rows", G, "rows", MODEL_LABELS,
       "Rows in the live window the last drift evaluation used.", "drift"),
    _m("drift_evaluations_total", C, "", MODEL_LABELS,
       "Drift evaluations performed.", "drift"),
    _m("drift_evaluation_duration_seconds", H, "seconds", ("model", "team"),
       "Time to compute PSI and KS for all features of one window.", "drift", SHORT_DURATION_BUCKETS),
    _m("drift_last_evaluation_timestamp_seconds", G, "seconds", MODEL_LABELS,
       "Unix time of the last drift evaluation.", "drift"),
    # ---------------------------------------------------------------- data quality
    _m("data_rows_total", C, "rows", ("model", "team", "stage"),
       "Rows checked by the input contract, by stage (serving|streaming|training).", "drift"),
    _m("data_invalid_rows_total", C, "rows", ("model", "team", "stage", "reason"),
       "Rows failing the input contract, by stage and reason (missing, type, range, nan).", "drift"),
    # ---------------------------------------------------------------- model quality
    _m("model_quality_ratio", G, "ratio", MODEL_LABELS + ("metric",),
       "Live model quality from delayed labels over the quality window, by metric (accuracy|auc).", "drift"),
    _m("model_quality_baseline_ratio", G, "ratio", MODEL_LABELS + ("metric",),
       "The version's own offline evaluation of the same metric (the reference for degradation).", "drift"),
    _m("model_quality_degradation_ratio", G, "ratio", MODEL_LABELS + ("metric",),
       "Relative degradation vs the baseline: (baseline - live) / baseline for higher-is-better metrics.",
       "drift"),
    _m("model_quality_labeled_predictions_total", C, "", MODEL_LABELS,
       "Predictions joined with a delayed label.", "drift"),
    _m("model_quality_label_delay_seconds", H, "seconds", ("model", "team"),
       "Delay between a prediction and its label's arrival.", "drift", LABEL_DELAY_BUCKETS),
    # ---------------------------------------------------------------- retraining trigger
    _m("retrain_triggers_total", C, "", ("model", "team", "outcome"),
       "Retraining requests by outcome (started|already_running|cooldown|failed|unknown_model).", "retrain"),
    _m("retrain_runs_in_progress", G, "runs", ("model", "team"),
       "Retraining runs started by the trigger and not finished yet.", "retrain"),
    # ---------------------------------------------------------------- rollout controller
    _m("rollout_active", G, "", ROLLOUT_LABELS + ("candidate_version",),
       "1 while a rollout of the candidate version is in progress, 0 once it ended.", "rollout"),
    _m("rollout_step", G, "", ROLLOUT_LABELS,
       "Index of the current rollout step (canary: position in serving.rollout.steps; others: 0).", "rollout"),
    _m("rollout_candidate_weight_ratio", G, "ratio", ROLLOUT_LABELS,
       "Share of live traffic the controller routes to the candidate predictor (0 when shadowing).", "rollout"),
    _m("rollout_decisions_total", C, "", ROLLOUT_LABELS + ("outcome",),
       "Rollout decisions by outcome (start|advance|hold|promote|rollback|discard|no_winner).", "rollout"),
    _m("rollout_last_transition_timestamp_seconds", G, "seconds", ROLLOUT_LABELS,
       "Unix time of the controller's last state transition (a step, a promotion or a rollback).", "rollout"),
    _m("rollout_rollback_duration_seconds", G, "seconds", ROLLOUT_LABELS,
       "Seconds from the last rollback decision to 100% stable traffic.", "rollout"),
    # ---------------------------------------------------------------- the lake
    _m("lake_rows_total", C, "rows", ("step", "table", "outcome"),
       "Rows through a lake step by outcome (bronze: ingested; silver: valid|quarantined|superseded; "
       "gold: published|held; aggregate: published|malformed).", "lake"),
    _m("lake_refused_batches_total", C, "", ("table",),
       "Bronze batches over maxInvalidRowFraction: kept in silver, not promoted to gold.", "lake"),
    _m("lake_invalid_row_ratio", G, "ratio", ("table",), "Invalid-row fraction of the last silver batch.", "lake"),
    _m("lake_table_version", G, "", ("layer", "table"), "Latest Delta version a step wrote.", "lake"),
    _m("lake_last_ingest_timestamp_seconds", G, "seconds", ("table",), "Unix time bronze last received rows.", "lake"),
    _m("lake_cdc_lag_seconds", G, "seconds", ("table",),
       "Source commit -> bronze append, for the oldest change of the last CDC batch.", "lake"),
    _m("lake_step_duration_seconds", H, "seconds", ("step", "table"), "Wall time of one batch of a lake step.",
       "lake", SHORT_DURATION_BUCKETS),
    # ---------------------------------------------------------------- online features
    # `model`: the model whose server or worker looked the features up (views can be shared)
    _m("feature_lookups_total", C, "", ("model", "view", "outcome"),
       "Online feature lookups per model, view and outcome (hit: stored values; default: unknown or expired entity).",
       "features"),
    _m("feature_store_errors_total", C, "", ("model", "view"),
       "Online store errors per model and view (the request got the defaults or a 503, as the spec's onOutage says).",
       "features"),
    _m("feature_lookup_seconds", H, "seconds", ("model", "views"),
       "Online lookup latency: one request or stream batch, one pipeline for all its views (views: their names, joined).",
       "features", FEATURE_LOOKUP_BUCKETS),
    _m("feature_age_seconds", H, "seconds", ("model", "view"),
       "Age of the online values served (now - their event time): freshness as serving sees it.",
       "features", FEATURE_AGE_BUCKETS),
    # ---------------------------------------------------------------- streaming features
    _m("feature_aggregate_events_total", C, "", ("view", "outcome"),
       "CDC changes through the streaming aggregator, by outcome (applied|duplicate: a replayed or older LSN|"
       "deleted|expired: older than every window|malformed: skipped here, kept by bronze).", "feature-aggregates"),
    _m("feature_freshness_seconds", H, "seconds", ("view",),
       "When an applied change became true (its event time, or its commit if later) -> its entity's aggregates "
       "visible in the online store.",
       "feature-aggregates", FEATURE_FRESHNESS_BUCKETS),
    _m("feature_aggregate_lag_messages", G, "messages", ("view",),
       "Changes on the source topic the aggregator has not applied yet (high watermark - position, all partitions).",
       "feature-aggregates"),
    _m("feature_aggregate_last_poll_timestamp_seconds", G, "seconds", ("view",),
       "Unix time of the aggregator's last poll of its topic (its loop's heartbeat).", "feature-aggregates"),
    # ---------------------------------------------------------------- cost and spot
    _m("node_hourly_cost_dollars", G, "dollars", ("node", "node_pool", "capacity_type", "instance_type"),
       "On-demand or current spot price of each node, per hour.", "cost"),
    _m("workload_hourly_cost_dollars", G, "dollars", ("model", "team", "component"),
       "Share of node cost attributed to a model's pods by requests, per hour (component: training|serving|streaming).",
       "cost"),
    _m("node_pool_nodes", G, "nodes", ("node_pool", "capacity_type"),
       "Nodes per pool and capacity type (spot|on-demand).", "cost"),
    _m("spot_interruptions_total", C, "", ("node_pool", "instance_type", "kind"),
       "Spot interruption and rebalance notices received (kind: interruption|rebalance).", "cost"),
    _m("spot_fallbacks_total", C, "", ("node_pool",),
       "Times a pool fell back from spot to on-demand capacity.", "cost"),
)

BY_NAME: Mapping[str, Metric] = {metric.name: metric for metric in CONTRACT}


def metric(name: str) -> Metric:
    """Look a metric up by its exposition name (with or without the `strata_` prefix)."""
    full = name if name.startswith(PREFIX) else PREFIX + name
    try:
        return BY_NAME[full]
    except KeyError:
        raise KeyError(f"{full} is not in the metrics contract (workloads/monitoring/metrics.py)") from None


def create(name: str, registry: Any = None, buckets: Iterable[float] | None = None) -> Any:
    return metric(name).create(registry, buckets)


def collectors(emitter: Emitter | str, registry: Any = None, **buckets: Iterable[float]) -> dict[str, Any]:
    """All collectors one workload must export, keyed by exposition name.

    `buckets` overrides histogram buckets by exposition name (e.g. the serving latency
    histogram gets `latency_buckets(spec)`)."""
    emitter = Emitter(emitter)
    return {
        m.name: m.create(registry, buckets.get(m.name))
        for m in CONTRACT
        if m.emitter is emitter
    }


def for_emitter(emitter: Emitter | str) -> tuple[Metric, ...]:
    emitter = Emitter(emitter)
    return tuple(m for m in CONTRACT if m.emitter is emitter)


def latency_buckets(*targets_seconds: float) -> tuple[float, ...]:
    """Default latency buckets plus each SLO target, so `le="<target>"` exists."""
    return tuple(sorted(set(DEFAULT_LATENCY_BUCKETS) | {float(t) for t in targets_seconds}))


def go_float(value: float) -> str:
    """A float as Prometheus clients write it in the `le` label (prometheus-client's format)."""
    value = float(value)
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(value)


def le_selector(seconds: float) -> str:
    """A PromQL label matcher for the bucket boundary `seconds`, whether a client wrote
    `1` or `1.0` (Prometheus 3 normalises `le` on ingestion; 2.x stores what it got)."""
    text = go_float(seconds)
    if text.endswith(".0"):
        return f'le=~"{text[:-2]}|{text}"'
    return f'le="{text}"'


_NAME = re.compile(r"^strata_[a-z][a-z0-9_]*[a-z0-9]$")


def convention_problems(metric_: Metric) -> list[str]:
    """Prometheus naming conventions this contract follows (checked by a test)."""
    problems = []
    name = metric_.name
    if not _NAME.match(name):
        problems.append(f"{name}: not snake_case with the strata_ prefix")
    if metric_.kind is Kind.COUNTER and not name.endswith("_total"):
        problems.append(f"{name}: counters end in _total")
    if metric_.kind is not Kind.COUNTER and name.endswith("_total"):
        problems.append(f"{name}: only counters end in _total")
    if metric_.unit not in UNITS:
        problems.append(f"{name}: unit {metric_.unit!r} is not one of {UNITS}")
    if metric_.unit and metric_.unit not in name.removesuffix("_total").split("_"):
        problems.append(f"{name}: the unit {metric_.unit!r} must be part of the name")
    if any(word in name for word in ("_milliseconds", "_ms", "_minutes", "_percent")):
        problems.append(f"{name}: use base units (seconds, ratio)")
    if metric_.kind is Kind.HISTOGRAM and not metric_.buckets:
        problems.append(f"{name}: histograms state their buckets")
    if "le" in metric_.labels or "quantile" in metric_.labels:
        problems.append(f"{name}: reserved label")
    if not metric_.help.strip():
        problems.append(f"{name}: help text required")
    return problems
