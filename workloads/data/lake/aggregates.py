"""bronze -> gold/<view>: the offline copy of a streaming feature view.

The CDC feature aggregator (`workloads.data.features.streaming`) keeps a view's rolling
aggregates current in Redis from the change stream; this step writes the same aggregates to
the lake, so training sets get by point-in-time join the values serving reads online, and a
mode without the change stream (no Kafka: batch ingestion only) still has a table to
materialize. One declaration (`Aggregation`: windows, columns, feature names) and one set of
rules (`offline_aggregates`, next to the stream's `RollingAggregates`) serve both.

It reads bronze, not silver: the aggregator applies every change as the stream carries it
(every version of a transaction moves the card's reference time; the data contract's
quarantine does not apply there), and bronze holds exactly those changes, with the LSN
(`_offset`) and the operation. Changes the stream could not use (no key, entity, event time
or finite value) are counted as `malformed` and left out, as the aggregator skips them.

    gold/<view>: <entity>, <eventTime> (the card's reference time t), created_ts (when t was
                 first known: its bronze ingestion), one column per aggregate; one row per (entity, t)

Idempotent like the other steps: the commit records the bronze version consumed (Delta app
transaction `aggregate:<bronze uri>`), so a re-run with no new bronze version commits nothing,
and its lineage names the bronze versions it took in. A new bronze version can change rows of
any earlier t (late events, corrections, deletes), so the step recomputes the view from
bronze's projected columns and replaces the table in one commit.
"""

from __future__ import annotations

import time

import polars as pl

from workloads.data.features.streaming import (EVENT_US, KEY, KNOWN_AT, LSN, OP, Aggregation, offline_aggregates,
                                               text_event_time_us, usable)
from workloads.data.lake import metrics
from workloads.data.lake.tables import (INGESTED_AT, OFFSET, Lake, LakeError, StepResult, _commit, _consumed,
                                        _write)
from workloads.data.lake.tables import OP as BRONZE_OP

STEP = "aggregate"


def bronze_changes(frame: pl.DataFrame, agg: Aggregation) -> pl.DataFrame:
    """Bronze rows (payload as text) -> the typed changes `offline_aggregates` reads; a value the
    stream could not use becomes null (then the change is not `usable`)."""
    stamps = frame.get_column(agg.event_time).unique()
    parsed = pl.DataFrame({agg.event_time: stamps,
                           EVENT_US: pl.Series([text_event_time_us(s) for s in stamps.to_list()], dtype=pl.Int64)})
    return (frame.join(parsed, on=agg.event_time, how="left", nulls_equal=True)
            .select(pl.col(agg.record_key).cast(pl.String).alias(KEY), pl.col(OFFSET).alias(LSN),
                    pl.col(BRONZE_OP).alias(OP), pl.col(agg.entity).cast(pl.String),
                    pl.col(EVENT_US), pl.col(agg.value).cast(pl.Float64, strict=False),
                    pl.col(INGESTED_AT).alias(KNOWN_AT)))


def aggregate(lake: Lake, table: str, agg: Aggregation) -> StepResult:
    """bronze/<table> -> gold/<agg.view>, when bronze has versions the view has not taken in."""
    t0 = time.perf_counter()
    result = StepResult(STEP, agg.view)
    bronze = lake.require("bronze", table)
    app = f"{STEP}:{lake.uri('bronze', table)}"
    done, last = _consumed(lake.table("gold", agg.view), app), bronze.version()
    if done >= last:
        return result
    columns = [agg.record_key, agg.entity, agg.event_time, agg.value]
    present = {f.name for f in bronze.schema().fields}
    missing = [c for c in columns if c not in present]
    if missing:
        raise LakeError(f"bronze/{table} v{last} has no column(s) {', '.join(missing)}, which view {agg.view!r} "
                        f"aggregates (entity {agg.entity}, eventTime {agg.event_time}, value {agg.value}, key "
                        f"{agg.record_key})")
    read = pl.from_arrow(bronze.to_pyarrow_table(columns=[*columns, OFFSET, BRONZE_OP, INGESTED_AT]))
    phase = result.add_seconds("read", t0)
    changes = bronze_changes(read, agg)
    rows = offline_aggregates(changes, agg)
    malformed = changes.height - changes.filter(usable(agg)).height
    phase = result.add_seconds("aggregate", phase)
    lineage = {"step": STEP, "view": agg.view, "inputs": {f"bronze/{table}": list(range(done + 1, last + 1))},
               "bronzeVersion": last, "changes": changes.height, "malformed": malformed, "rows": rows.height,
               "windows": list(agg.windows)}
    result.batches, result.rows_in, result.rows_out = last - done, changes.height, rows.height
    result.quarantined = malformed  # not kept apart here: bronze holds them, silver quarantines them
    result.output_version = _write(lake, "gold", agg.view, rows, _commit(app, last, lineage), mode="overwrite")
    result.add_seconds("write", phase)
    metrics.ROWS.labels(step=STEP, table=agg.view, outcome="published").inc(rows.height)
    metrics.ROWS.labels(step=STEP, table=agg.view, outcome="malformed").inc(malformed)
    metrics.VERSION.labels(layer="gold", table=agg.view).set(result.output_version)
    metrics.STEP_SECONDS.labels(step=STEP, table=agg.view).observe(time.perf_counter() - t0)
    return result
