"""The training metrics exporter: the contract's `strata_training_*`, from MLflow's run records.

    python -m workloads.monitoring.training_metrics --model fraud=payments-risk [--model ...] \
        --port 9112 [--interval 30]        # MLFLOW_TRACKING_URI names the tracking server

Why MLflow and not the trainer's own endpoint: a training run is a short-lived job (a local
`strata train`, a RayJob on the cluster) and a run that fails in its first seconds is gone
before any scrape. Every run writes its record to MLflow on both sides (status, start and end
time, `strata.*` tags, per-epoch `epoch_seconds`), so one long-lived exporter, declared once
in the catalogue and scraped like every other workload, turns those records into the
contract's series without a Pushgateway:

* `strata_training_runs_total{model,team,trigger,outcome}`: each top-level run (HPO trials,
  which carry `mlflow.parentRunId`, are not runs) counted once when it ends; FINISHED is
  `succeeded`, FAILED or KILLED is `failed`; `trigger` is the run's `strata.trigger` tag
  (`manual` when absent). Every (trigger, outcome) of each known model starts at 0, so the
  first failure is an increase Prometheus can see.
* `strata_training_run_duration_seconds{model,team,outcome}`: end - start of each ended run.
* `strata_training_runs_in_progress{model,team}`: runs with status RUNNING.
* `strata_training_last_success_timestamp_seconds{model,team}`: end time of the newest FINISHED run.
* `strata_training_epoch_duration_seconds{model,team}`: the run's logged `epoch_seconds`.
* `strata_training_worker_restarts_total{model,team}`: `strata.attempts` - 1 (one attempt per
  worker (re)start, each resumed from the last checkpoint).

Runs that ended before the exporter started are counted at its first collection: the
counters start from the history, and Prometheus reads increases from there on.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Mapping, Protocol

import prometheus_client as pc

from workloads.monitoring import metrics as contract
from workloads.monitoring.http import JsonHandler, serve_collecting

log = logging.getLogger("strata.training_metrics")

TRIGGERS = contract.TRAINING_TRIGGERS
DEFAULT_TRIGGER = "manual"
OUTCOMES = {"FINISHED": "succeeded", "FAILED": "failed", "KILLED": "failed"}
PARENT_TAG = "mlflow.parentRunId"
PAGE = 1000


@dataclass(frozen=True)
class RunRecord:
    """What the exporter needs of one MLflow run."""

    run_id: str
    status: str  # RUNNING | SCHEDULED | FINISHED | FAILED | KILLED
    start_ms: int
    end_ms: int | None
    tags: Mapping[str, str]

    @property
    def top_level(self) -> bool:
        return PARENT_TAG not in self.tags


class RunSource(Protocol):
    def runs(self, model: str) -> list[RunRecord]: ...

    def epoch_seconds(self, run_id: str) -> list[float]: ...


class MlflowRuns:
    """The tracking server's records: one experiment per model (named as the model)."""

    def __init__(self, tracking_uri: str | None = None):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)

    def runs(self, model: str) -> list[RunRecord]:
        experiment = self.client.get_experiment_by_name(model)
        if experiment is None:  # nothing trained yet
            return []
        found: list[RunRecord] = []
        token = None
        while True:
            page = self.client.search_runs([experiment.experiment_id], max_results=PAGE, page_token=token)
            found += [RunRecord(r.info.run_id, r.info.status, int(r.info.start_time or 0), r.info.end_time,
                                dict(r.data.tags)) for r in page]
            token = page.token
            if not token:
                return found

    def epoch_seconds(self, run_id: str) -> list[float]:
        return [m.value for m in self.client.get_metric_history(run_id, "epoch_seconds")]


class TrainingMetrics:
    """One collection = read every known model's runs, count the newly ended ones, set the gauges."""

    def __init__(self, source: RunSource, teams: Mapping[str, str], registry: Any = None):
        if not teams:
            raise ValueError("TrainingMetrics: no models given (model -> team)")
        self.source = source
        self.teams = dict(teams)
        self.registry = registry if registry is not None else pc.CollectorRegistry()
        self.m = contract.collectors(contract.Emitter.TRAINING, self.registry)
        self._counted: set[str] = set()  # ended runs already counted
        self._lock = threading.Lock()
        self.last: dict[str, Any] = {}
        for model, team in self.teams.items():  # every series exists at 0 before its first increase
            for trigger in TRIGGERS:
                for outcome in sorted(set(OUTCOMES.values())):
                    self.m["strata_training_runs_total"].labels(model=model, team=team, trigger=trigger, outcome=outcome)
            self.m["strata_training_worker_restarts_total"].labels(model=model, team=team)
            self.m["strata_training_runs_in_progress"].labels(model=model, team=team).set(0)

    def collect(self) -> dict[str, Any]:
        runs = {model: [r for r in self.source.runs(model) if r.top_level] for model in self.teams}
        with self._lock:
            return self._collect(runs)

    def _collect(self, runs: Mapping[str, list[RunRecord]]) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for model, records in runs.items():
            team = self.teams[model]
            counted = 0
            for run in records:
                outcome = OUTCOMES.get(run.status)
                if outcome is None or run.run_id in self._counted:
                    continue
                self._count(model, team, run, outcome)
                counted += 1
            running = sum(1 for r in records if r.status == "RUNNING")
            self.m["strata_training_runs_in_progress"].labels(model=model, team=team).set(running)
            finished = [r.end_ms for r in records if r.status == "FINISHED" and r.end_ms]
            if finished:
                self.m["strata_training_last_success_timestamp_seconds"].labels(model=model, team=team).set(
                    max(finished) / 1000.0)
            summary[model] = {"runs": len(records), "running": running, "newly_counted": counted}
        self.last = {"models": summary}
        return self.last

    def _count(self, model: str, team: str, run: RunRecord, outcome: str) -> None:
        trigger = run.tags.get("strata.trigger") or DEFAULT_TRIGGER
        if trigger not in TRIGGERS:
            log.warning("run %s of %s: trigger %r is not one of %s; counted as %s", run.run_id, model, trigger,
                        TRIGGERS, DEFAULT_TRIGGER)
            trigger = DEFAULT_TRIGGER
        self.m["strata_training_runs_total"].labels(model=model, team=team, trigger=trigger, outcome=outcome).inc()
        if run.end_ms and run.start_ms:
            self.m["strata_training_run_duration_seconds"].labels(model=model, team=team, outcome=outcome).observe(
                max(0.0, (run.end_ms - run.start_ms) / 1000.0))
        for seconds in self.source.epoch_seconds(run.run_id):
            self.m["strata_training_epoch_duration_seconds"].labels(model=model, team=team).observe(seconds)
        try:
            restarts = max(0, int(run.tags.get("strata.attempts", "1")) - 1)
        except ValueError:
            restarts = 0
        if restarts:
            self.m["strata_training_worker_restarts_total"].labels(model=model, team=team).inc(restarts)
        self._counted.add(run.run_id)


def make_handler(exporter: TrainingMetrics, ready: threading.Event) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/metrics":
                self._send(200, pc.generate_latest(exporter.registry), pc.CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                if ready.is_set():
                    self._send(200, json.dumps({"status": "ok", **exporter.last}).encode())
                else:
                    self._send(503, json.dumps({"status": "waiting for the first collection from MLflow"}).encode())
            else:
                self._send(404, json.dumps({"error": f"no route {self.path}"}).encode())

    return Handler


def parse_models(values: Iterable[str]) -> dict[str, str]:
    teams: dict[str, str] = {}
    for value in values:
        model, sep, team = value.partition("=")
        if not sep or not model.strip() or not team.strip():
            raise ValueError(f"--model {value!r}: expected MODEL=TEAM (e.g. fraud=payments-risk)")
        teams[model.strip()] = team.strip()
    return teams


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Strata training metrics exporter (from MLflow's run records)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9112)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between collections")
    parser.add_argument("--model", action="append", default=[], metavar="MODEL=TEAM", required=True,
                        help="a model whose runs are exported, with its team; repeatable")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be > 0")
    try:
        teams = parse_models(args.model)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(levelname)s %(message)s")
    exporter = TrainingMetrics(MlflowRuns(args.tracking_uri), teams)
    ready = threading.Event()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(exporter, ready))
    server.daemon_threads = True

    def collect() -> None:
        exporter.collect()
        ready.set()

    serve_collecting(server, collect, args.interval, "training metrics exporter", log, collect_first=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
