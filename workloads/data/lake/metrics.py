"""Prometheus collectors of the lake steps, from the metrics contract (one set per process).

`strata_lake_refused_batches_total` drives the `LakeBatchHeldFromGold` alert
(runbooks/LakeBatchHeldFromGold.md)."""

from __future__ import annotations

from workloads.monitoring.metrics import create

ROWS = create("lake_rows_total")
REFUSED = create("lake_refused_batches_total")
INVALID_FRACTION = create("lake_invalid_row_ratio")
VERSION = create("lake_table_version")
LAST_INGEST = create("lake_last_ingest_timestamp_seconds")
LAG = create("lake_cdc_lag_seconds")
STEP_SECONDS = create("lake_step_duration_seconds")
