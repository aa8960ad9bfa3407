"""promtool unit-test cases: for every alert, input series where it fires and where it
must stay silent. Thresholds follow the example specs (fraud: 99.9% availability, 200 ms
p99 at 99%, PSI 0.2, KS 0.1, sustained 10m, lag 200 x 6 replicas; digits: 99.5%).

Each case: (alertname, rule selector, input series, eval time, expected output labels
per firing alert). The labels every alert must carry (severity, retrain, the owning team
and its PagerDuty routing key) are the alerting policy, stated below in `expected_labels`,
never read from the rule under test: a rule with the wrong severity or owner fails its case.
Only the annotations' text is taken from the rule (rendered with the expected labels).
"""

from __future__ import annotations

FRAUD = 'model="fraud",version="3",team="payments-risk"'
DIGITS = 'model="digits",version="1",team="vision"'
SERVED = 'predictor="stable",protocol="rest"'

# (name, alertname, selector on rule labels, series [(series, values)], eval_time, expected [labels])
CASES: list[tuple[str, str, dict, list[tuple[str, str]], str, list[dict]]] = [
    # ---- availability: 10% errors from the start -> the 1h/5m page fires at 10m, nothing else yet
    ("availability fast burn pages", "ModelAvailabilityBudgetBurn", {},
     [(f'strata_serving_requests_total{{{FRAUD},{SERVED},code="200"}}', "0+900x30"),
      (f'strata_serving_requests_total{{{FRAUD},{SERVED},code="500"}}', "0+100x30")],
     "10m", [{"model": "fraud", "team": "payments-risk", "long": "1h", "short": "5m", "severity": "page"}]),
    ("availability fast burn pages the digits team", "ModelAvailabilityBudgetBurn", {},
     [(f'strata_serving_requests_total{{{DIGITS},{SERVED},code="200"}}', "0+900x30"),
      (f'strata_serving_requests_total{{{DIGITS},{SERVED},code="500"}}', "0+100x30")],
     "10m", [{"model": "digits", "team": "vision", "long": "1h", "short": "5m", "severity": "page"}]),
    ("availability within budget is silent", "ModelAvailabilityBudgetBurn", {},
     [(f'strata_serving_requests_total{{{FRAUD},{SERVED},code="200"}}', "0+10000x90"),
      (f'strata_serving_requests_total{{{FRAUD},{SERVED},code="500"}}', "0+5x90")],
     "80m", []),
    ("shadow errors do not burn the budget", "ModelAvailabilityBudgetBurn", {},
     [(f'strata_serving_requests_total{{{FRAUD},predictor="shadow",protocol="rest",code="500"}}', "0+500x30"),
      (f'strata_serving_requests_total{{{FRAUD},{SERVED},code="200"}}', "0+1000x30")],
     "10m", []),
    # ---- 0.2% errors (2x budget, under 6x): only the 3d/6h ticket fires (the 3d rate covers the data there is)
    ("availability slow burn opens a ticket", "ModelAvailabilityBudgetBurn", {},
     [(f'strata_serving_requests_total{{{FRAUD},{SERVED},code="200"}}', "0+9980x60"),
      (f'strata_serving_requests_total{{{FRAUD},{SERVED},code="500"}}', "0+20x60")],
     "8h", [{"model": "fraud", "team": "payments-risk", "long": "3d", "short": "6h", "severity": "ticket"}]),
    # ---- latency: 30% of requests slower than 200 ms
    ("latency fast burn pages", "ModelLatencyBudgetBurn", {},
     [(f'strata_serving_request_duration_seconds_bucket{{{FRAUD},{SERVED},le="0.2"}}', "0+700x30"),
      (f'strata_serving_request_duration_seconds_count{{{FRAUD},{SERVED}}}', "0+1000x30")],
     "10m", [{"model": "fraud", "team": "payments-risk", "long": "1h", "short": "5m", "severity": "page"}]),
    ("latency within objective is silent", "ModelLatencyBudgetBurn", {},
     [(f'strata_serving_request_duration_seconds_bucket{{{FRAUD},{SERVED},le="0.2"}}', "0+995x90"),
      (f'strata_serving_request_duration_seconds_count{{{FRAUD},{SERVED}}}', "0+1000x90")],
     "80m", []),
    # ---- drift (effect sizes, sustained)
    ("sustained PSI drift", "ModelFeatureDrift", {},
     [(f'strata_drift_feature_psi{{{FRAUD},feature="amount"}}', "0.35x30"),
      (f'strata_drift_feature_psi{{{FRAUD},feature="hour"}}', "0.05x30")],
     "15m", [{"model": "fraud", "feature": "amount"}]),
    ("PSI below threshold is silent", "ModelFeatureDrift", {},
     [(f'strata_drift_feature_psi{{{FRAUD},feature="amount"}}', "0.15x30")], "15m", []),
    ("a PSI spike shorter than sustainedFor is silent", "ModelFeatureDrift", {},
     [(f'strata_drift_feature_psi{{{FRAUD},feature="amount"}}', "0.35x5 0.1x25")], "8m", []),
    ("sustained KS drift", "ModelFeatureKSDrift", {},
     [(f'strata_drift_feature_ks_statistic{{{FRAUD},feature="amount"}}', "0.15x30")],
     "15m", [{"model": "fraud", "feature": "amount"}]),
    ("KS below threshold is silent", "ModelFeatureKSDrift", {},
     [(f'strata_drift_feature_ks_statistic{{{FRAUD},feature="amount"}}', "0.05x30")], "15m", []),
    ("prediction drift", "ModelPredictionDrift", {},
     [(f"strata_drift_prediction_psi{{{FRAUD}}}", "0.4x30")], "15m", [{"model": "fraud"}]),
    ("stable predictions are silent", "ModelPredictionDrift", {},
     [(f"strata_drift_prediction_psi{{{FRAUD}}}", "0.02x30")], "15m", []),
    ("quality degraded 8%", "ModelQualityDegraded", {},
     [(f'strata_model_quality_degradation_ratio{{{FRAUD},metric="auc"}}', "0.08x30")],
     "15m", [{"model": "fraud", "metric": "auc"}]),
    ("quality degraded 2% is silent", "ModelQualityDegraded", {},
     [(f'strata_model_quality_degradation_ratio{{{FRAUD},metric="auc"}}', "0.02x30")], "15m", []),
    # ---- data quality: 1% invalid vs maxInvalidRowFraction 0.1%
    ("invalid rows", "ModelInvalidRowRateHigh", {},
     [('strata_data_rows_total{model="fraud",team="payments-risk",stage="serving"}', "0+1000x60"),
      ('strata_data_invalid_rows_total{model="fraud",team="payments-risk",stage="serving",reason="nan"}', "0+10x60")],
     "40m", [{"model": "fraud", "stage": "serving"}]),
    ("few invalid rows are silent", "ModelInvalidRowRateHigh", {},
     [('strata_data_rows_total{model="fraud",team="payments-risk",stage="serving"}', "0+1000x60"),
      ('strata_data_invalid_rows_total{model="fraud",team="payments-risk",stage="serving",reason="nan"}', "0+0.5x60")],
     "40m", []),
    # ---- drift monitor freshness (window 15m -> stale after 2700s)
    ("drift evaluation stopped", "DriftEvaluationStale", {},
     [(f"strata_drift_last_evaluation_timestamp_seconds{{{FRAUD}}}", "0x70")], "60m", [{"model": "fraud"}]),
    ("fresh drift evaluations are silent", "DriftEvaluationStale", {},
     [(f"strata_drift_last_evaluation_timestamp_seconds{{{FRAUD}}}", "0+60x70")], "60m", []),
    # ---- streaming (fraud only: lag limit 200 x 6 = 1200)
    ("stream lag above what max replicas absorb", "StreamConsumerLagHigh", {},
     [('strata_stream_consumer_lag_messages{model="fraud",team="payments-risk",topic="fraud-requests",partition="0"}', "800x40"),
      ('strata_stream_consumer_lag_messages{model="fraud",team="payments-risk",topic="fraud-requests",partition="1"}', "700x40")],
     "20m", [{"model": "fraud"}]),
    ("lag KEDA can absorb is silent", "StreamConsumerLagHigh", {},
     [('strata_stream_consumer_lag_messages{model="fraud",team="payments-risk",topic="fraud-requests",partition="0"}', "900x40")],
     "20m", []),
    ("dead-letter rate 5%", "StreamDeadLetterRateHigh", {},
     [(f'strata_stream_messages_consumed_total{{{FRAUD},topic="fraud-requests"}}', "0+1000x60"),
      (f'strata_stream_dead_letter_messages_total{{{FRAUD},topic="fraud-requests",reason="schema"}}', "0+50x60")],
     "25m", [{"model": "fraud"}]),
    ("dead-letter rate 0.1% is silent", "StreamDeadLetterRateHigh", {},
     [(f'strata_stream_messages_consumed_total{{{FRAUD},topic="fraud-requests"}}', "0+1000x60"),
      (f'strata_stream_dead_letter_messages_total{{{FRAUD},topic="fraud-requests",reason="schema"}}', "0+1x60")],
     "25m", []),
    # ---- training
    ("a failed training run", "TrainingJobFailed", {},
     [('strata_training_runs_total{model="fraud",team="payments-risk",trigger="schedule",outcome="failed"}', "0 0 0 0 0 1 1 1 1 1 1 1 1 1 1")],
     "10m", [{"model": "fraud"}]),
    ("successful runs are silent", "TrainingJobFailed", {},
     [('strata_training_runs_total{model="fraud",team="payments-risk",trigger="schedule",outcome="succeeded"}', "0 0 0 1 1 1 2 2 2 3 3 3")],
     "10m", []),
    # ---- the lake (fraud: dataKey txn_id)
    ("a lake batch over the invalid-row limit", "LakeBatchHeldFromGold", {},
     [('strata_lake_refused_batches_total{table="fraud"}', "0 0 0 1 1 1 1 1 1 1")],
     "6m", [{"model": "fraud", "table": "fraud"}]),
    ("batches within the limit are silent", "LakeBatchHeldFromGold", {},
     [('strata_lake_refused_batches_total{table="fraud"}', "0x10")],
     "6m", []),
    # ---- online features (fraud: view card_activity_stream, ttl 2d -> stale above 86400 s, onOutage defaults)
    ("feature store errors for 5m page", "FeatureStoreErrors", {},
     [('strata_feature_store_errors_total{model="fraud",view="card_activity_stream",pod="fraud-stable-0"}', "0+6x20")],
     "10m", [{"model": "fraud", "view": "card_activity_stream", "severity": "page"}]),
    ("another model's feature store errors are silent", "FeatureStoreErrors", {},
     [('strata_feature_store_errors_total{model="digits",view="card_activity_stream"}', "0+6x20")], "10m", []),
    ("10% of lookups answered with defaults", "FeatureDefaultRateHigh", {},
     [('strata_feature_lookups_total{model="fraud",view="card_activity_stream",outcome="hit"}', "0+900x60"),
      ('strata_feature_lookups_total{model="fraud",view="card_activity_stream",outcome="default"}', "0+100x60")],
     "40m", [{"model": "fraud", "view": "card_activity_stream"}]),
    ("1% defaults are silent", "FeatureDefaultRateHigh", {},
     [('strata_feature_lookups_total{model="fraud",view="card_activity_stream",outcome="hit"}', "0+990x60"),
      ('strata_feature_lookups_total{model="fraud",view="card_activity_stream",outcome="default"}', "0+10x60")],
     "40m", []),
    ("served card aggregates older than half their TTL", "FeatureValuesStale", {},
     [(f'strata_feature_age_seconds_bucket{{model="fraud",view="card_activity_stream",le="{le}"}}',
       "0+10x90" if le in ("259200.0", "+Inf") else "0x90") for le in ("3600.0", "43200.0", "86400.0", "259200.0", "+Inf")],
     "80m", [{"model": "fraud", "view": "card_activity_stream"}]),
    ("fresh card aggregates are silent", "FeatureValuesStale", {},
     [(f'strata_feature_age_seconds_bucket{{model="fraud",view="card_activity_stream",le="{le}"}}', "0+10x90")
      for le in ("3600.0", "43200.0", "86400.0", "259200.0", "+Inf")], "80m", []),
    # ---- rollouts (fraud: analysisWindow 5m -> stuck after 3 windows = 900s)
    ("rollout active with no transition for 3 windows", "RolloutStuck", {},
     [('strata_rollout_active{model="fraud",team="payments-risk",strategy="canary",candidate_version="4"}', "1x40"),
      ('strata_rollout_last_transition_timestamp_seconds{model="fraud",team="payments-risk",strategy="canary"}', "0x40")],
     "20m", [{"model": "fraud"}]),
    ("a progressing rollout is not stuck", "RolloutStuck", {},
     [('strata_rollout_active{model="fraud",team="payments-risk",strategy="canary",candidate_version="4"}', "1x40"),
      ('strata_rollout_last_transition_timestamp_seconds{model="fraud",team="payments-risk",strategy="canary"}', "0+60x40")],
     "20m", []),
    ("a finished rollout is not stuck", "RolloutStuck", {},
     [('strata_rollout_active{model="fraud",team="payments-risk",strategy="canary",candidate_version="4"}', "0x40"),
      ('strata_rollout_last_transition_timestamp_seconds{model="fraud",team="payments-risk",strategy="canary"}', "0x40")],
     "20m", []),
    ("a rollback happened", "RolloutRolledBack", {},
     [('strata_rollout_decisions_total{model="fraud",team="payments-risk",strategy="canary",outcome="rollback"}', "0 0 0 1 1 1 1 1 1 1")],
     "6m", [{"model": "fraud"}]),
    ("promotions are silent", "RolloutRolledBack", {},
     [('strata_rollout_decisions_total{model="fraud",team="payments-risk",strategy="canary",outcome="rollback"}', "0x10"),
      ('strata_rollout_decisions_total{model="fraud",team="payments-risk",strategy="canary",outcome="promote"}', "0 0 0 1 1 1 1 1 1 1")],
     "6m", []),
    # ---- platform
    ("spot interruption storm", "SpotInterruptionRateHigh", {},
     [('strata_spot_interruptions_total{node_pool="gpu-spot",instance_type="g5.xlarge",kind="interruption"}', "0+1x60")],
     "20m", [{"node_pool": "gpu-spot"}]),
    ("rebalance notices alone are silent", "SpotInterruptionRateHigh", {},
     [('strata_spot_interruptions_total{node_pool="gpu-spot",instance_type="g5.xlarge",kind="rebalance"}', "0+1x60")],
     "20m", []),
    ("scrape target down", "ScrapeTargetDown", {},
     [('up{job="strata-drift",instance="10.0.0.7:9108"}', "0x20"),
      ('up{job="node-exporter",instance="10.0.0.8:9100"}', "0x20")],
     "10m", [{"job": "strata-drift", "instance": "10.0.0.7:9108"}]),
    ("healthy targets are silent", "ScrapeTargetDown", {},
     [('up{job="strata-drift",instance="10.0.0.7:9108"}', "1x20")], "10m", []),
]


# ---------------------------------------------------------------- the policy the labels follow
#: Severity of every alert whose cases do not state it (the SLO burns state theirs per window).
SEVERITY = {alert: "ticket" for alert in (
    "ModelFeatureDrift", "ModelFeatureKSDrift", "ModelPredictionDrift", "ModelQualityDegraded",
    "ModelInvalidRowRateHigh", "DriftEvaluationStale", "RolloutStuck", "RolloutRolledBack", "TrainingJobFailed",
    "StreamConsumerLagHigh", "StreamDeadLetterRateHigh", "LakeBatchHeldFromGold", "SpotInterruptionRateHigh",
    "ScrapeTargetDown", "FeatureDefaultRateHigh", "FeatureValuesStale")}
#: Alerts that also go to the retraining webhook (data drift and degraded quality, nothing else).
RETRAINS = {"ModelFeatureDrift", "ModelQualityDegraded"}
#: model -> (team, PagerDuty routing key name), as the example specs say; the platform team otherwise.
OWNERS = {"fraud": ("payments-risk", "payments-risk"), "digits": ("vision", "vision")}
PLATFORM_OWNER = ("ml-platform", "ml-platform")


def expected_labels(alertname: str, out: dict[str, str]) -> dict[str, str]:
    """Every label a firing alert must have: the policy above plus what the case states."""
    team, routing_key = OWNERS[out["model"]] if "model" in out else PLATFORM_OWNER
    labels = {"team": team, "pagerduty": routing_key, **out}
    if "severity" not in labels:
        if alertname not in SEVERITY:
            raise KeyError(f"{alertname}: no severity in the case or in alert_cases.SEVERITY")
        labels["severity"] = SEVERITY[alertname]
    if alertname in RETRAINS:
        labels["retrain"] = "true"
    return labels
