"""CDC: Debezium change events on Kafka -> bronze, exactly once per Kafka offset.

Debezium's PostgreSQL connector (on Kafka Connect) writes one JSON envelope per row change
(`{"before", "after", "source": {"lsn", "ts_ms", ...}, "op": "c|u|d|r"}`) to
`<prefix>.<schema>.<table>`. This consumer appends each poll to bronze as one commit whose
Delta transactions record, per partition, the last Kafka offset it holds
(`cdc:<topic>:<partition>`). It never commits offsets to Kafka: on start it seeks every
partition to bronze's record + 1, so a crash (of this process, of Connect, of the broker)
neither loses nor repeats a Kafka record in bronze. Debezium itself is at-least-once across
a Connect crash (it may re-send changes after its last flushed LSN); those replays carry the
same LSN, which is bronze's `_offset`, and silver keeps one row per key and LSN.

    python -m workloads.data.ingest.cdc --bootstrap 127.0.0.1:19092 --topic strata.public.transactions \
        --table fraud --key txn_id [--metrics-port 19610] [--bronze-bucket B] [--ssl-cafile ...]

On the cluster it is the catalogue's `cdc_sink` workload (mutual TLS to the Strimzi listener
from `STRATA_KAFKA_SSL_*`, the stack's bronze bucket).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any, Iterable

import polars as pl

from workloads.data.lake import metrics
from workloads.data.lake.tables import Lake, _consumed, append_bronze

log = logging.getLogger("strata.cdc")


@dataclass
class Change:
    op: str  # c (insert), u (update), d (delete), r (snapshot read)
    row: dict[str, Any]  # the after image (the before image's key for deletes)
    lsn: int
    source_ts_ms: int


def parse(value: bytes | None, key: str) -> Change | None:
    """A Debezium envelope -> Change; None for tombstones. Raises ValueError on a malformed one."""
    if value is None:
        return None
    event = json.loads(value)
    if isinstance(event, dict) and "payload" in event and "schema" in event:  # schemas.enable=true
        event = event["payload"]
    if not isinstance(event, dict) or "op" not in event:
        raise ValueError("not a Debezium change event (no 'op')")
    op = event["op"]
    row = event.get("before") if op == "d" else event.get("after")
    if not isinstance(row, dict) or key not in row:
        raise ValueError(f"change event op={op!r} without the key column {key!r}")
    source = event.get("source") or {}
    lsn = source.get("lsn")
    if lsn is None:
        raise ValueError("change event without source.lsn")
    return Change(op=op if op != "r" else "c", row=row, lsn=int(lsn), source_ts_ms=int(source.get("ts_ms") or 0))


def to_frame(changes: list[Change]) -> pl.DataFrame:
    """Payload columns as strings (bronze keeps values as received)."""
    columns: dict[str, list[Any]] = {}
    for change in changes:  # every column any change carries, in order of appearance
        for name in change.row:
            columns.setdefault(name, [])
    for change in changes:
        for name in columns:
            value = change.row.get(name)
            columns[name].append(None if value is None else str(value) if not isinstance(value, str) else value)
    return pl.DataFrame({n: pl.Series(n, v, dtype=pl.String) for n, v in columns.items()})


@dataclass
class CdcIngester:
    lake: Lake
    table: str
    key: str
    topic: str
    bootstrap: str
    max_batch: int = 50_000
    poll_ms: int = 200
    security: dict[str, Any] | None = None  # kafka-python transport options (workloads.streaming.tls)
    # How long to wait for the topic (Debezium creates it with the first change); None: until
    # stopped, as the supervised sink does (it may start before its connector is registered).
    topic_wait_s: float | None = 60.0

    def __post_init__(self) -> None:
        self._known: set[str] = set()  # payload columns seen so far (bronze's, then each batch's)

    def app_id(self, partition: int) -> str:
        return f"cdc:{self.topic}:{partition}"

    def _consumer(self, stop: callable = lambda: False):
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
                                 auto_offset_reset="earliest", max_poll_records=self.max_batch,
                                 consumer_timeout_ms=0, **(self.security or {}))
        started = time.monotonic()
        deadline = None if self.topic_wait_s is None else started + self.topic_wait_s
        partitions, told = consumer.partitions_for_topic(self.topic), started
        while not partitions and not stop() and (deadline is None or time.monotonic() < deadline):
            if time.monotonic() - told >= 30:  # the connector creates the topic
                log.warning("waiting for topic %s on %s (%.0fs): is the connector registered?", self.topic,
                            self.bootstrap, time.monotonic() - started)
                told = time.monotonic()
            time.sleep(0.5)
            partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            consumer.close()
            if stop():
                return None
            raise RuntimeError(f"topic {self.topic!r} does not exist on {self.bootstrap} (is the connector running?)")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        bronze = self.lake.table("bronze", self.table)
        if bronze is not None:
            self._known = {f.name for f in bronze.schema().fields if not f.name.startswith("_")}
        for tp in tps:
            done = _consumed(bronze, self.app_id(tp.partition))
            if done >= 0:
                consumer.seek(tp, done + 1)
            else:
                consumer.seek_to_beginning(tp)
        return consumer

    def run(self, stop: callable = lambda: False, idle_exit_s: float | None = None) -> int:
        """Poll -> bronze until `stop()` (or `idle_exit_s` without new records). Returns rows appended."""
        consumer, total, idle_since = self._consumer(stop), 0, time.monotonic()
        if consumer is None:  # stopped while waiting for the topic
            return 0
        try:
            while not stop():
                polled = consumer.poll(timeout_ms=self.poll_ms, max_records=self.max_batch)
                records = [r for batch in polled.values() for r in batch]
                if not records:
                    if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                        break
                    continue
                idle_since = time.monotonic()
                total += self.append(records)
        finally:
            consumer.close()
        return total

    def append(self, records: Iterable[Any]) -> int:
        """One bronze commit for one poll; malformed events go to bronze's quarantine via silver
        (kept as a row with `_op` = "x" and the raw value), never dropped."""
        changes, ops, offsets, last = [], [], [], {}
        oldest_ms = None
        for r in records:
            last[r.partition] = max(last.get(r.partition, -1), r.offset)
            try:
                change = parse(r.value, self.key)
            except ValueError as error:  # kept (silver quarantines it: no key), never dropped
                change = Change(op="x", row={self.key: None, "raw_event": (r.value or b"").decode("utf-8", "replace"),
                                             "parse_error": str(error)}, lsn=-1, source_ts_ms=0)
            if change is None:
                continue
            changes.append(change)
            ops.append(change.op)
            offsets.append(change.lsn)
            if change.source_ts_ms:
                oldest_ms = change.source_ts_ms if oldest_ms is None else min(oldest_ms, change.source_ts_ms)
        frame = to_frame(changes) if changes else pl.DataFrame({self.key: pl.Series([], dtype=pl.String)})
        self._known |= {c for change in changes if change.op in ("c", "u") for c in change.row}
        absent = [",".join(sorted(self._known - change.row.keys())) or None if change.op in ("c", "u") else None
                  for change in changes]
        version = append_bronze(self.lake, self.table, frame, source=f"kafka://{self.topic}", offsets=offsets,
                                op=ops, txns=[(self.app_id(p), o) for p, o in sorted(last.items())], absent=absent,
                                extra_lineage={"offsets": {str(p): o for p, o in last.items()}})
        if oldest_ms:
            metrics.LAG.labels(table=self.table).set(max(0.0, time.time() - oldest_ms / 1000))
        log.info("bronze/%s v%s: %d changes (offsets %s)", self.table, version, len(changes), last)
        return len(changes)


def main(argv: list[str] | None = None) -> int:
    from prometheus_client import start_http_server

    from workloads.data.storage import LAKE_BUCKETS, S3Settings
    from workloads.streaming import tls

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--metrics-port", type=int)
    ap.add_argument("--metrics-host", default="127.0.0.1")
    ap.add_argument("--bronze-bucket", default=LAKE_BUCKETS["bronze"], help="the lake's bronze bucket")
    ap.add_argument("--max-batch", type=int, default=50_000)
    tls.add_arguments(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        security = tls.security_options(args.ssl_cafile, args.ssl_certfile, args.ssl_keyfile)
    except ValueError as error:
        ap.error(str(error))
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_host)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    lake = Lake(S3Settings.from_env(), buckets={**LAKE_BUCKETS, "bronze": args.bronze_bucket})
    ingester = CdcIngester(lake, args.table, args.key, args.topic, args.bootstrap, max_batch=args.max_batch,
                           security=security, topic_wait_s=None)
    ingester.run(stop=lambda: bool(stopping))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
