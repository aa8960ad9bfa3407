"""Debezium's PostgreSQL connector: one config, used by the local Connect worker (REST) and
by the cluster's Strimzi `KafkaConnector` (infra/platform/kafka_connect.py)."""

from __future__ import annotations

from dataclasses import dataclass

CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"


@dataclass(frozen=True)
class PostgresSource:
    """A source table to capture. Credentials are passed in (a secret reference on the cluster)."""

    name: str  # connector name, e.g. "fraud-transactions"
    host: str
    port: int
    database: str
    user: str
    password: str  # the value locally; `${secrets:<ns>/<secret>:password}` for Strimzi's config provider
    tables: tuple[str, ...]  # "public.card_transactions"
    topic_prefix: str = "strata.cdc"

    def topic(self, table: str) -> str:
        return f"{self.topic_prefix}.{table}"

    @property
    def slot(self) -> str:
        return "strata_" + "".join(c if c.isalnum() else "_" for c in self.name)


def connector_config(source: PostgresSource) -> dict[str, str]:
    return {
        "connector.class": CONNECTOR_CLASS,
        "tasks.max": "1",
        "plugin.name": "pgoutput",  # PostgreSQL's built-in logical decoding output plugin
        "database.hostname": source.host,
        "database.port": str(source.port),
        "database.user": source.user,
        "database.password": source.password,
        "database.dbname": source.database,
        "topic.prefix": source.topic_prefix,
        "table.include.list": ",".join(source.tables),
        "slot.name": source.slot,
        "publication.name": f"{source.slot}_pub",
        "publication.autocreate.mode": "filtered",
        "snapshot.mode": "initial",
        "decimal.handling.mode": "double",
        "tombstones.on.delete": "false",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": "false",
        "poll.interval.ms": "100",
        "heartbeat.interval.ms": "10000",
    }
