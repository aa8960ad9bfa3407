"""The CDC pipelines of a stack (`strata:cdc`) on the cluster, under Pulumi mocks: Strimzi
`KafkaConnect` + `KafkaConnector` (Debezium), the login as a Secret read by Strimzi's config
provider (never inline), the table's `KafkaTopic` and the sink from the catalogue's
`cdc_sink` declaration. Every rendered custom resource is checked against the Strimzi 0.51
CRD schemas; modes without Kafka render none of it and the plan says so."""

from __future__ import annotations

import json

import pytest

from infra.config import SpecError, parse_stack_config, read_stack_file
from infra.plan.harness import SECRET_PLACEHOLDER, run_program
from infra.plan.report import mode_notes
from infra.plan.schemas import validate_resource
from infra.platform.cdc import CONNECT_NAME, ChangeDataCapture, ChangeDataCaptureArgs, connector_spec, pipeline_login
from tests.infra.test_schemas import crd_schemas  # noqa: F401  (the cached CRD schemas)
from workloads.catalogue.declarations import cdc_sink, feature_aggregator
from workloads.data.ingest.pipeline import CdcPipeline

CDC = "strata:platform:ChangeDataCapture"


def cdc_resources(plan):
    (component,) = plan.by_type(CDC)
    inside, frontier = [], [component.urn]
    while frontier:
        children = [r for r in plan.resources if r.parent_urn in frontier]
        inside += children
        frontier = [r.urn for r in children]
    return inside


def kind(resources, name):
    return [r for r in resources if r.is_kubernetes and r.kind == name]


@pytest.fixture(scope="module")
def enterprise(plans):
    plan = plans["enterprise"]
    return plan, cdc_resources(plan), plan.spec.cdc_pipelines[0]


def test_the_stack_pipeline_renders_connect_connector_topic_and_sink(enterprise):
    plan, resources, pipeline = enterprise
    (connect,) = kind(resources, "KafkaConnect")
    (connector,) = kind(resources, "KafkaConnector")
    (topic,) = kind(resources, "KafkaTopic")
    # the sink, and the aggregator of the pipeline's streaming features (fraud reads them online)
    deployments = {d.inputs["metadata"]["name"]: d for d in kind(resources, "Deployment")}
    assert set(deployments) == {cdc_sink(pipeline).name, feature_aggregator(pipeline).name}, set(deployments)
    deployment = deployments[cdc_sink(pipeline).name]
    kafka_ns = connect.inputs["metadata"]["namespace"]
    assert connect.inputs["metadata"]["annotations"]["strimzi.io/use-connector-resources"] == "true"
    assert connector.inputs["metadata"]["labels"]["strimzi.io/cluster"] == CONNECT_NAME
    config = connector.inputs["spec"]["config"]
    assert connector.inputs["spec"]["class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert (config["database.hostname"], config["database.dbname"], config["table.include.list"]) == (
        "payments-db.payments.internal", "payments", "public.card_transactions")
    assert topic.inputs["spec"]["topicName"] == pipeline.topic == "strata.cdc.public.card_transactions"
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--topic") + 1] == pipeline.topic and args[args.index("--table") + 1] == "fraud"
    assert args[args.index("--bronze-bucket") + 1] == "$(STRATA_LAKE_BRONZE_BUCKET)"
    env = {e["name"]: e for e in container["env"]}
    assert "STRATA_LAKE_BRONZE_BUCKET" in env and env["STRATA_KAFKA_SSL_CAFILE"]["value"] == "/etc/strata/kafka/ca.crt"
    assert deployment.inputs["metadata"]["namespace"] == plan.outputs["teamNamespaces"]["payments-risk"]
    assert deployment.inputs["spec"]["strategy"] == {"type": "Recreate"}  # one writer of bronze's offsets
    assert kafka_ns != deployment.inputs["metadata"]["namespace"]


def test_the_login_reaches_connect_only_through_the_config_provider(enterprise):
    """The connector holds `${secrets:<ns>/<secret>:<key>}`; the Secret exists in Connect's
    namespace and the Role lets exactly Connect's service account read exactly it."""
    plan, resources, pipeline = enterprise
    (connector,) = kind(resources, "KafkaConnector")
    (secret,) = kind(resources, "Secret")
    (role,) = kind(resources, "Role")
    (binding,) = kind(resources, "RoleBinding")
    (connect,) = kind(resources, "KafkaConnect")
    ns = connect.inputs["metadata"]["namespace"]
    config = connector.inputs["spec"]["config"]
    assert config["database.user"] == f"${{secrets:{ns}/{pipeline.credentials_secret}:username}}"
    assert config["database.password"] == f"${{secrets:{ns}/{pipeline.credentials_secret}:password}}"
    assert connect.inputs["spec"]["config"]["config.providers.secrets.class"] == \
        "io.strimzi.kafka.KubernetesSecretConfigProvider"
    assert (secret.inputs["metadata"]["name"], secret.inputs["metadata"]["namespace"]) == (pipeline.credentials_secret, ns)
    assert role.inputs["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                                     "resourceNames": [pipeline.credentials_secret]}]
    assert binding.inputs["subjects"] == [{"kind": "ServiceAccount", "name": f"{CONNECT_NAME}-connect", "namespace": ns}]
    # the stack secret's values (the harness's placeholder) are in the Secret and in no other object
    assert secret.inputs["stringData"] == {"username": SECRET_PLACEHOLDER, "password": SECRET_PLACEHOLDER}
    for resource in plan.resources:
        if not (resource.is_kubernetes and resource.kind == "Secret"):
            assert SECRET_PLACEHOLDER not in json.dumps(resource.inputs, default=str), resource.name


def test_every_cdc_object_validates_against_its_schema(enterprise, crd_schemas):  # noqa: F811
    plan, resources, _ = enterprise
    findings = [validate_resource(r, "1.35", crd_schemas) for r in resources if r.is_kubernetes]
    kinds = {r.kind for r in resources if r.is_kubernetes}
    assert {"KafkaConnect", "KafkaConnector", "KafkaTopic", "KafkaUser", "Deployment", "Secret"} <= kinds
    failures = [f"{f.resource}: {f.errors}" for f in findings if f is not None and not f.ok]
    assert not failures, "\n".join(failures)
    assert all(f.kind == "custom" for f, r in zip(findings, [r for r in resources if r.is_kubernetes])
               if f is not None and r.type.startswith("kubernetes:kafka.strimzi.io"))


def test_the_schema_check_can_fail(enterprise, crd_schemas):  # noqa: F811
    import copy

    _, resources, _ = enterprise
    (connect,) = kind(resources, "KafkaConnect")
    broken = copy.deepcopy(connect)
    broken.inputs["spec"]["authentication"]["type"] = "kerberos"
    finding = validate_resource(broken, "1.35", crd_schemas)
    assert any("authentication" in e for e in finding.errors), finding.errors


def test_local_and_cluster_render_one_declaration(enterprise):
    """The local demo PUTs `pipeline.connector_config(user, password)`; the cluster's connector
    is the same config with the login as references and Connect's topic creation."""
    plan, resources, pipeline = enterprise
    (connect,) = kind(resources, "KafkaConnect")
    args = ChangeDataCaptureArgs(pipelines=(pipeline,), kafka_namespace=connect.inputs["metadata"]["namespace"],
                                 kafka_cluster="strata", team_namespaces=plan.outputs["teamNamespaces"],
                                 connect_image="x", sink_image="y")
    local = pipeline.connector_config("strata", "local-password")
    cluster = connector_spec(pipeline, args).render()
    differs = {k for k in local if k not in ("connector.class", "tasks.max") and local[k] != cluster["config"].get(k)}
    assert differs == {"database.user", "database.password"}
    assert set(cluster["config"]) - set(local) == {"topic.creation.default.replication.factor",
                                                    "topic.creation.default.partitions"}
    names = {d.inputs["metadata"]["name"] for d in kind(resources, "Deployment")}
    assert names == {cdc_sink(pipeline).name, feature_aggregator(pipeline).name}, names


def raw_with_cdc(stack: str) -> dict:
    raw = read_stack_file(stack)
    raw["strata:cdc"] = read_stack_file("enterprise")["strata:cdc"]
    return raw


def test_a_mode_without_kafka_renders_no_cdc_and_the_plan_says_so():
    plan = run_program("quick", raw_with_cdc("quick"))
    assert not plan.by_type(CDC) and not plan.of_kind("KafkaConnect") and not plan.of_kind("KafkaConnector")
    assert any(note.startswith("cdc fraud-transactions:") and "batch ingestion only" in note
               for note in mode_notes(plan))


@pytest.mark.parametrize("entry, path", [
    ({"team": "nobody"}, "strata:cdc.fraud-transactions.team"),
    ({"table": "card_transactions"}, "strata:cdc.fraud-transactions.table"),
    ({"database": {"host": "db", "port": 70000, "name": "payments"}}, "strata:cdc.fraud-transactions.database.port"),
    ({"name": "other"}, "strata:cdc.fraud-transactions.name"),
    ({"lakeTabel": "fraud"}, "strata:cdc.fraud-transactions.lakeTabel"),
])
def test_bad_pipeline_config_names_the_property(entry, path):
    raw = raw_with_cdc("enterprise")
    raw["strata:cdc"] = {"fraud-transactions": {**raw["strata:cdc"]["fraud-transactions"], **entry}}
    with pytest.raises(SpecError) as error:
        parse_stack_config(raw, "enterprise")
    assert any(p == path for p, _ in error.value.problems), error.value.problems


def test_a_pipeline_is_one_table():
    with pytest.raises(ValueError, match="table"):
        CdcPipeline.model_validate({"name": "x", "team": "t", "database": {"host": "h", "name": "d"},
                                    "table": "public.a,public.b", "lakeTable": "x", "key": "id"})


def test_a_missing_login_is_an_error_naming_the_secret(enterprise):
    _, _, pipeline = enterprise
    with pytest.raises(ValueError, match=r"strata:cdcCredentials: the CDC pipelines need their database logins"):
        ChangeDataCapture("cdc", None, strimzi_operator=None, credentials=None)
    for given in (None, {}, {"another": {"username": "u", "password": "p"}}, {pipeline.name: {"username": "u"}}):
        with pytest.raises(ValueError, match=rf"strata:cdcCredentials\.{pipeline.name}: needs username and password"):
            pipeline_login(given, pipeline)
    assert pipeline_login({pipeline.name: {"username": "u", "password": "p"}}, pipeline) == {
        "username": "u", "password": "p"}


def test_a_sink_role_for_an_unknown_pipeline_is_an_error(enterprise):
    plan, _, pipeline = enterprise
    with pytest.raises(ValueError, match=r"ChangeDataCaptureArgs.sink_role_arns: no pipeline named other"):
        ChangeDataCaptureArgs(pipelines=(pipeline,), kafka_namespace="kafka", kafka_cluster="strata",
                              team_namespaces=plan.outputs["teamNamespaces"], connect_image="x", sink_image="y",
                              sink_role_arns={pipeline.name: "arn:a", "other": "arn:b"})
