"""CDC end to end on real local services: PostgreSQL -> Debezium on Kafka Connect -> Kafka ->
bronze -> silver -> gold; kill -9 of the Connect worker and of the broker mid-stream loses no
row and duplicates none in silver (counted against the source table)."""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import pytest

from workloads.data.ingest.cdc import CdcIngester
from workloads.data.ingest.debezium import PostgresSource, connector_config
from workloads.data.ingest.fraud_source import KEY, TABLE, FraudSource, create_table
from workloads.data.lake.contract import Contract
from workloads.data.lake.tables import publish, read, refine
from workloads.data.synthetic import FRAUD_SCHEMA
from workloads.local import kafka_connect, postgres

CONTRACT = Contract(FRAUD_SCHEMA, key=KEY)


@pytest.fixture(scope="module")
def cdc(local_services, s3_settings):  # noqa: F811 - session fixtures from conftest
    svc = local_services("s3", "kafka", "postgres", "kafka-connect")
    sup = svc.supervisor
    ctx = sup.context("postgres")
    source = PostgresSource(name="fraud-test", host="127.0.0.1", port=sup.port("postgres"),
                            database=postgres.DATABASE, user=postgres.USER, password=postgres.PASSWORD,
                            tables=(f"public.{TABLE}",), topic_prefix="strata.cdctest")
    with psycopg.connect(postgres.dsn(ctx), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        create_table(conn)
    kafka_connect.put_connector(sup.url("kafka-connect"), source.name, connector_config(source))
    return sup, source, postgres.dsn(ctx)


def _wait_running(sup, name: str, deadline_s: float = 120) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            status = kafka_connect.connector_status(sup.url("kafka-connect"), name)
            states = [status["connector"]["state"]] + [t["state"] for t in status["tasks"]]
            if status["tasks"] and all(s == "RUNNING" for s in states):
                return
            if "FAILED" in states:
                kafka_connect.restart_failed(sup.url("kafka-connect"), name)
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"connector {name} not RUNNING after {deadline_s}s")


def _kill9(sup, name: str) -> None:
    os.killpg(sup.record(name).pgid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while sup.service_status(name).state != "dead" and time.monotonic() < deadline:
        time.sleep(0.2)


def test_cdc_survives_kill9_of_connect_and_broker(cdc, lake, table_name):
    sup, source, dsn = cdc
    _wait_running(sup, source.name)
    ingester = CdcIngester(lake, table_name, KEY, source.topic(f"public.{TABLE}"), sup.kafka_bootstrap, poll_ms=200)
    stop = threading.Event()
    appended: list[int] = []

    def consume() -> None:  # a resumable consumer: restarted from bronze's offsets after any error
        deadline = time.monotonic() + 600
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                appended.append(ingester.run(stop=stop.is_set))
            except Exception:  # noqa: BLE001 - the broker was killed: start again from bronze
                time.sleep(1)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        FraudSource(dsn, seed=1, start=0).write(600, rate=400)
        _kill9(sup, "kafka-connect")
        FraudSource(dsn, seed=2, start=10_000).write(600, rate=400)  # written while Connect is down
        sup.up(["kafka-connect"])
        _wait_running(sup, source.name)
        _kill9(sup, "kafka")
        FraudSource(dsn, seed=3, start=20_000).write(300, rate=400)  # Connect retries against a dead broker
        sup.up(["kafka"])
        sup.up(["kafka-connect"])
        _wait_running(sup, source.name)
        with psycopg.connect(dsn) as conn:
            expected = dict(conn.execute(f"SELECT {KEY}, is_fraud FROM {TABLE}").fetchall())
        deadline = time.monotonic() + 240
        silver = None
        while time.monotonic() < deadline:
            if lake.table("bronze", table_name) is not None:
                refine(lake, table_name, CONTRACT, max_invalid_fraction=1.0)
                silver = read(lake, "silver", table_name)
                if silver.height >= len(expected) and _labels(silver) == expected:
                    break
            time.sleep(2)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert silver is not None
    assert silver.height == len(expected) == 1500  # no row lost ...
    assert silver.get_column(KEY).is_unique().all()  # ... none duplicated
    assert _labels(silver) == expected  # and the late chargebacks superseded the first images
    gold = publish(lake, table_name, CONTRACT)
    assert read(lake, "gold", table_name).height == 1500 and gold.rows_out >= 1500


def _labels(frame) -> dict[str, int]:
    return dict(zip(frame.get_column(KEY).to_list(), frame.get_column("is_fraud").to_list()))
