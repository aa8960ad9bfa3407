"""Strimzi `KafkaConnect` + `KafkaConnector` (the cluster's CDC) as the typed builders render
them, validated against the Strimzi 0.51 CRD schemas (generated from io.strimzi:api)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.crds import strimzi
from tests.infra.test_schemas import crd_schemas, errors_of  # noqa: F401
from workloads.data.ingest.debezium import PostgresSource, connector_config

SOURCE = PostgresSource(name="fraud-transactions", host="payments-db.example.internal", port=5432,
                        database="payments", user="${secrets:kafka/fraud-cdc-db:username}",
                        password="${secrets:kafka/fraud-cdc-db:password}", tables=("public.card_transactions",))


def connect_spec() -> strimzi.KafkaConnectSpec:
    return strimzi.KafkaConnectSpec(
        replicas=1, bootstrap_servers="strata-kafka-bootstrap.kafka.svc:9093", version="4.1.0",
        config={"group.id": "strata-connect", "offset.storage.topic": "strata-connect-offsets",
                "config.storage.topic": "strata-connect-configs", "status.storage.topic": "strata-connect-status",
                "config.providers": "secrets",
                "config.providers.secrets.class": "io.strimzi.kafka.KubernetesSecretConfigProvider"},
        build=strimzi.ConnectBuild(
            output=strimzi.ConnectBuildOutput(type="docker", image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/connect:1"),
            plugins=[strimzi.ConnectPlugin(name="debezium-postgres", artifacts=[strimzi.ConnectPluginArtifact(
                type=strimzi.ConnectPluginArtifactType.MAVEN, group="io.debezium",
                artifact="debezium-connector-postgres", version="3.6.1.Final")])]),
    )


def test_kafka_connect_validates_against_the_crd(crd_schemas):  # noqa: F811
    manifest = {"apiVersion": strimzi.API_VERSION, "kind": "KafkaConnect",
                "metadata": {"name": "strata-connect", "namespace": "kafka",
                             "annotations": {"strimzi.io/use-connector-resources": "true"}},
                "spec": connect_spec().render()}
    assert errors_of("kubernetes:kafka.strimzi.io/v1beta2:KafkaConnect", manifest, crd_schemas) == []


def test_debezium_connector_validates_against_the_crd(crd_schemas):  # noqa: F811
    config = connector_config(SOURCE)
    spec = strimzi.KafkaConnectorSpec(class_=config.pop("connector.class"), tasks_max=int(config.pop("tasks.max")),
                                      config=config, state=strimzi.KafkaConnectorState.RUNNING)
    manifest = {"apiVersion": strimzi.API_VERSION, "kind": "KafkaConnector",
                "metadata": {"name": SOURCE.name, "namespace": "kafka", "labels": {strimzi.CLUSTER_LABEL: "strata-connect"}},
                "spec": spec.render()}
    assert manifest["spec"]["class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert errors_of("kubernetes:kafka.strimzi.io/v1beta2:KafkaConnector", manifest, crd_schemas) == []
    broken = {**manifest, "spec": {**manifest["spec"], "tasksMax": 0}}
    assert any("tasksMax" in e for e in errors_of("kubernetes:kafka.strimzi.io/v1beta2:KafkaConnector", broken, crd_schemas))


def test_unknown_connect_field_is_refused_while_building():
    with pytest.raises(ValidationError, match="bootstrapServer"):
        strimzi.KafkaConnectSpec.model_validate({"replicas": 1, "bootstrapServer": "x:9092"})
