"""The lake step that writes a streaming view's offline copy (gold/<view>) from bronze, on the
real local S3: the change events go through the CDC sink's own `append` into bronze, the step
writes gold/<view>, and its rows equal the streaming aggregator's values per (card, event time)
(tests/features/test_offline_aggregates.py has the in-memory proof); incremental, idempotent,
with lineage and metrics like the other steps."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pytest

from tests.features.aggregate_events import card_events, envelope
from tests.features.test_offline_aggregates import mismatches, offline_rows, stream_values_per_card_and_time
from workloads.data.features.streaming import CREATED_COLUMN, Aggregation, RollingAggregates
from workloads.data.ingest.cdc import CdcIngester
from workloads.data.lake import metrics
from workloads.data.lake.aggregates import aggregate
from workloads.data.lake.tables import LakeError, history, lineage, read


@dataclass
class Record:  # what the sink reads from Kafka
    value: bytes
    partition: int
    offset: int


def ingest(lake, table: str, values: list[bytes], start: int) -> int:
    sink = CdcIngester(lake, table, "txn_id", topic="strata.test.card_transactions", bootstrap="unused:0")
    return sink.append([Record(v, 0, start + i) for i, v in enumerate(values)])


def test_the_offline_copy_equals_the_stream_and_is_incremental_and_idempotent(lake, table_name):
    agg = Aggregation(view=f"{table_name}_cards")
    events = card_events(21, transactions=400, cards=8)
    first, second = events[: len(events) // 2], events[len(events) // 2:]
    ingest(lake, table_name, [e.value for e in first] + [b"{not json"], start=0)  # a malformed one: bronze keeps it

    step = aggregate(lake, table_name, agg)
    assert step.output_version is not None and step.quarantined == 1 and step.rows_in == len(first) + 1
    got = read(lake, "gold", agg.view)
    assert mismatches(offline_rows(got, agg), stream_values_per_card_and_time(first, agg), agg) == []

    again = aggregate(lake, table_name, agg)  # nothing new in bronze: nothing committed
    assert again.output_version is None and lake.require("gold", agg.view).version() == step.output_version

    ingest(lake, table_name, [e.value for e in second], start=len(first) + 1)  # late events, updates, deletes
    published = metrics.ROWS.labels(step="aggregate", table=agg.view, outcome="published")._value.get()
    step2 = aggregate(lake, table_name, agg)
    gold = read(lake, "gold", agg.view)
    assert mismatches(offline_rows(gold, agg), stream_values_per_card_and_time(events, agg), agg) == []
    assert metrics.ROWS.labels(step="aggregate", table=agg.view, outcome="published")._value.get() == \
        published + gold.height
    # the latest row per card is what the aggregator holds at the end
    state = RollingAggregates(agg)
    for event in events:
        state.apply(event.change)
    last = gold.sort("event_ts").group_by("card_id").last()
    assert last.height == len(state.cards)
    for row in last.iter_rows(named=True):
        assert {n: row[n] for n in agg.feature_names} == pytest.approx(state.features(row["card_id"])[1], abs=1e-9)
    # what the point-in-time join reads: keys, event and created time, the features
    assert gold.columns == ["card_id", "event_ts", CREATED_COLUMN, *agg.feature_names]
    assert gold.schema["event_ts"] == pl.Datetime("us", "UTC") and gold.get_column(CREATED_COLUMN).null_count() == 0
    # lineage: gold/<view> <- every bronze version
    assert lineage(lake, "gold", agg.view, step2.output_version)[f"bronze/{table_name}"] == [0, 1, 2]
    entry = history(lake, "gold", agg.view)[0]["lineage"]
    assert entry["step"] == "aggregate" and entry["inputs"] == {f"bronze/{table_name}": [2]}


def test_a_bronze_table_without_the_aggregated_columns_is_named(lake, table_name):
    ingest(lake, table_name, [envelope("c", {"txn_id": "t1", "card": "c1", "amount": 1.0, "event_ts": "2026-12-02"},
                                       1)], start=0)
    with pytest.raises(LakeError, match=r"has no column\(s\) card_id, which view 'cards'"):
        aggregate(lake, table_name, Aggregation(view="cards"))


def test_a_poll_whose_later_changes_bring_new_columns_keeps_every_row():
    from workloads.data.ingest.cdc import Change, to_frame

    frame = to_frame([Change("c", {"txn_id": "t1", "amount": "1"}, 1, 0),
                      Change("x", {"txn_id": None, "raw_event": "{not json"}, -1, 0),  # a malformed one, later
                      Change("c", {"txn_id": "t2", "amount": "2", "added": "y"}, 2, 0)])  # a column added at the source
    assert frame.to_dicts() == [{"txn_id": "t1", "amount": "1", "raw_event": None, "added": None},
                                {"txn_id": None, "amount": None, "raw_event": "{not json", "added": None},
                                {"txn_id": "t2", "amount": "2", "raw_event": None, "added": "y"}]


@pytest.mark.parametrize("stack", ["quick", "standard", "enterprise", None])
def test_strata_data_run_writes_the_copy_of_each_streaming_view_of_the_table(stack):
    from workloads.data.cli import _pipelines_of

    (pipeline,) = _pipelines_of("fraud", stack)  # the stack's pipeline (not rendered without Kafka), or the local one
    assert pipeline.aggregation().view == "card_activity_stream" and pipeline.lake_table == "fraud"
    assert _pipelines_of("digits", stack) == []
