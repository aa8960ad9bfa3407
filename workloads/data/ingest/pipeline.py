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
key, features?}`); their credentials come from the secret `strata:cdcCredentials`.

A pipeline may also declare `features`: rolling aggregates of the table's rows per entity
(`StreamingFeatures`), pushed to the online store by its feature aggregator, the catalogue's
`feature_aggregator` workload (`python -m workloads.data.features.streaming`): a supervised
service locally, a Deployment on the cluster where the mode has Kafka and an online store.
A model reads them as an online feature view of the same name (`features.views` of its spec).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from workloads.data.ingest.debezium import PostgresSource, connector_config
from workloads.spec import _TTL_SECONDS, FEATURE_NAME_PATTERN, TTL_PATTERN

if TYPE_CHECKING:
    from workloads.data.features.streaming import Aggregation

NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
COLUMN = r"^[A-Za-z_][A-Za-z0-9_]*$"
USERNAME_KEY, PASSWORD_KEY = "username", "password"  # the keys of a pipeline's credentials Secret


class _Declaration(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


class SourceDatabase(_Declaration):
    """Where the source PostgreSQL is (the cluster reaches it; `wal_level=logical` there)."""

    host: str = Field(min_length=1)
    port: int = Field(5432, ge=1, le=65535)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_$]*$")


class StreamingFeatures(_Declaration):
    """Per `entity`: the count and `value` sum of the table's current rows over each window, by
    `eventTime` (`workloads.data.features.streaming.Aggregation`), in the online feature view
    `view`, valid `ttl` after the entity's latest event. Feature names: `txn_count_<window>`,
    `<value>_sum_<window>`."""

    view: str = Field(pattern=FEATURE_NAME_PATTERN)  # the feature view a model's spec reads
    entity: str = Field(pattern=COLUMN)  # the view's join key, a column of the table
    event_time: str = Field(pattern=COLUMN)  # ISO-8601 or epoch microseconds
    value: str = Field(pattern=COLUMN)  # the summed column
    windows: tuple[str, ...] = Field(("1h", "24h"), min_length=1, max_length=8)
    ttl: str = Field("2d", pattern=TTL_PATTERN)

    @field_validator("windows")
    @classmethod
    def _windows(cls, windows: tuple[str, ...]) -> tuple[str, ...]:
        from workloads.data.features.streaming import window_seconds

        seconds = [window_seconds(w) for w in windows]  # a clear error for a malformed one
        if len(set(seconds)) != len(seconds):
            raise ValueError(f"windows repeat: {', '.join(windows)}")
        return windows

    @property
    def ttl_seconds(self) -> int:
        return int(self.ttl[:-1]) * _TTL_SECONDS[self.ttl[-1]]

    def aggregation(self, record_key: str) -> "Aggregation":
        from workloads.data.features.streaming import Aggregation

        return Aggregation(view=self.view, entity=self.entity, record_key=record_key, event_time=self.event_time,
                           value=self.value, windows=self.windows, ttl_seconds=self.ttl_seconds)


class CdcPipeline(_Declaration):
    """One captured table -> one bronze table. `name` is the connector's (and its slot's) name."""

    name: str = Field(pattern=NAME, max_length=40)  # + "-cdc-sink" stays a DNS label
    team: str = Field(pattern=NAME)  # the sink runs in this team's namespace
    database: SourceDatabase
    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")  # schema.table
    lake_table: str = Field(pattern=r"^[a-z0-9][-a-z0-9_]*$")  # bronze/<lake_table>
    key: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # the source's primary key column
    topic_prefix: str = Field("strata.cdc", pattern=r"^[a-z0-9][-a-z0-9_.]*$")
    features: StreamingFeatures | None = None  # streaming features of the table's rows (its aggregator)

    def aggregation(self) -> "Aggregation | None":
        """What the pipeline's feature aggregator computes (keyed by the source's key), or None."""
        return self.features.aggregation(self.key) if self.features is not None else None

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


def streaming_view_problems(pipelines: "Iterable[CdcPipeline]", models: "Iterable[Any]",
                            prefix: str = "") -> list[tuple[str, str]]:
    """(property path, message) for each disagreement between the pipelines' streaming features
    and the models' online views of the same name: a model's view is served from them, so its
    features must be among the aggregates and its TTL theirs (the aggregator expires the keys);
    one view has one writer. `prefix`: where the pipelines are (e.g. `strata:cdc.`)."""
    problems: list[tuple[str, str]] = []
    fed_by: dict[str, str] = {}
    models = tuple(models)
    for pipeline in pipelines:
        if pipeline.features is None:
            continue
        path = f"{prefix}{pipeline.name}.features"
        view_name = pipeline.features.view
        if view_name in fed_by:
            problems.append((f"{path}.view", f"view {view_name!r} is already computed by pipeline "
                                             f"{fed_by[view_name]!r}; one view has one writer"))
            continue
        fed_by[view_name] = pipeline.name
        computed = pipeline.aggregation().feature_names
        for model in models:
            for view in (model.features.views if model.features is not None else []):
                if view.name != view_name or not view.online:
                    continue
                unknown = [f.name for f in view.features if f.name not in computed]
                if unknown:
                    problems.append((f"{path}.view", f"model {model.name!r} reads feature(s) {', '.join(unknown)} of "
                                                     f"view {view_name!r}, which the pipeline does not compute (it "
                                                     f"computes {', '.join(computed)})"))
                offline = offline_copy_problems(view, model.features.join_keys(view), pipeline.features)
                problems.extend((f"{path}.view", f"model {model.name!r} declares view {view_name!r} with {problem}")
                                for problem in offline)
                if view.ttl_seconds != pipeline.features.ttl_seconds:
                    problems.append((f"{path}.ttl", f"{pipeline.features.ttl}, but model {model.name!r} declares "
                                                    f"view {view_name!r} with ttl {view.ttl}; make them equal"))
    return problems


def offline_copy_problems(view: Any, join_keys: list[str], features: StreamingFeatures) -> list[str]:
    """How a model's view disagrees with the offline copy the lake step writes for `features`
    (`workloads.data.lake.aggregates`: gold/<view>, keyed by the entity, its event time and
    `created_ts`), which its materialization and training sets read."""
    from workloads.data.features.streaming import CREATED_COLUMN

    problems = []
    if view.source != f"gold/{features.view}":
        problems.append(f"source {view.source}; its offline copy is gold/{features.view}")
    if join_keys != [features.entity]:
        problems.append(f"join key(s) {', '.join(join_keys)}; the aggregates are per {features.entity}")
    if view.timestamp_field != features.event_time:
        problems.append(f"timestampField {view.timestamp_field}; the offline copy's is {features.event_time}")
    if view.created_timestamp_field not in (None, CREATED_COLUMN):
        problems.append(f"createdTimestampField {view.created_timestamp_field}; the offline copy's is {CREATED_COLUMN}")
    return problems
