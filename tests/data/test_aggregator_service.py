"""The local CDC pipeline's feature aggregator is a supervised service rendered from the
catalogue's `feature_aggregator` declaration, the one the cluster renders to the aggregator's
Deployment: same module, same flags in the same order; only what resolves per target differs
(bootstrap, metrics port and bind, the pipeline's topic). Its Redis URL reaches it as the
declaration's Secret on both sides: locally the supervisor writes the local Redis's URL there."""

from __future__ import annotations

from tests.infra.test_feature_aggregator import AGGREGATOR, streaming_plan
from workloads.catalogue.declarations import FEATURE_STORE_URL_ENV, feature_aggregator, pipeline_workloads
from workloads.data.features.streaming import REDIS_URL_ENV
from workloads.local import redis
from workloads.local.cdc_sink import CARD_ACTIVITY, aggregator_service_name, local_pipeline
from workloads.local.ports import PORTS, resolve_ports
from workloads.local.services import LocalOptions, ServiceContext, default_registry


def test_the_aggregator_is_a_local_service_from_the_catalogue_declaration(tmp_path):
    pipeline = local_pipeline()
    registry = default_registry()
    name = aggregator_service_name()
    assert name == feature_aggregator(pipeline).name == "demo-fraud-transactions-aggregator" and name in registry.names()
    assert [w.name for w in pipeline_workloads(pipeline)] == ["demo-fraud-transactions-cdc-sink", name]
    service = registry[name]
    assert service.depends_on == ("kafka", "redis") and service.ports == ("feature-aggregator",)
    assert service.metrics_port == "feature-aggregator" and service.metrics_job == "strata-feature-aggregator"
    ports = resolve_ports()
    ctx = ServiceContext(name=name, state_dir=tmp_path, ports=ports, options=LocalOptions(), python="python")
    local = service.command(ctx)
    assert local[:3] == ["python", "-m", "workloads.data.features.streaming"]
    flags = list(zip(local[3::2], local[4::2]))
    assert flags == [("--bootstrap", f"127.0.0.1:{ports['kafka']}"), ("--topic", pipeline.topic),
                     ("--view", "card_activity_stream"), ("--entity", "card_id"), ("--record-key", "txn_id"),
                     ("--event-time", "event_ts"), ("--value", "amount"), ("--window", "1h"), ("--window", "24h"),
                     ("--ttl-seconds", str(CARD_ACTIVITY.ttl_seconds)),
                     ("--metrics-port", str(ports["feature-aggregator"])), ("--metrics-host", "127.0.0.1")]
    assert ports["feature-aggregator"] == PORTS["feature-aggregator"].default
    # the URL: the declaration's Secret, which the supervisor fills with the local Redis's before a start
    service.prepare(ctx)
    env = service.env(ctx)
    assert env[FEATURE_STORE_URL_ENV] == redis.url(ctx) and FEATURE_STORE_URL_ENV == REDIS_URL_ENV
    assert not any("redis://" in token for token in local)  # never in argv
    assert env["STRATA_KAFKA_SSL_CAFILE"] == ""  # the local broker is PLAINTEXT on loopback


def test_local_and_cluster_run_the_same_flags_in_the_same_order():
    plan = streaming_plan("enterprise")
    (stack_pipeline,) = plan.spec.cdc_pipelines
    [deployment] = [r for r in plan.of_kind("Deployment") if r.inputs["metadata"]["name"] == AGGREGATOR]
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    cluster = container["command"] + container["args"]
    local = feature_aggregator(local_pipeline())
    assert cluster[3::2] == list(local.args[0::2])
    # the stack's pipeline computes the same view as the local one: the cluster serves what the demo shows
    assert stack_pipeline.features == local_pipeline().features
