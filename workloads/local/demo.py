"""`strata local up --demo`: the whole pipeline on one machine, stage by stage.

    services -> data -> train -> serve -> stream -> traffic -> canary -> drift -> report

1. services: Kafka, MLflow, the PagerDuty receiver, Alertmanager (generated routing: drift
   tickets -> the local PagerDuty receiver AND the retrain webhook), Prometheus (generated
   rules; the drift/quality alerts' `for:` shortened to `DEMO_ALERT_FOR`), the nginx proxy
   and the retraining trigger (its retrains run `strata train MODEL --local` + `TRAIN_ARGS`).
2. data: the fraud example's source system for real (workloads/local/demo_lake.py): card
   transactions written into PostgreSQL, chargebacks later; Debezium on Kafka Connect ->
   Kafka -> bronze -> silver (+ quarantine) -> gold, counted against the source table.
   fraud's first version (its champion) trains from that gold version
   (`lake://gold/fraud?version=N`) and its MLflow run must name it and its digest. The
   canary's challenger is the same recipe on the same gold version and split with another
   `training.initSeed`, so the gate and the canary judge two models of one recipe (trained
   on other data, the challenger's scores shift by about the canary's PSI limit: a coin toss).
   The retrains keep the spec's synthetic 20k rows.
3. train: every example model is trained and registered (Ray Train, MLflow) unless its
   `champion` is already in the registry export; a model's first version becomes its
   champion (there is nothing to canary it against).
4. serve: each model's `stable` slot (the champion) behind the proxy; a request per model.
5. stream: the stream worker, drift monitor and drift feed of each streaming model;
   synthetic transactions through Kafka, until the worker has scored all of them.
6. traffic: bounded real-time load through the proxy (loopback), 2% malformed requests
   that must be answered 4xx; any 5xx fails the stage (a shed request, 503 + Retry-After, is
   counted apart and retried after the wait it names, as the serving contract asks clients to).
7. canary: a challenger is trained, served in the `candidate` slot, and rolled out by the
   rollout controller (`workloads.rollout`) on measured results: promoted or rolled back.
8. drift: drifted transactions later in the stream; waits (bounded) for the drift page at
   the local PagerDuty receiver and for the retraining run it triggers to be registered.
9. report: the summary table and `<state>/report/index.html` (the dashboards' queries
   over the demo's window, drawn with matplotlib).

A stage that fails stops the demo (exit 1) with its reason; the services stay up for
inspection (`strata local status|logs`, `strata local down` stops them). Stage results and
the summary are also written to `<state>/report/demo.json`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from workloads.local import observability
from workloads.local.errors import LocalError
from workloads.local.ports import HOST
from workloads.local.services import LocalOptions, WorkloadOptions, registry_root, workload_catalog, workload_env
from workloads.local.supervisor import Supervisor

#: `strata train` arguments of every demo training (first versions, challengers, retrains):
#: the smoke caps (<= 2 epochs, <= 20k synthetic rows) and no HPO sweep (Ray Tune's trials
#: are what takes minutes; the training tests cover them).
TRAIN_ARGS = ("--smoke", "--set", "training.hpo=null")
GOLD_BATCH_SIZE = 128
DEMO_ALERT_FOR = "10s"  # drift/quality alerts' `for:` in the demo (the spec's sustainedFor: 10m)
BASE_SERVICES = ("kafka", "mlflow", "pagerduty", "alertmanager", "prometheus", "proxy", "retrain-trigger")
DRIFT = (("amount", 1.5, 1.0), ("merchant_risk", 1.2, 1.0), ("device_risk", 1.0, 1.3))  # (feature, shift, scale)
UNKNOWN_ENTITY_SHARE = 0.1  # real-time requests naming an entity without online features (served the defaults)


def demo_options() -> LocalOptions:
    """The supervisor options of a demo: compressed drift evaluation and alerting, smoke retrains."""
    return LocalOptions(workloads=WorkloadOptions(
        drift_interval_s=2.0, drift_window_rows=3000, drift_min_rows=500, drift_alert_for=DEMO_ALERT_FOR,
        retrain_args=TRAIN_ARGS, retrain_cooldown_s=60.0, feed_batch=200,
    ))


@dataclass(frozen=True)
class DemoSettings:
    models: tuple[str, ...] = ()  # default: every example model
    traffic_seconds: float = 15.0
    traffic_clients: int = 4
    stream_messages: int = 2000
    stream_rate: float = 500.0  # messages/s produced
    drift_messages: int = 4000
    stage_timeout_s: float = 300.0  # bound of every wait (page, retrain, stream drained, canary)


class StageFailed(Exception):
    """A stage did not reach its goal; the message says what is missing and where to look."""


@dataclass
class StageResult:
    name: str
    ok: bool
    seconds: float
    detail: str


@dataclass
class DemoOutcome:
    ok: bool
    stages: list[StageResult]
    summary: list[tuple[str, str]]
    report: str | None
    wall_s: float
    facts: dict[str, Any] = field(default_factory=dict)


# --- small HTTP helpers --------------------------------------------------------------------------
def _http(method: str, url: str, body: Any = None, timeout: float = 10.0, headers: dict | None = None) -> tuple[int, Any, dict]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, _json_or_text(raw), dict(resp.headers)
    except urllib.error.HTTPError as error:
        return error.code, _json_or_text(error.read()), dict(error.headers or {})


def _retry_after(code: int, headers: Mapping[str, str]) -> float | None:
    """Seconds a shed answer (503 + Retry-After, the serving contract's `overloaded`) asks the client
    to wait; None for any other answer (a 503 without it is a failure)."""
    if code != 503:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode("utf-8", "replace")


def _wait(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 1.0,
          on_tick: Callable[[float], None] | None = None) -> Any:
    started = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value
        elapsed = time.monotonic() - started
        if on_tick:
            on_tick(elapsed)
        if elapsed > timeout:
            raise StageFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def _metric_sum(text: str, name: str) -> float:
    """Sum of every sample of one metric in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except (ValueError, IndexError):
                pass
    return total


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# --- the registry: aliases in MLflow and in the serving export --------------------------------
class Registry:
    """The two places an alias lives locally: the MLflow model registry (REST) and the
    serving export the model servers and stream workers read."""

    def __init__(self, mlflow_url: str, root: Path):
        self.mlflow_url, self.root = mlflow_url.rstrip("/"), root

    def aliases(self, model: str) -> dict[str, str]:
        from workloads.serving import registry

        return registry.read_aliases(self.root, model)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        from workloads.serving import registry

        code, body, _ = _http("POST", f"{self.mlflow_url}/api/2.0/mlflow/registered-models/alias",
                              {"name": model, "alias": alias, "version": str(version)})
        if code != 200:
            raise StageFailed(f"MLflow refused alias {model}@{alias} -> v{version}: {code} {body}")
        registry.set_alias(self.root, model, alias, str(version))

    def versions(self, model: str) -> list[str]:
        folder = self.root / model / "versions"
        return sorted((p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=int) \
            if folder.is_dir() else []

    def mlflow_versions(self, model: str) -> list[dict]:
        query = urllib.parse.urlencode({"filter": f"name='{model}'"})
        code, body, _ = _http("GET", f"{self.mlflow_url}/api/2.0/mlflow/model-versions/search?{query}")
        return body.get("model_versions", []) if code == 200 and isinstance(body, dict) else []


# --- sample data --------------------------------------------------------------------------------
def sample_rows(spec: Any, rows: int, seed: int, drift: tuple = ()) -> tuple[list[str], np.ndarray]:
    """(feature names, rows) like the model's training data; `drift` shifts synthetic features."""
    from workloads.data.dataset import load_uri, parse_uri

    scheme, location, query = parse_uri(spec.training.data)
    if scheme == "synthetic" and location == "fraud":
        from workloads.data.synthetic import FRAUD_NAMES, FraudConfig, generate_fraud

        x, _ = generate_fraud(FraudConfig(rows=rows, seed=seed, drift=drift))
        return list(FRAUD_NAMES), x
    if drift:
        raise ValueError(f"{spec.name}: drift injection needs a synthetic data source, not {spec.training.data}")
    data = load_uri(spec.training.data, seed=seed)
    pick = np.random.default_rng(seed).integers(0, data.features.shape[0], size=rows)
    return list(data.names), data.features[pick]


# --- the run ------------------------------------------------------------------------------------
class Demo:
    def __init__(self, supervisor: Supervisor, settings: DemoSettings = DemoSettings(), console: Console | None = None):
        self.sup = supervisor
        self.settings = settings
        self.console = console or Console()
        catalog = workload_catalog()
        known = [s.name for s in catalog]
        unknown = [m for m in settings.models if m not in known]
        if unknown:
            raise LocalError(f"--demo-model {', '.join(unknown)}: not an example model; examples: {', '.join(known)}")
        self.catalog = catalog
        self.specs = [s for s in catalog if not settings.models or s.name in settings.models]
        self.streaming = [s for s in self.specs if s.serving.streaming.enabled]
        self.ctx = supervisor.context("demo")
        self.env = {**os.environ, **workload_env(self.ctx)}
        self.registry = Registry(f"http://{HOST}:{self.sup.port('mlflow')}", registry_root(self.ctx))
        self.facts: dict[str, Any] = {"models": [s.name for s in self.specs]}
        self.samples: dict[str, tuple[list[str], np.ndarray]] = {}
        self.run_id = f"{int(time.time())}"
        self.report_dir = supervisor.state_dir / "report"
        self.progress: Progress | None = None
        self._challenger: dict[str, Any] | None = None
        self.gold_data: dict[str, str] = {}  # model -> the lake://gold URI its champion trains from
        # model -> the entities (e.g. card ids) with online features in Redis, read after the data stage
        self.online_entities: dict[str, list[str]] = {}

    # -- plumbing ---------------------------------------------------------------------------------
    def stages(self) -> list[tuple[str, str, Callable[[Any], str]]]:
        return [
            ("services", "start the local services", self.stage_services),
            ("data", "transactions -> PostgreSQL -> CDC -> lake gold", self.stage_data),
            ("train", "train + register the example models", self.stage_train),
            ("serve", "serve the champions behind the proxy", self.stage_serve),
            ("stream", "stream synthetic transactions through Kafka", self.stage_stream),
            ("traffic", "real-time traffic through the proxy", self.stage_traffic),
            ("canary", "canary of a challenger (rollout controller)", self.stage_canary),
            ("drift", "inject drift -> page -> retrain", self.stage_drift),
            ("report", "summary + HTML report", self.stage_report),
        ]

    def log(self, message: str) -> None:
        self.console.print(f"    {message}", highlight=False)

    def url(self, key: str, path: str = "") -> str:
        return f"http://{HOST}:{self.sup.port(key)}{path}"

    def run(self) -> DemoOutcome:
        started_wall, started = time.time(), time.monotonic()
        self.facts["started_at"] = started_wall
        results: list[StageResult] = []
        self._results = results
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False, refresh_per_second=4) as progress:
            self.progress = progress
            for name, title, fn in self.stages():
                task = progress.add_task(f"[bold]{name}[/]: {title}", total=None)
                t0 = time.monotonic()
                try:
                    detail = fn(task) or "ok"
                    ok = True
                except (StageFailed, LocalError) as error:
                    detail, ok = str(error), False
                except Exception as error:  # noqa: BLE001 - any failure stops the demo with its reason
                    log = self.sup.state_dir / "logs" / "demo.log"
                    with open(log, "a") as out:
                        out.write(f"--- stage {name} failed at {time.strftime('%H:%M:%S')}\n{traceback.format_exc()}\n")
                    detail, ok = f"{type(error).__name__}: {error} (traceback: {log})", False
                seconds = time.monotonic() - t0
                results.append(StageResult(name, ok, seconds, detail))
                mark = "[green]✔[/]" if ok else "[red]✘[/]"
                short = detail.splitlines()[0][:90] if detail else ""
                progress.update(task, description=f"{mark} [bold]{name}[/]: {short}", total=1, completed=1)
                progress.stop_task(task)
                if not ok:
                    break
        ok = all(r.ok for r in results) and len(results) == len(self.stages())
        outcome = DemoOutcome(ok, results, self.summary_rows(), self.facts.get("report"), time.monotonic() - started,
                              self.facts)
        self._write_json(outcome)
        return outcome

    def _write_json(self, outcome: DemoOutcome) -> None:
        self.report_dir.mkdir(parents=True, exist_ok=True)
        data = {"ok": outcome.ok, "wall_s": outcome.wall_s, "stages": [asdict(s) for s in outcome.stages],
                "summary": dict(outcome.summary), "report": outcome.report, "facts": self.facts}
        (self.report_dir / "demo.json").write_text(json.dumps(data, indent=2, default=str))

    def _task(self, task: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(task, **kwargs)

    def _services_event(self, task: Any) -> Callable[[str, str, str], None]:
        def on_event(service: str, phase: str, message: str) -> None:
            if phase in ("healthy", "already"):
                self._task(task, advance=1)
            if phase in ("healthy", "already", "restart", "error", "warning"):
                self.log(f"{service}: {message[:120]}")
        return on_event

    def _restart_if_configured_otherwise(self, names: list[str]) -> None:
        """A service left running by an earlier `strata local up` with other settings (a
        drift monitor evaluating every 15 s, a retrain trigger without the smoke caps)
        would stretch the demo: stop it, so `up` starts it with the demo's command."""
        for name in self.sup.registry.closure(names):
            record = self.sup.record(name)
            if record is None or not record.leader_alive():
                continue
            try:
                wanted = self.sup.registry[name].command(self.sup.context(name, record.ports))
            except LocalError:
                continue
            if wanted != record.command:
                self.log(f"{name}: running with other settings; restarting it with the demo's")
                self.sup.down([name])

    def _up(self, names: list[str], task: Any) -> None:
        self._restart_if_configured_otherwise(names)
        previous = self.sup.on_event
        self.sup.on_event = self._services_event(task)
        try:
            self.sup.up(names)
        finally:
            self.sup.on_event = previous

    # -- (a) services -----------------------------------------------------------------------------------
    def stage_services(self, task: Any) -> str:
        order = self.sup.registry.closure(BASE_SERVICES)
        self._task(task, total=len(order), completed=0)
        self._up(list(BASE_SERVICES), task)
        # Prometheus may have been started earlier without the demo's rule timings: the rule
        # file is rewritten and reloaded every time (same path the supervisor generates).
        rules = observability.write_rule_file(self.sup.state_dir / "config" / "prometheus" / "rules" / "strata-rules.yaml",
                                              self.catalog, DEMO_ALERT_FOR)
        code, body, _ = _http("POST", self.url("prometheus", "/-/reload"), b"")
        if code != 200:
            raise StageFailed(f"Prometheus did not reload {rules}: {code} {body}")
        return f"{len(order)} services healthy"

    # -- (a2) data ---------------------------------------------------------------------------------------
    def stage_data(self, task: Any) -> str:
        from workloads.data.ingest.pipeline import streaming_view_problems
        from workloads.data.lake.contract import Contract
        from workloads.local.cdc_sink import local_pipeline
        from workloads.data.storage import S3Settings
        from workloads.local.demo_lake import LAKE_SERVICES, MODEL, LakeStageSettings, run_lake_stage
        from workloads.training.hooks import load_hooks

        spec = next((s for s in self.specs if s.name == MODEL), None)
        if spec is None:
            return f"skipped: the CDC source is {MODEL}'s and {MODEL} is not in this demo"
        self._task(task, total=len(self.sup.registry.closure(LAKE_SERVICES)) + 1, completed=0)
        self._up(list(LAKE_SERVICES), task)
        contract = Contract(load_hooks(spec.training.entrypoint).feature_schema, key=spec.training.data_key)
        # the pipeline's streaming features serve the specs' online view of the same name: they must agree
        problems = streaming_view_problems([local_pipeline()], self.specs)
        if problems:
            raise StageFailed("; ".join(f"the local CDC pipeline's {path}: {message}" for path, message in problems))
        settings = LakeStageSettings(wait_s=min(180.0, self.settings.stage_timeout_s),
                                     max_invalid_fraction=spec.training.baseline.max_invalid_row_fraction)
        try:
            data = run_lake_stage(self.sup, contract, S3Settings.from_env(self.env), settings, log=self.log)
        except RuntimeError as error:  # LakeStageError, LakeError, ContractError: the reason as it is
            raise StageFailed(f"{type(error).__name__}: {error}") from error
        self.facts["data"] = data.to_dict()
        self.facts["data"]["report_rows"] = data.report_rows()
        self.gold_data[MODEL] = data.gold_uri
        self.online_entities[MODEL] = self._online_entities(spec)
        self._task(task, advance=1)
        return (f"{data.source_rows} source rows -> gold v{data.versions['gold']} ({data.gold_rows} rows); "
                f"{data.ingest_rows_per_s:.0f} events/s, lag p99 {data.lag_p99_s:.2f}s, "
                f"quarantine {data.quarantine_rate:.2%}; card aggregates online p99 {data.freshness_p99_s:.2f}s")

    def _online_entities(self, spec: Any) -> list[str]:
        """The entity ids of the spec's (single-key) online view that Redis holds values for:
        what the traffic stage names in its requests, so the servers look their features up."""
        import redis

        from workloads.catalogue.declarations import feature_plan

        plan = feature_plan(spec)
        if plan is None:
            return []
        from workloads.data.features.lookup import PREFIX

        view = plan.views[0]
        if len(view.join_keys) != 1:
            raise StageFailed(f"{spec.name}: view {view.name!r} has join keys {view.join_keys}; the demo names one key")
        prefix = f"{PREFIX}:{view.name}:"  # the online layout (workloads.data.features.lookup)
        client = redis.Redis.from_url(self.sup.url("redis"))
        try:
            entities = sorted(k.decode().removeprefix(prefix) for k in client.scan_iter(match=prefix + "*", count=1000))
        finally:
            client.close()
        if not entities:
            raise StageFailed(f"{spec.name}: no entity of view {view.name!r} in Redis ({prefix}*) after the data stage")
        self.log(f"{spec.name}: {len(entities)} entities of view {view.name} online; requests carry "
                 f"{', '.join(plan.key_fields)} and the raw fields only")
        return entities

    def _check_trained_on_gold(self, model: str, summary: dict[str, Any]) -> None:
        """The run must record the gold version and digest it trained on (reproducible runs)."""
        data = self.facts["data"]
        code, body, _ = _http("GET", self.url("mlflow", f"/api/2.0/mlflow/runs/get?run_id={summary['runId']}"))
        tags = {t["key"]: t["value"] for t in (body.get("run", {}).get("data", {}).get("tags", []) if code == 200 else [])}
        want = {"strata.lake.table": f"gold/{data['table']}", "strata.lake.version": str(data["versions"]["gold"]),
                "strata.lake.digest": data["gold_digest"]}
        wrong = {k: tags.get(k) for k, v in want.items() if tags.get(k) != v}
        if wrong:
            raise StageFailed(f"{model}: MLflow run {summary['runId']} does not record the gold data it was given "
                              f"({data['gold_uri']}): {wrong}")
        self.facts.setdefault("trained_on_gold", {})[model] = summary["runId"]

    # -- (b) train ---------------------------------------------------------------------------------------
    def train(self, model: str, extra: tuple[str, ...] = (), label: str = "") -> dict[str, Any]:
        """`strata train MODEL --local` + TRAIN_ARGS against the local MLflow; its JSON summary."""
        log = self.sup.state_dir / "logs" / f"demo-train-{model}{label}.log"
        argv = [self.ctx.python, "-m", "infra.cli", "train", model, "--local", *TRAIN_ARGS, *extra, "--json"]
        with open(log, "ab") as err:
            proc = subprocess.run(argv, env=self.env, stdout=subprocess.PIPE, stderr=err, cwd=str(self.ctx.repo_root),
                                  timeout=self.settings.stage_timeout_s)
        lines = [ln for ln in proc.stdout.decode("utf-8", "replace").splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:] if log.exists() else []
            raise StageFailed(f"`{' '.join(argv[2:])}` exited {proc.returncode}; log: {log}"
                              + (f"; last line: {tail[0][:300]}" if tail else ""))
        summary = json.loads(lines[-1])
        if not summary.get("registeredVersion"):
            raise StageFailed(f"{model}: trained but not registered: gate {summary.get('gate', {}).get('reason')}; log: {log}")
        return summary

    def stage_train(self, task: Any) -> str:
        self._task(task, total=len(self.specs), completed=0)
        done = []
        for spec in self.specs:
            aliases = self.registry.aliases(spec.name)
            if "champion" in aliases:
                version, how = aliases["champion"], "reused"
            elif "challenger" in aliases:
                version, how = aliases["challenger"], "reused, promoted to champion (first version)"
                self.registry.set_alias(spec.name, "champion", version)
            else:
                self._task(task, description=f"[bold]train[/]: {spec.name} (Ray Train, smoke settings)")
                t0 = time.monotonic()
                gold = self.gold_data.get(spec.name)
                summary = self.train(spec.name, self._gold_args(spec.name))
                if gold:
                    self._check_trained_on_gold(spec.name, summary)
                version = summary["registeredVersion"]
                metric = spec.training.baseline.primary_metric.removeprefix("val_")
                value = (summary.get("holdout", {}).get("candidate") or {}).get(f"holdout_{metric}")
                how = f"trained in {time.monotonic() - t0:.0f}s" + (f", holdout {metric} {value:.3f}" if value is not None else "")
                self.registry.set_alias(spec.name, "champion", version)  # first version: nothing to canary against
            self.facts.setdefault("champion", {})[spec.name] = version
            self.log(f"{spec.name}: champion v{version} ({how})")
            done.append(f"{spec.name} v{version}")
            self._task(task, advance=1)
        self._start_challenger()
        return "champions: " + ", ".join(done)

    def _gold_args(self, model: str) -> tuple[str, ...]:
        """`strata train` overrides that train on this run's gold version: smoke training on a few
        thousand rows in batches of 128, as many optimiser steps as 20k synthetic rows in batches of 512."""
        gold = self.gold_data.get(model)
        return ("--set", f"training.data={gold}", "--set", f"training.batchSize={GOLD_BATCH_SIZE}") if gold else ()

    def canary_spec(self) -> Any | None:
        """The model the canary stage rolls out: the first one whose spec says canary."""
        return next((s for s in self.specs if s.serving.rollout.strategy.value == "canary"), None)

    def _start_challenger(self) -> None:
        """Train the canary's challenger in the background while the servers and the stream
        start (the traffic stage waits for it, so its measurements are not shared with it)."""
        spec = self.canary_spec()
        if spec is None:
            return
        aliases = self.registry.aliases(spec.name)
        if aliases.get("challenger") and aliases["challenger"] != aliases.get("champion"):
            return  # one is waiting already: the canary stage reuses it
        job: dict[str, Any] = {}

        def train() -> None:
            try:
                init_seed = ("--set", f"training.initSeed={spec.training.weights_seed + 1}")
                job["summary"] = self.train(spec.name, self._gold_args(spec.name) + init_seed, "-challenger")
            except Exception as error:  # noqa: BLE001 - reported by the canary stage
                job["error"] = error

        job["thread"] = threading.Thread(target=train, name=f"challenger-{spec.name}", daemon=True)
        job["thread"].start()
        self._challenger = job
        self.log(f"{spec.name}: training a challenger in the background (init seed {spec.training.weights_seed + 1})")

    def _challenger_version(self, spec: Any, task: Any = None) -> str:
        job = self._challenger
        if job is None:
            aliases = self.registry.aliases(spec.name)
            if aliases.get("challenger") and aliases["challenger"] != aliases.get("champion"):
                self.log(f"{spec.name}: challenger v{aliases['challenger']} already registered (reused)")
                return aliases["challenger"]
            self._start_challenger()
            job = self._challenger
        if task is not None:
            self._task(task, description=f"[bold]canary[/]: waiting for the {spec.name} challenger's training")
        job["thread"].join(self.settings.stage_timeout_s)
        if job["thread"].is_alive():
            raise StageFailed(f"the {spec.name} challenger did not finish training in {self.settings.stage_timeout_s:.0f}s")
        if "error" in job:
            raise job["error"]
        version = job["summary"]["registeredVersion"]
        self.log(f"{spec.name}: challenger v{version} registered")
        return version

    # -- (c) serve ---------------------------------------------------------------------------------------
    def router(self) -> Any:
        from workloads.traffic.local_proxy import LocalProxyRouter

        return LocalProxyRouter(self.sup.state_dir)

    def sample(self, spec: Any) -> tuple[list[str], np.ndarray]:
        if spec.name not in self.samples:
            self.samples[spec.name] = sample_rows(spec, 2000, seed=101)
        return self.samples[spec.name]

    def predict(self, model: str, names: list[str], rows: np.ndarray, timeout: float = 10.0) -> tuple[int, Any, dict]:
        body = {"data": {"names": names, "ndarray": np.asarray(rows, dtype=float).tolist()}}
        return _http("POST", self.url("proxy", f"/{model}/api/v1.0/predictions"), body, timeout)

    def raw_records(self, spec: Any, names: list[str], rows: Any, rng: random.Random) -> tuple[list[dict], int]:
        """Named records with the raw fields and the view's key only: the server looks the view's
        features up. Known entities mostly; UNKNOWN_ENTITY_SHARE of the records name an entity
        Redis has never seen (served the view's defaults). Returns (records, unknown count)."""
        from workloads.catalogue.declarations import feature_plan

        plan = feature_plan(spec)
        online = set(plan.feature_names)
        known = self.online_entities[spec.name]
        records, unknown = [], 0
        for row in rows:
            record = {n: float(v) for n, v in zip(names, row) if n not in online}
            if rng.random() < UNKNOWN_ENTITY_SHARE:
                entity, unknown = f"demo-unknown-{rng.randrange(10**9)}", unknown + 1
            else:
                entity = known[rng.randrange(len(known))]
            record.update({key: entity for key in plan.key_fields})
            records.append(record)
        return records, unknown

    def online_keys(self, spec: Any) -> list[str]:
        from workloads.catalogue.declarations import feature_plan

        return feature_plan(spec).key_fields

    def enriched(self, spec: Any) -> bool:
        """Whether requests to this model carry raw fields only (its online entities are known)."""
        return bool(self.online_entities.get(spec.name))

    def predict_raw(self, model: str, records: list[dict], timeout: float = 10.0) -> tuple[int, Any, dict]:
        return _http("POST", self.url("proxy", f"/{model}/api/v1.0/predictions"), {"jsonData": {"instances": records}}, timeout)

    def feature_lookups(self, spec: Any) -> dict[str, float]:
        """outcome -> lookups of the model's online views, as Prometheus has scraped them from its servers."""
        return {r["metric"].get("outcome", "?"): float(r["value"][1]) for r in self.prom(
            f'sum by (outcome) (strata_feature_lookups_total{{model="{spec.name}"}})')}

    def stage_serve(self, task: Any) -> str:
        names = [f"{s.name}-stable" for s in self.specs]
        self._task(task, total=len(names), completed=0)
        self._up(names, task)
        router = self.router()
        router.refresh()
        for spec in self.specs:
            router.apply(router.current(spec.name))  # the split in force (all stable on a fresh state dir)
            cols, rows = self.sample(spec)
            if self.enriched(spec):
                records, _ = self.raw_records(spec, cols, rows[:4], random.Random(7))
                code, body, headers = self.predict_raw(spec.name, records)
            else:
                code, body, headers = self.predict(spec.name, cols, rows[:4])
            if code != 200:
                raise StageFailed(f"{spec.name} through the proxy: {code} {str(body)[:300]}")
            self.log(f"{spec.name}: {self.url('proxy', f'/{spec.name}/api/v1.0/predictions')} -> 200 "
                     f"(predictor {headers.get('X-Strata-Predictor', '?')})")
        return f"{len(names)} model servers behind {self.url('proxy')}"

    # -- (d) stream ---------------------------------------------------------------------------------------
    def _worker_metrics(self, spec: Any) -> str:
        port = self.sup.record(f"{spec.name}-stream").ports
        code, body, _ = _http("GET", f"http://{HOST}:{next(iter(port.values()))}/metrics", timeout=5)
        return body if code == 200 and isinstance(body, str) else ""

    def produce(self, spec: Any, messages: int, seed: int, drift: tuple = (), task: Any = None) -> float:
        """Synthetic transactions to the model's input topic at `stream_rate`; returns seconds."""
        from kafka import KafkaProducer

        from workloads.streaming.topics import topics_for

        names, rows = sample_rows(spec, messages, seed=seed, drift=drift)
        producer = KafkaProducer(bootstrap_servers=self.sup.kafka_bootstrap, acks="all", linger_ms=5,
                                 value_serializer=lambda v: json.dumps(v).encode(), key_serializer=str.encode)
        topic = topics_for(spec.name).input
        t0 = time.monotonic()
        try:
            for i, row in enumerate(rows):
                key = f"demo-{self.run_id}-{seed}-{i}"
                producer.send(topic, key=key, value={"id": key, "features": dict(zip(names, map(float, row)))})
                if i % 100 == 99:
                    if task is not None:
                        self._task(task, advance=100)
                    ahead = (i + 1) / self.settings.stream_rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            producer.flush(timeout=60)
        finally:
            producer.close(timeout=10)
        return time.monotonic() - t0

    def _consumed(self, spec: Any) -> float:
        return _metric_sum(self._worker_metrics(spec), "strata_stream_messages_consumed_total")

    def stage_stream(self, task: Any) -> str:
        if not self.streaming:
            return "no streaming model among " + ", ".join(s.name for s in self.specs)
        names = [n for s in self.streaming for n in (f"{s.name}-drift", f"{s.name}-stream", f"{s.name}-drift-feed")]
        self._up(names, task)
        n = self.settings.stream_messages
        self._task(task, total=n * len(self.streaming), completed=0)
        out = []
        for spec in self.streaming:
            # A window left drifted by an earlier run would page now, not when drift is injected.
            drift_port = next(iter(self.sup.record(f"{spec.name}-drift").ports.values()))
            _http("POST", f"http://{HOST}:{drift_port}/v1/reset", b"{}")
            before = self._consumed(spec)
            t0 = time.monotonic()
            self.produce(spec, n, seed=202, task=task)
            _wait(lambda: self._consumed(spec) - before >= n, self.settings.stage_timeout_s,
                  f"{spec.name}-stream to score {n} messages (log: {self.sup.log_path(spec.name + '-stream')})", 0.5)
            seconds = time.monotonic() - t0
            report = self._drift_report(spec)
            psi = max((f["psi"] for f in report["features"].values()), default=float("nan"))
            # Lag as the worker reports it now (a Prometheus sample may be one scrape old).
            lag = _metric_sum(self._worker_metrics(spec), "strata_stream_consumer_lag_messages")
            self.facts.setdefault("stream", {})[spec.name] = {
                "messages": n, "seconds": seconds, "msgs_per_s": n / seconds, "lag": lag, "psi_before": psi,
                "psi_threshold": spec.drift.psi_threshold}
            out.append(f"{spec.name}: {n} scored in {seconds:.1f}s, max PSI {psi:.3f}")
            self.log(out[-1])
        return "; ".join(out)

    def _drift_report(self, spec: Any) -> dict | None:
        record = self.sup.record(f"{spec.name}-drift")
        port = next(iter(record.ports.values()))
        # The feed posts asynchronously: wait until the window has the rows, then evaluate.
        def evaluated() -> dict | None:
            code, body, _ = _http("POST", f"http://{HOST}:{port}/v1/evaluate", b"{}", timeout=30)
            return body.get("report") if code == 200 and isinstance(body, dict) else None
        return _wait(evaluated, 60, f"{spec.name}-drift to evaluate a window", 1.0)

    # -- Prometheus ----------------------------------------------------------------------------------------
    def prom(self, expr: str) -> list[dict]:
        query = urllib.parse.urlencode({"query": expr})
        code, body, _ = _http("GET", self.url("prometheus", f"/api/v1/query?{query}"), timeout=15)
        if code != 200 or not isinstance(body, dict):
            return []
        return body.get("data", {}).get("result", [])

    def prom_value(self, expr: str) -> float:
        result = self.prom(expr)
        return float(result[0]["value"][1]) if result else float("nan")

    # -- (e) traffic ------------------------------------------------------------------------------------------
    def load(self, specs: list[Any], seconds: float, clients: int, task: Any = None,
             stop: threading.Event | None = None) -> dict[str, Any]:
        """Closed-loop clients through the proxy; 2% malformed requests (must be 4xx). A request the
        server sheds (503 with Retry-After: past its queue budget, the serving contract) is counted as
        shed, not as a 5xx, and its client waits as told (with jitter) before its next request."""
        deadline = time.monotonic() + seconds
        lock = threading.Lock()
        stats: dict[str, Any] = {"latencies": [], "codes": {}, "errors": [], "bad_4xx": 0, "bad_sent": 0, "shed": 0,
                                 "predictors": {}, "raw_requests": {}, "unknown_entities": {}}

        def client(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline and not (stop and stop.is_set()):
                spec = specs[rng.randrange(len(specs))]
                cols, rows = self.sample(spec)
                malformed = rng.random() < 0.02
                row = rows[rng.randrange(len(rows))].tolist()
                raw = self.enriched(spec)
                records, unknown = self.raw_records(spec, cols, [row], rng) if raw else ([], 0)
                t0 = time.perf_counter()
                try:
                    if malformed and raw and rng.random() < 0.5:  # the view's key missing: 400 missing_field
                        records = [{k: v for k, v in r.items() if k not in self.online_keys(spec)} for r in records]
                        code, _, headers = self.predict_raw(spec.name, records)
                    elif malformed:
                        body = {"data": {"names": cols[:-1], "ndarray": [row[:-1]]}}  # a missing field
                        code, _, headers = _http("POST", self.url("proxy", f"/{spec.name}/api/v1.0/predictions"), body)
                    elif raw:
                        code, _, headers = self.predict_raw(spec.name, records)
                    else:
                        code, _, headers = self.predict(spec.name, cols, [row])
                except (OSError, urllib.error.URLError) as error:
                    with lock:
                        stats["errors"].append(repr(error))
                    continue
                elapsed = time.perf_counter() - t0
                retry_after = _retry_after(code, headers)
                if retry_after is not None:
                    with lock:
                        stats["shed"] += 1
                    time.sleep(min(retry_after * rng.uniform(1.0, 1.5), max(0.0, deadline - time.monotonic())))
                    continue
                with lock:
                    stats["codes"][code] = stats["codes"].get(code, 0) + 1
                    predictor = headers.get("X-Strata-Predictor", "?")
                    stats["predictors"][predictor] = stats["predictors"].get(predictor, 0) + 1
                    if malformed:
                        stats["bad_sent"] += 1
                        stats["bad_4xx"] += 400 <= code < 500
                    elif code == 200:
                        stats["latencies"].append(elapsed)
                    if raw and not malformed and code == 200:
                        stats["raw_requests"][spec.name] = stats["raw_requests"].get(spec.name, 0) + 1
                        stats["unknown_entities"][spec.name] = stats["unknown_entities"].get(spec.name, 0) + unknown

        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            futures = [pool.submit(client, i) for i in range(clients)]
            while not all(f.done() for f in futures):
                if task is not None:
                    self._task(task, completed=min(seconds, time.monotonic() - t0))
                time.sleep(0.25)
            for f in futures:
                f.result()
        elapsed = time.monotonic() - t0
        total = sum(stats["codes"].values())
        lat = stats["latencies"]
        stats.update(requests=total, seconds=elapsed, rps=total / elapsed if elapsed else 0.0,
                     p50_ms=_percentile(lat, 50) * 1000, p99_ms=_percentile(lat, 99) * 1000,
                     errors_5xx=sum(c for code, c in stats["codes"].items() if code >= 500))
        del stats["latencies"]
        return stats

    def stage_traffic(self, task: Any) -> str:
        spec = self.canary_spec()
        if spec is not None and self._challenger is not None:
            self._task(task, description="[bold]traffic[/]: waiting for the challenger's training to finish first")
            self._challenger_version(spec)
            self._task(task, description="[bold]traffic[/]: real-time traffic through the proxy")
        seconds = self.settings.traffic_seconds
        self._task(task, total=seconds, completed=0)
        stats = self.load(self.specs, seconds, self.settings.traffic_clients, task)
        time.sleep(6)  # one more scrape of the servers' counters
        server_p99 = self.prom(
            "histogram_quantile(0.99, sum by (model, le) (rate(strata_serving_request_duration_seconds_bucket[1m])))")
        stats["server_p99_ms"] = {r["metric"].get("model", "?"): float(r["value"][1]) * 1000 for r in server_p99}
        stats["feature_lookups"] = {}
        for enriched in [s for s in self.specs if stats["raw_requests"].get(s.name)]:
            # the servers looked the features up: hits for known entities, defaults for the unknown ones
            unknown = stats["unknown_entities"].get(enriched.name, 0)
            lookups = _wait(lambda: (lambda c: c if c.get("hit", 0) > 0 and c.get("default", 0) >= min(unknown, 1)
                                     else None)(self.feature_lookups(enriched)), 60,
                            f"{enriched.name}'s servers to count feature lookups (strata_feature_lookups_total: hits, "
                            f"and defaults for {unknown} unknown entities)", 2.0)
            stats["feature_lookups"][enriched.name] = lookups
        self.facts["traffic"] = stats
        if stats["errors"] or stats["errors_5xx"]:
            raise StageFailed(f"{stats['errors_5xx']} 5xx answers and {len(stats['errors'])} connection errors "
                              f"(first: {stats['errors'][:1]}); codes {stats['codes']}")
        if stats["bad_4xx"] != stats["bad_sent"]:
            raise StageFailed(f"{stats['bad_sent'] - stats['bad_4xx']} of {stats['bad_sent']} malformed requests were not answered 4xx")
        looked_up = "; ".join(f"{m}: {sum(c.values()):.0f} feature lookups ({c.get('hit', 0):.0f} hits, "
                              f"{c.get('default', 0):.0f} defaults)" for m, c in stats["feature_lookups"].items())
        return (f"{stats['requests']} requests, {stats['rps']:.0f} req/s, p99 {stats['p99_ms']:.0f} ms (client), "
                f"{stats['bad_sent']} malformed -> 4xx, 0 5xx"
                + (f", {stats['shed']} shed (503 + Retry-After, retried)" if stats["shed"] else "")
                + (f"; {looked_up}" if looked_up else ""))

    # -- (f) canary ------------------------------------------------------------------------------------------
    def stage_canary(self, task: Any) -> str:
        spec = self.canary_spec()
        if spec is None:
            raise StageFailed("no demo model has a canary rollout strategy: " + ", ".join(s.name for s in self.specs))
        aliases = self.registry.aliases(spec.name)
        version = self._challenger_version(spec, task)
        self.facts["canary"] = {"model": spec.name, "challenger": version, "champion": aliases.get("champion")}
        self._task(task, description=f"[bold]canary[/]: serving {spec.name}@challenger in the candidate slot")
        self._up([f"{spec.name}-candidate"], task)
        self.router().refresh()
        decision = run_canary(self, spec, version, task)
        self.facts["canary"].update(decision)
        return f"{spec.name} v{version}: {decision.get('decision')} ({decision.get('reason', '')})"

    # -- (g) drift -------------------------------------------------------------------------------------------
    def pages(self) -> list[dict]:
        path = self.sup.pagerduty_events_file
        if not path.exists():
            return []
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]

    def retrains(self) -> dict:
        code, body, _ = _http("GET", self.url("retrain-trigger", "/v1/retrains"), timeout=5)
        return body if code == 200 and isinstance(body, dict) else {}

    def stage_drift(self, task: Any) -> str:
        if not self.streaming:
            raise StageFailed("drift injection needs a streaming model; none among " + ", ".join(s.name for s in self.specs))
        spec = self.streaming[0]
        timeout = self.settings.stage_timeout_s
        pages_before = len(self.pages())
        started_before = self.retrains().get(spec.name, {}).get("started", 0)
        versions_before = set(self.registry.versions(spec.name))
        self._task(task, total=self.settings.drift_messages, completed=0,
                   description=f"[bold]drift[/]: drifted transactions -> strata.{spec.name}.input")
        injected = time.monotonic()
        self.produce(spec, self.settings.drift_messages, seed=303, drift=DRIFT, task=task)

        def drift_page() -> dict | None:
            for page in self.pages()[pages_before:]:
                event = page.get("event", {})
                details = event.get("payload", {}).get("custom_details", {})
                if (event.get("event_action") == "trigger" and details.get("model") == spec.name
                        and details.get("alertname") == "ModelFeatureDrift"):
                    return page
            return None

        self._task(task, description=f"[bold]drift[/]: waiting for the ModelFeatureDrift page (for: {DEMO_ALERT_FOR})")
        page = _wait(drift_page, timeout, f"the ModelFeatureDrift page of {spec.name} at the local PagerDuty receiver "
                     f"({self.sup.pagerduty_events_file}); alerts: {self.url('prometheus', '/alerts')}", 1.0)
        to_page = time.monotonic() - injected
        psi_after = self.prom_value(f'max(strata_drift_feature_psi{{model="{spec.name}"}})')
        self.log(f"paged after {to_page:.0f}s: {page['event']['payload']['summary'][:100]}")

        self._task(task, description=f"[bold]drift[/]: waiting for the triggered retrain of {spec.name}")
        status = _wait(lambda: (s := self.retrains().get(spec.name, {})) and s.get("started", 0) > started_before
                       and not s.get("running") and s, timeout,
                       f"the retrain of {spec.name} (trigger: {self.url('retrain-trigger', '/v1/retrains')}, "
                       f"logs: {self.sup.state_dir / 'logs' / 'retrains'})", 2.0)
        if status.get("last_exit_code") != 0:
            raise StageFailed(f"the retrain of {spec.name} exited {status.get('last_exit_code')}; "
                              f"logs: {self.sup.state_dir / 'logs' / 'retrains'}")
        new = sorted(set(self.registry.versions(spec.name)) - versions_before, key=int)
        if not new:
            raise StageFailed(f"the retrain of {spec.name} finished but registered no new version (gate refused it?); "
                              f"logs: {self.sup.state_dir / 'logs' / 'retrains'}")
        retrain_s = time.monotonic() - injected
        mlflow_versions = {v.get("version") for v in self.registry.mlflow_versions(spec.name)}
        self.facts["drift"] = {"model": spec.name, "to_page_s": to_page, "psi_after": psi_after,
                               "page": page["event"]["payload"]["summary"], "retrain_version": new[-1],
                               "retrain_in_mlflow": new[-1] in mlflow_versions, "to_retrained_s": retrain_s,
                               "retrain_reason": status.get("last_reason")}
        return (f"max PSI {psi_after:.2f}; paged after {to_page:.0f}s; retrain ({status.get('last_reason')}) "
                f"registered {spec.name} v{new[-1]} {retrain_s:.0f}s after injection")

    # -- (h) report ------------------------------------------------------------------------------------------
    def summary_rows(self) -> list[tuple[str, str]]:
        f = self.facts
        rows = [("MLflow UI", self.url("mlflow")), ("Prometheus", self.url("prometheus")),
                ("Alertmanager", self.url("alertmanager")), ("Proxy", self.url("proxy") + "/<model>/api/v1.0/predictions")]
        if "data" in f:
            d = f["data"]
            rows.append(("lake (CDC -> gold)", f"{d['gold_uri']}: {d['gold_rows']} rows; {d['ingest_rows_per_s']:.0f} "
                                               f"events/s, lag p99 {d['lag_p99_s']:.2f} s, quarantine "
                                               f"{d['quarantine_rate']:.2%}"))
        if "champion" in f:
            rows.append(("champions", ", ".join(f"{m} v{v}" for m, v in f["champion"].items())))
        if "traffic" in f:
            t = f["traffic"]
            server = ", ".join(f"{m} {v:.0f} ms" for m, v in sorted(t.get("server_p99_ms", {}).items()))
            rows += [("requests/s (proxy, client side)",
                      f"{t['rps']:.1f} ({t['requests']} requests, {self.settings.traffic_clients} clients)"),
                     ("p99 latency", f"{t['p99_ms']:.0f} ms client side; server side: {server or 'n/a'}"),
                     ("5xx / malformed -> 4xx", f"{t['errors_5xx']} / {t['bad_4xx']} of {t['bad_sent']}"
                                                + (f" ({t['shed']} shed with Retry-After, retried)" if t.get("shed") else ""))]
            for model, lookups in t.get("feature_lookups", {}).items():
                rows.append((f"online features {model}", f"{t['raw_requests'][model]} requests with raw fields and "
                             f"keys only; lookups {lookups.get('hit', 0):.0f} hit, {lookups.get('default', 0):.0f} "
                             f"default ({t['unknown_entities'][model]} unknown entities sent)"))
        for model, s in f.get("stream", {}).items():
            rows.append((f"stream {model}", f"{s['msgs_per_s']:.0f} msg/s end to end, lag {s['lag']:.0f}, "
                                            f"max PSI {s['psi_before']:.3f} {psi_verdict(s['psi_before'], s['psi_threshold'])}"))
        if "canary" in f:
            c = f["canary"]
            rows.append(("rollout decision", f"{c['model']} v{c.get('challenger')}: {c.get('decision', 'not decided')} "
                                             f"{c.get('reason', '')}".strip()))
        if "drift" in f:
            d = f["drift"]
            rows += [("drift", f"{d['model']}: max PSI {d['psi_after']:.2f} after injection"),
                     ("retraining", f"{d['model']} v{d['retrain_version']} registered ({d['to_retrained_s']:.0f}s after injection)")]
        pages = [p for p in self.pages() if p.get("event", {}).get("event_action") == "trigger"] if self.sup.pagerduty_events_file.exists() else []
        if pages or "drift" in f:
            names = sorted({p["event"].get("payload", {}).get("custom_details", {}).get("alertname", "?") for p in pages})
            rows.append(("pages received", f"{len(pages)} ({', '.join(names)})"
                         + (f"; drift paged {f['drift']['to_page_s']:.0f}s after injection" if "drift" in f else "")))
        if "report" in f:
            rows.append(("HTML report", f["report"]))
        return rows

    def stage_report(self, task: Any) -> str:
        from workloads.local.report import render_report

        self._task(task, total=1, completed=0)
        end = time.time()
        stage_rows = [(r.name, r.ok, r.seconds, r.detail) for r in self._results_so_far()]
        sections = []
        if "data" in self.facts:
            sections.append(("Data: PostgreSQL -> Debezium CDC -> Kafka -> lake", self.facts["data"]["report_rows"]))
        path = render_report(self.url("prometheus"), self.facts["started_at"], end, self.specs, self.report_dir,
                             self.summary_rows(), stage_rows, sections=sections)
        self.facts["report"] = str(path)
        panels = json.loads((self.report_dir / "panels.json").read_text())
        drawn = sum(1 for p in panels if p["series"])
        self._task(task, completed=1)
        return f"{path} ({drawn} of {len(panels)} dashboard panels with data)"

    def _results_so_far(self) -> list[StageResult]:
        return list(getattr(self, "_results", []))


def psi_verdict(psi: float, threshold: float) -> str:
    """What a PSI says against the spec's threshold (said, not assumed)."""
    if psi != psi:  # NaN: no evaluated window
        return "(not evaluated)"
    return f"(< threshold {threshold:g}: no drift)" if psi < threshold else f"(>= threshold {threshold:g}: DRIFT)"


#: The demo's rollout timing: the spec's canary steps, each held for a short analysis window
#: with a minimum sample the demo's traffic reaches (the spec's 5m windows take 20 minutes).
DEMO_ROLLOUT = {"analysisWindow": "10s", "minRequestsPerStep": 30}


def demo_rollout_spec(spec: Any) -> Any:
    from workloads.spec import parse_model_spec

    raw = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["serving"]["rollout"].update(DEMO_ROLLOUT)
    return parse_model_spec(raw, f"{spec.name} (demo rollout timing)")


def run_canary(demo: Demo, spec: Any, version: str, task: Any) -> dict[str, Any]:
    """The canary of `spec`'s challenger, decided by the rollout controller on measured
    results (Prometheus, both predictors) while the demo sends traffic through the proxy."""
    try:
        from workloads.rollout.controller import RolloutError, plan
        from workloads.rollout.service import local_controller
        from workloads.rollout.state import Phase
    except ImportError as error:
        raise StageFailed(f"the rollout controller (workloads.rollout) is not importable: {error}") from None
    rollout_spec = demo_rollout_spec(spec)
    root = registry_root(demo.ctx)
    steps = plan(rollout_spec)
    demo._task(task, total=len(steps), completed=0,
               description=f"[bold]canary[/]: {spec.name} v{version}, steps {rollout_spec.serving.rollout.steps} "
                           f"x {DEMO_ROLLOUT['analysisWindow']}")
    decisions: list[Any] = []

    def on_decision(decision: Any) -> None:
        decisions.append(decision)
        demo._task(task, completed=min(len(steps), decision.step + (decision.outcome in ("promote", "rollback"))))
        demo.log(f"controller: {decision.outcome} at step {decision.step} ({decision.weight}% candidate): {decision.reason[:110]}")

    # The controller's own local wiring (proxy router, registry-export state, Prometheus arms,
    # alias-following stable server, decisions to decisions.jsonl + MLflow tags); its MLflow
    # sink reads MLFLOW_TRACKING_URI when it is built.
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = demo.url("mlflow")
    try:
        controller = local_controller(rollout_spec, root, demo.sup.state_dir, demo.url("prometheus"),
                                      actor="strata local up --demo", on_decision=on_decision)
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    stop = threading.Event()
    timeout = demo.settings.stage_timeout_s
    traffic: dict[str, Any] = {}
    loader = threading.Thread(target=lambda: traffic.update(demo.load([spec], timeout + 60, demo.settings.traffic_clients,
                                                                      stop=stop)), daemon=True)
    loader.start()
    t0 = time.monotonic()
    try:
        state = controller.run(force=True, timeout_s=timeout)
    except RolloutError as error:
        raise StageFailed(f"rollout controller: {error}") from None
    finally:
        stop.set()
        loader.join(timeout=30)
    seconds = time.monotonic() - t0
    outcome = {Phase.PROMOTED: "promoted", Phase.ROLLED_BACK: "rolled back"}.get(state.phase)
    if outcome is None:
        raise StageFailed(f"the canary of {spec.name} v{version} did not finish within {timeout:.0f}s "
                          f"(phase {state.phase.value}: {state.reason}); decisions: {root / spec.name}")
    if traffic.get("errors_5xx") or traffic.get("errors"):
        raise StageFailed(f"requests failed during the rollout: {traffic.get('errors_5xx')} 5xx, "
                          f"{len(traffic.get('errors', []))} connection errors ({traffic.get('errors', [])[:1]})")
    if state.phase is Phase.PROMOTED:
        # The stream worker and the drift monitor load the champion at start: follow it.
        follow_names = [n for n in (f"{spec.name}-stream", f"{spec.name}-drift") if demo.sup.record(n)]
        demo.sup.down(follow_names)
        demo.sup.up(follow_names)
    from workloads.traffic.state import unregister_upstream

    demo.sup.down([f"{spec.name}-candidate"])
    unregister_upstream(demo.sup.state_dir, spec.name, "candidate")
    demo.router().refresh()
    return {"decision": outcome, "reason": state.reason[:200], "seconds": seconds,
            "decisions": len(decisions), "requests_during": traffic.get("requests"),
            "predictors_during": traffic.get("predictors")}


def print_summary(console: Console, outcome: DemoOutcome) -> None:
    stages = Table(title="strata local demo: stages", title_justify="left")
    for col in ("stage", "result", "time", "detail"):
        stages.add_column(col, overflow="fold")
    for r in outcome.stages:
        stages.add_row(r.name, "[green]ok[/]" if r.ok else "[red]FAILED[/]", f"{r.seconds:.1f}s", r.detail)
    console.print(stages)
    summary = Table(title=f"strata local demo: summary ({outcome.wall_s:.0f}s)", title_justify="left")
    summary.add_column("what")
    summary.add_column("value", overflow="fold")
    for key, value in outcome.summary:
        summary.add_row(key, value)
    console.print(summary)
