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
    bronze = read(lake, "bronze", table_name)  # where a shortfall is: not yet in bronze, or lost by refine
    assert silver.height == len(expected) == 1500, (
        f"silver {silver.height} rows; bronze {bronze.height} events, {bronze.get_column(KEY).n_unique()} keys")  # no row lost ...
    assert silver.get_column(KEY).is_unique().all()  # ... none duplicated
    assert _labels(silver) == expected  # and the late chargebacks superseded the first images
    gold = publish(lake, table_name, CONTRACT)
    assert read(lake, "gold", table_name).height == 1500 and gold.rows_out >= 1500


def _labels(frame) -> dict[str, int]:
    return dict(zip(frame.get_column(KEY).to_list(), frame.get_column("is_fraud").to_list()))


SCHEMA_TABLE = "schema_change_transactions"


def _insert(dsn: str, start: int, rows: int, extra: dict[str, str] | None = None, drop: str | None = None) -> None:
    from workloads.data.synthetic import FRAUD_NAMES, FraudConfig, generate_fraud

    x, y = generate_fraud(FraudConfig(rows=rows, seed=start))
    names = [n for n in FRAUD_NAMES if n != drop]
    cols = [KEY, *names, "is_fraud", *(extra or {})]
    values = [(f"tx{start + i:09d}", *[float(x[i, FRAUD_NAMES.index(n)]) for n in names], int(y[i]), *(extra or {}).values())
              for i in range(rows)]
    with psycopg.connect(dsn) as conn:
        conn.cursor().executemany(f"INSERT INTO {SCHEMA_TABLE} ({', '.join(chr(34) + c + chr(34) for c in cols)}) "
                                  f"VALUES ({', '.join(['%s'] * len(cols))})", values)


def test_source_schema_change_added_column_taken_in_dropped_one_stops_refine_naming_it(cdc, lake, table_name):
    from workloads.data.lake.contract import ContractError
    from workloads.data.synthetic import FRAUD_NAMES

    sup, _source, dsn = cdc
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {SCHEMA_TABLE}")
        conn.execute(f"CREATE TABLE {SCHEMA_TABLE} ({KEY} text PRIMARY KEY, "
                     + ", ".join(f'"{n}" double precision' for n in FRAUD_NAMES) + ", is_fraud smallint NOT NULL)")
    source = PostgresSource(name=f"schema-{table_name}", host="127.0.0.1", port=sup.port("postgres"),
                            database=postgres.DATABASE, user=postgres.USER, password=postgres.PASSWORD,
                            tables=(f"public.{SCHEMA_TABLE}",), topic_prefix=f"strata.schema{table_name}")
    kafka_connect.put_connector(sup.url("kafka-connect"), source.name, connector_config(source))
    _wait_running(sup, source.name)
    ingester = CdcIngester(lake, table_name, KEY, source.topic(f"public.{SCHEMA_TABLE}"), sup.kafka_bootstrap)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: ingester.run(stop=stop.is_set), daemon=True)
    thread.start()

    def silver_rows(count: int) -> int:
        deadline, height = time.monotonic() + 120, 0
        while time.monotonic() < deadline:
            if lake.table("bronze", table_name) is not None:
                refine(lake, table_name, CONTRACT, max_invalid_fraction=1.0)
                height = read(lake, "silver", table_name).height if lake.table("silver", table_name) else 0
                if height >= count:
                    return height
            time.sleep(1)
        raise AssertionError(f"silver/{table_name}: {height} of {count} rows after 120 s")

    def bronze_rows(count: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and read(lake, "bronze", table_name).height < count:
            time.sleep(1)
        assert read(lake, "bronze", table_name).height >= count

    try:
        _insert(dsn, 0, 20)
        assert silver_rows(20) == 20
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {SCHEMA_TABLE} ADD COLUMN country text")
        _insert(dsn, 100, 20, extra={"country": "FR"})
        assert silver_rows(40) == 40  # the added column is taken in
        silver = read(lake, "silver", table_name)
        assert silver.filter(silver.get_column("country") == "FR").height == 20
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'ALTER TABLE {SCHEMA_TABLE} DROP COLUMN "merchant_risk"')
        _insert(dsn, 200, 20, extra={"country": "DE"}, drop="merchant_risk")
        bronze_rows(60)  # kept as received: nothing lost
        with pytest.raises(ContractError, match=r"merchant_risk \(\d+ events\).*dropped at the source"):
            refine(lake, table_name, CONTRACT, max_invalid_fraction=1.0)
        assert read(lake, "silver", table_name).height == 40  # silver stays at the batch before
    finally:
        stop.set()
        thread.join(timeout=30)


def test_streaming_aggregates_of_the_cdc_stream_equal_sql_over_the_source_table(cdc, local_services):
    """The card aggregates the streaming worker pushes from Debezium's topic equal a brute-force
    SQL over PostgreSQL's table (the topic also holds what the kill -9 test above left there:
    changes Debezium re-sent after its restarts, counted once)."""
    import math

    import redis
    from prometheus_client import CollectorRegistry

    from workloads.data.features.streaming import AggregateMetrics, AggregatePusher, Aggregation
    from workloads.data.ingest.fraud_source import ENTITY, EVENT_TIME

    sup, source, dsn = cdc
    _wait_running(sup, source.name)
    FraudSource(dsn, seed=4, start=40_000, cards=25).write(400, rate=400)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"""
            WITH latest AS (SELECT {ENTITY}, max({EVENT_TIME}) AS t FROM {TABLE} GROUP BY {ENTITY})
            SELECT c.{ENTITY}, (extract(epoch FROM latest.t) * 1000000)::bigint,
                   count(*) FILTER (WHERE c.{EVENT_TIME} > latest.t - interval '1 hour'),
                   count(*) FILTER (WHERE c.{EVENT_TIME} > latest.t - interval '24 hours'),
                   coalesce(sum(c.amount) FILTER (WHERE c.{EVENT_TIME} > latest.t - interval '1 hour'), 0),
                   coalesce(sum(c.amount) FILTER (WHERE c.{EVENT_TIME} > latest.t - interval '24 hours'), 0)
            FROM {TABLE} c JOIN latest USING ({ENTITY}) GROUP BY c.{ENTITY}, latest.t""").fetchall()
    expected = {card: (t, {"txn_count_1h": n1, "txn_count_24h": n24, "amount_sum_1h": s1, "amount_sum_24h": s24})
                for card, t, n1, n24, s1, s24 in rows}
    assert len(expected) > 1

    client = redis.Redis.from_url(local_services("redis").url("redis"))
    agg = Aggregation(view=f"cdc_cards_{int(time.time())}")
    pusher = AggregatePusher(agg, client, source.topic(f"public.{TABLE}"), sup.kafka_bootstrap,
                             AggregateMetrics(CollectorRegistry()))

    def online() -> dict:
        out = {}
        for card in expected:
            stored = client.hgetall(agg.key(card))
            if stored:
                out[card] = (int(stored.pop(b"_event_us")), {k.decode(): float(v) for k, v in stored.items()})
        return out

    def wrong(got: dict) -> dict:
        return {c: (got.get(c), (t, f)) for c, (t, f) in expected.items()
                if c not in got or got[c][0] != t or got[c][1].keys() != f.keys()
                or not all(math.isclose(got[c][1][n], v, abs_tol=1e-6) for n, v in f.items())}

    deadline, bad = time.monotonic() + 120, {None: None}
    while time.monotonic() < deadline and bad:  # each run replays the topic into the same windows
        pusher.run(stop_at_end=True, max_seconds=60)
        bad = wrong(online())
        if bad:
            time.sleep(1)  # Debezium may still be sending the last changes
    assert bad == {}, f"{len(bad)} of {len(expected)} cards differ from SQL, e.g. {list(bad.items())[:2]}"
    client.close()
