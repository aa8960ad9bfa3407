"""A CDC pipeline, declared once: which source table feeds which bronze table, by which key.

The same `CdcPipeline` is rendered by both worlds:

- locally, the demo's lake stage (`workloads.local.demo_lake`) PUTs `connector_config(...)`
  to the local Connect worker with the local PostgreSQL's credentials, and runs the sink
  (`workloads.data.ingest.cdc.CdcIngester`) in its own process;
- on the cluster, `infra.platform.cdc` renders it to a Strimzi `KafkaConnector` whose
  credentials are `${secrets:<namespace>/<secret>:<key>}` references (Strimzi's
  `KubernetesSecretConfigProvider` reads them from a Secret when the task starts: the
  password never appears in the custom resource), a `KafkaTopic`, and the sink Deployment
  from the catalogue's `cdc_sink` declaration.

Stack files list pipelines under `strata:cdc` (`<name>: {team, database, table, lakeTable,
key}`); their credentials come from the secret `strata:cdcCredentials`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from workloads.data.ingest.debezium import PostgresSource, connector_config

NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
USERNAME_KEY, PASSWORD_KEY = "username", "password"  # the keys of a pipeline's credentials Secret


class _Declaration(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


class SourceDatabase(_Declaration):
    """Where the source PostgreSQL is (the cluster reaches it; `wal_level=logical` there)."""

    host: str = Field(min_length=1)
    port: int = Field(5432, ge=1, le=65535)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_$]*$")


class CdcPipeline(_Declaration):
    """One captured table -> one bronze table. `name` is the connector's (and its slot's) name."""

    name: str = Field(pattern=NAME, max_length=40)  # + "-cdc-sink" stays a DNS label
    team: str = Field(pattern=NAME)  # the sink runs in this team's namespace
    database: SourceDatabase
    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")  # schema.table
    lake_table: str = Field(pattern=r"^[a-z0-9][-a-z0-9_]*$")  # bronze/<lake_table>
    key: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # the source's primary key column
    topic_prefix: str = Field("strata.cdc", pattern=r"^[a-z0-9][-a-z0-9_.]*$")

    def source(self, user: str, password: str) -> PostgresSource:
        return PostgresSource(name=self.name, host=self.database.host, port=self.database.port,
                              database=self.database.name, user=user, password=password, tables=(self.table,),
                              topic_prefix=self.topic_prefix)

    @property
    def topic(self) -> str:
        """Debezium's topic for the table: `<prefix>.<schema>.<table>`."""
        return f"{self.topic_prefix}.{self.table}"

    @property
    def credentials_secret(self) -> str:
        """The Secret (keys `username`, `password`) holding the source database's login."""
        return f"{self.name}-cdc-db"

    def connector_config(self, user: str, password: str) -> dict[str, str]:
        return connector_config(self.source(user, password))


def secret_reference(namespace: str, secret: str, key: str) -> str:
    """A value Strimzi's `KubernetesSecretConfigProvider` (configured as provider `secrets`)
    resolves in the Connect pod at task start, so the CR holds the reference, never the value."""
    return f"${{secrets:{namespace}/{secret}:{key}}}"
