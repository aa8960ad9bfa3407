"""Prometheus recording and alerting rules, generated from the model specs.

One pattern injects `severity`, `team` and `runbook_url` into every alert (`_alert`);
burn-rate windows are data (`BURN_WINDOWS`); thresholds come from each model's spec
(`slos`, `drift`, `serving.streaming`, `training.baseline`), and the streaming feature
aggregators' from their CDC pipeline's `features` (`aggregator_group`). Page on symptoms (SLO
burn); causes (drift, lag, failures) are tickets, and drift/quality also trigger retraining.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from workloads.monitoring import queries
from workloads.monitoring.metrics import le_selector
from workloads.spec import ModelSpec

if TYPE_CHECKING:
    from workloads.data.ingest.pipeline import CdcPipeline

RUNBOOK_BASE_URL = "https://github.com/strata-platform/strata/blob/main/runbooks/"
PLATFORM_TEAM = "ml-platform"
PLATFORM_ROUTING_KEY = "ml-platform"  # pagerduty.routingKeyName of the platform team

PAGE, TICKET = "page", "ticket"


@dataclass(frozen=True)
class BurnWindow:
    long: str
    short: str
    factor: float
    severity: str
    for_: str


# Multiwindow, multi-burn-rate (SRE workbook ch. 5): 2% of a 30-day budget in 1h, 5% in 6h
# page; 10% in 3d is a ticket.
BURN_WINDOWS: tuple[BurnWindow, ...] = (
    BurnWindow("1h", "5m", 14.4, PAGE, "2m"),
    BurnWindow("6h", "30m", 6.0, PAGE, "15m"),
    BurnWindow("3d", "6h", 1.0, TICKET, "1h"),
)

DEAD_LETTER_RATIO = 0.01  # > 1% of consumed messages dead-lettered for 10m
SPOT_INTERRUPTIONS_30M = 3  # interruption notices per pool in 30m
SCRAPE_JOB_REGEX = "strata-.+"
ROLLOUT_STUCK_WINDOWS = 3  # no transition for this many analysis windows while a rollout is active
ROLLBACK_LOOKBACK = "30m"  # a rollback decision in this window keeps RolloutRolledBack firing
FEATURE_DEFAULT_RATIO = 0.05  # > 5% of a view's lookups answered with the declared defaults for 15m
FEATURE_STALE_TTL_FRACTION = 0.5  # the median served value older than half the view's TTL for 30m
# What a spec's `features` section adds (feature_alerts); listed so their runbooks are indexed
# and checked whichever example specs declare online features.
FEATURE_ALERTS = ("FeatureStoreErrors", "FeatureDefaultRateHigh", "FeatureValuesStale")
# The streaming feature aggregator of a CDC pipeline with `features` (aggregator_group).
# Freshness: 10x the 1 s event -> online goal, and a bound of its histogram's buckets (the
# estimate is exact there). Its rate window is short and its `for:` long, so a burst shorter
# than their difference (a restart's backlog, a load spike) never fires: see the runbook.
FEATURE_FRESHNESS_P99_S = 10.0
FEATURE_FRESHNESS_WINDOW, FEATURE_FRESHNESS_FOR = "5m", "15m"
# Stalled: changes waiting on the topic and none applied (any outcome) over the window, or no poll
# for FEATURE_AGGREGATOR_SILENT_S (the loop is wedged: a gauge frozen at 0 lag must not hide it).
FEATURE_AGGREGATOR_STALL_WINDOW, FEATURE_AGGREGATOR_STALL_FOR = "5m", "10m"
FEATURE_AGGREGATOR_SILENT_S = 300
AGGREGATOR_ALERTS = ("FeatureFreshnessHigh", "FeatureAggregatorStalled")


def _seconds(duration: str) -> int:
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[duration[-1]]
    return int(duration[:-1]) * unit


SLI_WINDOWS = tuple(sorted({w for b in BURN_WINDOWS for w in (b.long, b.short)}, key=_seconds))


def _num(value: float) -> str:
    return f"{round(value, 10):.10g}"


@dataclass(frozen=True)
class RuleOptions:
    runbook_base_url: str = RUNBOOK_BASE_URL
    for_override: str | None = None  # tests: shorten every `for:` (e.g. "1s")


def runbook_url(alert: str, base: str = RUNBOOK_BASE_URL) -> str:
    return f"{base}{alert}.md"


def _alert(options: RuleOptions, name: str, expr: str, for_: str, severity: str, team: str,
           summary: str, description: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The ONE place alert labels and annotations are decided."""
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    effective_for = options.for_override or for_
    if effective_for != "0s":
        rule["for"] = effective_for
    rule["labels"] = {"severity": severity, "team": team, **(labels or {})}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": runbook_url(name, options.runbook_base_url),
    }
    return rule


def _record(record: str, expr: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": record, "expr": expr}
    if labels:
        rule["labels"] = labels
    return rule


# ------------------------------------------------------------------ SLIs (all models)

SERVED = 'predictor!="shadow"'  # shadow traffic never reaches a user


def availability_record(window: str) -> str:
    return f"model:strata_serving_request_errors:ratio_rate{window}"


def latency_record(window: str) -> str:
    return f"model:strata_serving_request_slow:ratio_rate{window}"


def sli_group() -> dict[str, Any]:
    rules = []
    for window in SLI_WINDOWS:
        rules.append(_record(
            availability_record(window),
            # `or 0 * total`: a model that served no 5xx has a ratio of 0, not an empty series
            f'(sum by (model, team) (rate(strata_serving_requests_total{{{SERVED},code=~"5.."}}[{window}]))\n'
            f' or 0 * sum by (model, team) (rate(strata_serving_requests_total{{{SERVED}}}[{window}])))\n'
            f"/\nsum by (model, team) (rate(strata_serving_requests_total{{{SERVED}}}[{window}]))",
        ))
    return {"name": "strata-slo-sli", "rules": rules}


# ------------------------------------------------------------------ per model


def model_group(spec: ModelSpec, options: RuleOptions) -> dict[str, Any]:
    name, team = spec.name, spec.team
    sel = f'model="{name}"'
    ml = {"model": name}
    rules: list[dict[str, Any]] = []

    # Constants for dashboards and burn-rate maths.
    availability_budget = round(1 - spec.slos.availability_percent / 100, 10)
    latency_budget = round(1 - spec.slos.latency_objective_percent / 100, 10)
    target_s = spec.slos.latency_p99_ms / 1000
    rules += [
        _record("model:strata_slo_availability_error_budget:ratio", f"vector({_num(availability_budget)})", {**ml, "team": team}),
        _record("model:strata_slo_latency_error_budget:ratio", f"vector({_num(latency_budget)})", {**ml, "team": team}),
        _record("model:strata_slo_latency_target:seconds", f"vector({_num(target_s)})", {**ml, "team": team}),
    ]
    le = le_selector(target_s)
    for window in SLI_WINDOWS:
        rules.append(_record(
            latency_record(window),
            f"1 - (\n  sum by (model, team) (rate(strata_serving_request_duration_seconds_bucket{{{sel},{SERVED},{le}}}[{window}]))\n"
            f"  /\n  sum by (model, team) (rate(strata_serving_request_duration_seconds_count{{{sel},{SERVED}}}[{window}]))\n)",
            ml,
        ))

    # SLO burn-rate alerts (page on symptoms).
    for b in BURN_WINDOWS:
        windows = {"long": b.long, "short": b.short}
        threshold = _num(b.factor * availability_budget)
        rules.append(_alert(
            options, "ModelAvailabilityBudgetBurn",
            f"{availability_record(b.long)}{{{sel}}} > {threshold}\nand\n{availability_record(b.short)}{{{sel}}} > {threshold}",
            b.for_, b.severity, team,
            f"{name}: availability error budget burning {_num(b.factor)}x too fast",
            f"5xx ratio of {name} over {b.long} and {b.short} is above {_num(b.factor)}x the error budget "
            f"of its {spec.slos.availability_percent}% availability SLO.",
            {**ml, **windows},
        ))
    for b in BURN_WINDOWS:
        windows = {"long": b.long, "short": b.short}
        threshold = _num(b.factor * latency_budget)
        rules.append(_alert(
            options, "ModelLatencyBudgetBurn",
            f"{latency_record(b.long)}{{{sel}}} > {threshold}\nand\n{latency_record(b.short)}{{{sel}}} > {threshold}",
            b.for_, b.severity, team,
            f"{name}: latency error budget burning {_num(b.factor)}x too fast",
            f"Share of {name} requests slower than {spec.slos.latency_p99_ms:g} ms over {b.long} and {b.short} "
            f"is above {_num(b.factor)}x the budget of its {spec.slos.latency_objective_percent}% objective.",
            {**ml, **windows},
        ))

    # Drift and quality (effect sizes; tickets; PSI drift and quality also retrain).
    drift = spec.drift
    rules.append(_alert(
        options, "ModelFeatureDrift",
        f"max by (model, feature) (strata_drift_feature_psi{{{sel}}}) > {_num(drift.psi_threshold)}",
        drift.sustained_for, TICKET, team,
        f"{name}: feature {{{{ $labels.feature }}}} drifted (PSI)",
        f"PSI of feature {{{{ $labels.feature }}}} of {name} has been above {_num(drift.psi_threshold)} "
        f"for {drift.sustained_for}; a retrain is requested.",
        {**ml, "retrain": "true"},
    ))
    rules.append(_alert(
        options, "ModelFeatureKSDrift",
        f"max by (model, feature) (strata_drift_feature_ks_statistic{{{sel}}}) > {_num(drift.ks_threshold)}",
        drift.sustained_for, TICKET, team,
        f"{name}: feature {{{{ $labels.feature }}}} distribution shifted (KS)",
        f"KS statistic of feature {{{{ $labels.feature }}}} of {name} has been above {_num(drift.ks_threshold)} "
        f"for {drift.sustained_for}.",
        ml,
    ))
    rules.append(_alert(
        options, "ModelPredictionDrift",
        f"max by (model) (strata_drift_prediction_psi{{{sel}}}) > {_num(drift.psi_threshold)}",
        drift.sustained_for, TICKET, team,
        f"{name}: prediction distribution drifted",
        f"PSI of {name}'s predictions vs its reference predictions has been above "
        f"{_num(drift.psi_threshold)} for {drift.sustained_for}.",
        ml,
    ))
    rules.append(_alert(
        options, "ModelQualityDegraded",
        f"max by (model, metric) (strata_model_quality_degradation_ratio{{{sel}}}) > {_num(drift.quality_degradation_pct / 100)}",
        drift.sustained_for, TICKET, team,
        f"{name}: live {{{{ $labels.metric }}}} degraded vs its evaluation",
        f"Live {{{{ $labels.metric }}}} of {name} (delayed labels) is more than {drift.quality_degradation_pct:g}% "
        f"below the version's own evaluation; a retrain is requested.",
        {**ml, "retrain": "true"},
    ))
    rules.append(_alert(
        options, "ModelInvalidRowRateHigh",
        f"sum by (model, stage) (rate(strata_data_invalid_rows_total{{{sel}}}[15m]))\n/\n"
        f"sum by (model, stage) (rate(strata_data_rows_total{{{sel}}}[15m]))\n"
        f"> {_num(spec.training.baseline.max_invalid_row_fraction)}",
        "15m", TICKET, team,
        f"{name}: invalid input rows in {{{{ $labels.stage }}}}",
        f"More than {_num(spec.training.baseline.max_invalid_row_fraction * 100)}% of {name}'s "
        f"{{{{ $labels.stage }}}} rows failed the input contract over 15m.",
        ml,
    ))
    stale_after = 3 * _seconds(drift.window)
    rules.append(_alert(
        options, "DriftEvaluationStale",
        f"time() - max by (model) (strata_drift_last_evaluation_timestamp_seconds{{{sel}}}) > {stale_after}",
        "10m", TICKET, team,
        f"{name}: drift has not been evaluated for {stale_after}s",
        f"The drift monitor of {name} last evaluated more than 3 windows ({stale_after}s) ago: "
        "drift and quality alerts are blind.",
        ml,
    ))

    # Streaming.
    if spec.serving.streaming.enabled:
        streaming = spec.serving.streaming
        lag_limit = streaming.lag_threshold * streaming.effective_max_replicas
        rules.append(_alert(
            options, "StreamConsumerLagHigh",
            f"sum by (model) (strata_stream_consumer_lag_messages{{{sel}}}) > {lag_limit}",
            "15m", TICKET, team,
            f"{name}: stream consumer lag above what max replicas absorb",
            f"Total consumer lag of {name} has been above {lag_limit} messages (lagThreshold "
            f"{streaming.lag_threshold} x {streaming.effective_max_replicas} max replicas) for 15m.",
            ml,
        ))
        rules.append(_alert(
            options, "StreamDeadLetterRateHigh",
            f"sum by (model) (rate(strata_stream_dead_letter_messages_total{{{sel}}}[10m]))\n/\n"
            f"sum by (model) (rate(strata_stream_messages_consumed_total{{{sel}}}[10m]))\n> {_num(DEAD_LETTER_RATIO)}",
            "10m", TICKET, team,
            f"{name}: dead-letter rate above {_num(DEAD_LETTER_RATIO * 100)}%",
            f"More than {_num(DEAD_LETTER_RATIO * 100)}% of {name}'s consumed messages went to the "
            "dead-letter topic over 10m.",
            ml,
        ))

    # Rollouts (the controller's own metrics; tickets: a rollback already protected users).
    window_s = _seconds(spec.serving.rollout.analysis_window)
    stuck_after = ROLLOUT_STUCK_WINDOWS * window_s
    rules.append(_alert(
        options, "RolloutStuck",
        f"max by (model) ({queries.ROLLOUT_ACTIVE}{{{sel}}}) == 1\nand on (model)\n"
        f"time() - max by (model) ({queries.ROLLOUT_TRANSITION}{{{sel}}}) > {stuck_after}",
        "2m", TICKET, team,
        f"{name}: rollout made no progress for {ROLLOUT_STUCK_WINDOWS} analysis windows",
        f"A {spec.serving.rollout.strategy.value} rollout of {name} is active but the controller has not "
        f"changed step for more than {stuck_after}s ({ROLLOUT_STUCK_WINDOWS} x analysisWindow "
        f"{spec.serving.rollout.analysis_window}): too little traffic to decide, or the controller is wedged.",
        ml,
    ))
    rules.append(_alert(
        options, "RolloutRolledBack",
        f'sum by (model) (increase({queries.ROLLOUT_DECISIONS}{{{sel},outcome="rollback"}}[{ROLLBACK_LOOKBACK}])) > 0',
        "0s", TICKET, team,
        f"{name}: a rollout was rolled back",
        f"The rollout controller moved all of {name}'s traffic back to the stable predictor in the last "
        f"{ROLLBACK_LOOKBACK}: the candidate failed its analysis. `strata rollout-status {name}` shows why.",
        ml,
    ))

    # Training.
    rules.append(_alert(
        options, "TrainingJobFailed",
        f'sum by (model) (increase(strata_training_runs_total{{{sel},outcome="failed"}}[1h])) > 0',
        "0s", TICKET, team,
        f"{name}: a training run failed",
        f"At least one training run of {name} failed in the last hour.",
        ml,
    ))
    # The lake (ticket): a batch of the model's data broke the contract too often to train on.
    if spec.training.data_key:
        limit = spec.training.baseline.max_invalid_row_fraction
        rules.append(_alert(
            options, "LakeBatchHeldFromGold",
            f'sum by (table) (increase(strata_lake_refused_batches_total{{table="{name}"}}[1h])) > 0',
            "0s", TICKET, team,
            f"{name}: a lake batch was held out of gold (invalid rows over {_num(limit * 100)}%)",
            f"A bronze batch of {name} had more than maxInvalidRowFraction {_num(limit)} invalid rows: its valid "
            f"rows are in silver but not promoted to gold, so training does not see them. The rejected rows "
            f"and the rules they broke are in the quarantine table.",
            ml,
        ))
    rules += feature_alerts(spec, options)
    for rule in rules:  # the routing key travels with the alert (platform routing contract)
        if "alert" in rule:
            rule["labels"]["pagerduty"] = spec.pagerduty.routing_key_name
    return {"name": f"strata-model-{name}", "rules": rules}


def feature_alerts(spec: ModelSpec, options: RuleOptions) -> list[dict[str, Any]]:
    """A model with online features: the store failing (page: with `onOutage: reject` the 503s
    also burn the availability budget, with `defaults` nothing else would tell), entities
    answered with defaults, and stale values (tickets: materialization behind or stopped)."""
    if spec.features is None:
        return []
    views = [v for v in spec.features.views if v.online]
    if not views:
        return []
    name, team, ml = spec.name, spec.team, {"model": spec.name}
    sel = f'model="{name}",view=~"' + "|".join(v.name for v in views) + '"'
    on_outage = spec.features.on_outage
    served = "the declared defaults" if on_outage == "defaults" else "503 (feature_store_unavailable)"
    out = [
        _alert(
            options, "FeatureStoreErrors",
            f"sum by (model, view) (rate(strata_feature_store_errors_total{{{sel}}}[5m])) > 0",
            "5m", PAGE, team,
            f"{name}: the online feature store fails lookups of view {{{{ $labels.view }}}}",
            f"Lookups of {name}'s online features in view {{{{ $labels.view }}}} have failed for 5m; requests "
            f"get {served} (features.onOutage: {on_outage}).",
            ml,
        ),
        _alert(
            options, "FeatureDefaultRateHigh",
            f'sum by (model, view) (rate(strata_feature_lookups_total{{{sel},outcome="default"}}[15m]))\n/\n'
            f"sum by (model, view) (rate(strata_feature_lookups_total{{{sel}}}[15m]))\n> {_num(FEATURE_DEFAULT_RATIO)}",
            "15m", TICKET, team,
            f"{name}: over {_num(FEATURE_DEFAULT_RATIO * 100)}% of view {{{{ $labels.view }}}} lookups got defaults",
            f"More than {_num(FEATURE_DEFAULT_RATIO * 100)}% of {name}'s lookups in view {{{{ $labels.view }}}} found "
            "no stored values (unknown entities, or keys expired past the TTL) over 15m and were scored with the "
            "declared defaults.",
            ml,
        ),
    ]
    for view in views:
        limit = view.ttl_seconds * FEATURE_STALE_TTL_FRACTION
        out.append(_alert(
            options, "FeatureValuesStale",
            f'histogram_quantile(0.5, sum by (model, view, le) '
            f'(rate(strata_feature_age_seconds_bucket{{model="{name}",view="{view.name}"}}[30m])))'
            f"\n> {_num(limit)}",
            "30m", TICKET, team,
            f"{name}: the online values of view {view.name} are older than half their TTL",
            f"The median age of the values {name} was served from view {view.name} has been above {_num(limit)}s "
            f"(half its TTL of {view.ttl}) for 30m: materialization is behind or has stopped, and the keys "
            "will expire into defaults.",
            ml,
        ))
    return out


# ------------------------------------------------------------------ streaming feature aggregators


def team_routing_key(team: str, specs: Sequence[ModelSpec]) -> str:
    """The routing key Alertmanager pages `team` with (its first model's, as `alertmanager`
    routes it); a team without models reaches the platform team."""
    keys = [s.pagerduty.routing_key_name for s in sorted(specs, key=lambda s: s.name) if s.team == team]
    return keys[0] if keys else PLATFORM_ROUTING_KEY


def aggregator_group(pipeline: "CdcPipeline", specs: Sequence[ModelSpec], options: RuleOptions) -> dict[str, Any]:
    """The feature aggregator of one CDC pipeline (its `features` view), for the pipeline's team.

    `FeatureAggregatorStalled` pages: the online values stop changing while still looking valid
    (they are served until their TTL), so models score on frozen aggregates and nothing else
    tells. `FeatureFreshnessHigh` is a ticket: the values still move, late. The catch-up of a
    start is not observed as freshness and applies changes, so neither fires on it; the
    aggregator's pod being down is `ScrapeTargetDown` (its series are absent)."""
    features = pipeline.features
    view, team = features.view, pipeline.team
    sel = f'view="{view}"'
    labels = {"view": view, "pipeline": pipeline.name, "pagerduty": team_routing_key(team, specs)}
    w, silent = FEATURE_AGGREGATOR_STALL_WINDOW, FEATURE_AGGREGATOR_SILENT_S
    rules = [
        _alert(
            options, "FeatureFreshnessHigh",
            f"histogram_quantile(0.99, sum by (view, le) "
            f"(rate(strata_feature_freshness_seconds_bucket{{{sel}}}[{FEATURE_FRESHNESS_WINDOW}])))\n"
            f"> {_num(FEATURE_FRESHNESS_P99_S)}",
            FEATURE_FRESHNESS_FOR, TICKET, team,
            f"{pipeline.name}: streaming features of view {view} reach the online store late",
            f"The p99 of change -> visible online for view {view} (pipeline {pipeline.name}, topic {pipeline.topic}) "
            f"has been above {_num(FEATURE_FRESHNESS_P99_S)}s over {FEATURE_FRESHNESS_WINDOW} windows for "
            f"{FEATURE_FRESHNESS_FOR} (goal: 1s): models score on aggregates that miss the latest changes.",
            labels,
        ),
        _alert(
            options, "FeatureAggregatorStalled",
            f"(\n  max by (view) (strata_feature_aggregate_lag_messages{{{sel}}}) > 0\n"
            f"  unless on (view)\n"
            f"  sum by (view) (rate(strata_feature_aggregate_events_total{{{sel}}}[{w}])) > 0\n)\nor\n"
            f"time() - max by (view) (strata_feature_aggregate_last_poll_timestamp_seconds{{{sel}}}) > {silent}",
            FEATURE_AGGREGATOR_STALL_FOR, PAGE, team,
            f"{pipeline.name}: the streaming aggregator of view {view} has stopped",
            f"The feature aggregator {pipeline.name}-aggregator has changes waiting on {pipeline.topic} and applied "
            f"none over {w}, or has not polled for {silent}s, for {FEATURE_AGGREGATOR_STALL_FOR}: the online values of "
            f"view {view} are frozen (served until their TTL of {features.ttl}, then defaults).",
            labels,
        ),
    ]
    return {"name": f"strata-feature-aggregator-{pipeline.name}", "rules": rules}


# ------------------------------------------------------------------ platform


def platform_group(options: RuleOptions) -> dict[str, Any]:
    return {"name": "strata-platform", "rules": [
        _alert(
            options, "SpotInterruptionRateHigh",
            f'sum by (node_pool) (increase(strata_spot_interruptions_total{{kind="interruption"}}[30m])) > {SPOT_INTERRUPTIONS_30M}',
            "5m", TICKET, PLATFORM_TEAM,
            "Spot interruptions in pool {{ $labels.node_pool }}",
            f"More than {SPOT_INTERRUPTIONS_30M} spot interruption notices in 30m in node pool "
            "{{ $labels.node_pool }}: capacity churn slows training and rollouts.",
        ),
        _alert(
            options, "ScrapeTargetDown",
            f'up{{job=~"{SCRAPE_JOB_REGEX}"}} == 0',
            "5m", TICKET, PLATFORM_TEAM,
            "Prometheus cannot scrape {{ $labels.job }} {{ $labels.instance }}",
            "Target {{ $labels.instance }} of job {{ $labels.job }} has been down for 5m: alerts that "
            "depend on its metrics are blind.",
        ),
    ]}


def _platform_routing(group: dict[str, Any]) -> dict[str, Any]:
    for rule in group["rules"]:
        rule["labels"]["pagerduty"] = PLATFORM_ROUTING_KEY
    return group


def rule_groups(specs: Sequence[ModelSpec], options: RuleOptions = RuleOptions(),
                pipelines: Sequence["CdcPipeline"] = ()) -> dict[str, Any]:
    """`pipelines`: the CDC pipelines whose feature aggregators run (those with `features`)."""
    groups = [sli_group()]
    groups += [model_group(spec, options) for spec in sorted(specs, key=lambda s: s.name)]
    groups += [aggregator_group(p, specs, options) for p in sorted(pipelines, key=lambda p: p.name)
               if p.features is not None]
    groups.append(_platform_routing(platform_group(options)))
    return {"groups": groups}


def alert_names(groups: dict[str, Any]) -> list[str]:
    return sorted({r["alert"] for g in groups["groups"] for r in g["rules"] if "alert" in r})


def recorded_names(groups: dict[str, Any]) -> list[str]:
    return sorted({r["record"] for g in groups["groups"] for r in g["rules"] if "record" in r})
