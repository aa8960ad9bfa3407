"""Grafana dashboards as pure functions: explicit UIDs, deterministic JSON.

Every query uses metrics from the contract (`metrics.py`) or recording rules from
`rules.py`; a test parses every query with promtool and checks every metric name.
The per-model dashboard's `model` variable lists the onboarded models from the specs.
"""

from __future__ import annotations

from typing import Any, Sequence

from workloads.monitoring import queries as q
from workloads.monitoring import rules
from workloads.spec import ModelSpec

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
TAGS = ["strata", "generated"]


class _Layout:
    """Places panels left to right, 24 columns wide, in rows of equal height."""

    def __init__(self) -> None:
        self.x = self.y = 0
        self.row_height = 0
        self.next_id = 1

    def place(self, width: int, height: int) -> dict[str, int]:
        if self.x + width > 24:
            self.x, self.y = 0, self.y + self.row_height
            self.row_height = 0
        pos = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        self.row_height = max(self.row_height, height)
        return pos

    def row(self, title: str) -> dict[str, Any]:
        if self.x:
            self.x, self.y = 0, self.y + self.row_height
        panel = {"collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                 "id": self._id(), "panels": [], "title": title, "type": "row"}
        self.y += 1
        self.row_height = 0
        return panel

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _targets(queries: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
        for i, (expr, legend) in enumerate(queries)
    ]


def timeseries(layout: _Layout, title: str, queries: Sequence[tuple[str, str]], unit: str = "short",
               width: int = 12, height: int = 8, description: str = "", stack: bool = False) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {
            "defaults": {
                "custom": {"fillOpacity": 10, "lineWidth": 1, "stacking": {"mode": "normal" if stack else "none"}},
                "unit": unit,
            },
            "overrides": [],
        },
        "gridPos": layout.place(width, height),
        "id": layout._id(),
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": _targets(queries),
        "title": title,
        "type": "timeseries",
    }


def stat(layout: _Layout, title: str, expr: str, unit: str = "short", width: int = 6, height: int = 4,
         thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),)) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "thresholds": {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in thresholds]},
                "unit": unit,
            },
            "overrides": [],
        },
        "gridPos": layout.place(width, height),
        "id": layout._id(),
        "options": {"colorMode": "value", "graphMode": "area", "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": _targets([(expr, title)]),
        "title": title,
        "type": "stat",
    }


def _datasource_variable() -> dict[str, Any]:
    return {"current": {}, "hide": 0, "label": "Data source", "name": "datasource", "options": [],
            "query": "prometheus", "refresh": 1, "regex": "", "type": "datasource"}


def _custom_variable(name: str, label: str, values: Sequence[str], include_all: bool = False) -> dict[str, Any]:
    first = values[0] if values else ""
    return {
        "current": {"selected": False, "text": first, "value": first},
        "hide": 0, "includeAll": include_all, "label": label, "multi": False, "name": name,
        "options": [{"selected": i == 0, "text": v, "value": v} for i, v in enumerate(values)],
        "query": ",".join(values), "type": "custom",
    }


def _dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
               variables: Sequence[dict[str, Any]] = (), time_from: str = "now-6h") -> dict[str, Any]:
    return {
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "description": description,
        "editable": False,
        "graphTooltip": 1,
        "links": [{"asDropdown": True, "includeVars": False, "keepTime": True, "tags": ["strata"],
                   "title": "Strata dashboards", "type": "dashboards"}],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": [_datasource_variable(), *variables]},
        "time": {"from": time_from, "to": "now"},
        "timezone": "utc",
        "title": title,
        "uid": uid,
        "version": 1,
    }


RATE = "$__rate_interval"


def platform_overview(specs: Sequence[ModelSpec]) -> dict[str, Any]:
    l = _Layout()
    p = [
        stat(l, "Models onboarded", "count(count by (model) (model:strata_slo_availability_error_budget:ratio))"),
        stat(l, "Pages firing", 'count(ALERTS{alertstate="firing",severity="page",team!=""}) or vector(0)',
             thresholds=((None, "green"), (1, "red"))),
        stat(l, "Tickets firing", 'count(ALERTS{alertstate="firing",severity="ticket",team!=""}) or vector(0)',
             thresholds=((None, "green"), (1, "orange"))),
        stat(l, "Scrape targets down", 'count(up{job=~"strata-.+"} == 0) or vector(0)',
             thresholds=((None, "green"), (1, "red"))),
        l.row("Serving"),
        timeseries(l, "Requests per second by model",
                   [(f"sum by (model) (rate(strata_serving_requests_total[{RATE}]))", "{{model}}")], "reqps", 8),
        timeseries(l, "5xx ratio by model (5m)", [(f"{rules.availability_record('5m')}", "{{model}}")], "percentunit", 8),
        timeseries(l, "p99 latency by model",
                   [(f"histogram_quantile(0.99, sum by (model, le) (rate(strata_serving_request_duration_seconds_bucket[{RATE}])))",
                     "{{model}}")], "s", 8),
        timeseries(l, "Availability burn rate (1h) by model",
                   [(f"{rules.availability_record('1h')} / on (model) group_left model:strata_slo_availability_error_budget:ratio",
                     "{{model}}")], "short", 12,
                   description="1 = spending the 30-day budget exactly; 14.4 pages."),
        timeseries(l, "Firing alerts by team and severity",
                   [('count by (team, severity) (ALERTS{alertstate="firing"})', "{{team}} {{severity}}")], "short", 12),
        l.row("Drift, streams, training"),
        timeseries(l, "Max feature PSI by model", [("max by (model) (strata_drift_feature_psi)", "{{model}}")], "short", 8),
        timeseries(l, "Stream lag by model", [("sum by (model) (strata_stream_consumer_lag_messages)", "{{model}}")], "short", 8),
        timeseries(l, "Training runs by outcome (1h)",
                   [("sum by (outcome) (increase(strata_training_runs_total[1h]))", "{{outcome}}")], "short", 8),
    ]
    return _dashboard("strata-platform-overview", "Strata / Platform overview",
                      "Every onboarded model at a glance: traffic, errors, latency, burn, drift, lag, training.", p)


def model_dashboard(specs: Sequence[ModelSpec]) -> dict[str, Any]:
    l = _Layout()
    m = 'model="$model"'
    p = [
        l.row("Requests (RED)"),
        timeseries(l, "Requests per second by predictor and code",
                   [(f"sum by (predictor, code) (rate(strata_serving_requests_total{{{m}}}[{RATE}]))", "{{predictor}} {{code}}")],
                   "reqps", 8, stack=True),
        timeseries(l, "Error ratio (5xx)",
                   [(f"{rules.availability_record(w)}{{{m}}}", w) for w in ("5m", "1h", "6h")], "percentunit", 8),
        timeseries(l, "Latency quantiles",
                   [(f"histogram_quantile({q}, sum by (le) (rate(strata_serving_request_duration_seconds_bucket{{{m}}}[{RATE}])))", f"p{int(q * 100)}")
                    for q in (0.5, 0.95, 0.99)]
                   + [(f"model:strata_slo_latency_target:seconds{{{m}}}", "SLO target")], "s", 8),
        timeseries(l, "Availability burn rate",
                   [(f"{rules.availability_record(w)}{{{m}}} / on (model) group_left model:strata_slo_availability_error_budget:ratio{{{m}}}", w)
                    for w in ("5m", "1h", "6h", "3d")], "short", 8,
                   description="Pages at 14.4 (1h/5m) and 6 (6h/30m); ticket at 1 (3d/6h)."),
        timeseries(l, "Latency burn rate",
                   [(f"{rules.latency_record(w)}{{{m}}} / on (model) group_left model:strata_slo_latency_error_budget:ratio{{{m}}}", w)
                    for w in ("5m", "1h", "6h", "3d")], "short", 8),
        timeseries(l, "Rejected requests (4xx) by reason",
                   [(f"sum by (reason) (rate(strata_serving_rejected_requests_total{{{m}}}[{RATE}]))", "{{reason}}")], "reqps", 8),
        timeseries(l, "In-flight requests by predictor",
                   [(f"sum by (predictor) (strata_serving_in_flight_requests{{{m}}})", "{{predictor}}")], "short", 12),
        timeseries(l, "Rows per request (p50, p99)",
                   [(f"histogram_quantile({q}, sum by (le) (rate(strata_serving_batch_rows_bucket{{{m}}}[{RATE}])))", f"p{int(q * 100)}")
                    for q in (0.5, 0.99)], "short", 12),
        l.row("Rollout (the controller's analysis queries)"),
        timeseries(l, "Candidate traffic weight", [(q.rollout_weight("$model"), "{{strategy}}")], "percentunit", 8,
                   description="Share of live traffic on the candidate predictor, set by the rollout controller."),
        timeseries(l, "Rollout decisions by outcome", [(q.rollout_decisions("$model", RATE), "{{outcome}}")], "short", 8,
                   description="Every decision is also in <registry>/<model>/decisions.jsonl (locally) or a Kubernetes Event."),
        timeseries(l, "Seconds since the last rollout transition",
                   [(q.rollout_seconds_since_transition("$model"), "{{strategy}}"),
                    (q.rollout_active("$model"), "active v{{candidate_version}}"),
                    (q.rollout_rollback_seconds("$model"), "last rollback: decision to 100% stable")], "s", 8,
                   description="RolloutStuck fires after 3 analysis windows without a transition while active."),
        timeseries(l, "Requests per second: stable vs candidate", [(q.request_rate("$model", RATE), "{{predictor}}")], "reqps", 8),
        timeseries(l, "Error ratio (5xx): stable vs candidate", [(q.error_ratio("$model", RATE), "{{predictor}}")], "percentunit", 8),
        timeseries(l, "p99 latency: stable vs candidate", [(q.latency_quantile("$model", RATE, 0.99), "{{predictor}}")], "s", 8),
        timeseries(l, "Served score distribution by predictor",
                   [(q.score_buckets("$model", RATE), "{{predictor}} le {{le}}")], "short", 24,
                   description="The prediction-distribution shift the controller measures (PSI between arms)."),
        l.row("Drift"),
        timeseries(l, "Feature PSI", [(f"strata_drift_feature_psi{{{m}}}", "{{feature}} v{{version}}")], "short", 8),
        timeseries(l, "Feature KS statistic", [(f"strata_drift_feature_ks_statistic{{{m}}}", "{{feature}} v{{version}}")], "short", 8),
        timeseries(l, "Prediction drift",
                   [(f"strata_drift_prediction_psi{{{m}}}", "PSI v{{version}}"),
                    (f"strata_drift_prediction_ks_statistic{{{m}}}", "KS v{{version}}")], "short", 8),
        timeseries(l, "Drift window rows", [(f"strata_drift_window_rows{{{m}}}", "v{{version}}")], "short", 12),
        timeseries(l, "Seconds since last drift evaluation",
                   [(f"time() - strata_drift_last_evaluation_timestamp_seconds{{{m}}}", "v{{version}}")], "s", 12),
        l.row("Quality"),
        timeseries(l, "Live quality vs evaluation",
                   [(f"strata_model_quality_ratio{{{m}}}", "live {{metric}} v{{version}}"),
                    (f"strata_model_quality_baseline_ratio{{{m}}}", "evaluation {{metric}} v{{version}}")], "percentunit", 8),
        timeseries(l, "Quality degradation", [(f"strata_model_quality_degradation_ratio{{{m}}}", "{{metric}} v{{version}}")], "percentunit", 8),
        timeseries(l, "Invalid row ratio by stage",
                   [(f"sum by (stage) (rate(strata_data_invalid_rows_total{{{m}}}[{RATE}])) / sum by (stage) (rate(strata_data_rows_total{{{m}}}[{RATE}]))",
                     "{{stage}}")], "percentunit", 8),
    ]
    models = [s.name for s in sorted(specs, key=lambda s: s.name)]
    return _dashboard("strata-model", "Strata / Model", "One model: RED, SLO burn, drift and quality.", p,
                      [_custom_variable("model", "Model", models)])


def streaming_dashboard(specs: Sequence[ModelSpec]) -> dict[str, Any]:
    l = _Layout()
    m = 'model=~"$model"'
    p = [
        timeseries(l, "Consumed and produced per second",
                   [(f"sum by (model) (rate(strata_stream_messages_consumed_total{{{m}}}[{RATE}]))", "consumed {{model}}"),
                    (f"sum by (model) (rate(strata_stream_messages_produced_total{{{m}}}[{RATE}]))", "produced {{model}}")],
                   "short", 12),
        timeseries(l, "Dead-lettered per second by reason",
                   [(f"sum by (model, reason) (rate(strata_stream_dead_letter_messages_total{{{m}}}[{RATE}]))", "{{model}} {{reason}}")],
                   "short", 12),
        timeseries(l, "Consumer lag by partition",
                   [(f"sum by (model, partition) (strata_stream_consumer_lag_messages{{{m}}})", "{{model}} p{{partition}}")],
                   "short", 12, stack=True),
        timeseries(l, "Batch duration p99",
                   [(f"histogram_quantile(0.99, sum by (model, le) (rate(strata_stream_batch_duration_seconds_bucket{{{m}}}[{RATE}])))", "{{model}}")],
                   "s", 12),
        timeseries(l, "Rebalances", [(f"sum by (model) (increase(strata_stream_rebalances_total{{{m}}}[1h]))", "{{model}}")], "short", 24),
    ]
    models = [s.name for s in sorted(specs, key=lambda s: s.name) if s.serving.streaming.enabled]
    variable = _custom_variable("model", "Model", models or ["none"])
    return _dashboard("strata-streaming", "Strata / Streaming", "Kafka stream workers: throughput, DLQ, lag.", p, [variable])


def training_dashboard(specs: Sequence[ModelSpec]) -> dict[str, Any]:
    l = _Layout()
    p = [
        timeseries(l, "Training runs by model and outcome (1d)",
                   [("sum by (model, outcome) (increase(strata_training_runs_total[1d]))", "{{model}} {{outcome}}")], "short", 12),
        timeseries(l, "Runs in progress", [("sum by (model) (strata_training_runs_in_progress)", "{{model}}")], "short", 12),
        timeseries(l, "Run duration p50 / p90",
                   [(f"histogram_quantile({q}, sum by (model, le) (rate(strata_training_run_duration_seconds_bucket[1d])))", f"{{{{model}}}} p{int(q * 100)}")
                    for q in (0.5, 0.9)], "s", 12),
        timeseries(l, "Time since last successful run",
                   [("time() - strata_training_last_success_timestamp_seconds", "{{model}}")], "s", 12),
        timeseries(l, "Epoch duration p90",
                   [(f"histogram_quantile(0.9, sum by (model, le) (rate(strata_training_epoch_duration_seconds_bucket[{RATE}])))", "{{model}}")],
                   "s", 8),
        timeseries(l, "Worker restarts (1h)", [("sum by (model) (increase(strata_training_worker_restarts_total[1h]))", "{{model}}")], "short", 8),
        timeseries(l, "Retrain triggers by outcome (1d)",
                   [("sum by (model, outcome) (increase(strata_retrain_triggers_total[1d]))", "{{model}} {{outcome}}")], "short", 8),
    ]
    return _dashboard("strata-training", "Strata / Training", "Ray training runs, HPO, retraining triggers.", p, time_from="now-7d")


def cost_dashboard(specs: Sequence[ModelSpec]) -> dict[str, Any]:
    l = _Layout()
    p = [
        stat(l, "Cluster cost per hour", "sum(strata_node_hourly_cost_dollars)", "currencyUSD", 8),
        stat(l, "Spot share of nodes",
             'sum(strata_node_pool_nodes{capacity_type="spot"}) / sum(strata_node_pool_nodes)', "percentunit", 8),
        stat(l, "Spot interruptions (24h)", 'sum(increase(strata_spot_interruptions_total{kind="interruption"}[1d]))', "short", 8),
        timeseries(l, "Cost per hour by pool and capacity type",
                   [("sum by (node_pool, capacity_type) (strata_node_hourly_cost_dollars)", "{{node_pool}} {{capacity_type}}")],
                   "currencyUSD", 12, stack=True),
        timeseries(l, "Cost per hour by model and component",
                   [("sum by (model, component) (strata_workload_hourly_cost_dollars)", "{{model}} {{component}}")],
                   "currencyUSD", 12, stack=True),
        timeseries(l, "Cost per hour by team", [("sum by (team) (strata_workload_hourly_cost_dollars)", "{{team}}")], "currencyUSD", 8),
        timeseries(l, "Nodes by pool and capacity type",
                   [("sum by (node_pool, capacity_type) (strata_node_pool_nodes)", "{{node_pool}} {{capacity_type}}")], "short", 8),
        timeseries(l, "Interruptions and fallbacks per hour",
                   [("sum by (node_pool, kind) (increase(strata_spot_interruptions_total[1h]))", "{{node_pool}} {{kind}}"),
                    ("sum by (node_pool) (increase(strata_spot_fallbacks_total[1h]))", "{{node_pool}} on-demand fallback")],
                   "short", 8),
    ]
    return _dashboard("strata-cost", "Strata / Cost and spot", "Cost per pool, model and team; spot share and interruptions.", p,
                      time_from="now-7d")


def features_dashboard(specs: Sequence[ModelSpec]) -> dict[str, Any]:
    """The online feature store as serving sees it (lookups, defaults, errors, latency, age; per
    model and view) and as the streaming aggregator writes it (changes by outcome, freshness)."""
    l = _Layout()
    v = 'model=~"$model",view=~"$view"'
    p = [
        timeseries(l, "Lookups per second by model, view and outcome",
                   [(f"sum by (model, view, outcome) (rate(strata_feature_lookups_total{{{v}}}[{RATE}]))",
                     "{{model}} {{view}} {{outcome}}")], "short", 12, stack=True),
        timeseries(l, "Share of lookups answered with defaults",
                   [(f'sum by (model, view) (rate(strata_feature_lookups_total{{{v},outcome="default"}}[{RATE}]))'
                     f" / sum by (model, view) (rate(strata_feature_lookups_total{{{v}}}[{RATE}]))", "{{model}} {{view}}")],
                   "percentunit", 12, description=f"FeatureDefaultRateHigh: over {rules.FEATURE_DEFAULT_RATIO:.0%} for 15m."),
        timeseries(l, "Online store errors per second by model and view",
                   [(f"sum by (model, view) (rate(strata_feature_store_errors_total{{{v}}}[{RATE}]))", "{{model}} {{view}}")],
                   "short", 8, description="FeatureStoreErrors pages after 5m of errors."),
        timeseries(l, "Lookup latency p50 / p99 by model (one request, all views)",
                   [(f'histogram_quantile({q}, sum by (model, le) (rate(strata_feature_lookup_seconds_bucket{{model=~"$model"}}[{RATE}])))',
                     f"{{{{model}}}} p{int(q * 100)}") for q in (0.5, 0.99)], "s", 8,
                   description="One pipelined read per request or stream batch."),
        timeseries(l, "Age of served values p50 / p90 by model and view",
                   [(f"histogram_quantile({q}, sum by (model, view, le) (rate(strata_feature_age_seconds_bucket{{{v}}}[{RATE}])))",
                     f"{{{{model}}}} {{{{view}}}} p{int(q * 100)}") for q in (0.5, 0.9)], "s", 8,
                   description="Now - the event time of each stored row served; FeatureValuesStale: median over half the TTL."),
        timeseries(l, "Streaming aggregates: event -> online p50 / p99 by view",
                   [(f'histogram_quantile({q}, sum by (view, le) (rate(strata_feature_freshness_seconds_bucket{{view=~"$view"}}[{RATE}])))',
                     f"{{{{view}}}} p{int(q * 100)}") for q in (0.5, 0.99)], "s", 12,
                   description="When a CDC change became true (event time, or its commit if later) -> its entity's "
                               f"rolling aggregates written to Redis. FeatureFreshnessHigh: p99 over "
                               f"{rules.FEATURE_FRESHNESS_P99_S:g}s for {rules.FEATURE_FRESHNESS_FOR}."),
        timeseries(l, "Streaming aggregates: changes per second by outcome",
                   [(f'sum by (view, outcome) (rate(strata_feature_aggregate_events_total{{view=~"$view"}}[{RATE}]))',
                     "{{view}} {{outcome}}")], "short", 12, stack=True,
                   description="duplicate: a replayed or older LSN (counted once); malformed: skipped here, kept by bronze."),
        timeseries(l, "Streaming aggregates: changes waiting on the topic by view",
                   [('max by (view) (strata_feature_aggregate_lag_messages{view=~"$view"})', "{{view}}")], "short", 12,
                   description="High watermark - position over the topic's partitions; FeatureAggregatorStalled pages "
                               f"when changes wait and none is applied over {rules.FEATURE_AGGREGATOR_STALL_WINDOW}."),
        timeseries(l, "Streaming aggregates: seconds since the last poll by view",
                   [('time() - max by (view) (strata_feature_aggregate_last_poll_timestamp_seconds{view=~"$view"})',
                     "{{view}}")], "s", 12,
                   description=f"The loop's heartbeat; FeatureAggregatorStalled pages above "
                               f"{rules.FEATURE_AGGREGATOR_SILENT_S}s."),
    ]
    online = [s for s in specs if s.features and any(view.online for view in s.features.views)]
    models = sorted(s.name for s in online)
    views = sorted({view.name for s in online for view in s.features.views if view.online})
    variables = [_custom_variable("model", "Model", models or ["none"], include_all=True),
                 _custom_variable("view", "View", views or ["none"], include_all=True)]
    return _dashboard("strata-features", "Strata / Feature store",
                      "Online features: lookups by outcome, defaults, store errors, latency and freshness; "
                      "streaming aggregates.", p, variables)


DASHBOARDS = {
    "strata-platform-overview.json": platform_overview,
    "strata-model.json": model_dashboard,
    "strata-streaming.json": streaming_dashboard,
    "strata-training.json": training_dashboard,
    "strata-cost.json": cost_dashboard,
    "strata-features.json": features_dashboard,
}


def dashboards(specs: Sequence[ModelSpec]) -> dict[str, dict[str, Any]]:
    return {file: build(specs) for file, build in DASHBOARDS.items()}


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
