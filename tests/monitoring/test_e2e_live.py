"""End to end on live workloads, all real processes on 127.0.0.1 with temp dirs and free ports:

    inputs -> Kafka (the session's real broker) -> stream worker (scores with the registered
    version) -> scored topic -> drift feed -> drift monitor (the version's shipped
    reference_profile.json)          scored + labels topics -> quality service
    REST requests -> Seldon model server          Node/Pod/Event JSON -> cost exporter
    MLflow run records -> training metrics exporter
    Prometheus (generated rules, 1 s scrape) scrapes all of them + the retraining trigger
    -> Alertmanager (generated config) -> the local PagerDuty Events v2 receiver
                                       -> the retraining webhook (exactly one retrain)

Injected drift in the stream makes ModelFeatureDrift fire; the time from injection to the
page is printed. Then every metric the committed dashboards query must have series in
Prometheus, scraped from these live /metrics.

Bounded: every wait has a deadline; the windows are small (3000 rows, 0.5 s evaluation,
`for: 2s`). Needs the serving environment (.venv-serving), prometheus and alertmanager.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring.conftest import (PYTHON, Processes, free_port, need, retrain_trigger_argv, wait_http,
                                      write_fast_alerting, wait_until)
from workloads.monitoring import metrics as contract
from workloads.monitoring import rules
from workloads.monitoring.generate import REPO_ROOT

WINDOW_ROWS = 3000
# Emitters whose live process this test does not run (the rollout controller runs on demand
# locally, not supervised). Their dashboard metrics are listed, not checked live.
# The online-feature metrics are checked live against the real server and stream worker by
# tests/features/test_enrichment.py (the servers here are started without a feature plan), the
# streaming aggregator's against real Kafka and Redis by tests/features/test_streaming_aggregates.py.
NOT_RUN_HERE = (contract.Emitter.ROLLOUT, contract.Emitter.FEATURES, contract.Emitter.FEATURE_AGGREGATES)
# Recorded series that are empty while a model serves no 5xx at all: the SLI rule divides
# `rate(...{code=~"5.."})` (no series) by the total, so the dashboard shows "No data"
# instead of 0. The fix belongs in rules.sli_group (`(errors or 0 * total) / total`); until
# then they are listed here, and the test says when they start to resolve.


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _post(url: str, body: object) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")




class LivePlatform:
    def __init__(self, tmp: Path, catalog, services, registry_root: Path, processes: Processes):
        from kafka import KafkaProducer
        from kafka.admin import KafkaAdminClient, NewTopic

        from tests.monitoring.test_cost_exporter import node, pod, write
        from tests.serving.conftest import start_server
        from workloads.serving import registry
        from workloads.serving.testing import fraud_schema

        self.tmp, self.processes, self.services, self.registry_root = tmp, processes, services, registry_root
        self.fraud = next(spec for spec in catalog if spec.name == "fraud")
        self.schema = fraud_schema()
        self.kafka = services.kafka_bootstrap
        run = uuid.uuid4().hex[:8]
        self.input, self.scored, self.dlq, self.labels = (f"live-{run}.{t}" for t in ("input", "scored", "dlq", "labels"))
        admin = KafkaAdminClient(bootstrap_servers=self.kafka, client_id="strata-test-admin")
        try:
            admin.create_topics([NewTopic(t, 2, 1) for t in (self.input, self.scored, self.dlq, self.labels)])
        finally:
            admin.close()
        self.producer = KafkaProducer(bootstrap_servers=self.kafka, acks="all", linger_ms=5)
        # Start consumers only once the broker serves the new topics' metadata: a consumer
        # that joins before would be assigned nothing until its next metadata refresh.
        for topic in (self.input, self.scored, self.labels):
            wait_until(lambda topic=topic: len(self.producer.partitions_for(topic) or ()) == 2, 30, f"metadata of {topic}")
        champion = registry.resolve(registry_root, "fraud", alias="champion")
        self.version = champion.version
        ports = {name: free_port() for name in ("worker", "drift", "quality", "cost", "retrain", "training", "prom",
                                                "am")}
        self.ports = ports
        team = self.fraud.team
        start = processes.start

        # the Seldon model server (its own environment) on the registered champion
        self.server = start_server(registry_root, tmp)
        # the stream worker, the drift feed and drift monitor, the quality service
        self.worker_argv = [PYTHON, "-m", "workloads.streaming", "--bootstrap", self.kafka, "--model", "fraud",
                                  "--registry", str(registry_root), "--input-topic", self.input,
                                  "--output-topic", self.scored, "--dead-letter-topic", self.dlq,
                                  "--group", f"w-{run}", "--team", team, "--metrics-port", str(ports["worker"]),
                                  "--batch-size", "200", "--session-timeout-ms", "6000",
                                  "--max-poll-interval-ms", "15000"]
        worker = self.start_worker()
        drift = start("drift", [PYTHON, "-m", "workloads.monitoring.drift_service", "--model", "fraud",
                                "--version", self.version, "--team", team,
                                "--profile", str(champion.path / registry.PROFILE), "--port", str(ports["drift"]),
                                "--interval", "0.5", "--min-rows", "500", "--window-rows", str(WINDOW_ROWS)])
        start("drift-feed", [PYTHON, "-m", "workloads.local.drift_feed", "--bootstrap", self.kafka, "--topic", self.scored,
                             "--model", "fraud", "--monitor", f"http://127.0.0.1:{ports['drift']}",
                             "--heartbeat", str(tmp / "feed.heartbeat"), "--registry", str(registry_root),
                             "--group", f"f-{run}", "--batch", "200"])
        quality = start("quality", [PYTHON, "-m", "workloads.monitoring.quality", "--bootstrap", self.kafka,
                                    "--model", "fraud", "--team", team, "--registry", str(registry_root),
                                    "--scored-topic", self.scored, "--labels-topic", self.labels,
                                    "--group", f"q-{run}", "--port", str(ports["quality"])])
        # the cost exporter on Node/Pod objects (a spot pool, a termination-handler taint)
        self.nodes_dir = tmp / "nodes"
        self.nodes_dir.mkdir()
        self.nodes = [node("n1", "cpu-spot", "spot", "m6i.xlarge",
                           taints=[{"key": "aws-node-termination-handler/spot-itn", "effect": "NoSchedule"}]),
                      node("n2", "system", "on-demand", "m6i.large")]
        self.pods = [pod("fraud-default-0", "n1", "fraud", team, "1", "2Gi", {"seldon-deployment-id": "fraud"})]
        write(self.nodes_dir, self.nodes, self.pods)
        cost = start("cost", [PYTHON, "-m", "workloads.monitoring.cost_exporter", "--from-json", str(self.nodes_dir),
                              "--port", str(ports["cost"]), "--interval", "0.5"])
        # the retraining trigger: its action records each start
        self.marker = tmp / "retrains.log"
        action = (f"{PYTHON} -c \"import sys,time; open(sys.argv[1],'a').write(sys.argv[2]+'\\n'); time.sleep(3)\" "
                  f"{self.marker} {{model}}")
        retrain_argv, retrain_env = retrain_trigger_argv(ports["retrain"], action, catalog)
        retrain = start("retrain", retrain_argv, env=retrain_env)
        # the training metrics exporter on MLflow's run records (a sqlite store: one finished run)
        from tests.monitoring.test_training_metrics import record_run

        tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
        from mlflow.tracking import MlflowClient

        record_run(MlflowClient(tracking_uri=tracking_uri), "fraud", team, "FINISHED", epochs=(1.0, 2.0), attempts=2)
        training = start("training", [PYTHON, "-m", "workloads.monitoring.training_metrics", "--port",
                                      str(ports["training"]), "--interval", "0.5",
                                      *(a for spec in catalog for a in ("--model", f"{spec.name}={spec.team}"))],
                         env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri})

        # Prometheus (generated rules, `for:` shortened) and Alertmanager (generated config)
        self.routing_key = f"live-{run}-{self.fraud.pagerduty.routing_key_name}"
        self.targets = {
            "serving": self.server.url.split("://", 1)[1], "streaming": f"127.0.0.1:{ports['worker']}",
            "drift": f"127.0.0.1:{ports['drift']}", "quality": f"127.0.0.1:{ports['quality']}",
            "cost": f"127.0.0.1:{ports['cost']}", "retrain": f"127.0.0.1:{ports['retrain']}",
            "training": f"127.0.0.1:{ports['training']}",
        }
        am_file, prom_file = write_fast_alerting(
            tmp, catalog, key_prefix=f"live-{run}-", pagerduty_url=services.pagerduty_events_url,
            retrain_url=f"http://127.0.0.1:{ports['retrain']}/v1/alertmanager", alertmanager_port=ports["am"],
            scrape_targets=self.targets)
        am_proc = start("alertmanager", [need("prometheus-alertmanager"), f"--config.file={am_file}",
                                         f"--storage.path={tmp / 'am-data'}", f"--web.listen-address=127.0.0.1:{ports['am']}",
                                         "--cluster.listen-address=", "--log.level=warn"])
        prom_proc = start("prometheus", [need("prometheus"), f"--config.file={prom_file}",
                                         f"--storage.tsdb.path={tmp / 'prom-data'}",
                                         f"--web.listen-address=127.0.0.1:{ports['prom']}", "--log.level=warn"])
        wait_http(f"http://127.0.0.1:{ports['drift']}/healthz", 60, drift)
        wait_http(f"http://127.0.0.1:{ports['quality']}/healthz", 60, quality)
        wait_http(f"http://127.0.0.1:{ports['cost']}/healthz", 60, cost)
        wait_http(f"http://127.0.0.1:{ports['retrain']}/healthz", 60, retrain)
        wait_http(f"http://127.0.0.1:{ports['training']}/healthz", 120, training)
        wait_http(f"http://127.0.0.1:{ports['am']}/-/ready", 60, am_proc)
        wait_http(f"http://127.0.0.1:{ports['prom']}/-/ready", 60, prom_proc)
        wait_http(f"http://127.0.0.1:{ports['worker']}/metrics", 120, worker)
        self.worker_restarts = 0
        if not self.worker_assigned(timeout=30):
            # kafka-python 3.0.12: a consumer whose first join found no metadata for the
            # topic ("No partition metadata") can stay unassigned after its rejoin; one
            # restart with a fresh member. Counted and printed, not hidden (see notes).
            self.worker_restarts += 1
            print("\nstream worker got no partitions in 30 s (stuck group join); restarting it once")
            self.processes.stop("worker")
            worker = self.start_worker()
            wait_http(f"http://127.0.0.1:{ports['worker']}/metrics", 120, worker)
            assert self.worker_assigned(timeout=60), self.processes.log("worker")
        # after the exporter's first collection (the baseline): the spot pool gets an
        # on-demand node, i.e. a fallback
        write(self.nodes_dir, self.nodes + [node("n3", "cpu-spot", "on-demand", "m6i.xlarge")], self.pods)
        self.prom_url = f"http://127.0.0.1:{ports['prom']}"
        self.sent = 0
        self.paged: tuple[float, dict] | None = None

    # ---------------------------------------------------------------- helpers
    def start_worker(self):
        return self.processes.start("worker", self.worker_argv)

    def worker_assigned(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(r"partitions assigned: \[\d", self.processes.log("worker")):
                return True
            time.sleep(0.5)
        return False

    def prom(self, expr: str) -> list:
        return json.loads(_get(self.prom_url + "/api/v1/query?query=" + urllib.parse.quote(expr)))["data"]["result"]

    def send_inputs(self, rows: np.ndarray) -> list[str]:
        keys = []
        for row in rows:
            key = f"txn-{self.sent}"
            self.sent += 1
            keys.append(key)
            self.producer.send(self.input, key=key.encode(),
                               value=json.dumps(dict(zip(self.schema.names, map(float, row)))).encode())
        self.producer.flush()
        return keys

    def send_labels(self, keys: list[str], labels: np.ndarray) -> None:
        for key, label in zip(keys, labels):
            self.producer.send(self.labels, key=key.encode(), value=json.dumps({"label": int(label)}).encode())
        self.producer.flush()

    def pages(self, alertname: str) -> list[dict]:
        return [p for p in self.services.pages()
                if p["event"].get("routing_key") == self.routing_key and p["event"].get("event_action") == "trigger"
                and p["event"].get("payload", {}).get("custom_details", {}).get("alertname") == alertname]

    def logs(self) -> str:
        names = ("worker", "drift", "drift-feed", "quality", "cost", "retrain", "training", "prometheus", "alertmanager")
        try:
            quality = _get(f"http://127.0.0.1:{self.ports['quality']}/v1/status").decode()
        except OSError as error:
            quality = repr(error)
        return "\n".join(f"--- {name} ---\n{self.processes.log(name)}" for name in names) + f"\nquality: {quality}"

    def close(self) -> None:
        self.producer.close()
        self.server.stop()


def delayed_labels(outputs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ground truth a decent model ranks well: the top 30% of P(positive) are positives,
    5% of all labels flipped. (The scripted test model's argmax says 0 for most rows.)"""
    proba = outputs[:, 1]
    labels = (proba >= np.quantile(proba, 0.7)).astype(int)
    flip = rng.random(labels.size) < 0.05
    return np.where(flip, 1 - labels, labels)


def _version_with_evaluation_and_reference_predictions(root: Path) -> None:
    """What a training run registers: version.json with the holdout metrics, and a
    reference profile that includes the model's reference predictions (P(positive))."""
    from workloads.data.profile import build_profile, write_profile
    from workloads.serving import registry
    from workloads.serving.testing import fraud_schema, reference_outputs, sample_rows

    from workloads.monitoring.quality import roc_auc

    version = registry.resolve(root, "fraud", alias="champion")
    schema = fraud_schema()
    reference = sample_rows(schema, 4096, seed=123)  # make_registry's reference rows
    outputs = reference_outputs(root, "fraud", "champion", reference)
    predictions = outputs[:, 1]
    # its holdout evaluation, on labels drawn the way the live ones are
    holdout = sample_rows(schema, 4096, seed=321)
    holdout_outputs = reference_outputs(root, "fraud", "champion", holdout)
    holdout_labels = delayed_labels(holdout_outputs, np.random.default_rng(0))
    info = json.loads((version.path / registry.VERSION_INFO).read_text())
    info["metrics"] = {"accuracy": float(np.mean(holdout_outputs.argmax(axis=1) == holdout_labels)),
                       "auc": roc_auc(holdout_labels, holdout_outputs[:, 1]), "loss": 0.3}
    (version.path / registry.VERSION_INFO).write_text(json.dumps(info))
    write_profile(build_profile(reference, list(schema.names), predictions=predictions), version.path / registry.PROFILE)


@pytest.fixture(scope="module")
def live(tmp_path_factory, catalog, local_services):
    from workloads.serving.launch import serving_python
    from workloads.serving.testing import make_registry

    need("prometheus"), need("prometheus-alertmanager")
    if not serving_python().exists():
        pytest.fail(f"serving environment missing ({serving_python()}): workloads/serving/setup-env.sh")
    tmp = tmp_path_factory.mktemp("live")
    (tmp / "logs").mkdir()
    processes = Processes(tmp / "logs")
    services = local_services("kafka", "pagerduty")
    platform = None
    try:
        root = make_registry(tmp / "registry")
        _version_with_evaluation_and_reference_predictions(root)
        platform = LivePlatform(tmp, catalog, services, root, processes)
        yield platform
    finally:
        if platform is not None:
            platform.close()
        processes.stop_all()


def drive_drift_until_paged(live) -> tuple[float, dict]:
    """Phase 1 (reference-like traffic: nothing fires) then phase 2 (drift injected into the
    stream) until the ModelFeatureDrift page; once per session, whichever test asks first
    (no test depends on another having run)."""
    from workloads.serving.testing import reference_outputs, sample_rows

    if live.paged is not None:
        return live.paged
    rng = np.random.default_rng(11)
    # Phase 1: traffic like the reference (the model version's training sample), and
    # delayed labels drawn like the version's holdout labels (no quality alert).
    rows = sample_rows(live.schema, WINDOW_ROWS, seed=7)
    keys = live.send_inputs(rows)
    live.send_labels(keys, delayed_labels(reference_outputs(live.registry_root, "fraud", "champion", rows), rng))
    live.producer.send(live.input, key=b"bad-1", value=b"not json")  # -> the dead-letter topic
    live.producer.flush()
    # a logged request with a missing value (serving stage): counted as an invalid row
    drift_url = f"http://127.0.0.1:{live.ports['drift']}/v1/observe"
    assert _post(drift_url, {"rows": [[None] * len(live.schema.names)]})["invalid"] == 1
    for batch in (sample_rows(live.schema, 8, seed=1), sample_rows(live.schema, 32, seed=2)):
        _post(live.server.url + "/api/v1.0/predictions", {"data": {"ndarray": batch.tolist()}})
    request = urllib.request.Request(live.server.url + "/api/v1.0/predictions", b'{"data": {"ndarray": [[1, 2]]}}',
                                     {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as rejected:  # a malformed request: a 4xx with a reason
        urllib.request.urlopen(request, timeout=10)
    assert 400 <= rejected.value.code < 500
    wait_until(lambda: live.prom(f'strata_drift_window_rows{{model="fraud"}} >= {WINDOW_ROWS}'), 150,
          "a full live window scraped from the drift monitor")
    time.sleep(3)  # > for: (2s) + evaluation interval
    assert live.prom('ALERTS{alertname=~"ModelFeatureDrift|ModelFeatureKSDrift", model="fraud"}') == []
    assert live.pages("ModelFeatureDrift") == []

    # Phase 2: inject drift into the stream: amounts shrink, merchant risk concentrates low.
    drifted = sample_rows(live.schema, WINDOW_ROWS + 500, seed=8)
    names = list(live.schema.names)
    drifted[:, names.index("amount")] *= 0.2
    drifted[:, names.index("merchant_risk")] **= 3
    injected = time.time()
    live.send_inputs(drifted)
    paged = wait_until(lambda: live.pages("ModelFeatureDrift"), 120, "the ModelFeatureDrift page")[0]
    seconds = paged["received_at"] - injected
    print(f"\ninjection-to-page (live stream): {seconds:.2f} s  (Kafka -> stream worker -> drift feed -> drift "
          f"monitor every 0.5 s -> scrape 1 s -> rule eval 1 s, for 2 s -> Alertmanager group_wait 1 s -> "
          f"PagerDuty receiver; production: for {live.fraud.drift.sustained_for})")
    live.paged = (seconds, paged["event"])
    return live.paged


def test_injected_drift_in_the_stream_pages_and_starts_exactly_one_retrain(live):
    try:
        seconds, event = drive_drift_until_paged(live)
        paged = {"event": event}

        event = paged["event"]
        assert event["payload"]["custom_details"]["team"] == live.fraud.team
        assert event["payload"]["custom_details"]["runbook_url"] == rules.runbook_url("ModelFeatureDrift")
        assert event["payload"]["summary"].startswith("[ticket] ModelFeatureDrift (fraud)")
        def firing() -> set[str]:
            alerts = live.prom('ALERTS{alertname="ModelFeatureDrift", alertstate="firing", model="fraud"}')
            return {r["metric"]["feature"] for r in alerts}

        wait_until(lambda: {"amount", "merchant_risk"} <= firing(), 30, "both drifted features firing")
        assert firing() <= {"amount", "merchant_risk"}  # the other 18 features did not move

        # Exactly one retrain, however many notifications arrive (KS alerts join the group).
        retrains = f"http://127.0.0.1:{live.ports['retrain']}/v1/retrains"
        wait_until(lambda: live.marker.exists() and live.marker.read_text().strip(), 30, "the retrain command")
        time.sleep(5)
        assert live.marker.read_text().split() == ["fraud"]
        final = json.loads(_get(retrains))["fraud"]
        assert final["started"] == 1 and "ModelFeatureDrift" in final["last_reason"]
    except Exception:
        print(live.logs())
        raise


def _used_by_dashboards() -> set[str]:
    import re

    from workloads.monitoring import dashboards as dash

    used = set()
    for path in sorted((REPO_ROOT / "dashboards").glob("*.json")):
        for query in dash.queries(json.loads(path.read_text())):
            stripped = re.sub(r'"[^"]*"', '""', query)
            used |= set(re.findall(r"\b((?:strata_|model:)[a-zA-Z0-9_:]*)", stripped))
    return used


def test_every_dashboard_metric_is_exported_by_a_live_workload(live):
    drive_drift_until_paged(live)  # the retrain counter and drift alerts need it (no order dependence)
    emitter_of = {series: m.emitter for m in contract.CONTRACT for series in m.series_names}
    used = _used_by_dashboards()
    not_run = {name for name in used if emitter_of.get(name) in NOT_RUN_HERE}
    checked = used - not_run
    assert checked and {"strata_drift_feature_psi", "strata_serving_requests_total",
                        "strata_stream_consumer_lag_messages", "strata_model_quality_ratio",
                        "strata_workload_hourly_cost_dollars", "strata_training_runs_total",
                        "strata_training_epoch_duration_seconds_bucket"} <= checked

    # 1) each workload's own /metrics
    exposed: set[str] = set()
    for job, target in live.targets.items():
        text = _get(f"http://{target}/metrics").decode()
        exposed |= {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    missing_live = sorted(name for name in checked if name.startswith("strata_") and name not in exposed)
    assert missing_live == [], f"dashboard metrics no live workload exports: {missing_live}"

    # 2) Prometheus has series for every one (recorded `model:` series from the rules included)
    deadline = time.monotonic() + 30
    missing = sorted(checked)
    while missing and time.monotonic() < deadline:
        missing = [name for name in missing if not live.prom(f'count({{__name__="{name}"}})')]
        if missing:
            time.sleep(1)
    # (the error-ratio records included: a model with no 5xx records 0, not an empty series)
    assert missing == [], f"dashboard metrics with no series in Prometheus: {missing}"
    print(f"\n{len(checked)} of {len(checked)} dashboard metrics have live series; "
          f"not run here (not supervised locally): {sorted(not_run)}")
