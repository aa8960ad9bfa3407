"""The Kafka stream worker: input topic -> micro-batched inference -> output topic.

Runs in the main environment (kafka-python 3.0.12 + torch), with the same registered
version and the same input contract as the real-time server.

Delivery: **at least once**. Per poll (<= `batch_size` records) the worker

1. decodes and validates every record; a bad one is produced to the dead-letter topic
   with its original bytes and the reason in headers (`strata-dlq-reason`,
   `strata-dlq-detail`, and the source topic/partition/offset);
2. scores the valid ones in one batch and produces one output record per input record,
   keyed by the input key (or `<topic>:<partition>:<offset>` when it has none), so
   downstream consumers can drop duplicates by key;
3. waits until the broker has acknowledged every produced record (acks=all,
   idempotent producer), and only then
4. commits the consumed offsets (synchronously).

A crash anywhere before 4 replays the batch on restart: duplicates, never loss (Seldon
Core v1 committed before processing and lost messages on scale-down: issue 4097). A
produce failure rewinds the consumer to the batch's first offsets and retries. SIGTERM
(or SIGINT) finishes the current batch, commits and exits 0.

Input record value: a JSON object of feature -> number (exactly the schema's features),
or `{"features": {...}}` with an optional `"id"`. Output value::

    {"key": "...", "model": "fraud", "version": "3", "alias": "champion",
     "scores": {"proba_0": 0.97, "proba_1": 0.03}, "prediction": 0, "features": {...},
     "source": {"topic": "...", "partition": 0, "offset": 42}}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from workloads.serving.contract import InputError
from workloads.streaming.topics import Topics, topics_for

log = logging.getLogger("strata.stream")

DLQ_REASON = "strata-dlq-reason"
DLQ_DETAIL = "strata-dlq-detail"


@dataclass
class WorkerConfig:
    bootstrap: str
    model: str
    alias: str = "champion"
    version: str = ""
    registry_dir: str = ""
    topics: Topics | None = None
    group_id: str = ""
    team: str = "unknown"
    batch_size: int = 256
    poll_timeout_ms: int = 200
    session_timeout_ms: int = 10_000
    # also the rebalance timeout: how long a rebalance may wait for a member that died
    # mid-rebalance (a batch takes milliseconds, so this can be far below Kafka's 5 min)
    max_poll_interval_ms: int = 60_000
    metrics_port: int = 0  # 0: no metrics endpoint
    metrics_host: str = "127.0.0.1"  # a pod sets 0.0.0.0 so Prometheus/KEDA can scrape it
    instance_id: str = ""  # static group membership (e.g. a StatefulSet pod name)
    client_id: str = ""
    max_produce_retries: int = 5
    include_features: bool = True
    # how long to wait for the input topic's partitions before joining the group (its
    # KafkaTopic may still be reconciling when the pod starts)
    topic_wait_s: float = 120.0
    # mutual TLS to the cluster's Kafka listener (Strimzi: cluster CA + the KafkaUser's cert/key);
    # all empty: PLAINTEXT, as the local broker on loopback
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    # online features (workloads.serving.enrichment): the model's EnrichmentPlan as JSON, and its Redis
    features: str = ""
    feature_store_url: str = ""

    def security_options(self) -> dict[str, Any]:
        """kafka-python client options for the configured transport (workloads.streaming.tls)."""
        from workloads.streaming.tls import security_options

        return security_options(self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)

    def resolved_topics(self) -> Topics:
        return self.topics or topics_for(self.model)

    def resolved_group(self) -> str:
        return self.group_id or f"strata-{self.model}-stream"


class Stopper:
    """SIGTERM/SIGINT: finish the batch in hand, commit, exit."""

    def __init__(self) -> None:
        self.stop = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        log.info("signal %d: finishing the current batch, then exiting", signum)
        self.stop = True


class StreamMetrics:
    def __init__(self, model: str, version: str, team: str, topics: Topics, registry: Any = None):
        from workloads.monitoring import metrics as contract

        c = contract.collectors(contract.Emitter.STREAMING, registry=registry)
        self._c = c
        base = (model, version, team)
        self.model, self.team = model, team
        self.consumed = c["strata_stream_messages_consumed_total"].labels(*base, topics.input)
        self.produced = c["strata_stream_messages_produced_total"].labels(*base, topics.output)
        self._dlq = c["strata_stream_dead_letter_messages_total"]
        self._dlq_base = (*base, topics.dead_letter)
        self._lag = c["strata_stream_consumer_lag_messages"]
        self.batch = c["strata_stream_batch_duration_seconds"].labels(*base)
        self.rebalances = c["strata_stream_rebalances_total"].labels(model, team)
        self.topic = topics.input

    def dead_letter(self, reason: str) -> None:
        self._dlq.labels(*self._dlq_base, reason).inc()

    def lag(self, partition: int, value: int) -> None:
        self._lag.labels(self.model, self.team, self.topic, str(partition)).set(value)


def _rebalance_listener(worker: "StreamWorker") -> Any:
    from kafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            if worker.metrics is not None:
                worker.metrics.rebalances.inc()
            log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

        def on_partitions_assigned(self, assigned: Any) -> None:
            log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))

    return Listener()


class TopicUnavailable(RuntimeError):
    """The input topic had no partitions on the brokers within the wait."""


class StreamWorker:
    def __init__(self, config: WorkerConfig, stopper: Stopper | None = None, metrics_registry: Any = None):
        self.config = config
        self.topics = config.resolved_topics()
        self.stopper = stopper or Stopper()
        self.loaded = None
        self.metrics: StreamMetrics | None = None
        self._metrics_registry = metrics_registry
        self.consumer = None
        self.producer = None
        self.batches = 0
        self.enricher = None
        self._store_failures = 0

    # ------------------------------------------------------------------ set-up

    def start(self) -> "StreamWorker":
        from kafka import KafkaConsumer, KafkaProducer

        from workloads.serving import model as model_mod
        from workloads.serving import registry

        cfg = self.config
        security = cfg.security_options()  # before anything starts: a bad TLS setting fails fast
        self.loaded = model_mod.load(
            cfg.registry_dir or registry.default_root(), cfg.model,
            alias=None if cfg.version else cfg.alias, version=cfg.version or None,
            max_batch_rows=max(cfg.batch_size, 1), max_payload_bytes=64 * 1_048_576,
        )
        self.metrics = StreamMetrics(cfg.model, self.loaded.version.version, cfg.team, self.topics, self._metrics_registry)
        self.enricher = connect_enricher(cfg, self.loaded.schema.names, self._metrics_registry or _default_registry())
        if cfg.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(cfg.metrics_port, addr=cfg.metrics_host,
                              registry=self._metrics_registry or _default_registry())
        client_id = cfg.client_id or f"strata-stream-{cfg.model}-{os.getpid()}"
        self.producer = KafkaProducer(
            bootstrap_servers=cfg.bootstrap, client_id=client_id + "-p",
            acks="all", enable_idempotence=True, linger_ms=5, batch_size=256 * 1024,
            max_in_flight_requests_per_connection=5, **security,
        )
        consumer_kwargs: dict[str, Any] = dict(
            bootstrap_servers=cfg.bootstrap, group_id=cfg.resolved_group(), client_id=client_id + "-c",
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=cfg.batch_size,
            session_timeout_ms=cfg.session_timeout_ms, heartbeat_interval_ms=max(cfg.session_timeout_ms // 4, 500),
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            fetch_max_wait_ms=cfg.poll_timeout_ms, **security,
        )
        if cfg.instance_id:
            consumer_kwargs["group_instance_id"] = cfg.instance_id
        self.consumer = KafkaConsumer(**consumer_kwargs)
        self._await_input_topic()
        self.consumer.subscribe([self.topics.input], listener=_rebalance_listener(self))
        log.info("worker %s: %s -> %s (dlq %s), group %s, model %s v%s", client_id, self.topics.input,
                 self.topics.output, self.topics.dead_letter, cfg.resolved_group(), cfg.model,
                 self.loaded.version.version)
        return self

    def _await_input_topic(self) -> None:
        """Join the group only once the brokers know the input topic's partitions. A first
        join without them (the topic still being created) can leave a kafka-python 3.0
        member unassigned after its rejoin: running, consuming nothing. The producer asks
        for the topic by name, so a broker that auto-creates topics (the local one) creates
        it now, as a subscribe would; on the cluster its KafkaTopic creates it."""
        from kafka.errors import KafkaTimeoutError

        waited_from = time.monotonic()
        while True:
            try:
                if self.producer.partitions_for(self.topics.input) and \
                        self.consumer.partitions_for_topic(self.topics.input):
                    return
            except KafkaTimeoutError:  # the producer waited max_block_ms for the topic
                pass
            if self.stopper.stop:
                return  # SIGTERM while waiting: run() exits at once
            if time.monotonic() - waited_from > self.config.topic_wait_s:
                self.close()
                raise TopicUnavailable(
                    f"input topic {self.topics.input!r} has no partitions on {self.config.bootstrap} "
                    f"after {self.config.topic_wait_s:g} s (--topic-wait-s)")
            time.sleep(0.5)

    # ------------------------------------------------------------------ the loop

    def run(self, max_batches: int | None = None, idle_exit_s: float | None = None) -> int:
        """Until SIGTERM (or `max_batches`, or `idle_exit_s` without records: tests/benchmarks)."""
        idle_since = time.monotonic()
        try:
            while not self.stopper.stop:
                polled = self.consumer.poll(timeout_ms=self.config.poll_timeout_ms, max_records=self.config.batch_size)
                if not polled:
                    if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                        break
                    self._update_lag({})
                    continue
                idle_since = time.monotonic()
                self.process(polled)
                if max_batches is not None and self.batches >= max_batches:
                    break
        finally:
            self.close()
        return 0

    def process(self, polled: dict[Any, list[Any]]) -> None:
        """Score, produce, await acks, commit: one micro-batch (all partitions of a poll)."""
        start = time.perf_counter()
        records = [record for batch in polled.values() for record in batch]
        for attempt in range(self.config.max_produce_retries + 1):
            try:
                futures = self._produce_batch(records)
            except FeatureStoreDown as error:
                self._wait_for_store(polled, error)
                return
            self.producer.flush()
            failed = [f for f in futures if f.failed()]
            if not failed:
                break
            log.warning("batch attempt %d: %d of %d sends failed (%s); retrying", attempt + 1, len(failed),
                        len(futures), failed[0].exception)
            time.sleep(min(2 ** attempt * 0.2, 5.0))
        else:
            # never commit what was not delivered: rewind so nothing is skipped, and fail
            for tp, batch in polled.items():
                self.consumer.seek(tp, batch[0].offset)
            raise RuntimeError("could not deliver a batch after retries; offsets not committed")
        self.batches += 1
        self._store_failures = 0
        self._commit(polled)
        self.metrics.consumed.inc(len(records))
        self.metrics.batch.observe(time.perf_counter() - start)
        self._update_lag(polled)

    def _commit(self, polled: dict[Any, list[Any]]) -> None:
        from kafka.errors import CommitFailedError
        from kafka.structs import OffsetAndMetadata

        offsets = {tp: OffsetAndMetadata(batch[-1].offset + 1, "", -1) for tp, batch in polled.items()}
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as error:
            # the group rebalanced meanwhile: another member replays this batch (duplicates, no loss)
            log.warning("commit failed after a rebalance (%s); the batch will be replayed", error)

    def _produce_batch(self, records: list[Any]) -> list[Any]:
        loaded = self.loaded
        names = loaded.schema.names
        name_set = set(names)
        valid_rows: list[list[Any]] = []
        valid: list[tuple[Any, dict, str]] = []
        futures = []
        version = loaded.version.version
        decoded, rejected = [], []
        for record in records:
            key = _key_of(record)
            try:
                decoded.append((record, key, _decode(record.value)))
            except _DecodeError as error:
                rejected.append((record, key, "decode", str(error)))
        if self.enricher is not None:
            decoded = enrich_batch(self.enricher, decoded, rejected)  # before any send: an outage replays cleanly
        futures.extend(self._dead_letter(record, key, reason, detail, version) for record, key, reason, detail in rejected)
        for record, key, features in decoded:
            try:
                if features.keys() != name_set:
                    loaded.contract.from_records([features])  # raises naming the missing/extra field
                valid_rows.append([features[n] for n in names])
                valid.append((record, features, key))
            except InputError as error:
                futures.append(self._dead_letter(record, key, error.reason, error.message, version))
        if valid:
            matrix, valid = self._validate_rows(valid_rows, valid, futures, version)
            if valid:
                try:
                    outputs = loaded.predict(matrix)
                except Exception as error:  # noqa: BLE001 - a model failure must not lose the records
                    log.exception("inference failed for a batch of %d", len(valid))
                    for record, _features, key in valid:
                        futures.append(self._dead_letter(record, key, "inference", f"{type(error).__name__}: {error}", version))
                    return futures
                futures.extend(self._produce_outputs(valid, outputs, version))
        return futures

    def _validate_rows(self, rows: list[list[Any]], valid: list[tuple], futures: list, version: str) -> tuple[np.ndarray, list]:
        contract = self.loaded.contract
        try:
            return contract._finish(contract._to_float_matrix(rows, contract.width, None), None), valid
        except InputError:
            pass  # at least one bad row: check them one by one (rare path)
        good_rows, good = [], []
        for row, item in zip(rows, valid):
            try:
                good_rows.append(contract._finish(contract._to_float_matrix([row], contract.width, None), None)[0])
                good.append(item)
            except InputError as error:
                record, _features, key = item
                futures.append(self._dead_letter(record, key, error.reason, error.message, version))
        matrix = np.stack(good_rows) if good_rows else np.empty((0, contract.width), dtype=np.float32)
        return matrix, good

    def _produce_outputs(self, valid: list[tuple], outputs: np.ndarray, version: str) -> list[Any]:
        loaded = self.loaded
        out_names = loaded.output_names
        labels = list(loaded.schema.label_values)
        predictions = outputs.argmax(axis=1) if outputs.shape[1] > 1 else (outputs[:, 0] >= 0.5).astype(int)
        headers = [("strata-model", self.config.model.encode()), ("strata-version", version.encode())]
        alias = self.config.alias if not self.config.version else ""
        futures = []
        produced = 0
        for (record, features, key), scores, predicted in zip(valid, outputs.tolist(), predictions.tolist()):
            body = {
                "key": key, "model": self.config.model, "version": version, "alias": alias,
                "scores": dict(zip(out_names, scores)),
                "prediction": labels[predicted] if outputs.shape[1] == len(labels) else int(predicted),
                "source": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
            }
            if self.config.include_features:
                body["features"] = features
            futures.append(self.producer.send(self.topics.output, key=key.encode(), value=orjson.dumps(body),
                                              headers=headers))
            produced += 1
        self.metrics.produced.inc(produced)
        return futures

    def _dead_letter(self, record: Any, key: str, reason: str, detail: str, version: str) -> Any:
        headers = [
            (DLQ_REASON, reason.encode()),
            (DLQ_DETAIL, detail[:1000].encode("utf-8", "replace")),
            ("strata-source-topic", record.topic.encode()),
            ("strata-source-partition", str(record.partition).encode()),
            ("strata-source-offset", str(record.offset).encode()),
            ("strata-model", self.config.model.encode()),
            ("strata-version", version.encode()),
        ]
        self.metrics.dead_letter(reason)
        value = record.value if isinstance(record.value, (bytes, bytearray)) else b""
        return self.producer.send(self.topics.dead_letter, key=key.encode(), value=bytes(value), headers=headers)

    def _wait_for_store(self, polled: dict[Any, list[Any]], error: Exception) -> None:
        """The online store is down and the spec says reject: nothing of the batch is sent or
        committed; rewind to it and back off, so it is scored once the store answers."""
        for tp, batch in polled.items():
            self.consumer.seek(tp, batch[0].offset)
        self._store_failures += 1
        pause = min(2 ** (self._store_failures - 1) * 0.2, 5.0)
        log.warning("online feature store unavailable (%s); batch of %d rewound, retry in %.1f s",
                    error, sum(len(b) for b in polled.values()), pause)
        time.sleep(pause)

    def _update_lag(self, polled: dict[Any, list[Any]]) -> None:
        consumer = self.consumer
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            batch = polled.get(tp)
            position = batch[-1].offset + 1 if batch else consumer.position(tp)
            if position is not None:
                self.metrics.lag(tp.partition, max(high - position, 0))

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush()
            self.producer.close(timeout=10)
            self.producer = None
        if self.consumer is not None:
            self.consumer.close(autocommit=False)
            self.consumer = None


class _DecodeError(ValueError):
    pass


class FeatureStoreDown(RuntimeError):
    """The online store failed a batch's lookup and the model's spec says reject."""


def connect_enricher(cfg: WorkerConfig, schema_names: list[str], metrics_registry: Any) -> Any:
    if not cfg.features:
        return None
    from workloads.data.features.lookup import EnrichmentPlan
    from workloads.serving.enrichment import Enricher

    if not cfg.feature_store_url:
        raise ValueError("--features is set but --feature-store-url is empty: where is the online store?")
    return Enricher.connect(EnrichmentPlan.from_json(cfg.features), cfg.feature_store_url, schema_names,
                            metrics_registry)


def enrich_batch(enricher: Any, decoded: list[tuple], rejected: list[tuple]) -> list[tuple]:
    """One lookup for the batch's records; one without its join keys goes to `rejected`."""
    keyed = []
    for record, key, doc in decoded:
        missing = enricher.missing_key(doc)
        if missing:
            rejected.append((record, key, "missing_field", missing))
        else:
            keyed.append((record, key, doc))
    try:
        enriched = enricher.enrich([doc for _r, _k, doc in keyed])
    except InputError as error:
        if error.reason == "feature_store_unavailable":
            raise FeatureStoreDown(error.message) from None
        raise
    return [(record, key, doc) for (record, key, _doc), doc in zip(keyed, enriched)]


def _key_of(record: Any) -> str:
    if record.key:
        try:
            return record.key.decode("utf-8")
        except UnicodeDecodeError:
            return record.key.hex()
    return f"{record.topic}:{record.partition}:{record.offset}"


def _decode(value: Any) -> dict[str, Any]:
    if value is None:
        raise _DecodeError("the record has no value (tombstone)")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        # orjson refuses NaN/Infinity literals; the stdlib parser reads them, so such a row
        # is refused by the schema check with the field named, not as undecodable
        try:
            doc = json.loads(value)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
            raise _DecodeError(f"the value is not JSON: {str(error)[:200]}") from None
    if isinstance(doc, dict) and isinstance(doc.get("features"), dict) and set(doc) <= {"features", "id"}:
        doc = doc["features"]
    if not isinstance(doc, dict):
        raise _DecodeError(f"the value must be a JSON object of feature -> number, got {type(doc).__name__}")
    return doc


def _default_registry() -> Any:
    from prometheus_client import REGISTRY

    return REGISTRY


def main(argv: list[str] | None = None, worker_class: type[StreamWorker] | None = None) -> int:
    """`python -m workloads.streaming`; `worker_class` lets a test run a subclass (fault injection)."""
    parser = argparse.ArgumentParser(description="Strata stream worker (Kafka, at-least-once)")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--version", default="")
    parser.add_argument("--registry", default="")
    parser.add_argument("--input-topic")
    parser.add_argument("--output-topic")
    parser.add_argument("--dead-letter-topic")
    parser.add_argument("--group", default="")
    parser.add_argument("--team", default="unknown")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--poll-timeout-ms", type=int, default=200)
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument("--max-poll-interval-ms", type=int, default=60_000)
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--metrics-host", default=os.environ.get("STRATA_METRICS_HOST", "127.0.0.1"))
    parser.add_argument("--instance-id", default=os.environ.get("STRATA_STREAM_INSTANCE_ID", ""))
    parser.add_argument("--ssl-cafile", default=os.environ.get("STRATA_KAFKA_SSL_CAFILE", ""),
                        help="CA bundle of the brokers' certificates (enables mutual TLS)")
    parser.add_argument("--ssl-certfile", default=os.environ.get("STRATA_KAFKA_SSL_CERTFILE", ""))
    parser.add_argument("--ssl-keyfile", default=os.environ.get("STRATA_KAFKA_SSL_KEYFILE", ""))
    parser.add_argument("--features", default="", help="the model's online features (EnrichmentPlan JSON)")
    parser.add_argument("--feature-store-url", default="", help="the online feature store (redis:// or rediss://)")
    parser.add_argument("--no-features", action="store_true", help="leave the input features out of the output")
    parser.add_argument("--topic-wait-s", type=float, default=120.0,
                        help="seconds to wait for the input topic to exist before giving up (exit 1)")
    parser.add_argument("--log-level", default=os.environ.get("STRATA_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    defaults = topics_for(args.model)
    topics = Topics(args.input_topic or defaults.input, args.output_topic or defaults.output,
                    args.dead_letter_topic or defaults.dead_letter)
    stopper = Stopper()
    stopper.install()
    worker = (worker_class or StreamWorker)(WorkerConfig(
        bootstrap=args.bootstrap, model=args.model, alias=args.alias, version=args.version,
        registry_dir=args.registry, topics=topics, group_id=args.group, team=args.team,
        batch_size=args.batch_size, poll_timeout_ms=args.poll_timeout_ms,
        session_timeout_ms=args.session_timeout_ms, max_poll_interval_ms=args.max_poll_interval_ms,
        metrics_port=args.metrics_port, metrics_host=args.metrics_host,
        instance_id=args.instance_id, include_features=not args.no_features,
        ssl_cafile=args.ssl_cafile, ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
        topic_wait_s=args.topic_wait_s, features=args.features, feature_store_url=args.feature_store_url,
    ), stopper)
    try:
        worker.start()
    except ValueError as error:
        parser.error(str(error))
    except TopicUnavailable as error:
        print(f"stream worker: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"stream worker ready: {topics.input} -> {topics.output} (dlq {topics.dead_letter})", flush=True)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
