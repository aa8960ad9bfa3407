"""The stream worker against the real local Kafka broker (KRaft, 127.0.0.1).

* kill -9 three times mid-stream: every key still comes out (at least once);
* malformed records land in the dead-letter topic with the reason in a header;
* SIGTERM finishes the batch, commits exactly what was produced, exits 0;
* outputs equal the artifact's answers for the same features;
* a worker started before its input topic exists asks for it by name (the local broker
  creates it, as a subscribe would) and joins with its partitions; a topic that never
  comes is an error naming it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from tests.streaming.conftest import create_topics, new_topic_names, read_topic
from workloads.serving.testing import fraud_schema, reference_outputs, sample_rows
from workloads.streaming.worker import DLQ_DETAIL, DLQ_REASON, StreamWorker, WorkerConfig

REPO = Path(__file__).resolve().parents[2]
SCHEMA = fraud_schema()
NAMES = SCHEMA.names


def record_bytes(row) -> bytes:
    return json.dumps(dict(zip(NAMES, map(float, row)))).encode()


def start_worker(kafka, topics, registry_root, log_path, group, extra=(), module="workloads.streaming.worker",
                 module_args=()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", module, *module_args, "--bootstrap", kafka, "--model", "fraud",
           "--registry", str(registry_root), "--input-topic", topics.input, "--output-topic", topics.output,
           "--dead-letter-topic", topics.dead_letter, "--group", group, "--batch-size", "50",
           "--session-timeout-ms", "6000", "--max-poll-interval-ms", "15000", *extra]
    out = open(log_path, "ab")
    try:
        return subprocess.Popen(cmd, cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    finally:
        out.close()


def kill_group(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


class OutputCounter:
    """Records in a topic (sum of end offsets), with one long-lived client."""

    def __init__(self, kafka: str, topic: str):
        from kafka import KafkaConsumer

        self.topic = topic
        self.consumer = KafkaConsumer(bootstrap_servers=kafka, group_id=None)

    def __call__(self) -> int:
        from kafka import TopicPartition

        parts = self.consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in parts]
        return sum(self.consumer.end_offsets(tps).values()) if tps else 0

    def close(self) -> None:
        self.consumer.close()


def count_outputs(kafka, topic) -> int:
    counter = OutputCounter(kafka, topic)
    try:
        return counter()
    finally:
        counter.close()


def _outputs_by_key(out) -> dict[str, list]:
    by_key: dict[str, list] = {}
    for record in out:
        by_key.setdefault(record.key.decode(), []).append(json.loads(record.value)["scores"])
    return by_key


def test_kill9_three_times_loses_nothing(kafka, registry_root, tmp_path):
    from kafka import KafkaProducer

    topics = create_topics(kafka, partitions=3, prefix="kill9")
    total = 6000
    rows = sample_rows(SCHEMA, total, seed=21)
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    for i in range(total // 2):  # a backlog, so the worker is busy when it is killed ...
        producer.send(topics.input, key=f"k{i}".encode(), value=record_bytes(rows[i]))
    producer.flush()

    def produce_rest() -> None:  # ... and a steady stream on top of it
        for i in range(total // 2, total):
            producer.send(topics.input, key=f"k{i}".encode(), value=record_bytes(rows[i]))
            if i % 200 == 199:
                producer.flush()
                time.sleep(0.1)
        producer.flush()

    feeder = threading.Thread(target=produce_rest, daemon=True)
    feeder.start()
    log = tmp_path / "worker.log"
    group = f"g-{topics.input}"
    kills = 0
    worker = start_worker(kafka, topics, registry_root, log, group)
    counter = OutputCounter(kafka, topics.output)
    try:
        deadline = time.monotonic() + 300
        seen_at_kill = 0
        while kills < 3 and time.monotonic() < deadline:
            produced = counter()
            if produced >= seen_at_kill + 300:  # processing is under way: kill it mid-stream
                kill_group(worker)
                kills += 1
                seen_at_kill = produced
                worker = start_worker(kafka, topics, registry_root, log, group)
            time.sleep(0.05)
        assert kills == 3, f"worker never got going; log:\n{log.read_text()[-3000:]}"
        feeder.join(timeout=120)
        wanted = {f"k{i}" for i in range(total)}
        out = read_topic(kafka, topics.output, until=lambda rs: wanted <= {r.key.decode() for r in rs}, timeout=240)
    finally:
        kill_group(worker, signal.SIGTERM)
        producer.close()
        counter.close()
    keys = [r.key.decode() for r in out]
    missing = wanted - set(keys)
    assert not missing, f"{len(missing)} keys never scored, e.g. {sorted(missing)[:5]}; log:\n{log.read_text()[-3000:]}"
    assert set(keys) <= wanted
    # keyed for de-duplication: a replayed record carries the same key and the same answer
    assert all(all(s == scores[0] for s in scores) for scores in _outputs_by_key(out).values())
    print(f"\n{total} keys, {len(out)} outputs ({len(out) - total} duplicates) across 3 kill -9s")


def test_crash_between_produce_and_commit_replays_the_batch(kafka, registry_root, tmp_path):
    """The worker dies after its 3rd batch was produced and acknowledged but before the
    commit (fault injection, exit like kill -9): the restarted worker replays exactly that
    batch. Committing first (Seldon v1, issue 4097) would lose it instead."""
    from kafka import KafkaProducer

    topics = create_topics(kafka, partitions=1, prefix="crash")
    total = 500
    rows = sample_rows(SCHEMA, total, seed=3)
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    for i in range(total):
        producer.send(topics.input, key=f"k{i}".encode(), value=record_bytes(rows[i]))
    producer.flush()
    producer.close()
    log = tmp_path / "worker.log"
    group = f"g-{topics.input}"
    # the fault lives in test code (tests/streaming/crashing_worker.py), not in the worker
    crashed = start_worker(kafka, topics, registry_root, log, group, module="tests.streaming.crashing_worker",
                           module_args=("--crash-before-commit", "3"))
    assert crashed.wait(timeout=180) == 137, log.read_text()[-3000:]
    assert count_outputs(kafka, topics.output) == 150  # 3 batches of 50 produced, 2 committed
    worker = start_worker(kafka, topics, registry_root, log, group)
    try:
        wanted = {f"k{i}" for i in range(total)}
        out = read_topic(kafka, topics.output, until=lambda rs: wanted <= {r.key.decode() for r in rs}, timeout=180)
    finally:
        kill_group(worker, signal.SIGTERM)
    by_key = _outputs_by_key(out)
    assert set(by_key) == wanted
    replayed = sorted((k for k, v in by_key.items() if len(v) > 1), key=lambda k: int(k[1:]))
    assert replayed == [f"k{i}" for i in range(100, 150)], replayed[:5]


BAD = {
    "not-json": (b"amount=1&x=2", "decode"),
    "not-utf8": (b"\xff\xfe\x00", "decode"),
    "json-array": (b"[1, 2, 3]", "decode"),
    "tombstone": (None, "decode"),
    "missing-field": (json.dumps({n: 1.0 for n in NAMES[1:]}).encode(), "missing_field"),
    "extra-field": (json.dumps({**{n: 1.0 for n in NAMES}, "merchant_id": 3}).encode(), "extra_field"),
    "string-value": (json.dumps({**{n: 1.0 for n in NAMES}, "online": "yes"}).encode(), "dtype"),
    "nan": (json.dumps({**{n: 1.0 for n in NAMES}, "ip_risk": float("nan")}).encode(), "nan"),
    "out-of-range": (json.dumps({**{n: 1.0 for n in NAMES}, "merchant_risk": 7.0}).encode(), "range"),
    "null": (json.dumps({**{n: 1.0 for n in NAMES}, "amount": None}).encode(), "null"),
}


def test_malformed_records_go_to_dead_letter_with_reason(kafka, registry_root):
    from kafka import KafkaProducer

    topics = create_topics(kafka, partitions=2, prefix="dlq")
    rows = sample_rows(SCHEMA, 40, seed=5)
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    for i, row in enumerate(rows):
        producer.send(topics.input, key=f"good-{i}".encode(), value=record_bytes(row))
        if i % 4 == 0:  # bad records in the middle of good batches
            name = list(BAD)[(i // 4) % len(BAD)]
            producer.send(topics.input, key=f"bad-{name}".encode(), value=BAD[name][0])
    producer.send(topics.input, key=None, value=json.dumps({"features": dict(zip(NAMES, map(float, rows[0])))}).encode())
    producer.flush()
    producer.close()
    worker = StreamWorker(WorkerConfig(bootstrap=kafka, model="fraud", registry_dir=str(registry_root), topics=topics,
                                       group_id=f"g-{topics.input}", batch_size=16, session_timeout_ms=6000),
                          metrics_registry=CollectorRegistry())  # in-process beside other tests' workers
    worker.start().run(idle_exit_s=4)
    dead = read_topic(kafka, topics.dead_letter, until=lambda rs: len(rs) >= len(BAD), timeout=60)
    got = {r.key.decode(): dict(r.headers) for r in dead}
    assert set(got) == {f"bad-{name}" for name in BAD}, sorted(got)
    for name, (value, reason) in BAD.items():
        headers = got[f"bad-{name}"]
        assert headers[DLQ_REASON].decode() == reason, (name, headers)
        assert headers[DLQ_DETAIL], name
        assert headers["strata-source-topic"].decode() == topics.input
    bad_values = {r.key.decode(): r.value for r in dead}
    assert bad_values["bad-not-json"] == BAD["not-json"][0]  # original bytes kept for replay
    assert b"merchant_id" in got["bad-extra-field"][DLQ_DETAIL]
    out = read_topic(kafka, topics.output, until=lambda rs: len(rs) >= 41, timeout=60)
    scored = {r.key.decode(): json.loads(r.value) for r in out}
    assert {f"good-{i}" for i in range(40)} <= set(scored)
    assert len(scored) == 41  # + the keyless one, keyed by topic:partition:offset
    expected = reference_outputs(registry_root, "fraud", "champion", rows)
    got_scores = np.array([[scored[f"good-{i}"]["scores"]["proba_0"], scored[f"good-{i}"]["scores"]["proba_1"]]
                           for i in range(40)])
    np.testing.assert_allclose(got_scores, expected, rtol=1e-5, atol=1e-7)
    assert scored["good-0"]["version"] == "1" and scored["good-0"]["features"]["amount"] == float(rows[0][0])


def test_sigterm_finishes_batch_commits_and_exits(kafka, registry_root, tmp_path):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from tests.serving.conftest import free_port

    topics = create_topics(kafka, partitions=2, prefix="term")
    rows = sample_rows(SCHEMA, 2000, seed=8)
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    for i, row in enumerate(rows):
        producer.send(topics.input, key=f"k{i}".encode(), value=record_bytes(row))
    producer.flush()
    producer.close()
    group = f"g-{topics.input}"
    port = free_port()
    log = tmp_path / "worker.log"
    worker = start_worker(kafka, topics, registry_root, log, group, extra=("--metrics-port", str(port)))
    try:
        deadline = time.monotonic() + 120
        counter = OutputCounter(kafka, topics.output)
        while counter() < 200 and time.monotonic() < deadline:
            assert worker.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        counter.close()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            kill_group(worker)
    for name in ("strata_stream_messages_consumed_total", "strata_stream_messages_produced_total",
                 "strata_stream_batch_duration_seconds_bucket", "strata_stream_consumer_lag_messages"):
        assert name in metrics, name
    out = read_topic(kafka, topics.output, timeout=30)
    consumer = KafkaConsumer(bootstrap_servers=kafka, group_id=group, enable_auto_commit=False)
    try:
        committed = {p: consumer.committed(TopicPartition(topics.input, p)) or 0 for p in (0, 1)}
    finally:
        consumer.close()
    produced_upto = {p: 0 for p in (0, 1)}
    for record in out:
        source = json.loads(record.value)["source"]
        produced_upto[source["partition"]] = max(produced_upto[source["partition"]], source["offset"] + 1)
    # everything produced was committed and nothing was committed that was not produced
    assert committed == produced_upto, (committed, produced_upto)
    assert 0 < sum(committed.values()) <= 2000


def test_tls_options_need_all_three_files_and_name_what_is_missing(tmp_path):
    from workloads.streaming.worker import WorkerConfig

    assert WorkerConfig(bootstrap="b", model="m").security_options() == {"security_protocol": "PLAINTEXT"}
    with pytest.raises(ValueError, match="missing --ssl-keyfile"):
        WorkerConfig(bootstrap="b", model="m", ssl_cafile="ca", ssl_certfile="crt").security_options()
    with pytest.raises(ValueError, match=r"not found: ssl-cafile .*ca\.crt"):
        WorkerConfig(bootstrap="b", model="m", ssl_cafile=str(tmp_path / "ca.crt"),
                     ssl_certfile=str(tmp_path / "u.crt"), ssl_keyfile=str(tmp_path / "u.key")).security_options()
    for name in ("ca.crt", "u.crt", "u.key"):
        (tmp_path / name).write_text("x")
    options = WorkerConfig(bootstrap="b", model="m", ssl_cafile=str(tmp_path / "ca.crt"),
                           ssl_certfile=str(tmp_path / "u.crt"), ssl_keyfile=str(tmp_path / "u.key")).security_options()
    assert options["security_protocol"] == "SSL" and options["ssl_keyfile"].endswith("u.key")


def test_a_worker_started_before_its_topic_exists_gets_it_and_consumes_it(kafka, registry_root, tmp_path):
    # The local broker auto-creates topics asked for by name (as the worker's subscribe
    # always did); the worker asks before it joins, so its first join has the partitions.
    from kafka import KafkaProducer

    topics = new_topic_names("late")
    log_path = tmp_path / "worker.log"
    proc = start_worker(kafka, topics, registry_root, log_path, f"g-{topics.input}", extra=("--topic-wait-s", "120"))
    try:
        deadline = time.monotonic() + 120
        while "partitions assigned: [0" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.5)
        rows = sample_rows(SCHEMA, 30, seed=11)
        producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
        for i, row in enumerate(rows):
            producer.send(topics.input, key=f"late-{i}".encode(), value=record_bytes(row))
        producer.flush()
        producer.close()
        out = read_topic(kafka, topics.output, until=lambda rs: len({r.key for r in rs}) >= 30, timeout=90)
        assert {r.key.decode() for r in out} == {f"late-{i}" for i in range(30)}, log_path.read_text()
    finally:
        kill_group(proc, signal.SIGTERM)


class _TopiclessProducer:
    """kafka-python's producer where no broker creates the topic: partitions_for times out."""

    def __init__(self, appears_after: int | None = None):
        self.asked, self.appears_after = 0, appears_after

    def partitions_for(self, topic):
        from kafka.errors import KafkaTimeoutError

        self.asked += 1
        if self.appears_after is not None and self.asked > self.appears_after:
            return {0, 1}
        raise KafkaTimeoutError("Failed to update metadata after 0.0 secs.")

    def flush(self):
        pass

    def close(self, timeout=None):
        pass


class _Consumer:
    def partitions_for_topic(self, topic):
        return {0, 1}

    def close(self, autocommit=True):
        pass


def _waiting_worker(producer, wait_s: float) -> StreamWorker:
    worker = StreamWorker(WorkerConfig(bootstrap="127.0.0.1:1", model="fraud", topics=new_topic_names("never"),
                                       topic_wait_s=wait_s))
    worker.producer, worker.consumer = producer, _Consumer()
    return worker


def test_a_topic_that_never_comes_is_an_error_naming_it_and_the_wait():
    from workloads.streaming.worker import TopicUnavailable

    worker = _waiting_worker(_TopiclessProducer(), wait_s=0.6)
    with pytest.raises(TopicUnavailable, match=rf"input topic '{worker.topics.input}' has no partitions .* after 0.6 s"):
        worker._await_input_topic()
    assert worker.producer is None and worker.consumer is None  # closed


def test_a_topic_that_comes_during_the_wait_ends_it():
    producer = _TopiclessProducer(appears_after=2)
    _waiting_worker(producer, wait_s=30)._await_input_topic()
    assert producer.asked == 3


def test_the_worker_carries_no_test_hooks():
    """Issue 12 item 11: fault injection is test code (tests/streaming/crashing_worker.py)."""
    source = (REPO / "workloads" / "streaming" / "worker.py").read_text()
    assert "os._exit" not in source and "STRATA_STREAM_FAULT" not in source
    assert not (REPO / "workloads" / "local" / "testing.py").exists()  # the fixtures live in tests/
