"""Data-layer benchmarks, ratios against baselines measured in the same run.

* Validation of 1e6 rows x 20 features against a data contract (the rules of 10 bounded
  features: not_null, finite, min, max; plus the label's allowed values and the key's
  uniqueness) with `workloads.data.lake.contract.split`, beside plain pandas checks of the
  same rules producing the same per-row rule lists. Goal: >= 500k rows/s.
* bronze -> silver -> gold of 1e6 rows on the local S3 (SeaweedFS), then an incremental
  run over 1% new rows: wall times and their ratio.
* bronze -> silver of many small bronze versions (what a CDC consumer commits, one per
  poll): one silver merge per range of versions (`refine`'s default) against one merge per
  bronze version (`versions_per_merge=1`), same versions, same run.

Run with `make bench` (pytest tests/benchmarks --benchmark-enable -m benchmark_suite -s).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import polars as pl
import pytest

from workloads.data.lake.contract import RULES_COLUMN, Contract, split
from workloads.data.schema import Feature, FeatureSchema

pytestmark = pytest.mark.benchmark_suite
ROWS, FEATURES = 1_000_000, 20
SCHEMA = FeatureSchema(
    features=tuple(Feature(f"f{i:02d}", "float32", 0.0 if i < 10 else None, 1.0 if i < 10 else None, nullable=i >= 10)
                   for i in range(FEATURES)),
    label="label", label_values=(0, 1))
CONTRACT = Contract(SCHEMA, key="id")


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, size=(ROWS, FEATURES)).astype(np.float32)
    bad = rng.random(ROWS) < 0.002
    x[bad, 3] = np.nan
    x[rng.random(ROWS) < 0.001, 5] = 2.0
    labels = (rng.random(ROWS) < 0.03).astype(np.int64)
    labels[rng.random(ROWS) < 0.0005] = 7
    ids = np.arange(ROWS).astype(str)
    ids[10:20] = ids[0]  # duplicated keys
    return pl.DataFrame({f"f{i:02d}": x[:, i] for i in range(FEATURES)}).with_columns(
        pl.Series("label", labels), pl.Series("id", ids))


def pandas_split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The same rules in plain pandas: a boolean column per rule, the rule ids of bad rows."""
    broken = {"id.not_null": df["id"].isna(), "id.unique": df["id"].notna() & df["id"].duplicated(keep=False)}
    for f in SCHEMA.features:
        col = df[f.name].astype("float64")
        if not f.nullable:
            broken[f"{f.name}.not_null"] = col.isna()
        broken[f"{f.name}.finite"] = np.isinf(col)
        finite = np.isfinite(col)
        if f.low is not None:
            broken[f"{f.name}.min"] = finite & (col < f.low)
        if f.high is not None:
            broken[f"{f.name}.max"] = finite & (col > f.high)
    broken["label.not_null"] = df["label"].isna()
    broken["label.allowed"] = df["label"].notna() & ~df["label"].isin(list(SCHEMA.label_values))
    flags = pd.DataFrame(broken)
    bad = flags.any(axis=1)
    bad_flags = flags[bad]
    rules = bad_flags.apply(lambda row: [k for k, v in row.items() if v], axis=1)
    return df[~bad], rules


def _median(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def test_validation_1e6_x_20(benchmark, frame):
    out = benchmark.pedantic(split, args=(CONTRACT, frame), rounds=3, iterations=1, warmup_rounds=1)
    ours_s = benchmark.stats.stats.median
    pdf = frame.to_pandas()
    valid_pd, rules_pd = pandas_split(pdf)
    pandas_s = _median(lambda: pandas_split(pdf), 1)
    assert out.valid.height == len(valid_pd) and out.quarantined.height == len(rules_pd)
    assert sorted(map(sorted, out.quarantined.get_column(RULES_COLUMN).to_list())) == sorted(map(sorted, rules_pd.tolist()))
    rules = len(CONTRACT.rules())
    print(f"\nvalidation {ROWS:.0e} rows x {FEATURES} features, {len(out.rule_counts)} rules broken of {rules} "
          f"checked ({out.quarantined.height} rows quarantined): ours {ours_s:.3f} s = {ROWS / ours_s:,.0f} rows/s "
          f"(median of 3); plain pandas, same rules and rule lists: {pandas_s:.3f} s = {ROWS / pandas_s:,.0f} rows/s; "
          f"ratio {pandas_s / ours_s:.1f}x; cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    benchmark.extra_info.update({"rows_per_s": ROWS / ours_s, "pandas_s": pandas_s, "ratio": pandas_s / ours_s})


def test_bronze_silver_gold_1e6_and_incremental_1pct(benchmark, lake, table_name):
    from workloads.data.lake.tables import append_bronze, publish, read, refine
    from workloads.data.synthetic import FRAUD_NAMES, FRAUD_SCHEMA, FraudConfig, generate_fraud

    contract = Contract(FRAUD_SCHEMA, key="txn_id")
    chunk = 250_000

    def batch(rows: int, seed: int, start: int) -> pl.DataFrame:
        x, y = generate_fraud(FraudConfig(rows=rows, seed=seed))
        return pl.DataFrame({n: x[:, i] for i, n in enumerate(FRAUD_NAMES)}).with_columns(
            pl.Series("is_fraud", y), pl.Series("txn_id", [f"tx{start + i:08d}" for i in range(rows)]))

    def ingest(rows: int, seed: int, start: int) -> float:
        t = time.perf_counter()
        for lo in range(0, rows, chunk):
            n = min(chunk, rows - lo)
            append_bronze(lake, table_name, batch(n, seed + lo, start + lo), "bench", list(range(start + lo, start + lo + n)))
        return time.perf_counter() - t

    bronze_s = ingest(ROWS, 1, 0)
    t = time.perf_counter()
    refine(lake, table_name, contract, 1.0)
    silver_s = time.perf_counter() - t
    t = time.perf_counter()
    publish(lake, table_name, contract)
    gold_s = time.perf_counter() - t
    full_s = bronze_s + silver_s + gold_s

    inc_bronze_s = ingest(ROWS // 100, 99, ROWS)

    def incremental():
        refine(lake, table_name, contract, 1.0)
        publish(lake, table_name, contract)

    benchmark.pedantic(incremental, rounds=1, iterations=1)
    inc_s = benchmark.stats.stats.median + inc_bronze_s
    assert read(lake, "gold", table_name).height == ROWS + ROWS // 100
    print(f"\nlake {ROWS:.0e} rows on SeaweedFS: bronze {bronze_s:.1f} s + silver {silver_s:.1f} s + gold {gold_s:.1f} s "
          f"= {full_s:.1f} s ({ROWS / full_s:,.0f} rows/s); incremental 1% ({ROWS // 100} rows): {inc_s:.1f} s, "
          f"{inc_s / full_s:.3f}x the full run; cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    benchmark.extra_info.update({"full_s": full_s, "incremental_s": inc_s, "ratio": inc_s / full_s})


def test_refine_many_small_bronze_versions_batched_vs_per_version(benchmark, lake, table_name):
    from workloads.data.lake.tables import append_bronze, read, refine
    from workloads.data.synthetic import FRAUD_NAMES, FRAUD_SCHEMA, FraudConfig, generate_fraud

    contract = Contract(FRAUD_SCHEMA, key="txn_id")
    versions, rows = 100, 200  # 20k change events; each key updated once, 50 versions later

    def poll(version: int) -> pl.DataFrame:
        x, y = generate_fraud(FraudConfig(rows=rows, seed=version))
        first = (version % 50) * rows
        return pl.DataFrame({n: x[:, i] for i, n in enumerate(FRAUD_NAMES)}).with_columns(
            pl.Series("is_fraud", y), pl.Series("txn_id", [f"tx{first + i:08d}" for i in range(rows)]))

    batched, single = f"{table_name}b", f"{table_name}s"
    for table in (batched, single):
        for version in range(versions):
            append_bronze(lake, table, poll(version), "kafka://bench", list(range(version * rows, (version + 1) * rows)),
                          op="c" if version < 50 else "u")
    t = time.perf_counter()
    each = refine(lake, single, contract, 1.0, versions_per_merge=1)
    per_version_s = time.perf_counter() - t
    result = benchmark.pedantic(lambda: refine(lake, batched, contract, 1.0), rounds=1, iterations=1)
    batched_s = benchmark.stats.stats.median
    assert result.batches == each.batches == versions and result.rows_out == each.rows_out == versions * rows
    key_columns = [*contract.columns, "_offset"]
    assert read(lake, "silver", batched, key="txn_id").select(key_columns).equals(
        read(lake, "silver", single, key="txn_id").select(key_columns))
    print(f"\nrefine {versions} bronze versions x {rows} rows (half of them updates): one merge per range "
          f"{batched_s:.1f} s ({versions * rows / batched_s:,.0f} rows/s), one merge per version {per_version_s:.1f} s "
          f"({versions * rows / per_version_s:,.0f} rows/s); ratio {per_version_s / batched_s:.1f}x; "
          f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    benchmark.extra_info.update({"batched_s": batched_s, "per_version_s": per_version_s,
                                 "ratio": per_version_s / batched_s})
