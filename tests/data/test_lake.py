"""The lake on the real local S3 (SeaweedFS): landing files -> bronze -> silver (+ quarantine)
-> gold; idempotent re-runs, incremental batches, dedup by key + offset, batches over the
invalid-row limit held out of gold, schema changes, lineage, versions and digests."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest

from workloads.data.dataset import load_uri
from workloads.data.ingest.files import ingest_landing, landing_prefix
from workloads.data.lake.contract import RULES_COLUMN, Contract, ContractError
from workloads.data.lake.gold import load_lake_uri
from workloads.data.lake.tables import history, lineage, publish, read, refine
from workloads.data.lake.versions import diff, rebuild
from workloads.data.storage import split_s3_uri
from workloads.data.synthetic import FRAUD_NAMES, FRAUD_SCHEMA, FraudConfig, generate_fraud

CONTRACT = Contract(FRAUD_SCHEMA, key="txn_id")


def fraud_frame(rows: int, seed: int, start: int = 0, corrupt: float = 0.0) -> pl.DataFrame:
    x, y = generate_fraud(FraudConfig(rows=rows, seed=seed, corrupt=corrupt))
    frame = pl.DataFrame({n: x[:, i] for i, n in enumerate(FRAUD_NAMES)})
    return frame.with_columns(pl.Series("is_fraud", y), pl.Series("txn_id", [f"tx{start + i:07d}" for i in range(rows)]))


def land(lake, table: str, name: str, frame: pl.DataFrame, fmt: str = "csv") -> None:
    bucket, prefix = split_s3_uri(landing_prefix(lake, table))
    buf = io.BytesIO()
    {"csv": frame.write_csv, "parquet": frame.write_parquet, "jsonl": frame.write_ndjson}[fmt](buf)
    lake.settings.client().put_object(Bucket=bucket, Key=f"{prefix}{name}.{fmt}", Body=buf.getvalue())


def run_all(lake, table: str, limit: float = 0.001):
    return (ingest_landing(lake, table, CONTRACT, chunk_rows=400), refine(lake, table, CONTRACT, limit),
            publish(lake, table, CONTRACT))


def test_landing_to_gold_is_idempotent_and_incremental(lake, table_name):
    land(lake, table_name, "day1", fraud_frame(1000, seed=1))
    land(lake, table_name, "day1-parquet", fraud_frame(200, seed=2, start=5000), fmt="parquet")
    bronze, silver, gold = run_all(lake, table_name)
    assert (bronze.files, bronze.chunks, bronze.rows) == (2, 4, 1200)  # 1000 rows in 400-row chunks + 200
    assert silver.rows_in == 1200 and silver.rows_out + silver.quarantined == 1200
    assert gold.rows_out == silver.rows_out
    versions = {layer: lake.require(layer, table_name).version() for layer in ("bronze", "silver", "gold")}

    again = run_all(lake, table_name)  # a re-run adds nothing, at every layer
    assert [r.rows for r in again[:1]] + [again[1].rows_in, again[2].rows_in] == [0, 0, 0]
    assert {layer: lake.require(layer, table_name).version() for layer in versions} == versions

    land(lake, table_name, "day2", fraud_frame(100, seed=3, start=9000), fmt="jsonl")
    bronze, silver, gold = run_all(lake, table_name)
    assert (bronze.files, bronze.rows, silver.rows_in) == (1, 100, 100)  # only the new file
    assert read(lake, "gold", table_name).height == 1300


def test_later_records_of_a_key_supersede_earlier_ones(lake, table_name):
    first = fraud_frame(50, seed=4)
    land(lake, table_name, "a", first)
    run_all(lake, table_name)
    fix = first.head(5).with_columns(pl.lit(123.0).alias("amount"))
    land(lake, table_name, "b", pl.concat([fix, fix]))  # the same corrections delivered twice
    _, silver, gold = run_all(lake, table_name)
    assert silver.superseded == 5
    silver_rows = read(lake, "silver", table_name, key="txn_id")
    assert silver_rows.height == 50 and silver_rows.get_column("txn_id").is_unique().all()
    gold_rows = read(lake, "gold", table_name, key="txn_id")
    assert gold_rows.height == 50
    assert gold_rows.head(5).get_column("amount").to_list() == [123.0] * 5


def test_quarantine_holds_every_rejected_row_with_its_rules(lake, table_name):
    frame = fraud_frame(400, seed=5).with_columns(pl.col("amount").cast(pl.String))
    bad = frame.with_columns(
        pl.when(pl.col("txn_id") == "tx0000003").then(pl.lit("-5"))
        .when(pl.col("txn_id") == "tx0000007").then(pl.lit("lots")).otherwise(pl.col("amount")).alias("amount"))
    land(lake, table_name, "mixed", bad)
    _, silver, gold = run_all(lake, table_name, limit=0.01)  # 2/400 = 0.5%: passes a 1% limit
    assert silver.quarantined == 2 and silver.refused_batches == []
    q = read(lake, "quarantine", table_name, key="txn_id")
    assert q.select("txn_id", RULES_COLUMN).rows() == [("tx0000003", ["amount.min"]), ("tx0000007", ["amount.type"])]
    assert q.get_column("amount").to_list() == ["-5", "lots"]  # as received
    assert gold.rows_out == 398


def test_batch_over_the_invalid_limit_is_held_out_of_gold(lake, table_name):
    land(lake, table_name, "good", fraud_frame(300, seed=6))
    run_all(lake, table_name)
    land(lake, table_name, "bad", fraud_frame(300, seed=7, start=1000, corrupt=0.05))
    _, silver, gold = run_all(lake, table_name)
    assert silver.refused_batches  # over 0.1%: kept in silver (nothing lost) but not promoted
    assert gold.rows_out == 0 and gold.rows_in > 0
    assert read(lake, "gold", table_name).height == 300
    entry = next(e for e in history(lake, "silver", table_name) if e["lineage"] and e["lineage"].get("passed") is False)
    assert entry["lineage"]["invalidFraction"] > 0.001


def test_added_column_is_taken_in_and_a_dropped_one_is_named(lake, table_name):
    land(lake, table_name, "v1", fraud_frame(20, seed=8))
    run_all(lake, table_name)
    land(lake, table_name, "v2", fraud_frame(20, seed=9, start=100).with_columns(pl.lit("FR").alias("country")))
    _, silver, _ = run_all(lake, table_name)
    assert silver.rows_out == 20 and "country" in read(lake, "silver", table_name).columns
    land(lake, table_name, "v3", fraud_frame(20, seed=10, start=200).drop("merchant_risk"))
    with pytest.raises(ContractError, match=r"v3\.csv.*merchant_risk"):
        ingest_landing(lake, table_name, CONTRACT)


def test_retyped_source_column_stops_refine_naming_it(lake, table_name):
    from workloads.data.lake.tables import append_bronze

    good = fraud_frame(20, seed=11)
    append_bronze(lake, table_name, good, "test", list(range(20)))
    assert refine(lake, table_name, CONTRACT).rows_out == 20
    retyped = fraud_frame(20, seed=12, start=100).with_columns(pl.lit("high").alias("device_risk"))
    append_bronze(lake, table_name, retyped, "test", list(range(100, 120)))
    with pytest.raises(ContractError, match=r"retyped.*device_risk.*'high'"):
        refine(lake, table_name, CONTRACT)
    assert read(lake, "silver", table_name).height == 20 and read(lake, "bronze", table_name).height == 40


def test_versions_lineage_digest_and_rebuild(lake, table_name, monkeypatch):
    land(lake, table_name, "a", fraud_frame(200, seed=11))
    run_all(lake, table_name)
    v1 = lake.require("gold", table_name).version()
    land(lake, table_name, "b", fraud_frame(100, seed=12, start=1000))
    run_all(lake, table_name)
    v2 = lake.require("gold", table_name).version()

    trace = lineage(lake, "gold", table_name, v2)
    assert set(trace) == {f"gold/{table_name}", f"silver/{table_name}", f"bronze/{table_name}"}
    # version 0 of every table is its empty creation; each later bronze version is one ingested chunk
    assert trace[f"bronze/{table_name}"] == list(range(1, lake.require("bronze", table_name).version() + 1))

    for key, value in lake.settings.env().items():
        monkeypatch.setenv(key, value)
    old = load_uri(f"lake://gold/{table_name}?version={v1}", schema=FRAUD_SCHEMA)
    assert len(old) == 200 and old.meta["lake.version"] == v1
    latest = load_lake_uri(f"lake://gold/{table_name}", FRAUD_SCHEMA, lake.settings)
    assert len(latest) == 300 and latest.meta["lake.version"] == v2
    again = rebuild(lake, table_name, CONTRACT, v1)
    assert again.meta["lake.digest"] == old.meta["lake.digest"] == old.digest()
    assert np.array_equal(again.features, old.features)
    d = diff(lake, table_name, CONTRACT, v1, v2)
    assert (d["added"], d["removed"], d["changed"]) == (100, 0, 0)


def _cdc_like_versions(lake, table: str) -> None:
    """30 small bronze versions as a CDC consumer commits them (one per poll): inserts, later
    updates of the same keys at higher LSNs, a Debezium replay (same LSN), deletes, one batch
    over the invalid limit and one malformed row."""
    from workloads.data.lake.tables import append_bronze

    lsn = 0
    for version in range(30):
        frame = fraud_frame(20, seed=100 + version, start=(version % 10) * 20,
                            corrupt=0.3 if version == 17 else 0.0)
        ops = ["u" if version >= 10 else "c"] * frame.height
        if version == 25:  # the keys of version 5 deleted
            frame, ops = fraud_frame(20, seed=105, start=100), ["d"] * 20
        offsets = list(range(lsn, lsn + frame.height))
        if version == 12:  # a replay after a Connect crash: the same events, the same LSNs
            offsets = list(range(lsn - 20, lsn))
        lsn = max(lsn, offsets[-1] + 1)
        if version == 3:
            frame = frame.with_columns(pl.when(pl.col("txn_id") == "tx0000061").then(pl.lit("-1.0"))
                                       .otherwise(pl.col("amount").cast(pl.String)).alias("amount"))
        append_bronze(lake, table, frame, "kafka://t", offsets, op=ops)


def test_one_silver_merge_consumes_many_bronze_versions_as_merging_each_would(lake, table_name):
    """The same 30 bronze versions refined in one merge and version by version: the same
    silver rows, quarantine, held batches and gold; the batched run makes one silver commit."""
    batched, single = f"{table_name}b", f"{table_name}s"
    for table in (batched, single):
        _cdc_like_versions(lake, table)
    one = refine(lake, batched, CONTRACT, 0.01)
    each = refine(lake, single, CONTRACT, 0.01, versions_per_merge=1)
    # version 0 of a table is its empty creation: then one commit against one per bronze version
    assert (lake.require("silver", batched).version(), lake.require("silver", single).version()) == (1, 30)
    assert (one.batches, one.rows_in, one.rows_out, one.quarantined, one.refused_batches) == (
        each.batches, each.rows_in, each.rows_out, each.quarantined, each.refused_batches) == (
        30, 600, one.rows_out, one.quarantined, [4, 18])  # bronze v4: 1 bad row of 20; v18: corrupt
    columns = [*CONTRACT.columns, "_offset", "_batch_passed"]
    assert read(lake, "silver", batched, key="txn_id").select(columns).equals(
        read(lake, "silver", single, key="txn_id").select(columns))
    assert read(lake, "silver", batched).height == 180  # 200 keys, the 20 of version 5 deleted
    assert read(lake, "quarantine", batched).height == read(lake, "quarantine", single).height == one.quarantined > 0
    entry = next(e for e in history(lake, "silver", batched) if e["lineage"])
    assert entry["lineage"]["inputs"] == {f"bronze/{batched}": list(range(1, 31))}
    assert [b["version"] for b in entry["lineage"]["batches"] if not b["passed"]] == [4, 18]
    # each bronze version's verdict (rows, valid, quarantined, deleted, rules broken) as if refined alone
    alone = [b for e in history(lake, "silver", single) if e["lineage"] for b in e["lineage"]["batches"]]
    assert sorted(alone, key=lambda b: b["version"]) == entry["lineage"]["batches"]
    assert any(b["rules"] for b in alone) and any(b["deleted"] for b in alone)
    publish(lake, batched, CONTRACT), publish(lake, single, CONTRACT)
    gold_columns = [*CONTRACT.columns, "_offset"]  # `_silver_version` differs: that is the point
    assert read(lake, "gold", batched, key="txn_id").select(gold_columns).equals(
        read(lake, "gold", single, key="txn_id").select(gold_columns))
    assert refine(lake, batched, CONTRACT, 0.01).rows_in == 0  # idempotent


def test_an_error_in_a_range_commits_the_versions_before_it(lake, table_name):
    from workloads.data.lake.tables import append_bronze

    for version in range(3):
        append_bronze(lake, table_name, fraud_frame(10, seed=200 + version, start=version * 10), "test",
                      list(range(version * 10, version * 10 + 10)))
    append_bronze(lake, table_name, fraud_frame(10, seed=203, start=30).with_columns(pl.lit("high").alias("device_risk")),
                  "test", list(range(30, 40)))
    with pytest.raises(ContractError, match=r"v4.*retyped.*device_risk"):
        refine(lake, table_name, CONTRACT)
    assert read(lake, "silver", table_name).height == 30  # versions 1-3, in one commit
    with pytest.raises(ContractError, match="device_risk"):
        refine(lake, table_name, CONTRACT)  # resumes at version 4 and stops there again
    assert read(lake, "silver", table_name).height == 30
