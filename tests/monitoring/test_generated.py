"""The generated rules, Alertmanager config, dashboards and runbooks: fresh, valid, complete."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from tests.monitoring.alert_cases import CASES, expected_labels
from tests.monitoring.conftest import need
from workloads.monitoring import alertmanager as am
from workloads.monitoring import dashboards as dash
from workloads.monitoring import metrics as contract
from workloads.monitoring import rules
from workloads.monitoring.generate import (
    ALERT_RUNBOOK_HEADINGS, ALERTMANAGER_PATH, DASHBOARD_DIR, OPERATIONAL_RUNBOOKS, REPO_ROOT, RULES_PATH,
    RUNBOOK_DIR, generate, render, stale,
)

SLOW_CASE_INTERVAL = {"availability slow burn opens a ticket": "10m"}


@pytest.fixture(scope="module")
def rule_doc():
    return yaml.safe_load((REPO_ROOT / RULES_PATH).read_text())


@pytest.fixture(scope="module")
def alert_rules(rule_doc):
    return [r for g in rule_doc["groups"] for r in g["rules"] if "alert" in r]


# ------------------------------------------------------------------ freshness


def test_committed_files_match_a_fresh_render(catalog):
    assert stale(REPO_ROOT, catalog) == [], "run `strata generate` (python -m workloads.monitoring.generate)"


def test_generate_is_deterministic_and_writes_under_out_root(tmp_path, catalog):
    first = {p.relative_to(tmp_path): p.read_text() for p in generate(tmp_path, catalog)}
    second = render(catalog)
    assert {str(k): v for k, v in first.items()} == second
    assert render(tuple(reversed(catalog))) == second  # spec order does not matter


# ------------------------------------------------------------------ Prometheus rules


def test_promtool_check_rules():
    result = subprocess.run([need("promtool"), "check", "rules", str(REPO_ROOT / RULES_PATH)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_severity_team_and_runbook(alert_rules):
    for rule in alert_rules:
        labels, annotations = rule["labels"], rule["annotations"]
        assert labels["severity"] in (rules.PAGE, rules.TICKET), rule["alert"]
        assert labels["team"], rule["alert"]
        assert annotations["runbook_url"] == rules.runbook_url(rule["alert"])
        assert annotations["summary"] and annotations["description"]


def test_slo_alerts_use_the_burn_rate_windows_as_data(alert_rules, catalog):
    for spec in catalog:
        burns = [r for r in alert_rules if r["alert"] == "ModelAvailabilityBudgetBurn" and r["labels"]["model"] == spec.name]
        assert [(r["labels"]["long"], r["labels"]["short"], r["labels"]["severity"]) for r in burns] == [
            ("1h", "5m", "page"), ("6h", "30m", "page"), ("3d", "6h", "ticket")]
        budget = round(1 - spec.slos.availability_percent / 100, 10)
        for rule, factor in zip(burns, (14.4, 6, 1)):
            assert f"> {round(factor * budget, 10):.10g}" in rule["expr"]


def _render(text: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)


def _expected(alert_rules, alertname: str, out: dict[str, str]) -> dict:
    candidates = [r for r in alert_rules if r["alert"] == alertname
                  and all(r["labels"].get(k, v) == v for k, v in out.items())]
    assert len(candidates) == 1, (alertname, out, len(candidates))
    labels = expected_labels(alertname, out)  # the policy, not the rule's own labels
    return {"exp_labels": labels,
            "exp_annotations": {k: _render(v, labels) for k, v in candidates[0]["annotations"].items()}}


def test_every_alert_has_a_firing_and_a_silent_unit_test(alert_rules):
    names = {r["alert"] for r in alert_rules}
    firing = {alert for _, alert, _, _, _, expected in CASES if expected}
    silent = {alert for _, alert, _, _, _, expected in CASES if not expected}
    assert names - firing == set(), "alerts without a firing case"
    assert names - silent == set(), "alerts without a silent case"


def test_promtool_unit_tests_per_alert(tmp_path, rule_doc, alert_rules):
    # Multi-day cases run in their own file with a 10m evaluation interval (fast enough).
    # promtool evaluates the groups at each step in Go map order unless told: an alert
    # group run before the SLI recordings would read samples 10m old, past the 5m
    # lookback, and never fire. Prometheus runs groups on their own timers, with at most
    # one interval (well under 5m) between them, so recordings first is the faithful order.
    group_order = [group["name"] for group in rule_doc["groups"]]
    files = {}
    for name, alertname, _, series, eval_time, expected in CASES:
        interval = SLOW_CASE_INTERVAL.get(name, "1m")
        files.setdefault(interval, []).append({
            "name": name,
            "interval": interval,
            "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [{
                "eval_time": eval_time,
                "alertname": alertname,
                "exp_alerts": [_expected(alert_rules, alertname, out) for out in expected],
            }],
        })
    paths = []
    for interval, tests in files.items():
        test_file = tmp_path / f"rules_test_{interval}.yaml"
        test_file.write_text(yaml.safe_dump({
            "rule_files": [str(REPO_ROOT / RULES_PATH)],
            "evaluation_interval": interval,
            "group_eval_order": group_order,
            "tests": tests,
        }, sort_keys=False))
        paths.append(str(test_file))
    result = subprocess.run([need("promtool"), "test", "rules", *paths], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]


# ------------------------------------------------------------------ Alertmanager


def test_amtool_check_config():
    result = subprocess.run([need("amtool"), "check-config", str(REPO_ROOT / ALERTMANAGER_PATH)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _routes(labels: list[str], receivers: list[str]) -> None:
    result = subprocess.run(
        [need("amtool"), "config", "routes", "test", f"--config.file={REPO_ROOT / ALERTMANAGER_PATH}",
         f"--verify.receivers={','.join(receivers)}", *labels],
        capture_output=True, text=True)
    assert result.returncode == 0, f"{labels} -> {result.stdout.strip()} (expected {receivers}) {result.stderr}"


def test_amtool_routes_per_team(catalog):
    for team, models in am.team_routing(catalog).items():
        model = sorted(models)[0]
        key = models[model]
        _routes([f"team={team}", f"model={model}", "severity=page", "alertname=ModelAvailabilityBudgetBurn"], [f"pd-{key}-page"])
        _routes([f"team={team}", f"model={model}", "severity=ticket", "alertname=ModelFeatureKSDrift"], [f"pd-{key}-ticket"])
        _routes([f"team={team}", f"model={model}", "severity=ticket", "retrain=true", "alertname=ModelFeatureDrift"],
                ["retrain-webhook", f"pd-{key}-ticket"])
    _routes([f"team={rules.PLATFORM_TEAM}", "severity=ticket", "alertname=ScrapeTargetDown"], ["pd-ml-platform-ticket"])
    _routes(["team=nobody", "severity=page", "alertname=Unknown"], ["pd-ml-platform-ticket"])


def test_alertmanager_config_holds_no_routing_key(catalog):
    text = (REPO_ROOT / ALERTMANAGER_PATH).read_text()
    assert "routing_key:" not in text and "service_key:" not in text
    config = yaml.safe_load(text)
    for receiver in config["receivers"]:
        for pd in receiver.get("pagerduty_configs", []):
            assert pd["routing_key_file"].startswith(am.ROUTING_KEY_DIR + "/")
    assert config["inhibit_rules"] == [{"source_matchers": ['severity="page"'], "target_matchers": ['severity="ticket"'],
                                        "equal": ["alertname", "model"]}]


def test_a_model_with_its_own_routing_key_gets_its_own_route(catalog):
    digits = next(s for s in catalog if s.name == "digits")
    other = digits.model_copy(update={"name": "digits-b", "pagerduty": digits.pagerduty.model_copy(update={"routing_key_name": "vision-b"})})
    config = am.alertmanager_config([*catalog, other])
    vision = next(r for r in config["route"]["routes"] if r.get("matchers") == ['team="vision"'])
    assert vision["routes"][0]["matchers"] == ['model="digits-b"']
    assert vision["routes"][0]["receiver"] == "pd-vision-b-ticket"


# ------------------------------------------------------------------ runbooks


def test_every_alert_has_a_runbook_and_every_runbook_an_alert(alert_rules):
    # tests/features: the feature and aggregator alerts' own rules
    alerts = {r["alert"] for r in alert_rules} | set(rules.FEATURE_ALERTS) | set(rules.AGGREGATOR_ALERTS)
    files = {p.stem for p in (REPO_ROOT / RUNBOOK_DIR).glob("*.md")} - {"README"}
    assert alerts - files == set(), "alerts without a runbook"
    assert files - alerts - set(OPERATIONAL_RUNBOOKS) == set(), "runbooks that are neither an alert nor operational"
    assert set(OPERATIONAL_RUNBOOKS) - files == set(), "operational runbooks missing"


def test_alert_runbooks_have_the_required_sections(alert_rules):
    for alert in sorted({r["alert"] for r in alert_rules} | set(rules.FEATURE_ALERTS) | set(rules.AGGREGATOR_ALERTS)):
        text = (REPO_ROOT / RUNBOOK_DIR / f"{alert}.md").read_text()
        assert text.startswith(f"# {alert}\n"), alert
        for heading in ALERT_RUNBOOK_HEADINGS:
            assert f"\n{heading}\n" in text, f"{alert}.md lacks {heading}"
        mitigation = text.split("## Mitigation", 1)[1]
        assert "```" in mitigation, f"{alert}.md: Mitigation needs exact commands"


def test_operational_runbooks_have_commands():
    for stem, title in OPERATIONAL_RUNBOOKS.items():
        text = (REPO_ROOT / RUNBOOK_DIR / f"{stem}.md").read_text()
        assert text.startswith("# "), stem
        assert "```" in text, f"{stem}.md needs exact commands"


def test_every_runbook_url_resolves_to_a_repo_file(alert_rules):
    for rule in alert_rules:
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(rules.RUNBOOK_BASE_URL)
        relative = "runbooks/" + url.removeprefix(rules.RUNBOOK_BASE_URL)
        assert (REPO_ROOT / relative).is_file(), url


def test_runbook_links_resolve():
    for path in (REPO_ROOT / RUNBOOK_DIR).glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", path.read_text()):
            assert (path.parent / target).resolve().is_file(), f"{path.name} links to missing {target}"


# ------------------------------------------------------------------ dashboards

KNOWN_EXTERNAL = {"up", "ALERTS", "time", "vector"}


def _dashboards():
    return {p.name: json.loads(p.read_text()) for p in sorted((REPO_ROOT / DASHBOARD_DIR).glob("*.json"))}


def test_dashboards_have_explicit_unique_uids():
    boards = _dashboards()
    assert set(boards) == set(dash.DASHBOARDS)
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        assert name == f"{board['uid']}.json"
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids)


def _concrete(expr: str) -> str:
    return (expr.replace("$__rate_interval", "5m").replace('"$model"', '"fraud"').replace('=~"$model"', '=~"fraud"'))


def test_every_dashboard_query_parses(tmp_path):
    exprs = [_concrete(q) for board in _dashboards().values() for q in dash.queries(board)]
    assert exprs
    check = tmp_path / "dashboard_queries.yaml"
    check.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": [
        {"record": f"dashboard:query_{i}:check", "expr": expr} for i, expr in enumerate(exprs)]}]}))
    result = subprocess.run([need("promtool"), "check", "rules", str(check)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_and_dashboards_use_only_contract_metrics(rule_doc):
    recorded = set(rules.recorded_names(rule_doc))
    known = {s for m in contract.CONTRACT for s in m.series_names} | recorded | KNOWN_EXTERNAL
    exprs = [r["expr"] for g in rule_doc["groups"] for r in g["rules"]]
    exprs += [q for board in _dashboards().values() for q in dash.queries(board)]
    used = set()
    for expr in exprs:
        stripped = re.sub(r'"[^"]*"', '""', expr)  # label values
        stripped = re.sub(r"\{\{[^}]*\}\}", "", stripped)
        for token in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[|\)|$|\s|/|>|<|\*|-|\+)", stripped):
            if token.startswith(("strata_", "model:")) or token in ("up", "ALERTS"):
                used.add(token)
    unknown = used - known
    assert unknown == set(), f"not in the metrics contract or recorded: {sorted(unknown)}"
    assert "strata_drift_feature_psi" in used
