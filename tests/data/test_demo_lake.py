"""The demo's lake stage on real local services: transactions written into PostgreSQL reach
gold through Debezium, Kafka, bronze and silver, counted against the source table; a second
run appends new transactions and adds a gold version (the demo rerun on the same state).
The sink and the feature aggregator are the supervised services rendered from the catalogue's
`cdc_sink` and `feature_aggregator` declarations; the stage reads the aggregator's freshness from
its own histogram (`histogram_quantile` checked against numpy on the same samples)."""

from __future__ import annotations

import urllib.request

import psycopg

from workloads.data.ingest.fraud_source import KEY, TABLE
from workloads.data.lake.contract import Contract
from workloads.data.lake.gold import load_lake_uri
from workloads.data.lake.tables import read
from workloads.data.synthetic import FRAUD_SCHEMA
from workloads.local import postgres
from workloads.local.cdc_sink import local_pipeline
from workloads.local.demo_lake import AGGREGATOR, LAKE_SERVICES, SINK, LakeStageSettings, histogram_quantile, run_lake_stage

CONTRACT = Contract(FRAUD_SCHEMA, key=KEY)


def test_transactions_reach_gold_through_cdc_and_a_rerun_adds_a_version(local_services, s3_settings, lake):
    sup = local_services(*LAKE_SERVICES).supervisor
    table_name = local_pipeline().lake_table  # the local pipeline's (its sink is a service: one table)
    with psycopg.connect(postgres.dsn(sup.context("postgres")), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")  # the shared session's CDC test uses it too
    settings = LakeStageSettings(rows=800, rate=800, wait_s=120, max_invalid_fraction=1.0)
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
    # the view's offline copy from the same change events: each card's latest row is what Redis serves
    assert first.offline_view == "card_activity_stream" and first.offline_rows >= first.aggregated_cards
    assert first.offline_cards_equal == first.aggregated_cards, dict(first.report_rows())["offline copy (bronze -> gold)"]

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
    # so did the aggregator: the cards' values in Redis came from the supervised service
    (aggregator,) = sup.status([AGGREGATOR])
    assert aggregator.healthy and aggregator.pid and aggregator.ports == {"feature-aggregator": aggregator.port}
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{aggregator.port}/metrics", timeout=5).read().decode()
    assert 'strata_feature_freshness_seconds_count{view="card_activity_stream"}' in metrics
    # FeatureAggregatorStalled's inputs, from the supervised service's own loop
    assert 'strata_feature_aggregate_lag_messages{view="card_activity_stream"}' in metrics
    assert 'strata_feature_aggregate_last_poll_timestamp_seconds{view="card_activity_stream"}' in metrics
    assert second.aggregated_cards > 0 and second.freshness_p99_s < 30  # live changes, not a catch-up's hours
    assert second.offline_version > first.offline_version and second.offline_cards_equal == second.aggregated_cards


def test_histogram_quantile_interpolates_like_prometheus():
    import numpy as np

    bounds = (0.1, 0.5, 1.0, 5.0, float("inf"))
    samples = np.random.default_rng(3).uniform(0.0, 1.0, 10_000)
    buckets = [(le, float((samples <= le).sum())) for le in bounds]
    for q in (0.5, 0.9, 0.99):
        assert abs(histogram_quantile(q, buckets) - np.quantile(samples, q)) < 0.02  # uniform within buckets
    assert histogram_quantile(0.99, [(1.0, 0.0), (float("inf"), 5.0)]) == 1.0  # in +Inf: the highest bound
    assert np.isnan(histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]))
