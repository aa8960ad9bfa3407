"""The offline copy of a streaming view equals the streaming aggregator, per (card, event time).

The same change events (out of order, replayed, updated, corrected in amount, time or card,
deleted, older versions delivered late: tests/features/aggregate_events.py) go to the
aggregator's state (`RollingAggregates`, change by change, in delivery order) and to the lake
step's vectorised rules (`offline_aggregates`, all at once). For each card and each event time
t of its changes, the stream's value when the card's reference time is t is read off a
RollingAggregates fed the same events with every version whose event time is after t turned
into a delete of the same LSN (so what is later than t cannot count, and t is the card's
greatest event time); it must equal the offline row (card, t), and every card's last row must
equal the aggregator's final state and the brute-force oracle.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from tests.features.aggregate_events import Event, card_events, envelope, iso, oracle
from workloads.data.features import streaming as st
from workloads.data.features.streaming import Aggregation, RollingAggregates, event_time_us, offline_aggregates

KNOWN = datetime(2026, 12, 2, tzinfo=timezone.utc)


def as_changes(events: list[Event], agg: Aggregation) -> pl.DataFrame:
    """The events as the typed change table the lake step builds from bronze (delivery i known at KNOWN + i s)."""
    rows = []
    for i, event in enumerate(events):
        change = event.change
        row = change.row
        rows.append({st.KEY: str(row[agg.record_key]), st.LSN: change.lsn, st.OP: change.op,
                     agg.entity: None if row.get(agg.entity) is None else str(row[agg.entity]),
                     st.EVENT_US: st.text_event_time_us(row.get(agg.event_time)),
                     agg.value: row.get(agg.value), st.KNOWN_AT: KNOWN + timedelta(seconds=i)})
    return pl.DataFrame(rows, schema={st.KEY: pl.String, st.LSN: pl.Int64, st.OP: pl.String, agg.entity: pl.String,
                                      st.EVENT_US: pl.Int64, agg.value: pl.Float64,
                                      st.KNOWN_AT: pl.Datetime("us", "UTC")})


def offline_rows(frame: pl.DataFrame, agg: Aggregation) -> dict[tuple[str, int], dict]:
    out = {}
    for row in frame.iter_rows(named=True):
        t = row[agg.event_time]
        micros = (t - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
        out[(row[agg.entity], micros)] = row
    return out


def as_of(events: list[Event], t: int, agg: Aggregation) -> list[Event]:
    """The events with each version later than t turned into a delete of the same LSN."""
    out = []
    for event in events:
        change = event.change
        if change.op != "d" and event_time_us(change.row[agg.event_time], agg.event_time) > t:
            out.append(Event(envelope("d", {agg.record_key: event.txn_id}, change.lsn), event.txn_id))
        else:
            out.append(event)
    return out


def stream_values_per_card_and_time(events: list[Event], agg: Aggregation) -> dict[tuple[str, int], dict]:
    """(card, t) -> the aggregator's values when the card's reference time is t, for every t of a change of the card."""
    by_card: dict[str, set[int]] = defaultdict(set)
    txns_of: dict[str, set[str]] = defaultdict(set)
    for event in events:
        change = event.change
        if change.op != "d":
            card = str(change.row[agg.entity])
            by_card[card].add(event_time_us(change.row[agg.event_time], agg.event_time))
            txns_of[card].add(event.txn_id)
    out = {}
    for card, times in by_card.items():
        mine = [e for e in events if e.txn_id in txns_of[card]]  # every version of the card's transactions
        for t in times:
            state = RollingAggregates(agg)
            for event in as_of(mine, t, agg):
                state.apply(event.change)
            reference, values = state.features(card)
            assert reference == t
            out[(card, t)] = values
    return out


def mismatches(offline: dict, stream: dict, agg: Aggregation) -> list:
    bad = [("missing or extra", sorted(set(offline) ^ set(stream))[:3])] if offline.keys() != stream.keys() else []
    for point, values in stream.items():
        row = offline.get(point)
        if row is not None and any(not math.isclose(row[n], v, rel_tol=1e-12, abs_tol=1e-9) or
                                   (isinstance(v, int) and row[n] != v) for n, v in values.items()):
            bad.append((point, {n: row[n] for n in agg.feature_names}, values))
    return bad


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_every_card_and_event_time_equals_the_stream_and_the_last_equals_its_final_state(seed):
    agg = Aggregation(view="cards")
    events = card_events(seed, transactions=700, cards=12)
    kinds = {e.change.op for e in events}
    assert kinds == {"c", "u", "d"} and len(events) > len({(e.txn_id, e.change.lsn) for e in events})
    offline = offline_rows(offline_aggregates(as_changes(events, agg), agg), agg)
    stream = stream_values_per_card_and_time(events, agg)
    assert len(stream) > 500
    assert mismatches(offline, stream, agg) == []
    # any delivery order of the same changes gives the same offline copy
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    again = offline_aggregates(as_changes(shuffled, agg), agg)
    assert again.drop(st.CREATED_COLUMN).equals(offline_aggregates(as_changes(events, agg), agg).drop(st.CREATED_COLUMN))
    # the latest row of each card is what the aggregator holds (and Redis serves) at the end
    state = RollingAggregates(agg)
    for event in shuffled:
        state.apply(event.change)
    expected = oracle(events, agg)
    for card in state.cards:
        t, values = state.features(card)
        assert max(p[1] for p in offline if p[0] == card) == t == expected[card][0]
        assert mismatches({(card, t): offline[(card, t)]}, {(card, t): values}, agg) == []


def test_created_time_is_when_the_reference_time_was_first_known():
    agg = Aggregation(view="cards")
    now = datetime(2026, 12, 2, 12, tzinfo=timezone.utc)
    row = {"txn_id": "t1", "card_id": "c1", "amount": 10.0, "event_ts": iso(now)}
    events = [Event(envelope("c", row, 100), "t1"), Event(envelope("c", row, 100), "t1"),  # a replay, later
              Event(envelope("u", {**row, "amount": 4.0}, 101), "t1")]
    frame = offline_aggregates(as_changes(events, agg), agg)
    assert frame.height == 1
    assert frame.row(0, named=True)[st.CREATED_COLUMN] == KNOWN
    assert frame.row(0, named=True)["amount_sum_1h"] == 4.0  # the update replaced it


def test_changes_the_stream_cannot_use_are_left_out_as_it_skips_them():
    agg = Aggregation(view="cards")
    now = datetime(2026, 12, 2, 12, tzinfo=timezone.utc)
    good = {"txn_id": "t1", "card_id": "c1", "amount": 10.0, "event_ts": iso(now)}
    bad = [{**good, "txn_id": "t2", "event_ts": "yesterday"}, {**good, "txn_id": "t3", "amount": float("nan")},
           {k: v for k, v in {**good, "txn_id": "t4"}.items() if k != "card_id"}]
    events = [Event(envelope("c", good, 1), "t1")] + [Event(envelope("c", r, i + 2), r["txn_id"]) for i, r in
                                                      enumerate(bad)]
    changes = as_changes(events, agg)
    assert changes.filter(st.usable(agg)).height == 1
    state = RollingAggregates(agg)
    for event in events:
        try:
            state.apply(event.change)
        except ValueError:
            pass
    frame = offline_aggregates(changes, agg)
    assert frame.height == 1 and frame.row(0, named=True)["txn_count_24h"] == state.features("c1")[1]["txn_count_24h"] == 1
    # event times kept as text: ISO-8601 (naive is UTC) or the epoch microseconds a JSON number carried
    assert st.text_event_time_us("1764676800000000") == 1764676800000000
    assert st.text_event_time_us("2026-12-02T12:00:00") == event_time_us("2026-12-02T12:00:00Z", "t")
    assert st.text_event_time_us("yesterday") is None and st.text_event_time_us(None) is None
    assert json.loads(events[0].value)["op"] == "c"
    nothing = offline_aggregates(changes.clear(), agg)  # a table of only malformed changes: no rows, the same columns
    assert nothing.height == 0 and nothing.columns == frame.columns


def test_window_edges_are_open_at_t_minus_w_and_closed_at_t():
    agg = Aggregation(view="cards")
    t = datetime(2026, 12, 2, 12, tzinfo=timezone.utc)
    offsets = [timedelta(0), timedelta(0), timedelta(hours=1), timedelta(hours=1) - timedelta(microseconds=1),
               timedelta(hours=24), timedelta(hours=24) - timedelta(microseconds=1), timedelta(hours=25)]
    events = [Event(envelope("c", {"txn_id": f"t{i}", "card_id": "c1", "amount": float(i + 1), "event_ts": iso(t - d)},
                             10 + i), f"t{i}") for i, d in enumerate(offsets)]
    offline = offline_rows(offline_aggregates(as_changes(events, agg), agg), agg)
    stream = stream_values_per_card_and_time(events, agg)
    assert mismatches(offline, stream, agg) == []
    latest = stream[("c1", event_time_us(iso(t), "t"))]
    assert (latest["txn_count_1h"], latest["txn_count_24h"]) == (3, 5)  # t, t, t-1h+1us | + t-1h, t-24h+1us
