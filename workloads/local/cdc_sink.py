"""The local mode's CDC pipeline: the fraud example's source table (the local PostgreSQL's
`public.card_transactions`, which the demo's generator writes) -> Debezium on the local
Connect worker -> Kafka -> `bronze/fraud`, and the same change events -> per-card rolling
aggregates in the local Redis (the service `<pipeline>-aggregator`).

It is the same `CdcPipeline` declaration a stack lists under `strata:cdc` for the cluster;
its sink is the catalogue's `cdc_sink(pipeline)` workload, which the local supervisor runs as
the service `<pipeline>-cdc-sink` (workloads.local.services) and the cluster as a Deployment
(infra.platform.cdc). The demo's lake stage registers the connector and starts that service.
"""

from __future__ import annotations

from workloads.data.ingest.pipeline import CdcPipeline, SourceDatabase, StreamingFeatures
from workloads.local import postgres
from workloads.local.ports import HOST, PORTS

PIPELINE_NAME = "demo-fraud-transactions"  # the connector's (and its replication slot's) name
TEAM = "payments-risk"  # fraud's team: on the cluster the sink runs in its namespace
TOPIC_PREFIX = "strata.demo"
#: The per-card aggregates of the fraud example's transactions (its spec's view `card_activity_stream`).
CARD_ACTIVITY = StreamingFeatures(view="card_activity_stream", entity="card_id", event_time="event_ts", value="amount",
                                  windows=("1h", "24h"), ttl="2d")


def local_pipeline(postgres_port: int | None = None) -> CdcPipeline:
    """The pipeline, its source at the local PostgreSQL (`postgres_port`: where it runs; the
    sink does not need it, the connector does)."""
    from workloads.data.ingest.fraud_source import KEY, TABLE

    port = PORTS["postgres"].default if postgres_port is None else postgres_port
    return CdcPipeline(name=PIPELINE_NAME, team=TEAM,
                       database=SourceDatabase(host=HOST, port=port, name=postgres.DATABASE),
                       table=f"public.{TABLE}", lake_table="fraud", key=KEY, topic_prefix=TOPIC_PREFIX,
                       features=CARD_ACTIVITY)


def sink_service_name() -> str:
    from workloads.catalogue.declarations import cdc_sink

    return cdc_sink(local_pipeline()).name


def aggregator_service_name() -> str:
    from workloads.catalogue.declarations import feature_aggregator

    return feature_aggregator(local_pipeline()).name
