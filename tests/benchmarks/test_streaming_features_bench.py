"""Streaming-feature benchmarks (issue 15), ratios against baselines measured in the same run.

* Aggregate update throughput: `AggregatePusher.push` of polls of Debezium change events
  (parse, LSN check, both windows of every changed card, one Redis pipeline per poll)
  against a plain pipelined `HSET` of the same number of card hashes with the same fields
  (what any writer of these values pays to Redis): changes/s of each, and their ratio.
* Freshness, event -> online, at 2,000 changes/s for a bounded time on the real broker: a
  producer paced to 2,000/s writes change events stamped with their event time; the
  aggregator consumes the topic and records when each one's card is visible in Redis
  (goal of the issue: p99 <= 1 s). The producer's own send -> broker ack is the baseline.

Run with `make bench` (pytest tests/benchmarks --benchmark-enable -m benchmark_suite -s).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from tests.features.aggregate_events import envelope, iso
from tests.features.conftest import redis_client, redis_url  # noqa: F401
from workloads.data.features.streaming import AggregateMetrics, AggregatePusher, Aggregation

pytestmark = pytest.mark.benchmark_suite
CARDS, POLL = 5_000, 500


def change_records(n: int, seed: int = 0) -> list[SimpleNamespace]:
    """Kafka-like records (value, partition, offset) of `n` inserts over CARDS cards."""
    rng = np.random.default_rng(seed)
    now = datetime.now(timezone.utc)
    cards, amounts, ages = rng.integers(0, CARDS, n), rng.uniform(1, 500, n), rng.uniform(0, 3 * 3600, n)
    return [SimpleNamespace(partition=0, offset=i, value=envelope(
        "c", {"txn_id": f"b{seed}-{i}", "card_id": f"card{cards[i]}", "amount": float(amounts[i]),
              "event_ts": iso(now - timedelta(seconds=float(ages[i])))}, 1000 + i)) for i in range(n)]


def test_aggregate_updates_vs_plain_hset(benchmark, redis_client):
    agg = Aggregation(view=f"bench_{uuid.uuid4().hex[:8]}")
    records = change_records(40_000)
    polls = [records[i:i + POLL] for i in range(0, len(records), POLL)]

    def plain_hset() -> None:  # the same number of hashes and fields, values already known
        fields = {"_event_us": "1", **{n: "1.0" for n in agg.feature_names}}
        for i, poll in enumerate(polls):
            pipe = redis_client.pipeline(transaction=False)
            for j in range(len(poll)):
                key = f"strata:fv:{agg.view}_base:card{(i * POLL + j) % CARDS}"
                pipe.hset(key, mapping=fields)
                pipe.pexpireat(key, int(time.time() * 1000) + 3_600_000)
            pipe.execute()

    def aggregated() -> AggregatePusher:
        pusher = AggregatePusher(agg, redis_client, "unused", "unused", AggregateMetrics(CollectorRegistry()))
        for poll in polls:
            pusher.push(poll)
        return pusher

    plain_hset(), aggregated()  # warm both paths
    t0 = time.perf_counter()
    plain_hset()
    base_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pusher = aggregated()
    ours_s = time.perf_counter() - t0
    benchmark.pedantic(lambda: [pusher.push(p) for p in polls[:10]], rounds=5, iterations=1)
    assert len(pusher.state.cards) == CARDS and redis_client.exists(agg.key("card0"))
    n = len(records)
    ratio = (n / ours_s) / (n / base_s)
    print(f"\naggregate updates: {n / ours_s:,.0f} changes/s (parse + windows + pipeline per {POLL}), plain HSET "
          f"{n / base_s:,.0f}/s, ratio {ratio:.2f}x; cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    benchmark.extra_info.update({"changes_per_s": n / ours_s, "hset_per_s": n / base_s, "ratio": ratio})


def test_freshness_event_to_online_at_2000_per_s(local_services, redis_client):
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    bootstrap = local_services("kafka").kafka_bootstrap
    run = uuid.uuid4().hex[:8]
    topic, agg = f"bench.cdc.{run}", Aggregation(view=f"bench_{run}")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="strata-bench-admin")
    try:
        admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        admin.close()
    visible: dict[str, float] = {}
    pusher = AggregatePusher(agg, redis_client, topic, bootstrap, AggregateMetrics(CollectorRegistry()), poll_ms=20,
                             on_visible=lambda key, seconds: visible.setdefault(key, seconds))
    stop = threading.Event()
    consumer = threading.Thread(target=lambda: pusher.run(stop=stop.is_set, max_seconds=120), daemon=True)
    consumer.start()
    rate, seconds = 2_000, 15
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1)
    acks: list[float] = []
    rng = np.random.default_rng(3)
    try:
        time.sleep(1.0)  # the consumer is assigned before the first change
        t0 = time.perf_counter()
        for i in range(rate * seconds):
            ahead = i / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
            sent = time.perf_counter()
            value = envelope("c", {"txn_id": f"f{i}", "card_id": f"card{rng.integers(0, CARDS)}", "amount": 10.0,
                                   "event_ts": iso(datetime.now(timezone.utc))}, 1000 + i)
            producer.send(topic, key=f"f{i}".encode(), value=value).add_callback(
                lambda _m, sent=sent: acks.append(time.perf_counter() - sent))
        producer.flush(timeout=60)
        deadline = time.monotonic() + 60
        while len(visible) < rate * seconds and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        consumer.join(timeout=30)
        producer.close()
    assert len(visible) == rate * seconds, f"{len(visible)} of {rate * seconds} changes became visible"
    fresh, ack = np.asarray(list(visible.values())), np.asarray(acks)
    p50, p99 = np.percentile(fresh, 50), np.percentile(fresh, 99)
    print(f"\nfreshness at {rate}/s for {seconds}s: event -> online p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms "
          f"(goal p99 <= 1000 ms); producer send -> ack p99 {np.percentile(ack, 99) * 1e3:.0f} ms, ratio "
          f"{p99 / np.percentile(ack, 99):.1f}x; cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
