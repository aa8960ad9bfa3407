"""Issue 15, item 3: rolling aggregates per card from the CDC stream, pushed to Redis.

The pushed aggregates must equal a brute-force computation over the same events (the
oracle in tests/features/aggregate_events.py), with out-of-order event times, updates,
deletes, replayed changes (same LSN: counted once) and older versions delivered late, in
memory and end to end on the real local Kafka broker and Redis; a restart that replays the
whole topic leaves Redis as it was.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry

from tests.features.aggregate_events import Event, card_events, envelope, iso, oracle
from workloads.data.features.lookup import FeatureColumn, OnlineMetrics, OnlineReader, ViewPlan
from workloads.data.features.streaming import (AggregateMetrics, AggregatePusher, Aggregation, RollingAggregates,
                                               event_time_us, window_seconds)


def applied_state(events: list[Event], agg: Aggregation) -> RollingAggregates:
    state = RollingAggregates(agg)
    for event in events:
        state.apply(event.change)
    return state


def assert_equal(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    mismatches = []
    for card, (t, features) in expected.items():
        got_t, got_features = got[card]
        if got_t != t or got_features.keys() != features.keys() or any(
                not math.isclose(got_features[n], v, rel_tol=0, abs_tol=1e-9) for n, v in features.items()):
            mismatches.append((card, (got_t, got_features), (t, features)))
    assert mismatches == [], f"{len(mismatches)} card(s) differ from the oracle, e.g. {mismatches[:2]}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_aggregates_equal_the_brute_force_oracle_in_any_delivery_order(seed):
    agg = Aggregation(view="cards")
    events = card_events(seed, transactions=3_000, cards=40)
    expected = oracle(events, agg)
    state = applied_state(events, agg)
    assert_equal({card: state.features(card) for card in state.cards}, expected)
    # another delivery order of the same changes gives the same aggregates
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    again = applied_state(shuffled, agg)
    assert_equal({card: again.features(card) for card in again.cards}, expected)
    # the cases the events are meant to cover are there
    kinds = {e.change.op for e in events}
    assert kinds == {"c", "u", "d"}
    assert len(events) > len({(e.txn_id, e.change.lsn) for e in events})  # replays


def test_a_replayed_change_counts_once_and_an_update_replaces_its_transaction():
    agg = Aggregation(view="cards")
    now = datetime(2026, 12, 2, 12, tzinfo=timezone.utc)
    row = {"txn_id": "t1", "card_id": "c1", "amount": 10.0, "event_ts": iso(now)}
    state = RollingAggregates(agg)
    first = Event(envelope("c", row, 100), "t1")
    assert state.apply(first.change) == ("applied", {"c1"})
    assert state.apply(first.change) == ("duplicate", set())  # Debezium re-sent it
    assert state.features("c1")[1] == {"txn_count_1h": 1, "txn_count_24h": 1, "amount_sum_1h": 10.0,
                                       "amount_sum_24h": 10.0}
    state.apply(Event(envelope("u", {**row, "amount": 25.0}, 101), "t1").change)  # a correction
    state.apply(Event(envelope("c", {**row, "txn_id": "t2", "event_ts": iso(now - timedelta(hours=2))}, 102),
                      "t2").change)  # late, inside 24 h only
    assert state.features("c1") == (event_time_us(iso(now), "ts"), {
        "txn_count_1h": 1, "txn_count_24h": 2, "amount_sum_1h": 25.0, "amount_sum_24h": 35.0})
    old = Event(envelope("c", {**row, "txn_id": "t3", "event_ts": iso(now - timedelta(hours=25))}, 103), "t3")
    assert state.apply(old.change)[0] == "expired"  # before every window of the card's latest event
    assert state.apply(Event(envelope("d", row, 104), "t1").change) == ("deleted", {"c1"})
    assert state.features("c1")[1]["txn_count_24h"] == 1


def test_memory_holds_the_longest_window_plus_the_lateness():
    agg = Aggregation(view="cards", lateness="6h")
    state = RollingAggregates(agg)
    start = datetime(2026, 12, 1, tzinfo=timezone.utc)
    for minute in range(10 * 24 * 60):  # ten days, one transaction a minute, one card
        row = {"txn_id": f"t{minute}", "card_id": "c", "amount": 1.0,
               "event_ts": iso(start + timedelta(minutes=minute))}
        state.apply(Event(envelope("c", row, minute + 1), row["txn_id"]).change)
    assert state.features("c")[1]["txn_count_24h"] == 24 * 60
    assert len(state.txns) <= (24 + 6) * 60 + 1  # not ten days of them
    old = {"txn_id": "t0", "card_id": "c", "amount": 1.0, "event_ts": iso(start)}
    assert state.apply(Event(envelope("c", old, 1), "t0").change)[0] == "expired"  # forgotten, still not counted
    assert state.features("c")[1]["txn_count_24h"] == 24 * 60


def test_bad_changes_and_windows_are_named():
    state = RollingAggregates(Aggregation())
    with pytest.raises(ValueError, match="event_ts 'yesterday' is not an ISO-8601 timestamp"):
        state.apply(Event(envelope("c", {"txn_id": "t", "card_id": "c", "amount": 1.0, "event_ts": "yesterday"},
                                   1), "t").change)
    with pytest.raises(ValueError, match="without the entity column 'card_id'"):
        state.apply(Event(envelope("c", {"txn_id": "t", "amount": 1.0, "event_ts": iso(datetime.now())}, 1),
                          "t").change)
    with pytest.raises(ValueError, match="amount is 'x', not a finite number"):
        state.apply(Event(envelope("c", {"txn_id": "t", "card_id": "c", "amount": "x", "event_ts": iso(datetime.now())},
                                   1), "t").change)
    assert state.txns == {}  # nothing half-applied
    assert window_seconds("24h") == 86400
    with pytest.raises(ValueError, match="window '1w' must be"):
        Aggregation(windows=("1w",))
    with pytest.raises(ValueError, match="windows repeat"):
        Aggregation(windows=("1h", "60m"))


# ------------------------------------------------------------------ real Kafka and Redis


@pytest.fixture(scope="module")
def kafka(local_services) -> str:
    return local_services("kafka").kafka_bootstrap


def produce(bootstrap: str, topic: str, events: list[Event], partitions: int = 3) -> None:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="strata-test-admin")
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for event in events:  # Debezium keys by the primary key: a transaction stays on one partition
            producer.send(topic, key=event.txn_id.encode(), value=event.value)
        producer.send(topic, key=b"junk", value=b"{not json")  # malformed: skipped (bronze keeps it)
        producer.flush(timeout=60)
    finally:
        producer.close()


def read_back(redis_client, agg: Aggregation, cards: list[str]) -> dict:
    """Through the serving read path (OnlineReader: the view's keys, HMGET, `_event_us`)."""
    plan = ViewPlan(agg.view, ("card_id",), tuple(FeatureColumn(n, "float64") for n in agg.feature_names))
    reader = OnlineReader(redis_client, OnlineMetrics(CollectorRegistry()), "reject", "fraud")
    rows = reader.get_many([{"card_id": c} for c in cards], [plan])
    stamps = [redis_client.hget(agg.key(c), "_event_us") for c in cards]
    return {c: (int(s), row) for c, s, row in zip(cards, stamps, rows) if s is not None}


def test_pushed_aggregates_equal_the_oracle_on_kafka_and_redis_and_a_replay_changes_nothing(kafka, redis_client):
    run = uuid.uuid4().hex[:8]
    agg = Aggregation(view=f"cards_{run}")
    topic = f"strata.cdc.{run}.card_transactions"
    events = card_events(7, transactions=4_000, cards=60)
    produce(kafka, topic, events)
    expected = oracle(events, agg)

    prom = CollectorRegistry()
    pusher = AggregatePusher(agg, redis_client, topic, kafka, AggregateMetrics(prom), max_batch=500)
    applied = pusher.run(stop_at_end=True, max_seconds=180)
    got = read_back(redis_client, agg, sorted(expected))
    assert_equal(got, expected)
    assert redis_client.pttl(agg.key(sorted(expected)[0])) > 0  # expires at T + TTL

    def sample(name, **labels):
        return prom.get_sample_value(name, {"view": agg.view, **labels}) or 0.0

    total = sum(sample("strata_feature_aggregate_events_total", outcome=o)
                for o in ("applied", "duplicate", "deleted", "expired", "malformed"))
    assert total == len(events) + 1
    assert sample("strata_feature_aggregate_events_total", outcome="malformed") == 1
    assert sample("strata_feature_aggregate_events_total", outcome="duplicate") >= len(events) // 10
    assert sample("strata_feature_freshness_seconds_count") == applied == sample(
        "strata_feature_aggregate_events_total", outcome="applied")

    # a restart rebuilds its windows from the topic and rewrites the same values
    before = {c: redis_client.hgetall(agg.key(c)) for c in expected}
    again = AggregatePusher(agg, redis_client, topic, kafka, AggregateMetrics(CollectorRegistry()), max_batch=500)
    assert again.run(stop_at_end=True, max_seconds=180) == applied
    assert {c: redis_client.hgetall(agg.key(c)) for c in expected} == before


def test_a_card_past_its_ttl_is_deleted_not_served(kafka, redis_client):
    run = uuid.uuid4().hex[:8]
    agg = Aggregation(view=f"cards_{run}", ttl_seconds=3600)
    topic = f"strata.cdc.{run}.card_transactions"
    now = datetime.now(timezone.utc)
    rows = [{"txn_id": "old", "card_id": "gone", "amount": 5.0, "event_ts": iso(now - timedelta(hours=2))},
            {"txn_id": "new", "card_id": "kept", "amount": 7.5, "event_ts": iso(now)}]
    redis_client.hset(agg.key("gone"), mapping={"_event_us": "1"})  # a stale value from before
    produce(kafka, topic, [Event(envelope("c", r, i + 1), r["txn_id"]) for i, r in enumerate(rows)], partitions=1)
    pusher = AggregatePusher(agg, redis_client, topic, kafka, AggregateMetrics(CollectorRegistry()))
    pusher.run(stop_at_end=True, max_seconds=60)
    assert not redis_client.exists(agg.key("gone"))
    assert redis_client.hget(agg.key("kept"), "amount_sum_1h") == b"7.5"


def test_the_service_observes_the_freshness_of_live_changes_only_not_its_catch_up(kafka, redis_client):
    """A (re)start replays the retained topic to rebuild its windows: those changes are not news,
    so the service (`live_freshness_only`, as `main` runs it) leaves them out of the freshness
    histogram; changes produced after the start are observed, each once."""
    import threading
    import time

    from kafka import KafkaProducer

    run = uuid.uuid4().hex[:8]
    agg = Aggregation(view=f"cards_{run}")
    topic = f"strata.cdc.{run}.card_transactions"
    old = datetime.now(timezone.utc) - timedelta(hours=3)
    retained = [{"txn_id": f"old{i}", "card_id": "c1", "amount": 1.0, "event_ts": iso(old)} for i in range(5)]
    produce(kafka, topic, [Event(envelope("c", r, i + 1), r["txn_id"]) for i, r in enumerate(retained)], partitions=1)
    prom = CollectorRegistry()
    pusher = AggregatePusher(agg, redis_client, topic, kafka, AggregateMetrics(prom), live_freshness_only=True)

    def sample(name, **labels):
        return prom.get_sample_value(name, {"view": agg.view, **labels}) or 0.0

    stop = threading.Event()
    thread = threading.Thread(target=pusher.run, kwargs={"stop": stop.is_set, "max_seconds": 120}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while sample("strata_feature_aggregate_events_total", outcome="applied") < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sample("strata_feature_aggregate_events_total", outcome="applied") == 5  # the catch-up, applied
        assert sample("strata_feature_freshness_seconds_count") == 0  # ... and not observed
        live = [{"txn_id": f"new{i}", "card_id": "c1", "amount": 2.0, "event_ts": iso(datetime.now(timezone.utc))}
                for i in range(3)]
        producer = KafkaProducer(bootstrap_servers=kafka)
        for i, row in enumerate(live):
            producer.send(topic, key=row["txn_id"].encode(), value=envelope("c", row, 100 + i))
        producer.flush(timeout=30)
        producer.close()
        while sample("strata_feature_freshness_seconds_count") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert sample("strata_feature_freshness_seconds_count") == 3
    assert sample("strata_feature_freshness_seconds_bucket", le="300.0") == 3  # seconds, not the catch-up's hours
    assert redis_client.hget(agg.key("c1"), "txn_count_24h") == b"8"
    # FeatureAggregatorStalled's inputs: nothing left on the topic, and the loop polled just now
    assert sample("strata_feature_aggregate_lag_messages") == 0
    assert 0 <= time.time() - sample("strata_feature_aggregate_last_poll_timestamp_seconds") < 60


def test_freshness_starts_at_the_commit_of_a_late_update_not_at_its_rows_event_time(redis_client):
    """A chargeback committed days after its transaction is news when committed: its freshness
    is commit -> online (else every late update would read as days late, and a p99 alert would
    measure the fraud rate). An insert's starts at its event time."""
    from types import SimpleNamespace

    run = uuid.uuid4().hex[:8]
    agg = Aggregation(view=f"cards_{run}")
    now = datetime.now(timezone.utc)
    event = now - timedelta(days=1)
    row = {"txn_id": "t1", "card_id": "c1", "amount": 9.0, "event_ts": iso(event)}

    def record(op, lsn, committed, offset):
        value = json.loads(envelope(op, row, lsn))
        value["source"]["ts_ms"] = int(committed.timestamp() * 1000)
        return SimpleNamespace(value=json.dumps(value).encode(), partition=0, offset=offset)

    prom = CollectorRegistry()
    visible: list[float] = []
    pusher = AggregatePusher(agg, redis_client, "unused", "unused", AggregateMetrics(prom),
                             clock=lambda: (now + timedelta(seconds=2)).timestamp(),
                             on_visible=lambda key, seconds: visible.append(seconds))
    assert pusher.push([record("c", 1, event, 0)]) == 1  # the insert, committed at its event time
    assert pusher.push([record("u", 2, now, 1)]) == 1  # its chargeback, a day later
    assert visible[0] == pytest.approx(86402, abs=1)
    assert visible[1] == pytest.approx(2, abs=0.01)
    assert prom.get_sample_value("strata_feature_freshness_seconds_bucket", {"view": agg.view, "le": "2.5"}) == 1
