"""The session's real local services: health, Kafka round trip, idempotent up, alert path."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from workloads.local import Supervisor
from workloads.local.health import kafka_metadata

CORE = ("kafka", "prometheus", "alertmanager", "pagerduty")


def _get(url: str, timeout: float = 15.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read().decode()


def _post(url: str, body: object, timeout: float = 15.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _eventually(fn, timeout: float = 30.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


@pytest.fixture(scope="module")
def core(local_services):
    return local_services(*CORE)


def test_up_starts_core_services_healthy(core):
    statuses = {s.name: s for s in core.supervisor.status(list(CORE))}
    assert {n: s.state for n, s in statuses.items()} == {n: "running" for n in CORE}
    # Independent readiness probes against the real endpoints.
    assert _get(core.prometheus_url + "/-/ready")[0] == 200
    assert _get(core.alertmanager_url + "/-/ready")[0] == 200
    assert _get(f"http://127.0.0.1:{core.port('pagerduty')}/health")[0] == 200
    meta = kafka_metadata(core.port("kafka"))
    assert meta["brokers"] == [(1, "127.0.0.1", core.port("kafka"))]
    # Everything listens on loopback only.
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
    for s in statuses.values():
        for port in s.ports.values():
            listeners = [ln.split()[3] for ln in out.splitlines() if ln.split()[3].endswith(f":{port}")]
            assert listeners and all("127.0.0.1" in addr for addr in listeners), (s.name, listeners)


def test_kafka_produce_consume_round_trip(core):
    kafka = pytest.importorskip("kafka", reason="kafka-python==3.0.12 is in the workloads extra")
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"strata-local-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=core.kafka_bootstrap, request_timeout_ms=20000)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = kafka.KafkaProducer(bootstrap_servers=core.kafka_bootstrap, acks="all", linger_ms=5)
    sent = [f"txn-{i}".encode() for i in range(200)]
    for i, value in enumerate(sent):
        producer.send(topic, key=str(i % 7).encode(), value=value)
    producer.flush(timeout=30)
    producer.close()
    consumer = kafka.KafkaConsumer(topic, bootstrap_servers=core.kafka_bootstrap, group_id=f"g-{topic}",
                                   auto_offset_reset="earliest", consumer_timeout_ms=15000)
    received = []
    for msg in consumer:
        received.append(msg.value)
        if len(received) == len(sent):
            break
    consumer.commit()
    consumer.close()
    assert sorted(received) == sorted(sent)


def test_up_twice_starts_no_duplicates(core):
    sup = core.supervisor
    before = {n: sup.record(n).pid for n in CORE}
    # A second Supervisor on the same state dir (like a second `strata local up`) ...
    again = Supervisor(sup.state_dir, ports=sup.ports)
    again.up(list(CORE))
    # ... and the CLI itself.
    res = subprocess.run([sys.executable, "-m", "workloads.local", "up", "-q", *CORE,
                          "--state-dir", str(sup.state_dir)]
                         + [f"--port={k}={v}" for k, v in sup.ports.items()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "already" in res.stdout
    after = {n: sup.record(n).pid for n in CORE}
    assert after == before
    for name, pid in before.items():
        assert pid in sup.record(name).live_members()  # the original process still leads its group


def test_status_cli_reports_running(core):
    res = subprocess.run([sys.executable, "-m", "workloads.local", "status", "--json", *CORE,
                          "--state-dir", str(core.state_dir)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert {s["name"]: s["state"] for s in json.loads(res.stdout)} == {n: "running" for n in CORE}


def test_prometheus_scrapes_registered_services(core):
    def up_jobs():
        _, body = _get(core.prometheus_url + "/api/v1/targets")
        return {t["labels"]["job"] for t in json.loads(body)["data"]["activeTargets"] if t["health"] == "up"}

    jobs = _eventually(lambda: {"prometheus", "alertmanager", "pagerduty"} <= up_jobs() and up_jobs(), 30)
    assert jobs and {"prometheus", "alertmanager", "pagerduty"} <= jobs


def test_alert_reaches_local_pagerduty(core):
    name = f"StrataLocalTest{uuid.uuid4().hex[:6]}"
    code, _ = _post(core.alertmanager_url + "/api/v2/alerts",
                    [{"labels": {"alertname": name, "severity": "critical"},
                      "annotations": {"summary": "supervisor test page"}}])
    assert code == 200
    page = _eventually(lambda: [p for p in core.pages() if name in p["event"]["payload"]["summary"]], 30)
    assert page, core.pages()
    assert page[0]["event"]["event_action"] == "trigger"


def test_pagerduty_receiver_validates_like_pagerduty(core):
    url = core.pagerduty_events_url
    ok = {"routing_key": "k" * 32, "event_action": "trigger",
          "payload": {"summary": "disk full", "source": "test", "severity": "warning"}}
    code, body = _post(url, ok)
    assert code == 202 and body["status"] == "success" and body["dedup_key"]
    code, body = _post(url, {"routing_key": "k" * 32, "event_action": "trigger", "payload": {"summary": "x"}})
    assert code == 400 and any("payload.severity" in e for e in body["errors"])
    code, body = _post(url, {"routing_key": "k" * 32, "event_action": "resolve"})
    assert code == 400 and any("dedup_key" in e for e in body["errors"])
    req = urllib.request.Request(url, data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    assert exc.value.code == 400


def test_mlflow_tracking_server(local_services):
    pytest.importorskip("mlflow", reason="mlflow is installed with the workloads extra (pip install -e '.[workloads]')")
    svc = local_services("mlflow")
    assert _get(svc.mlflow_tracking_uri + "/health", 60)[0] == 200
    name = f"strata-local-{uuid.uuid4().hex[:8]}"
    code, body = _post(svc.mlflow_tracking_uri + "/api/2.0/mlflow/experiments/create", {"name": name}, 60)
    assert code == 200, body
    _, got = _get(svc.mlflow_tracking_uri + f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}", 60)
    assert json.loads(got)["experiment"]["experiment_id"] == body["experiment_id"]


def test_the_retrain_trigger_listens_on_loopback_only_and_wants_its_token(local_services):
    """Issue 12 items 5-6 on the supervised service (not only the module's defaults): the local
    webhook binds 127.0.0.1 (the catalogue's ${bind}) and refuses a request without the token."""
    svc = local_services("retrain-trigger")  # with the session's MLflow and S3 it needs
    port = svc.port("retrain-trigger")
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
    listeners = [ln.split()[3] for ln in out.splitlines() if ln.split()[3].endswith(f":{port}")]
    assert listeners and all(addr == f"127.0.0.1:{port}" for addr in listeners), listeners
    code, body = _post(f"http://127.0.0.1:{port}/v1/alertmanager", {"alerts": []})
    assert code == 401 and "token" in body["error"], (code, body)
