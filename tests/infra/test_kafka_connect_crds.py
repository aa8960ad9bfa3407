"""Strimzi `KafkaConnect` + `KafkaConnector` (the cluster's CDC) as `infra.platform.cdc`'s
builders render them, validated against the Strimzi 0.51 CRD schemas (generated from
io.strimzi:api). The whole rendered stack is checked in tests/infra/test_cdc_cluster.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.crds import strimzi
from infra.platform.cdc import CONNECT_NAME, ChangeDataCaptureArgs, connect_spec, connector_spec
from tests.infra.test_schemas import crd_schemas, errors_of  # noqa: F401
from workloads.data.ingest.pipeline import CdcPipeline

PIPELINE = CdcPipeline.model_validate({
    "name": "fraud-transactions", "team": "payments-risk",
    "database": {"host": "payments-db.example.internal", "port": 5432, "name": "payments"},
    "table": "public.card_transactions", "lakeTable": "fraud", "key": "txn_id"})
ARGS = ChangeDataCaptureArgs(pipelines=(PIPELINE,), kafka_namespace="kafka", kafka_cluster="strata",
                             team_namespaces={"payments-risk": "team-payments-risk"},
                             connect_image="strata/kafka-connect:0.1.0", sink_image="strata/training:0.1.0")


def test_kafka_connect_validates_against_the_crd(crd_schemas):  # noqa: F811
    manifest = {"apiVersion": strimzi.API_VERSION, "kind": "KafkaConnect",
                "metadata": {"name": CONNECT_NAME, "namespace": "kafka",
                             "annotations": {"strimzi.io/use-connector-resources": "true"}},
                "spec": {**connect_spec(ARGS).render(), "image": "strata/kafka-connect:0.1.0"}}
    assert errors_of("kubernetes:kafka.strimzi.io/v1beta2:KafkaConnect", manifest, crd_schemas) == []


def test_debezium_connector_validates_against_the_crd(crd_schemas):  # noqa: F811
    manifest = {"apiVersion": strimzi.API_VERSION, "kind": "KafkaConnector",
                "metadata": {"name": PIPELINE.name, "namespace": "kafka", "labels": {strimzi.CLUSTER_LABEL: CONNECT_NAME}},
                "spec": connector_spec(PIPELINE, ARGS).render()}
    assert manifest["spec"]["class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert errors_of("kubernetes:kafka.strimzi.io/v1beta2:KafkaConnector", manifest, crd_schemas) == []
    broken = {**manifest, "spec": {**manifest["spec"], "tasksMax": 0}}
    assert any("tasksMax" in e for e in errors_of("kubernetes:kafka.strimzi.io/v1beta2:KafkaConnector", broken, crd_schemas))


def test_unknown_connect_field_is_refused_while_building():
    with pytest.raises(ValidationError, match="bootstrapServer"):
        strimzi.KafkaConnectSpec.model_validate({"replicas": 1, "bootstrapServer": "x:9092"})


def test_pipeline_names_must_be_unique_and_teams_known():
    with pytest.raises(ValueError, match="duplicate names"):
        ChangeDataCaptureArgs(**{**ARGS.__dict__, "pipelines": (PIPELINE, PIPELINE)})
    with pytest.raises(ValueError, match=r"pipelines\[fraud-transactions\]\.team"):
        ChangeDataCaptureArgs(**{**ARGS.__dict__, "team_namespaces": {}})
