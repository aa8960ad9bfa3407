"""The offline copy of a streaming view (issue 15 follow-up), against a baseline measured in the same run.

`offline_aggregates` (the lake step's vectorised rules: one row per card and event time) over
N change events, against the streaming aggregator's own `RollingAggregates` fed the same
changes one by one with the touched card's `features` read after each (what the aggregator
computes per change before its Redis write): changes/s of each and their ratio. Both give one
set of aggregates per change; the rows are checked equal on a sample.

Run with `make bench` (pytest tests/benchmarks --benchmark-enable -m benchmark_suite -s).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from workloads.data.features import streaming as st
from workloads.data.features.streaming import Aggregation, RollingAggregates, offline_aggregates
from workloads.data.ingest.cdc import Change

pytestmark = pytest.mark.benchmark_suite
CHANGES, CARDS = 200_000, 5_000


def test_offline_aggregates_vs_the_stream_state(benchmark):
    agg = Aggregation(view="bench_cards")
    rng = np.random.default_rng(5)
    now_us = int(datetime(2026, 12, 2, tzinfo=timezone.utc).timestamp() * 1e6)
    cards = [f"card{c}" for c in rng.integers(0, CARDS, CHANGES)]
    event_us = (now_us - rng.uniform(0, 3 * 86400e6, CHANGES)).astype(np.int64)
    amounts = np.round(rng.uniform(1, 500, CHANGES), 2)
    changes = pl.DataFrame({st.KEY: [f"t{i}" for i in range(CHANGES)], st.LSN: np.arange(CHANGES) + 1,
                            st.OP: ["c"] * CHANGES, agg.entity: cards, st.EVENT_US: event_us, agg.value: amounts,
                            st.KNOWN_AT: [datetime(2026, 12, 2, tzinfo=timezone.utc)] * CHANGES},
                           schema_overrides={st.KNOWN_AT: pl.Datetime("us", "UTC")})
    rows = [Change("c", {"txn_id": f"t{i}", "card_id": cards[i], "amount": float(amounts[i]),
                         "event_ts": int(event_us[i])}, i + 1, 0) for i in range(CHANGES)]

    def stream() -> dict:
        state, last = RollingAggregates(agg), {}
        for change in rows:
            _, touched = state.apply(change)
            for card in touched:
                last[card] = state.features(card)
        return last

    t0 = time.perf_counter()
    final = stream()
    stream_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    offline = offline_aggregates(changes, agg)
    offline_s = time.perf_counter() - t0
    benchmark.pedantic(offline_aggregates, args=(changes, agg), rounds=3, iterations=1)
    latest = offline.sort(agg.event_time).group_by(agg.entity).last()
    sample = latest.head(200).iter_rows(named=True)
    assert all(row["txn_count_24h"] == final[row[agg.entity]][1]["txn_count_24h"] for row in sample)
    assert offline.height == changes.select(agg.entity, st.EVENT_US).n_unique()
    ratio = (CHANGES / offline_s) / (CHANGES / stream_s)
    print(f"\noffline aggregates of {CHANGES} changes over {CARDS} cards: {CHANGES / offline_s:,.0f} changes/s "
          f"({offline_s:.2f} s); the stream's state change by change {CHANGES / stream_s:,.0f} changes/s "
          f"({stream_s:.2f} s); ratio {ratio:.1f}x; cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    benchmark.extra_info.update({"changes_per_s": CHANGES / offline_s, "stream_changes_per_s": CHANGES / stream_s,
                                 "ratio": ratio})
