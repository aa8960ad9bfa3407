"""The local CDC pipeline's sink is a supervised service rendered from the catalogue's
`cdc_sink` declaration, the one the cluster renders to the sink Deployment: same module,
same flags in the same order; only what resolves per target differs (bootstrap, bucket,
metrics port and bind, the pipeline's topic)."""

from __future__ import annotations

from workloads.catalogue.declarations import cdc_sink
from workloads.local.cdc_sink import local_pipeline, sink_service_name
from workloads.local.ports import PORTS, resolve_ports
from workloads.local.services import LocalOptions, ServiceContext, default_registry


def _cluster_argv(plan, name: str) -> list[str]:
    [deployment] = [r for r in plan.of_kind("Deployment") if r.inputs["metadata"]["name"] == name]
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    return container["command"] + container["args"]


def test_the_sink_is_a_local_service_from_the_catalogue_declaration(plans, tmp_path):
    pipeline = local_pipeline()
    registry = default_registry()
    name = sink_service_name()
    assert name == cdc_sink(pipeline).name == "demo-fraud-transactions-cdc-sink" and name in registry.names()
    service = registry[name]
    assert service.depends_on == ("kafka", "s3") and service.ports == ("cdc-sink",)
    assert service.metrics_port == "cdc-sink" and service.metrics_job == "strata-cdc-sink"
    ports = resolve_ports()
    ctx = ServiceContext(name=name, state_dir=tmp_path, ports=ports, options=LocalOptions(), python="python")
    local = service.command(ctx)
    args = dict(zip(local[3::2], local[4::2]))
    assert local[:3] == ["python", "-m", "workloads.data.ingest.cdc"]
    assert args == {"--bootstrap": f"127.0.0.1:{ports['kafka']}", "--topic": pipeline.topic, "--table": "fraud",
                    "--key": "txn_id", "--bronze-bucket": "strata-lake-bronze", "--metrics-port": str(ports["cdc-sink"]),
                    "--metrics-host": "127.0.0.1"}
    assert ports["cdc-sink"] == PORTS["cdc-sink"].default
    (stack_pipeline,) = plans["enterprise"].spec.cdc_pipelines
    cluster = _cluster_argv(plans["enterprise"], cdc_sink(stack_pipeline).name)
    assert cluster[3::2] == local[3::2]  # the same flags, in the same order
    env = service.env(ctx)
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")  # the local S3, through the same code as AWS
    assert env["STRATA_KAFKA_SSL_CAFILE"] == ""  # the local broker is PLAINTEXT on loopback
