"""The alerts a spec's `features` section adds, rendered for a model with online features
(views shared by two models included): `promtool check rules`, and `promtool test rules` with a
firing and a silent case for each, labels by the alerting policy (not read from the rule)."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.features.enrichment import fraud_spec
from tests.monitoring.conftest import need
from workloads.monitoring import rules
from workloads.monitoring.generate import REPO_ROOT, to_yaml
from workloads.spec import parse_model_spec

VIEW = "card_profile"  # ttl 1d: stale above 43200 s
POLICY = {"FeatureStoreErrors": "page", "FeatureDefaultRateHigh": "ticket", "FeatureValuesStale": "ticket"}
AGE = 'strata_feature_age_seconds_bucket{{model="{model}",view="{view}",le="{le}"}}'

# (name, alertname, series, eval_time, firing?)
CASES = [
    ("store errors for 5m page", "FeatureStoreErrors",
     [(f'strata_feature_store_errors_total{{model="fraud",view="{VIEW}",pod="fraud-stable-0"}}', "0+6x20")], "10m", True),
    ("a blip of errors is silent", "FeatureStoreErrors",
     [(f'strata_feature_store_errors_total{{model="fraud",view="{VIEW}",pod="fraud-stable-0"}}',
       "0 0 1 1 1 1 1 1 1 1 1 1 1 1 1")],
     "14m", False),
    ("another model's view is not this model's page", "FeatureStoreErrors",
     [('strata_feature_store_errors_total{model="fraud",view="merchant_profile"}', "0+6x20")], "10m", False),
    # views can be shared: another model's failing lookups of the same view page that model only
    ("another model's lookups of a shared view are not this model's page", "FeatureStoreErrors",
     [(f'strata_feature_store_errors_total{{model="chargeback",view="{VIEW}"}}', "0+6x20")], "10m", False),
    ("10% defaults", "FeatureDefaultRateHigh",
     [(f'strata_feature_lookups_total{{model="fraud",view="{VIEW}",outcome="hit"}}', "0+900x60"),
      (f'strata_feature_lookups_total{{model="fraud",view="{VIEW}",outcome="default"}}', "0+100x60")], "40m", True),
    ("1% defaults is silent", "FeatureDefaultRateHigh",
     [(f'strata_feature_lookups_total{{model="fraud",view="{VIEW}",outcome="hit"}}', "0+990x60"),
      (f'strata_feature_lookups_total{{model="fraud",view="{VIEW}",outcome="default"}}', "0+10x60")], "40m", False),
    ("another model's defaults on a shared view are silent here", "FeatureDefaultRateHigh",
     [(f'strata_feature_lookups_total{{model="fraud",view="{VIEW}",outcome="hit"}}', "0+990x60"),
      (f'strata_feature_lookups_total{{model="chargeback",view="{VIEW}",outcome="default"}}', "0+500x60")],
     "40m", False),
    # every served value between 12 h and 1 d old: the median is over half the TTL
    ("values older than half the TTL", "FeatureValuesStale",
     [(AGE.format(model="fraud", view=VIEW, le=le), "0+10x90" if le in ("86400.0", "+Inf") else "0x90")
      for le in ("3600.0", "14400.0", "43200.0", "86400.0", "+Inf")], "80m", True),
    ("fresh values are silent", "FeatureValuesStale",
     [(AGE.format(model="fraud", view=VIEW, le=le), "0+10x90")
      for le in ("3600.0", "14400.0", "43200.0", "86400.0", "+Inf")], "80m", False),
    ("another model served stale values of a shared view: silent here", "FeatureValuesStale",
     [(AGE.format(model=m, view=VIEW, le=le), "0+10x90" if m == "fraud" or le in ("86400.0", "+Inf") else "0x90")
      for m in ("fraud", "chargeback") for le in ("3600.0", "14400.0", "43200.0", "86400.0", "+Inf")], "80m", False),
]


def spec_with_features():
    spec = fraud_spec(VIEW, on_outage="defaults")
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return parse_model_spec(doc)


def test_a_spec_with_features_gets_exactly_the_feature_alerts_with_runbooks():
    groups = rules.rule_groups([spec_with_features()])
    names = {r["alert"] for g in groups["groups"] for r in g["rules"] if r.get("alert", "").startswith("Feature")}
    assert names == set(rules.FEATURE_ALERTS)
    for name in names:
        assert (REPO_ROOT / "runbooks" / f"{name}.md").is_file(), name
    without = fraud_spec(VIEW).model_dump(mode="json", by_alias=True, exclude_none=True)
    del without["features"]
    assert not set(rules.FEATURE_ALERTS) & set(rules.alert_names(rules.rule_groups([parse_model_spec(without)])))


def test_promtool_checks_and_unit_tests_the_feature_alerts(tmp_path):
    groups = rules.rule_groups([spec_with_features()])
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(to_yaml(groups))
    check = subprocess.run([need("promtool"), "check", "rules", str(rule_file)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    by_name = {r["alert"]: r for g in groups["groups"] for r in g["rules"] if r.get("alert") in POLICY}
    tests = []
    for name, alertname, series, eval_time, fires in CASES:
        expected = []
        if fires:
            labels = {"model": "fraud", "team": "payments-risk", "pagerduty": "payments-risk",
                      "severity": POLICY[alertname], "view": VIEW}
            annotations = {k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), v)
                           for k, v in by_name[alertname]["annotations"].items()}
            expected = [{"exp_labels": labels, "exp_annotations": annotations}]
        tests.append({"name": name, "interval": "1m",
                      "input_series": [{"series": s, "values": v} for s, v in series],
                      "alert_rule_test": [{"eval_time": eval_time, "alertname": alertname, "exp_alerts": expected}]})
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rule_file)], "evaluation_interval": "1m",
                                         "group_eval_order": [g["name"] for g in groups["groups"]], "tests": tests},
                                        sort_keys=False))
    result = subprocess.run([need("promtool"), "test", "rules", str(test_file)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert {a for _, a, _, _, fires in CASES if fires} == {a for _, a, _, _, fires in CASES if not fires} == set(POLICY)
