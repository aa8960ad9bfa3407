"""Prometheus metrics of the lake steps (one set per process, labelled by table).

`strata_lake_invalid_row_fraction` against the spec's `maxInvalidRowFraction` drives the
`LakeBatchOverInvalidLimit` alert (runbooks/LakeBatchOverInvalidLimit.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROWS = Counter("strata_lake_rows", "Rows through a lake step, by outcome "
               "(bronze: ingested; silver: valid|quarantined|superseded; gold: published|held)",
               ["step", "table", "outcome"])
REFUSED = Counter("strata_lake_refused_batches", "Batches over maxInvalidRowFraction, kept out of gold", ["table"])
INVALID_FRACTION = Gauge("strata_lake_invalid_row_fraction", "Invalid-row fraction of the last silver batch", ["table"])
MAX_INVALID_FRACTION = Gauge("strata_lake_max_invalid_row_fraction", "The contract's maxInvalidRowFraction", ["table"])
VERSION = Gauge("strata_lake_table_version", "Latest Delta version written", ["layer", "table"])
LAST_INGEST = Gauge("strata_lake_last_ingest_timestamp_seconds", "When bronze last received rows", ["table"])
LAG = Gauge("strata_lake_cdc_lag_seconds", "Source commit -> bronze append, last batch's oldest change", ["table"])
STEP_SECONDS = Histogram("strata_lake_step_seconds", "Wall time of one batch of a lake step", ["step", "table"],
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
