"""The alerts of a CDC pipeline's streaming feature aggregator (`rules.aggregator_group`):
`promtool check rules`, and `promtool test rules` with firing and silent cases for each, the
expected labels written here by the alerting policy (not read from the rule). The silent cases
include the shapes the aggregator really produces without a fault: the catch-up of a restart (it
applies changes and polls all along; its backlog of live changes drains in minutes) and an idle
topic."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.features.enrichment import fraud_spec
from tests.monitoring.conftest import need
from workloads.data.ingest.pipeline import CdcPipeline, SourceDatabase, StreamingFeatures
from workloads.monitoring import rules
from workloads.monitoring.generate import REPO_ROOT, to_yaml

VIEW = "card_activity_stream"
PIPELINE = CdcPipeline(
    name="fraud-transactions", team="payments-risk", database=SourceDatabase(host="db.internal", name="payments"),
    table="public.card_transactions", lake_table="fraud", key="txn_id",
    features=StreamingFeatures(view=VIEW, entity="card_id", event_time="event_ts", value="amount", ttl="2d"))
POLICY = {"FeatureFreshnessHigh": "ticket", "FeatureAggregatorStalled": "page"}
LABELS = {"team": "payments-risk", "pagerduty": "payments-risk", "view": VIEW, "pipeline": "fraud-transactions"}

LE = ("0.5", "1.0", "10.0", "30.0", "60.0", "+Inf")


def freshness(per_le: dict[str, str], view: str = VIEW) -> list[tuple[str, str]]:
    return [(f'strata_feature_freshness_seconds_bucket{{view="{view}",le="{le}"}}', per_le[le]) for le in LE]


def stall_series(lag: str, applied: str, heartbeat: str) -> list[tuple[str, str]]:
    return [(f'strata_feature_aggregate_lag_messages{{view="{VIEW}"}}', lag),
            (f'strata_feature_aggregate_events_total{{view="{VIEW}",outcome="applied"}}', applied),
            (f'strata_feature_aggregate_last_poll_timestamp_seconds{{view="{VIEW}"}}', heartbeat)]


FAST = {le: "0+100x40" for le in LE}  # every change online within 0.5 s
SLOW = {le: "0x40" if float(le) <= 10 else "0+100x40" for le in LE}  # every change 10-30 s late
# 8 minutes of changes 10-30 s late (the live changes queued behind a restart's catch-up), then fast
BURST = {le: "0x8 100+100x30" if float(le) <= 10 else "0+100x8 900+100x30" for le in LE}
ALIVE = "0+60x40"  # the heartbeat gauge: polled at every sample (its value is the sample's time)

# (name, alertname, series, eval_times, firing?)
CASES = [
    ("p99 over 10 s for 15m", "FeatureFreshnessHigh", freshness(SLOW), ("25m",), True),
    ("fast changes are silent", "FeatureFreshnessHigh", freshness(FAST), ("25m",), False),
    ("a restart's backlog drained in 8 minutes is silent", "FeatureFreshnessHigh", freshness(BURST),
     ("8m", "12m", "14m", "16m", "20m", "30m"), False),
    ("another view's late changes are silent here", "FeatureFreshnessHigh", freshness(SLOW, view="merchant_activity"),
     ("25m",), False),
    ("no changes at all are silent", "FeatureFreshnessHigh", freshness({le: "0x40" for le in LE}), ("25m",), False),
    ("changes wait on the topic and none is applied: page", "FeatureAggregatorStalled",
     stall_series(lag="500x40", applied="1000x40", heartbeat=ALIVE), ("15m",), True),
    ("the loop is wedged with its lag gauge frozen at 0: page", "FeatureAggregatorStalled",
     stall_series(lag="0x40", applied="1000x40", heartbeat="60x40"), ("20m",), True),
    ("the catch-up after a restart is silent", "FeatureAggregatorStalled",
     stall_series(lag="100000-3000x30 0x9", applied="0+3000x40", heartbeat=ALIVE), ("5m", "15m", "30m"), False),
    ("an idle topic is silent", "FeatureAggregatorStalled",
     stall_series(lag="0x40", applied="1000x40", heartbeat=ALIVE), ("20m",), False),
    ("a 7-minute pause that recovers is silent", "FeatureAggregatorStalled",
     stall_series(lag="0 0 500x6 0x31", applied="0 100 200x6 300+100x31", heartbeat=ALIVE), ("9m", "15m", "25m"),
     False),
    ("its pod down is ScrapeTargetDown's, silent here", "FeatureAggregatorStalled",
     [('up{job="strata-feature-aggregator",namespace="team-payments-risk"}', "0x40")], ("20m",), False),
]


def _groups():
    return rules.rule_groups([fraud_spec("card_profile", on_outage="defaults")], rules.RuleOptions(), [PIPELINE])


def test_a_pipeline_with_features_gets_exactly_the_aggregator_alerts_with_runbooks():
    groups = _groups()
    group = next(g for g in groups["groups"] if g["name"] == "strata-feature-aggregator-fraud-transactions")
    assert [r["alert"] for r in group["rules"]] == list(rules.AGGREGATOR_ALERTS)
    for name in rules.AGGREGATOR_ALERTS:
        assert (REPO_ROOT / "runbooks" / f"{name}.md").is_file(), name
    # without the pipeline (no aggregator runs) there are none; nor for a pipeline without features
    bare = PIPELINE.model_copy(update={"features": None})
    for pipelines in ((), (bare,)):
        names = rules.alert_names(rules.rule_groups([fraud_spec("card_profile")], rules.RuleOptions(), pipelines))
        assert not set(rules.AGGREGATOR_ALERTS) & set(names)


def test_a_pipeline_of_a_team_without_models_pages_the_platform_team():
    other = PIPELINE.model_copy(update={"team": "ledger"})
    group = rules.rule_groups([fraud_spec("card_profile")], rules.RuleOptions(), [other])["groups"][-2]
    assert {r["labels"]["team"] for r in group["rules"]} == {"ledger"}
    assert {r["labels"]["pagerduty"] for r in group["rules"]} == {"ml-platform"}


def test_promtool_checks_and_unit_tests_the_aggregator_alerts(tmp_path):
    groups = _groups()
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(to_yaml(groups))
    check = subprocess.run([need("promtool"), "check", "rules", str(rule_file)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    by_name = {r["alert"]: r for g in groups["groups"] for r in g["rules"] if r.get("alert") in POLICY}
    tests = []
    for name, alertname, series, eval_times, fires in CASES:
        expected = []
        if fires:
            labels = {**LABELS, "severity": POLICY[alertname]}
            annotations = {k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), v)
                           for k, v in by_name[alertname]["annotations"].items()}
            expected = [{"exp_labels": labels, "exp_annotations": annotations}]
        tests.append({"name": name, "interval": "1m",
                      "input_series": [{"series": s, "values": v} for s, v in series],
                      "alert_rule_test": [{"eval_time": t, "alertname": alertname, "exp_alerts": expected}
                                          for t in eval_times]})
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rule_file)], "evaluation_interval": "1m",
                                         "group_eval_order": [g["name"] for g in groups["groups"]], "tests": tests},
                                        sort_keys=False))
    result = subprocess.run([need("promtool"), "test", "rules", str(test_file)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert {a for _, a, _, _, fires in CASES if fires} == {a for _, a, _, _, fires in CASES if not fires} == set(POLICY)


def test_a_slow_period_longer_than_for_plus_window_would_fire(tmp_path):
    """The burst case above is silent because of its length, not because the rule cannot fire on
    it: the same shape 12 minutes long (past `for:` minus the window) fires."""
    groups = _groups()
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(to_yaml(groups))
    long_burst = {le: "0x12 100+100x26" if float(le) <= 10 else "0+100x12 1300+100x26" for le in LE}
    labels = {**LABELS, "severity": "ticket"}
    annotations = {k: v for k, v in next(r for g in groups["groups"] for r in g["rules"]
                                         if r.get("alert") == "FeatureFreshnessHigh")["annotations"].items()}
    test = {"name": "12 minutes late fires at the end", "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in freshness(long_burst)],
            "alert_rule_test": [{"eval_time": "16m", "alertname": "FeatureFreshnessHigh",
                                 "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]}]}
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": [test]},
                                        sort_keys=False))
    result = subprocess.run([need("promtool"), "test", "rules", str(test_file)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
