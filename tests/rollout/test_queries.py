"""The PromQL builders the dashboard and the controller share."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.monitoring.conftest import need
from workloads.monitoring import dashboards, queries
from workloads.monitoring.generate import DASHBOARD_DIR, REPO_ROOT


def test_builders_group_by_predictor_and_select_the_model():
    assert queries.error_ratio("fraud", "30s") == (
        'sum by (predictor) (rate(strata_serving_requests_total{model="fraud",code=~"5.."}[30s]))\n/\n'
        'sum by (predictor) (rate(strata_serving_requests_total{model="fraud"}[30s]))')
    assert queries.latency_quantile("fraud", "1m") == (
        'histogram_quantile(0.99, sum by (predictor, le) (rate(strata_serving_request_duration_seconds_bucket{model="fraud"}[1m])))')
    assert 'strata_serving_prediction_score_bucket{model="fraud"}[20s]' in queries.score_buckets("fraud", "20s")


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="range window"):
        queries.request_rate("fraud", "5 minutes")
    with pytest.raises(ValueError, match="label value"):
        queries.request_rate('fr"aud', "5m")
    with pytest.raises(ValueError, match="quantile"):
        queries.latency_quantile("fraud", "5m", 1.5)


def test_every_builder_parses(tmp_path):
    exprs = [queries.request_rate("fraud", "30s"), queries.requests_in_window("fraud", "30s"),
             queries.errors_in_window("fraud", "30s"), queries.error_ratio("fraud", "30s"),
             queries.latency_quantile("fraud", "30s"), queries.score_buckets("fraud", "30s"),
             queries.rollout_weight("fraud"), queries.rollout_active("fraud"),
             queries.rollout_decisions("fraud", "1h"), queries.rollout_seconds_since_transition("fraud"),
             queries.rollout_rollback_seconds("fraud"), queries.processes_by_loaded_version("fraud", "stable")]
    check = tmp_path / "q.yaml"
    check.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": [
        {"record": f"q:{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
    result = subprocess.run([need("promtool"), "check", "rules", str(check)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_committed_model_dashboard_uses_the_controller_queries():
    board = json.loads((REPO_ROOT / DASHBOARD_DIR / "strata-model.json").read_text())
    exprs = set(dashboards.queries(board))
    rate = dashboards.RATE
    for expr in (queries.error_ratio("$model", rate), queries.latency_quantile("$model", rate),
                 queries.request_rate("$model", rate), queries.score_buckets("$model", rate),
                 queries.rollout_weight("$model")):
        assert expr in exprs
