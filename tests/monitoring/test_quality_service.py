"""Model quality from delayed labels on a real Kafka broker.

The real stream worker scores inputs into the scored topic; labels arrive on
`strata.<model>.labels` (half of them BEFORE their predictions were scored, half after);
the quality service (a real process) joins both by key and exports accuracy, AUC and the
degradation against the version's own evaluation (version.json in the registry export).
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring.conftest import PYTHON, free_port, wait_http
from workloads.monitoring import metrics as contract
from workloads.monitoring.quality import QualityTracker, parse_label, roc_auc
from workloads.streaming.topics import Topics, labels_topic_for

BASELINE = {"accuracy": 0.9, "auc": 0.8, "loss": 0.3}  # loss: not measurable from labels, ignored
ROWS = 300


@pytest.fixture(scope="module")
def kafka(local_services) -> str:
    return local_services("kafka").kafka_bootstrap


@pytest.fixture(scope="module")
def registry_with_evaluation(tmp_path_factory):
    """A registry export whose champion (version 1) carries its offline evaluation."""
    from workloads.serving import registry
    from workloads.serving.testing import make_registry

    root = make_registry(tmp_path_factory.mktemp("registry"))
    info_path = registry.resolve(root, "fraud", alias="champion").path / registry.VERSION_INFO
    info = json.loads(info_path.read_text())
    info["metrics"] = BASELINE
    info_path.write_text(json.dumps(info))
    return root


def _create(bootstrap: str, *names: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="strata-test-admin")
    try:
        admin.create_topics([NewTopic(name, 2, 1) for name in names])
    finally:
        admin.close()


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=5) as response:
        return json.loads(response.read())


def test_labels_topic_is_named_after_the_model():
    assert labels_topic_for("fraud") == "strata.fraud.labels"


def test_label_records_parse_or_say_why():
    assert parse_label(b"k1", b'{"label": 1}') == ("k1", 1.0)
    assert parse_label(None, b'{"key": "k2", "label": 0}') == ("k2", 0.0)
    assert parse_label(b"k3", b"1") == ("k3", 1.0)
    for key, value, reason in ((b"k", b'{"label": "yes"}', "numeric"), (None, b'{"label": 1}', "no key"),
                               (b"k", b"[1]", "JSON object"), (b"k", b'{"label": true}', "numeric")):
        with pytest.raises(ValueError, match=reason):
            parse_label(key, value)


def test_the_tracker_can_hold_labels_that_arrive_first():
    tracker = QualityTracker(hold_labels=True)
    assert tracker.observe_labels(["a", "b"], [1, 0], now=10.0) == (0, [])
    assert tracker.pending == (0, 2)
    joined, delays = tracker.observe_predictions(["a", "b", "c"], [0.9, 0.8, 0.1], now=5.0)
    assert (joined, delays) == (2, [5.0, 5.0])
    snapshot = tracker.snapshot()
    assert snapshot.metrics["accuracy"] == 0.5 and snapshot.metrics["auc"] == 1.0
    assert tracker.pending == (1, 0)


def test_quality_service_joins_delayed_labels_from_kafka(kafka, registry_with_evaluation, processes, tmp_path):
    from kafka import KafkaProducer

    from tests.streaming.conftest import read_topic
    from workloads.serving.testing import fraud_schema, sample_rows
    from workloads.streaming.worker import StreamWorker, WorkerConfig

    run = uuid.uuid4().hex[:8]
    topics = Topics(f"q-{run}.input", f"q-{run}.scored", f"q-{run}.dlq")
    labels_topic = f"q-{run}.labels"
    _create(kafka, topics.input, topics.output, topics.dead_letter, labels_topic)
    schema = fraud_schema()
    rows = sample_rows(schema, ROWS, seed=9)
    keys = [f"txn-{i}" for i in range(ROWS)]
    labels = np.random.default_rng(4).integers(0, 2, size=ROWS)
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")

    def send_labels(indices) -> None:
        for i in indices:
            producer.send(labels_topic, key=keys[i].encode(), value=json.dumps({"label": int(labels[i])}).encode())
        producer.flush()

    port = free_port()
    service = processes.start("quality", [
        PYTHON, "-m", "workloads.monitoring.quality", "--bootstrap", kafka, "--model", "fraud",
        "--team", "payments-risk", "--registry", str(registry_with_evaluation), "--scored-topic", topics.output,
        "--labels-topic", labels_topic, "--group", f"quality-{run}", "--port", str(port)])
    wait_http(f"http://127.0.0.1:{port}/healthz", 60, service)

    # Half of the labels arrive before their predictions exist, plus one malformed record.
    send_labels(range(0, ROWS, 2))
    producer.send(labels_topic, key=b"txn-0", value=b'{"label": "fraud"}')
    producer.flush()
    for key, row in zip(keys, rows):
        value = json.dumps(dict(zip(schema.names, map(float, row)))).encode()
        producer.send(topics.input, key=key.encode(), value=value)
    producer.flush()
    StreamWorker(WorkerConfig(bootstrap=kafka, model="fraud", registry_dir=str(registry_with_evaluation),
                              topics=topics, group_id=f"g-{run}", team="payments-risk", batch_size=64,
                              session_timeout_ms=6000),
                 metrics_registry=CollectorRegistry()).start().run(idle_exit_s=3)  # in-process: its own registry
    send_labels(range(1, ROWS, 2))  # the rest arrive after scoring
    producer.close()

    deadline = time.monotonic() + 60
    status = _status(port)
    while time.monotonic() < deadline and status["versions"].get("1", {}).get("labeled", 0) < ROWS:
        time.sleep(0.5)
        status = _status(port)
    try:
        version = status["versions"]["1"]
        assert version["labeled"] == ROWS, status
    except (KeyError, AssertionError):
        print(processes.log("quality"))
        raise
    assert status["invalid"] == {"scored": 0, "labels": 1}
    assert status["waiting"] == {"predictions": 0, "labels": 0}

    scored = {r.key.decode(): json.loads(r.value) for r in read_topic(kafka, topics.output, until=lambda rs: len(rs) >= ROWS)}
    predicted = np.array([scored[k]["prediction"] for k in keys])
    proba = np.array([scored[k]["scores"]["proba_1"] for k in keys])
    accuracy, auc = float(np.mean(predicted == labels)), roc_auc(labels, proba)
    assert version["metrics"] == pytest.approx({"accuracy": accuracy, "auc": auc}, rel=1e-12)
    assert version["baseline"] == {"accuracy": 0.9, "auc": 0.8}
    assert version["degradation"] == pytest.approx(
        {"accuracy": (0.9 - accuracy) / 0.9, "auc": (0.8 - auc) / 0.8}, rel=1e-9)

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        families = list(text_string_to_metric_families(response.read().decode()))
    samples = {(s.name, s.labels.get("metric")): s for f in families for s in f.samples}
    exposed = {name for name, _ in samples}
    for m in contract.CONTRACT:
        if m.name.startswith("strata_model_quality_"):
            assert set(m.series_names) <= exposed, m.name
    ratio = samples[("strata_model_quality_ratio", "accuracy")]
    assert ratio.labels == {"model": "fraud", "version": "1", "team": "payments-risk", "metric": "accuracy"}
    assert ratio.value == pytest.approx(accuracy)
    assert samples[("strata_model_quality_degradation_ratio", "auc")].value == pytest.approx((0.8 - auc) / 0.8)
    assert samples[("strata_model_quality_labeled_predictions_total", None)].value == ROWS
