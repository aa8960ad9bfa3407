"""The training metrics exporter (issue 12 item 2): `strata_training_*` from MLflow's run records.

Real MLflow (a sqlite tracking store in the test's directory: the client code path is the one
the exporter uses against the tracking server), the real exporter started from its catalogue
declaration, a real Prometheus with the generated rules: a failed training run makes
`TrainingJobFailed` fire.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

import prometheus_client as pc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring.conftest import PYTHON, free_port, need, wait_http, wait_until
from workloads.catalogue.declarations import training_metrics
from workloads.catalogue.substitution import render_argv
from workloads.monitoring import metrics as contract
from workloads.monitoring.training_metrics import MlflowRuns, TrainingMetrics, parse_models

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def record_run(client, model: str, team: str, status: str, *, epochs=(), attempts: int = 1, trigger: str | None = None,
               parent: str | None = None) -> str:
    """One run as the training runner writes it (tags, per-epoch `epoch_seconds`, an end status)."""
    experiment = client.get_experiment_by_name(model)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(model)
    tags = {"strata.model": model, "strata.team": team, "strata.attempts": str(attempts)}
    if trigger:
        tags["strata.trigger"] = trigger
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment_id, tags=tags)
    for step, seconds in enumerate(epochs):
        client.log_metric(run.info.run_id, "epoch_seconds", seconds, step=step)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def _samples(registry) -> dict[tuple[str, tuple], float]:
    text = pc.generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_runs_are_counted_once_by_outcome_and_trigger(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(uri)
    ok = record_run(client, "fraud", "payments-risk", "FINISHED", epochs=(1.5, 2.5), attempts=2, trigger="retrain")
    record_run(client, "fraud", "payments-risk", "FINISHED", parent=ok)  # an HPO trial: not a run
    running = record_run(client, "fraud", "payments-risk", "RUNNING")
    exporter = TrainingMetrics(MlflowRuns(uri), {"fraud": "payments-risk", "digits": "vision"})
    exporter.collect()
    exporter.collect()  # a second collection counts nothing again

    def value(name: str, **labels: str) -> float:
        return _samples(exporter.registry).get((name, tuple(sorted(labels.items()))), float("nan"))

    fraud = {"model": "fraud", "team": "payments-risk"}
    assert value("strata_training_runs_total", **fraud, trigger="retrain", outcome="succeeded") == 1
    assert value("strata_training_runs_total", **fraud, trigger="manual", outcome="failed") == 0  # exists at 0
    assert value("strata_training_runs_total", model="digits", team="vision", trigger="schedule", outcome="failed") == 0
    assert value("strata_training_runs_in_progress", **fraud) == 1
    assert value("strata_training_worker_restarts_total", **fraud) == 1
    assert value("strata_training_epoch_duration_seconds_count", **fraud) == 2
    assert value("strata_training_epoch_duration_seconds_sum", **fraud) == pytest.approx(4.0)
    assert value("strata_training_run_duration_seconds_count", **fraud, outcome="succeeded") == 1
    ended = client.get_run(ok).info.end_time / 1000.0
    assert value("strata_training_last_success_timestamp_seconds", **fraud) == pytest.approx(ended)

    client.set_terminated(running, "FAILED")  # the running one fails (a crash inside the run)
    exporter.collect()
    assert value("strata_training_runs_total", **fraud, trigger="manual", outcome="failed") == 1
    assert value("strata_training_runs_in_progress", **fraud) == 0
    # every training metric of the contract is exported
    names = {name for name, _ in _samples(exporter.registry)}
    for metric in contract.for_emitter(contract.Emitter.TRAINING):
        assert set(metric.series_names) <= names, metric.name


def test_bad_model_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="--model 'fraud': expected MODEL=TEAM"):
        parse_models(["fraud"])
    with pytest.raises(ValueError, match="no models given"):
        TrainingMetrics(MlflowRuns("sqlite:///:memory:"), {})


class _Resolver:
    """The test's placement of the declaration: loopback, one free port."""

    def __init__(self, port: int):
        self.port = port

    def bind(self, workload) -> str:
        return "127.0.0.1"

    def own_port(self, workload, port: str) -> int:
        return self.port

    def workload_address(self, workload, target: str, port: str) -> str:
        raise AssertionError(f"the exporter's argv names no other workload ({target})")

    def resource_output(self, workload, name, resource, output) -> str:
        raise AssertionError(f"the exporter's argv uses no resource ({name})")


def _prom(url: str, expr: str) -> list:
    with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=10) as response:
        return json.loads(response.read())["data"]["result"]




def test_a_failed_training_run_fires_training_job_failed(tmp_path: Path, catalog, processes):
    from workloads.monitoring import rules
    from workloads.monitoring.generate import to_yaml
    from workloads.monitoring.shipping import ship_rules

    prometheus = need("prometheus")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(uri)
    fraud = next(spec for spec in catalog if spec.name == "fraud")
    record_run(client, "fraud", fraud.team, "FINISHED", epochs=(1.0,))  # history: one good run

    # the exporter exactly as the catalogue declares it (the platform's Prometheus job, its args)
    port, prom_port = free_port(), free_port()
    workload = training_metrics(catalog)
    argv = render_argv(workload, _Resolver(port))
    assert argv[:3] == ["python", "-m", "workloads.monitoring.training_metrics"]
    exporter = processes.start("training-metrics", [PYTHON, *argv[1:], "--interval", "0.5"],
                               env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    wait_http(f"http://127.0.0.1:{port}/healthz", 120, exporter)

    # the generated rules as local mode ships them (training is one of its emitters now)
    from workloads.local.observability import local_emitters

    groups = ship_rules(rules.rule_groups(catalog, rules.RuleOptions(for_override="2s")), local_emitters())
    assert any(r.get("alert") == "TrainingJobFailed" for g in groups["groups"] for r in g["rules"])
    (tmp_path / "rules.yaml").write_text(to_yaml(groups))
    (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yaml")],
        "scrape_configs": [{"job_name": workload.job, "metrics_path": workload.metrics.path,
                            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }))
    prom = processes.start("prometheus", [prometheus, f"--config.file={tmp_path / 'prometheus.yaml'}",
                                          f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                                          f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"])
    url = f"http://127.0.0.1:{prom_port}"
    wait_http(f"{url}/-/ready", 60, prom)
    try:
        # every series the rules and dashboards read is scraped (the failed counter at 0 included)
        wait_until(lambda: _prom(url, 'strata_training_runs_total{model="fraud",outcome="failed"}'), 60,
              "the training series scraped")
        for metric in contract.for_emitter(contract.Emitter.TRAINING):
            assert _prom(url, f'{{__name__="{metric.series_names[0]}",model="fraud"}}'), metric.name
        time.sleep(3)  # > scrape + evaluation: a good run alone fires nothing
        assert _prom(url, 'ALERTS{alertname="TrainingJobFailed"}') == []

        record_run(client, "fraud", fraud.team, "FAILED", trigger="schedule")
        firing = wait_until(lambda: _prom(url, 'ALERTS{alertname="TrainingJobFailed",alertstate="firing"}'), 60,
                       "TrainingJobFailed firing")
        assert {r["metric"]["model"] for r in firing} == {"fraud"}
    except Exception:
        print(processes.log("training-metrics"), processes.log("prometheus"))
        raise


def test_a_real_refused_training_run_is_counted_as_failed_with_its_trigger(tmp_path, monkeypatch):
    """The runner itself (`strata train`), no hand-made record: data over the invalid-row limit
    is refused before Ray starts, the run ends FAILED in MLflow with its `strata.trigger`."""
    from workloads.data.validation import DataValidationError
    from workloads.training.cli import train

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(DataValidationError, match="refusing to train"):
        train("fraud", smoke=True, tracking_uri=uri, state_dir=tmp_path, quiet=True, trigger="ci",
              overrides={"training.data": "synthetic://fraud?rows=5000&seed=7&corrupt=0.01"})
    exporter = TrainingMetrics(MlflowRuns(uri), {"fraud": "payments-risk"})
    exporter.collect()
    assert exporter.registry.get_sample_value("strata_training_runs_total", {
        "model": "fraud", "team": "payments-risk", "trigger": "ci", "outcome": "failed"}) == 1
    assert exporter.registry.get_sample_value("strata_training_runs_total", {
        "model": "fraud", "team": "payments-risk", "trigger": "manual", "outcome": "failed"}) == 0
