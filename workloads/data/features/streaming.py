"""Streaming features: rolling aggregates per entity from a CDC topic, pushed to the online store.

The fraud example's card transactions flow PostgreSQL -> Debezium -> Kafka; this consumer
reads the same change events as the bronze sink (`workloads.data.ingest.cdc`) and keeps, per
card, the transaction count and amount sum over each window (1 h and 24 h by default), by
event time. Each poll's changed cards are written in one Redis pipeline in the online
layout of `workloads.data.features.lookup` (`strata:fv:<view>:<card>`, one field per
feature plus `_event_us`), so serving reads them like materialized values.

Semantics, exact and independent of arrival order (the oracle test recomputes them by brute
force from the same events):

* a card's reference time `T` is the greatest event time of any change seen for it (it never
  moves back); each window `w` covers the card's current transactions with event time in
  `(T - w, T]`. `_event_us` = T, and the key expires at T + the view's TTL;
* a transaction counts once, in its latest version: changes are keyed by the record key
  (`txn_id`) and the Debezium LSN. A change whose LSN is not newer than the one applied for
  its transaction is a replay (Debezium is at-least-once across a Connect restart; a
  reprocessed Kafka offset is one too) and changes nothing; an update replaces the
  transaction's contribution (a chargeback update leaves it as it was), a delete removes it;
* a transaction older than `T - longest window` cannot enter any window again: it is dropped
  from the windows at once (`outcome="expired"`). Its LSN is remembered for `lateness` more
  (default 24 h), then forgotten, so memory holds the transactions of the longest window plus
  the lateness; a replay arriving later than that changes nothing either (it is expired too)
  unless an older version of it carried a later event time.

The same rules over a whole table of changes (`offline_aggregates`, vectorised) give the view's
offline copy, one row per card and reference time, which the lake step writes to gold/<view>
(`workloads.data.lake.aggregates`) for training sets and for modes without the change stream.
They agree wherever `lateness` covers how late a replay arrives (beyond it the stream, which has
forgotten the transaction's LSN, could count a replayed older version whose event time is later
than its newest's; the table keeps every LSN).

State is in memory and rebuilt on start from the topic's retained changes (retention must
cover the longest window); re-writing a card is idempotent, so a restart only rewrites the
same values. Malformed events are counted (`outcome="malformed"`) and skipped here: the
bronze sink keeps every raw event (its quarantine), so nothing is lost.

Metrics (the contract's `feature-aggregates` emitter): `strata_feature_aggregate_events_total
{view, outcome}`; `strata_feature_freshness_seconds{view}`, from when the change became true
(its event time, or its commit when that is later: an update, a chargeback days after its
transaction, a snapshot read of an old row is news when committed) -> visible online, observed
once per applied change when its card's pipeline has returned (the service leaves out the
catch-up of each start: the changes the topic held then are a rebuild, not news); and, per poll,
`strata_feature_aggregate_lag_messages{view}` (changes on the topic not applied yet) and
`strata_feature_aggregate_last_poll_timestamp_seconds{view}` (the loop's heartbeat), which the
`FeatureAggregatorStalled` alert reads.

    python -m workloads.data.features.streaming --bootstrap 127.0.0.1:19092 \
        --topic strata.cdc.public.card_transactions --redis-url redis://127.0.0.1:16379/0 \
        --view card_activity_stream [--window 1h --window 24h] [--metrics-port 19620]

It runs as the catalogue's `feature_aggregator` workload of a CDC pipeline that declares
`features` (`workloads.data.ingest.pipeline.StreamingFeatures`): the supervised service
`<pipeline>-aggregator` locally, a Deployment on the cluster; there the URL comes from
`$STRATA_FEATURE_STORE_URL` (the team's feature-store Secret), not from argv.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

import polars as pl
from prometheus_client import REGISTRY, CollectorRegistry

from workloads.data.features.lookup import EVENT_FIELD, PREFIX
from workloads.data.ingest.cdc import Change, parse
from workloads.monitoring import metrics as contract

log = logging.getLogger("strata.features.streaming")

_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def window_seconds(text: str) -> int:
    """`1h` -> 3600; a clear error for anything else."""
    if len(text) < 2 or text[-1] not in _WINDOW_UNITS or not text[:-1].isdigit() or int(text[:-1]) < 1:
        raise ValueError(f"window {text!r} must be a positive whole number of s, m, h or d (e.g. 1h, 24h)")
    return int(text[:-1]) * _WINDOW_UNITS[text[-1]]


@dataclass(frozen=True)
class Aggregation:
    """What to aggregate: per `entity` column, the count and `value` sum over each window.

    Feature names: `<count_name>_<window>` and `<value>_sum_<window>` (txn_count_1h,
    amount_sum_24h). Defaults are the fraud example's."""

    view: str = "card_activity_stream"
    entity: str = "card_id"  # the view's join key, a column of the change rows
    record_key: str = "txn_id"  # the source table's primary key
    event_time: str = "event_ts"  # ISO-8601 (Debezium's ZonedTimestamp) or epoch microseconds
    value: str = "amount"
    windows: tuple[str, ...] = ("1h", "24h")
    count_name: str = "txn_count"
    ttl_seconds: int = 2 * 86400
    lateness: str = "24h"  # how long after leaving every window a transaction's LSN is remembered

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError("an aggregation needs at least one window")
        seconds = [window_seconds(w) for w in self.windows]
        if len(set(seconds)) != len(seconds):
            raise ValueError(f"windows repeat: {', '.join(self.windows)}")
        if self.ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be >= 1, got {self.ttl_seconds}")
        window_seconds(self.lateness)

    @classmethod
    def for_view(cls, view: Any, **columns: Any) -> "Aggregation":
        """The aggregation a spec's feature view (`workloads.spec.FeatureView`) is served from: its
        name and TTL; each of its features must be one of the aggregates (an error names those
        that are not)."""
        agg = cls(view=view.name, ttl_seconds=view.ttl_seconds, **columns)
        unknown = [f.name for f in view.features if f.name not in agg.feature_names]
        if unknown:
            raise ValueError(f"view {view.name!r}: feature(s) {', '.join(unknown)} are not streaming aggregates "
                             f"(those are {', '.join(agg.feature_names)})")
        return agg

    @property
    def window_us(self) -> dict[str, int]:
        return {w: window_seconds(w) * 1_000_000 for w in self.windows}

    @property
    def lateness_us(self) -> int:
        return window_seconds(self.lateness) * 1_000_000

    @property
    def longest_us(self) -> int:
        return max(self.window_us.values())

    @property
    def columns(self) -> list[tuple[int, str, str]]:
        """Per window: (width in microseconds, count feature, sum feature). The one place the
        windows and their feature names come from, for the stream and for the lake step."""
        return [(width, f"{self.count_name}_{w}", f"{self.value}_sum_{w}") for w, width in self.window_us.items()]

    @property
    def feature_names(self) -> list[str]:
        return [c for _, c, _ in self.columns] + [s for _, _, s in self.columns]

    def key(self, entity: str) -> str:
        return f"{PREFIX}:{self.view}:{entity}"


def event_time_us(value: Any, column: str) -> int:
    """An event time as epoch microseconds: ISO-8601 text (naive means UTC) or integer microseconds."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{column} is {value!r}, not a timestamp")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{column} {value!r} is not an ISO-8601 timestamp") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    raise ValueError(f"{column} is a {type(value).__name__}, not a timestamp")


@dataclass
class _Txn:
    entity: str | None  # None: deleted (its LSN still guards against replays)
    event_us: int
    amount: float
    lsn: int


@dataclass
class _Card:
    reference_us: int = -(1 << 62)  # T: the greatest event time seen for the card
    events: list[tuple[int, str, float]] = field(default_factory=list)  # (event_us, record key, amount), sorted
    retired: list[tuple[int, str]] = field(default_factory=list)  # out of every window, LSN still known; sorted


class RollingAggregates:
    """The windows of every entity, updated change by change. `apply` says what happened."""

    def __init__(self, aggregation: Aggregation):
        self.agg = aggregation
        self.txns: dict[str, _Txn] = {}
        self.cards: dict[str, _Card] = {}

    def _remove(self, key: str, txn: _Txn) -> None:
        card = self.cards.get(txn.entity) if txn.entity is not None else None
        if card is None:
            return
        i = bisect.bisect_left(card.events, (txn.event_us, key))
        if i < len(card.events) and card.events[i][:2] == (txn.event_us, key):
            del card.events[i]

    def apply(self, change: Change) -> tuple[str, set[str]]:
        """(outcome, entities whose aggregates changed). Raises ValueError on a row it cannot use."""
        agg, row = self.agg, change.row
        key = row.get(agg.record_key)
        if key is None:
            raise ValueError(f"change without the record key {agg.record_key!r}")
        key = str(key)
        known = self.txns.get(key)
        if known is not None and change.lsn <= known.lsn:
            # a replay, or a version older than the one applied; its event time still counts
            # towards T (a true replay's already does), so T does not depend on arrival order
            if change.op != "d":
                entity, event_us = self._entity_time(key, row)
                card = self.cards.setdefault(entity, _Card())
                if event_us > card.reference_us:
                    card.reference_us = event_us
                    self._prune(entity, card)
                    return "duplicate", {entity}
            return "duplicate", set()
        touched: set[str] = set()
        if change.op == "d":
            if known is not None:
                self._remove(key, known)
                if known.entity is not None:
                    touched.add(known.entity)
            self.txns[key] = _Txn(None, 0, 0.0, change.lsn)
            if known is not None and known.entity is not None:  # forgotten with the version it removed
                bisect.insort(self.cards[known.entity].retired, (known.event_us, key))
            return "deleted", touched
        entity, event_us = self._entity_time(key, row)
        amount = row.get(agg.value)
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount):
            raise ValueError(f"change of {key}: {agg.value} is {amount!r}, not a finite number")
        if known is not None:
            self._remove(key, known)
            if known.entity is not None and known.entity != entity:
                touched.add(known.entity)
        self.txns[key] = _Txn(entity, event_us, float(amount), change.lsn)
        card = self.cards.setdefault(entity, _Card())
        card.reference_us = max(card.reference_us, event_us)
        touched.add(entity)
        if event_us <= card.reference_us - agg.longest_us:
            bisect.insort(card.retired, (event_us, key))
            self._prune(entity, card)
            return "expired", touched if known is not None else set()
        bisect.insort(card.events, (event_us, key, float(amount)))
        self._prune(entity, card)
        return "applied", touched

    def _entity_time(self, key: str, row: Mapping[str, Any]) -> tuple[str, int]:
        entity = row.get(self.agg.entity)
        if entity is None:
            raise ValueError(f"change of {key} without the entity column {self.agg.entity!r}")
        return str(entity), event_time_us(row.get(self.agg.event_time), self.agg.event_time)

    def _prune(self, entity: str, card: _Card) -> None:
        """Events at or before T - the longest window are out of every window for good; their
        LSNs are forgotten `lateness` later (a newer version of the transaction is kept)."""
        horizon = card.reference_us - self.agg.longest_us
        cut = bisect.bisect_right(card.events, (horizon, "\uffff"))
        if cut:
            card.retired = sorted(card.retired + [(e[0], e[1]) for e in card.events[:cut]])
            del card.events[:cut]
        forget = bisect.bisect_right(card.retired, (horizon - self.agg.lateness_us, "\uffff"))
        for event_us, key in card.retired[:forget]:
            txn = self.txns.get(key)
            if txn is not None and (txn.entity == entity and txn.event_us == event_us or txn.entity is None):
                del self.txns[key]
        del card.retired[:forget]

    def features(self, entity: str) -> tuple[int, dict[str, float | int]]:
        """(T, feature -> value) of one entity."""
        card = self.cards[entity]
        out: dict[str, float | int] = {}
        for width, count, total in self.agg.columns:
            lo = bisect.bisect_right(card.events, (card.reference_us - width, "\uffff"))
            inside = card.events[lo:]
            out[count] = len(inside)
            out[total] = math.fsum(e[2] for e in inside)
        return card.reference_us, out


# ------------------------------------------------------------------ the same rules over a table of changes
# The lake step's offline copy (`workloads.data.lake.aggregates`): every change at once, vectorised, with the rules
# of `RollingAggregates` above (tests/features/test_offline_aggregates.py feeds both the same changes).
KEY, LSN, OP, EVENT_US, KNOWN_AT = "__key", "__lsn", "__op", "__event_us", "__known_at"
CREATED_COLUMN = "created_ts"  # the offline copy's "known since" column (the point-in-time join's created time)


def text_event_time_us(text: str | None) -> int | None:
    """`event_time_us` of a value kept as text (the lake's bronze): digits are the epoch
    microseconds a JSON number carried; None where the stream would call the change malformed."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return int(float(text))  # a JSON float, as the stream's int(value)
    except (ValueError, OverflowError):
        pass
    try:
        return event_time_us(text, "")
    except ValueError:
        return None


def usable(agg: Aggregation) -> pl.Expr:
    """The changes `RollingAggregates.apply` takes: a key, and (but for a delete) the entity, an
    event time and a finite value; the rest are its `malformed` (skipped)."""
    return pl.col(KEY).is_not_null() & ((pl.col(OP) == "d") | (
        pl.col(agg.entity).is_not_null() & pl.col(EVENT_US).is_not_null() & pl.col(agg.value).is_finite().fill_null(False)))


def offline_aggregates(changes: pl.DataFrame, agg: Aggregation) -> pl.DataFrame:
    """Every change of a table (any order, replays and late versions included) -> one row per
    (entity, reference time t), for every t the entity's `T` takes: the event time of each
    change of it. The row holds what `RollingAggregates.features` gives when the card's T is t:
    per window, the count and value sum of the latest version (highest LSN) of each live
    transaction of the entity with event time in (t - w, t]. `created_ts`: when the first change
    carrying t was known (`KNOWN_AT`), so a point-in-time join sees t only from then on.

    `changes`: KEY (text), LSN, OP (c/u/d), the entity (text), EVENT_US, the value (float) and
    KNOWN_AT; rows that are not `usable` are left out, as the stream skips them."""
    ts, entity, value = agg.event_time, agg.entity, agg.value
    rows = changes.filter(usable(agg))
    upserts = rows.filter(pl.col(OP) != "d")
    refs = upserts.group_by(entity, EVENT_US).agg(pl.col(KNOWN_AT).min().alias(CREATED_COLUMN))
    # the latest version of each transaction; a delete removes it (a replay is the same change)
    latest = rows.sort(LSN, maintain_order=True).unique(KEY, keep="last", maintain_order=True)
    live = latest.filter(pl.col(OP) != "d").select(entity, EVENT_US, pl.col(value).cast(pl.Float64),
                                                   pl.lit(1, pl.Int64).alias("__n"))
    # the reference times as points that count nothing, so each window is evaluated at every t
    points = pl.concat([live, refs.select(entity, EVENT_US, pl.lit(0.0).alias(value), pl.lit(0, pl.Int64).alias("__n"))]
                       ).sort(entity, EVENT_US, value, "__n")  # a total order: the same sums whatever the input order
    out = refs
    for width, count, total in agg.columns:
        rolled = (points.rolling(index_column=EVENT_US, period=f"{width}i", closed="right", group_by=entity)
                  .agg(pl.col("__n").sum().alias(count), pl.col(value).sum().alias(total))
                  .unique([entity, EVENT_US]))  # points sharing (entity, t) share the window
        out = out.join(rolled, on=[entity, EVENT_US], how="left")
    return (out.sort(entity, EVENT_US)
            .with_columns(pl.from_epoch(EVENT_US, time_unit="us").dt.replace_time_zone("UTC").alias(ts))
            .select(entity, ts, CREATED_COLUMN, *agg.feature_names))


class AggregateMetrics:
    """The contract's `feature-aggregates` metrics, on `registry`."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        c = contract.collectors(contract.Emitter.FEATURE_AGGREGATES, registry)
        self.events = c["strata_feature_aggregate_events_total"]
        self.freshness = c["strata_feature_freshness_seconds"]
        self.lag = c["strata_feature_aggregate_lag_messages"]
        self.last_poll = c["strata_feature_aggregate_last_poll_timestamp_seconds"]


@dataclass
class AggregatePusher:
    """Kafka CDC topic -> RollingAggregates -> Redis, one pipeline per poll."""

    aggregation: Aggregation
    redis: Any  # redis.Redis
    topic: str
    bootstrap: str
    metrics: AggregateMetrics
    poll_ms: int = 100
    max_batch: int = 5_000
    security: Mapping[str, Any] | None = None  # kafka-python transport options (workloads.streaming.tls)
    clock: Callable[[], float] = time.time
    # called with (record key, seconds from event time to visible online) per applied change:
    # the demo reports its own transactions' freshness this way
    on_visible: Callable[[str, float], None] | None = None
    # The service (`main`): a start's catch-up, the changes the topic held when it started, is a
    # rebuild, not news: their freshness (up to the topic's retention) is not observed, so a
    # restart does not read as days-old features. The library default observes every change.
    live_freshness_only: bool = False

    def __post_init__(self) -> None:
        self.state = RollingAggregates(self.aggregation)
        self.catch_up: dict[int, int] = {}  # partition -> end offset at start (with live_freshness_only)

    def _consumer(self, topic_wait_s: float | None, on_absent: Callable[[], None] = lambda: None):
        """The topic's partitions, assigned from the beginning, and whether the topic had to be
        waited for (`on_absent` is called once then; `topic_wait_s` None: wait as long as it takes)."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
                                 auto_offset_reset="earliest", max_poll_records=self.max_batch,
                                 **dict(self.security or {}))
        deadline = None if topic_wait_s is None else time.monotonic() + topic_wait_s
        partitions = consumer.partitions_for_topic(self.topic)
        absent = not partitions
        if absent:
            log.info("waiting for topic %s on %s", self.topic, self.bootstrap)
            on_absent()
        while not partitions and (deadline is None or time.monotonic() < deadline):  # the connector creates it
            time.sleep(0.5)
            partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            consumer.close()
            raise RuntimeError(f"topic {self.topic!r} does not exist on {self.bootstrap} (is the connector running?)")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)  # the windows are rebuilt from the retained changes
        return consumer, absent

    def run(self, stop: Callable[[], bool] = lambda: False, idle_exit_s: float | None = None,
            max_seconds: float | None = None, topic_wait_s: float | None = 60.0, stop_at_end: bool = False,
            on_ready: Callable[[], None] | None = None) -> int:
        """Poll and push until `stop()`, `idle_exit_s` without records, `max_seconds`, or (with
        `stop_at_end`: a catch-up run) the end offsets the topic had at the start. `on_ready`:
        called once it is known which changes are the catch-up (the service serves its metrics,
        its health, from then on): when the topic is assigned, or at once when the topic does
        not exist yet (then every change that appears is live). Returns the changes applied."""
        readied: list[bool] = []

        def ready() -> None:
            if on_ready is not None and not readied:
                readied.append(True)
                on_ready()

        consumer, appeared = self._consumer(topic_wait_s, on_absent=ready)
        start = idle_since = time.monotonic()
        applied = 0
        end = consumer.end_offsets(list(consumer.assignment())) if stop_at_end or self.live_freshness_only else {}
        if self.live_freshness_only:  # a topic that appeared after the start holds no catch-up
            self.catch_up = {} if appeared else {tp.partition: offset for tp, offset in end.items()}
        ready()
        try:
            while not stop():
                if stop_at_end and all(consumer.position(tp) >= offset for tp, offset in end.items()):
                    break
                now = time.monotonic()
                if max_seconds is not None and now - start > max_seconds:
                    break
                polled = consumer.poll(timeout_ms=self.poll_ms, max_records=self.max_batch)
                records = [r for batch in polled.values() for r in batch]
                self._heartbeat(consumer)
                if not records:
                    if idle_exit_s is not None and now - idle_since > idle_exit_s:
                        break
                    continue
                idle_since = time.monotonic()
                applied += self.push(records)
        finally:
            consumer.close()
        return applied

    def _heartbeat(self, consumer: Any) -> None:
        """The loop is alive, and how far behind the topic it is: the high watermarks the last
        fetches reported (no extra broker request) less the positions; a partition not fetched
        yet counts nothing (the gauge only says so once it is known)."""
        view = self.aggregation.view
        self.metrics.last_poll.labels(view).set(self.clock())
        lag, known = 0, False
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag += max(0, highwater - consumer.position(tp))
                known = True
        if known:
            self.metrics.lag.labels(view).set(lag)

    def push(self, records: Iterable[Any]) -> int:
        """Apply a poll's records (Kafka records: `.value` is a Debezium envelope), then write
        every changed entity in one pipeline. Returns the changes applied."""
        agg, outcomes = self.aggregation, {}
        touched: set[str] = set()
        fresh: list[tuple[str, int]] = []  # (record key, commit us) of the applied changes: freshness
        first_error = None
        for record in records:
            try:
                change = parse(record.value, agg.record_key)
                if change is None:  # a tombstone
                    continue
                outcome, entities = self.state.apply(change)
            except ValueError as error:
                outcome, entities = "malformed", set()
                first_error = first_error or f"{getattr(record, 'partition', '?')}/{getattr(record, 'offset', '?')}: {error}"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome == "applied" and getattr(record, "offset", 0) >= self.catch_up.get(getattr(record, "partition", 0), 0):
                fresh.append((str(change.row[agg.record_key]), change.source_ts_ms * 1000))
            touched |= entities
        if first_error:
            log.warning("%s: skipped %d malformed change(s), the first at %s", agg.view, outcomes["malformed"],
                        first_error)
        if touched:
            self._write(touched)
        visible_us = self.clock() * 1e6
        freshness = self.metrics.freshness.labels(agg.view)
        for key, committed_us in fresh:
            # from when the change became true: its event time, or its commit when later (an
            # update of an old transaction is news when committed, not at the event time)
            since_us = max(self.state.txns[key].event_us, committed_us)
            seconds = max(0.0, (visible_us - since_us) / 1e6)
            freshness.observe(seconds)
            if self.on_visible is not None:
                self.on_visible(key, seconds)
        for outcome, n in outcomes.items():
            self.metrics.events.labels(agg.view, outcome).inc(n)
        return outcomes.get("applied", 0)

    def _write(self, entities: set[str]) -> None:
        agg, now_us = self.aggregation, self.clock() * 1e6
        pipe = self.redis.pipeline(transaction=False)
        for entity in sorted(entities):
            key = agg.key(entity)
            reference_us, values = self.state.features(entity)
            expire_us = reference_us + agg.ttl_seconds * 1_000_000
            if expire_us <= now_us:
                pipe.delete(key)  # past its TTL: serving must not see it
                continue
            pipe.hset(key, mapping={EVENT_FIELD: str(reference_us),
                                    **{n: repr(float(v)) if isinstance(v, float) else str(v) for n, v in values.items()}})
            pipe.pexpireat(key, int(expire_us // 1000))
        pipe.execute()


REDIS_URL_ENV = "STRATA_FEATURE_STORE_URL"  # = workloads.catalogue.declarations.FEATURE_STORE_URL_ENV


def main(argv: list[str] | None = None) -> int:
    import os

    import redis
    from prometheus_client import start_http_server

    from workloads.streaming import tls

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True, help="the Debezium topic of the source table")
    ap.add_argument("--redis-url", default=os.environ.get(REDIS_URL_ENV, ""),
                    help=f"the online store (default ${REDIS_URL_ENV}: a URL with a token stays out of argv)")
    defaults = Aggregation()
    ap.add_argument("--view", default=defaults.view)
    ap.add_argument("--entity", default=defaults.entity)
    ap.add_argument("--record-key", default=defaults.record_key)
    ap.add_argument("--event-time", default=defaults.event_time)
    ap.add_argument("--value", default=defaults.value)
    ap.add_argument("--window", action="append", help="repeat: 1h, 24h (default: 1h and 24h)")
    ap.add_argument("--ttl-seconds", type=int, default=defaults.ttl_seconds)
    ap.add_argument("--metrics-port", type=int)
    ap.add_argument("--metrics-host", default="127.0.0.1")
    tls.add_arguments(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not args.redis_url:
        ap.error(f"--redis-url or ${REDIS_URL_ENV} is required")
    try:
        aggregation = Aggregation(view=args.view, entity=args.entity, record_key=args.record_key,
                                  event_time=args.event_time, value=args.value,
                                  windows=tuple(args.window or defaults.windows), ttl_seconds=args.ttl_seconds)
        security = tls.security_options(args.ssl_cafile, args.ssl_certfile, args.ssl_keyfile)
    except ValueError as error:
        ap.error(str(error))
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    pusher = AggregatePusher(aggregation, redis.Redis.from_url(args.redis_url), args.topic, args.bootstrap,
                             AggregateMetrics(), security=security, live_freshness_only=True)

    def ready() -> None:  # healthy only once the changes that follow count as live
        if args.metrics_port:
            start_http_server(args.metrics_port, addr=args.metrics_host)
        log.info("%s: serving metrics; reading %s from its start", aggregation.view, args.topic)

    pusher.run(stop=lambda: bool(stopping), on_ready=ready, topic_wait_s=None)  # like the sink: waits for its topic
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
