"""The demo's lake stage on real local services: transactions written into PostgreSQL reach
gold through Debezium, Kafka, bronze and silver, counted against the source table; a second
run appends new transactions and adds a gold version (the demo rerun on the same state).
The sink is the supervised service rendered from the catalogue's `cdc_sink` declaration."""

from __future__ import annotations

import psycopg

from workloads.data.features.streaming import Aggregation
from workloads.data.ingest.fraud_source import KEY, TABLE
from workloads.data.lake.contract import Contract
from workloads.data.lake.gold import load_lake_uri
from workloads.data.lake.tables import read
from workloads.data.synthetic import FRAUD_SCHEMA
from workloads.local import postgres
from workloads.local.cdc_sink import local_pipeline
from workloads.local.demo_lake import LAKE_SERVICES, SINK, LakeStageSettings, run_lake_stage

CONTRACT = Contract(FRAUD_SCHEMA, key=KEY)


def test_transactions_reach_gold_through_cdc_and_a_rerun_adds_a_version(local_services, s3_settings, lake):
    sup = local_services(*LAKE_SERVICES).supervisor
    table_name = local_pipeline().lake_table  # the local pipeline's (its sink is a service: one table)
    with psycopg.connect(postgres.dsn(sup.context("postgres")), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")  # the shared session's CDC test uses it too
    settings = LakeStageSettings(rows=800, rate=800, wait_s=120, max_invalid_fraction=1.0,
                                 aggregation=Aggregation(view="cards_demo_lake_test"))
    lines: list[str] = []
    first = run_lake_stage(sup, CONTRACT, s3_settings, settings, log=lines.append)
    assert first.inserted == first.source_rows == first.gold_rows == 800
    assert first.bronze_rows == 800 + first.chargebacks  # each insert, then each chargeback update
    assert first.lag_p99_s >= first.lag_p50_s > 0 and first.ingest_rows_per_s > 0
    assert first.quarantined == 0 and first.quarantine_rate == 0
    trained_on = load_lake_uri(first.gold_uri, FRAUD_SCHEMA, s3_settings)
    assert trained_on.meta["lake.digest"] == first.gold_digest and len(trained_on) == 800
    assert int(trained_on.labels.sum()) == first.chargebacks  # the late labels are in gold
    # the streaming features of the same change events: every card's aggregates in Redis
    assert first.aggregated_cards > 0 and first.freshness_p99_s >= first.freshness_p50_s >= 0

    second = run_lake_stage(sup, CONTRACT, s3_settings, settings, log=lines.append)
    assert second.source_rows == second.gold_rows == 1600 and second.inserted == 800
    assert second.versions["gold"] > first.versions["gold"]
    silver = read(lake, "silver", table_name)
    assert silver.height == 1600 and silver.get_column(KEY).is_unique().all()
    assert any("RUNNING" in line for line in lines)
    assert dict(second.report_rows())["table versions"].startswith("bronze v")
    # the sink ran as the supervised service (`strata local status` lists it), not in this process
    (status,) = sup.status([SINK])
    assert status.healthy and status.pid and status.ports == {"cdc-sink": status.port}
    assert "bronze/fraud" in sup.logs(SINK, lines=200)
    assert "event -> online p50" in dict(second.report_rows())["streaming features (CDC -> Redis)"]
