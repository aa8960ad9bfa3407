"""Every rendered Kubernetes object validates against the schema the cluster applies.

Built-in kinds: the Kubernetes OpenAPI schema of the stack's pinned version (strict).
Custom resources: the real CRD of the pinned operator version, fetched once into
~/.cache/strata/crds by `ensure_crd_schemas()` (Go module proxy / Maven Central).
The negative tests show that each check can fail.
"""

from __future__ import annotations

import copy

import pytest

from infra.config import SUPPORTED_KUBERNETES_VERSIONS
from infra.plan.harness import PlannedResource
from infra.plan.schemas import (
    CRD_SOURCES,
    SchemaFetchError,
    chart_version_mismatches,
    crd_to_jsonschema,
    ensure_crd_schemas,
    kubernetes_version_of,
    to_manifest,
    validate_plan,
    validate_resource,
)

K8S = "1.35"


@pytest.fixture(scope="session")
def crd_schemas():
    try:
        return ensure_crd_schemas()
    except SchemaFetchError as error:  # a CI machine must be able to fetch them: fail, never skip
        pytest.fail(f"could not fetch the CRD schemas: {error}")


def _failures(findings, kind=None):
    return [
        f"{f.resource}:\n    " + "\n    ".join(f.errors)
        for f in findings
        if not f.ok and (kind is None or f.kind == kind)
    ]


def resource(type_token: str, inputs: dict, name: str = "test", custom: bool = True) -> PlannedResource:
    return PlannedResource(urn=f"urn:pulumi:t::p::{type_token}::{name}", type=type_token, name=name,
                           parent_urn=None, custom=custom, inputs=copy.deepcopy(inputs))


def errors_of(type_token: str, inputs: dict, crd_schemas=None) -> list[str]:
    finding = validate_resource(resource(type_token, inputs), K8S, crd_schemas)
    assert finding is not None
    return finding.errors


# ---------------------------------------------------------------------------- the stacks


def test_builtin_kinds_validate(stack_plan, crd_schemas):
    findings = validate_plan(stack_plan, crd_schemas)
    assert any(f.kind == "builtin" for f in findings)
    failures = _failures(findings, "builtin")
    assert not failures, f"{stack_plan.stack} (Kubernetes {kubernetes_version_of(stack_plan)}):\n" + "\n".join(failures)


def test_custom_resources_validate_against_their_crds(stack_plan, crd_schemas):
    findings = validate_plan(stack_plan, crd_schemas)
    failures = _failures(findings, "custom")
    assert not failures, f"{stack_plan.stack}:\n" + "\n".join(failures)


def test_every_custom_resource_kind_has_a_schema_source(stack_plan, crd_schemas):
    """A CR of a kind missing from CRD_SOURCES fails: no kind slips through unvalidated."""
    unmapped = [f.resource for f in validate_plan(stack_plan, crd_schemas) if any("CRD_SOURCES" in e for e in f.errors)]
    assert not unmapped, f"custom resources whose kind has no CRD schema source in CRD_SOURCES: {unmapped}"


def test_unverifiable_kinds_are_only_the_declared_ones(stack_plan, crd_schemas):
    """Kinds whose CRD no registry ships (Seldon) still get their partial checks, and no
    other kind may end up unverified."""
    for finding in validate_plan(stack_plan, crd_schemas):
        if finding.kind == "unverifiable":
            assert finding.note, finding.resource
            assert finding.ok, f"{finding.resource}:\n    " + "\n    ".join(finding.errors)


def test_helm_releases_are_pinned_mappings(stack_plan, crd_schemas):
    failures = _failures(validate_plan(stack_plan, crd_schemas), "helm")
    assert not failures, "\n".join(failures)


def test_pinned_kubernetes_versions_have_schemas():
    from infra.plan.schemas import _schema_dir

    for version in SUPPORTED_KUBERNETES_VERSIONS:
        assert _schema_dir(version).startswith(f"v{version}.")


def test_every_source_was_fetched(crd_schemas):
    expected = {gvk for gvk, src in CRD_SOURCES.items() if src.source != "none"}
    assert set(crd_schemas) == expected
    assert all(path.exists() for path in crd_schemas.values())


def test_fetch_is_idempotent(crd_schemas):
    assert ensure_crd_schemas() == crd_schemas


def test_schema_versions_follow_the_chart_pins():
    """A schema of another operator version than the deployed one is only allowed where
    CRD_SOURCES explains why (e.g. the registry does not serve the pinned version)."""
    undeclared = [message for gvk, source, message in chart_version_mismatches() if not source.note]
    assert not undeclared, "\n".join(undeclared)


# ------------------------------------------------------------------- to_manifest basics


def test_to_manifest_fills_the_logical_name_and_sends_numbers_as_the_provider_does():
    manifest = to_manifest(resource("kubernetes:apps/v1:Deployment", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "ns", "annotations": None},
        "spec": {"replicas": 2.0},
    }, name="web"))
    assert manifest["apiVersion"] == "apps/v1" and manifest["kind"] == "Deployment"
    assert manifest["metadata"] == {"namespace": "ns", "name": "web"}
    assert manifest["spec"]["replicas"] == 2 and isinstance(manifest["spec"]["replicas"], int)
    core = to_manifest(resource("kubernetes:core/v1:ConfigMap", {"data": {"a": "b"}}))
    assert core["apiVersion"] == "v1"


def test_non_manifest_types_are_not_validated():
    assert validate_resource(resource("kubernetes:yaml/v2:ConfigGroup", {}), K8S) is None
    assert validate_resource(resource("aws:s3/bucket:Bucket", {}), K8S) is None
    assert validate_resource(resource("pulumi:providers:kubernetes", {}), K8S) is None


# ----------------------------------------------------------------------- built-in kinds

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "team-a", "labels": {"app": "web"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 8080}]}]},
        },
    },
}


def test_a_valid_deployment_passes():
    assert errors_of("kubernetes:apps/v1:Deployment", DEPLOYMENT) == []


def test_deployment_with_an_unknown_field_is_rejected():
    broken = copy.deepcopy(DEPLOYMENT)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    errors = errors_of("kubernetes:apps/v1:Deployment", broken)
    assert any("spec.template.spec.containers[0]" in e and "imagePulPolicy" in e for e in errors), errors


def test_deployment_with_a_wrong_type_is_rejected():
    broken = copy.deepcopy(DEPLOYMENT)
    broken["spec"]["replicas"] = "two"
    errors = errors_of("kubernetes:apps/v1:Deployment", broken)
    assert any(e.startswith("spec.replicas:") for e in errors), errors


def test_deployment_missing_a_required_field_is_rejected():
    broken = copy.deepcopy(DEPLOYMENT)
    del broken["spec"]["selector"]
    assert any("selector" in e for e in errors_of("kubernetes:apps/v1:Deployment", broken))


def test_invalid_names_and_labels_are_rejected():
    broken = copy.deepcopy(DEPLOYMENT)
    broken["metadata"]["name"] = "Web_App"
    broken["metadata"]["labels"]["app"] = "x" * 64
    errors = errors_of("kubernetes:apps/v1:Deployment", broken)
    assert any(e.startswith("metadata.name:") for e in errors) and any("label value" in e for e in errors)


def test_api_version_not_served_by_the_pinned_kubernetes_is_rejected():
    errors = errors_of("kubernetes:policy/v1beta1:PodSecurityPolicy", {"spec": {}})
    assert errors and "not served by Kubernetes 1.35" in errors[0]


# --------------------------------------------------------------------- custom resources

KAFKA = {
    "apiVersion": "kafka.strimzi.io/v1beta2",
    "kind": "Kafka",
    "metadata": {"name": "events", "namespace": "kafka",
                 "annotations": {"strimzi.io/kraft": "enabled", "strimzi.io/node-pools": "enabled"}},
    "spec": {
        "kafka": {
            "version": "4.1.0",
            "listeners": [{"name": "tls", "port": 9093, "type": "internal", "tls": True,
                           "authentication": {"type": "tls"}}],
            "config": {"min.insync.replicas": 2},
        },
        "entityOperator": {"topicOperator": {}, "userOperator": {}},
    },
}

SCALED_OBJECT = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "metadata": {"name": "fraud-stream", "namespace": "team-a"},
    "spec": {
        "scaleTargetRef": {"name": "fraud-stream"},
        "minReplicaCount": 1,
        "maxReplicaCount": 10,
        "triggers": [{"type": "kafka", "metadata": {"topic": "fraud-in", "lagThreshold": "100",
                                                    "bootstrapServers": "events-kafka-bootstrap.kafka:9093",
                                                    "consumerGroup": "fraud"}}],
    },
}

RAYJOB = {
    "apiVersion": "ray.io/v1",
    "kind": "RayJob",
    "metadata": {"name": "fraud-train", "namespace": "team-a"},
    "spec": {
        "entrypoint": "python -m workloads.training.train",
        "shutdownAfterJobFinishes": True,
        "rayClusterSpec": {
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.49.0"}]}},
            },
        },
    },
}


def test_valid_custom_resources_pass(crd_schemas):
    assert errors_of("kubernetes:kafka.strimzi.io/v1beta2:Kafka", KAFKA, crd_schemas) == []
    assert errors_of("kubernetes:keda.sh/v1alpha1:ScaledObject", SCALED_OBJECT, crd_schemas) == []
    assert errors_of("kubernetes:ray.io/v1:RayJob", RAYJOB, crd_schemas) == []


def test_kafka_listener_with_a_typo_is_rejected(crd_schemas):
    broken = copy.deepcopy(KAFKA)
    broken["spec"]["kafka"]["listeners"][0]["tsl"] = broken["spec"]["kafka"]["listeners"][0].pop("tls")
    errors = errors_of("kubernetes:kafka.strimzi.io/v1beta2:Kafka", broken, crd_schemas)
    assert any(e.startswith("spec.kafka.listeners[0]:") and "'tsl'" in e for e in errors), errors


def test_kafka_listener_name_violating_the_crd_pattern_is_rejected(crd_schemas):
    broken = copy.deepcopy(KAFKA)
    broken["spec"]["kafka"]["listeners"][0]["name"] = "TLS-Listener"
    errors = errors_of("kubernetes:kafka.strimzi.io/v1beta2:Kafka", broken, crd_schemas)
    assert any(e.startswith("spec.kafka.listeners[0].name:") for e in errors), errors


def test_scaled_object_with_a_string_for_an_int_is_rejected(crd_schemas):
    broken = copy.deepcopy(SCALED_OBJECT)
    broken["spec"]["maxReplicaCount"] = "10"
    errors = errors_of("kubernetes:keda.sh/v1alpha1:ScaledObject", broken, crd_schemas)
    assert any(e.startswith("spec.maxReplicaCount:") and "integer" in e for e in errors), errors


def test_rayjob_with_an_unknown_field_in_its_pod_template_is_rejected(crd_schemas):
    broken = copy.deepcopy(RAYJOB)
    broken["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["cpu"] = 2
    errors = errors_of("kubernetes:ray.io/v1:RayJob", broken, crd_schemas)
    assert any("containers[0]" in e and "'cpu'" in e for e in errors), errors


def test_custom_resource_metadata_is_checked_as_object_meta(crd_schemas):
    broken = copy.deepcopy(SCALED_OBJECT)
    broken["metadata"]["labels"] = {"a": 1}
    assert any(e.startswith("metadata.labels") for e in
               errors_of("kubernetes:keda.sh/v1alpha1:ScaledObject", broken, crd_schemas))


def test_custom_resource_of_an_unmapped_kind_fails(crd_schemas):
    errors = errors_of("kubernetes:example.com/v1:Widget", {"spec": {}}, crd_schemas)
    assert errors and "CRD_SOURCES" in errors[0]


def test_seldon_deployment_is_unverifiable_but_its_pod_specs_are_checked():
    seldon = {"metadata": {"name": "fraud", "namespace": "team-a"}, "spec": {"predictors": [
        {"name": "main", "graph": {"name": "model"},
         "componentSpecs": [{"spec": {"containers": [{"name": "model", "image": "m:1", "bogus": True}]}}]}]}}
    finding = validate_resource(resource("kubernetes:machinelearning.seldon.io/v1:SeldonDeployment", seldon), K8S, {})
    assert finding.kind == "unverifiable" and "403" in finding.note
    assert any("componentSpecs[0].spec.containers[0]" in e and "bogus" in e for e in finding.errors)


# -------------------------------------------------------------------------- helm releases


def test_helm_release_checks():
    good = {"chart": "keda", "version": "2.20.2", "values": {"a": 1}}
    assert errors_of("kubernetes:helm.sh/v3:Release", good) == []
    assert any(e.startswith("version:") for e in errors_of("kubernetes:helm.sh/v3:Release", {**good, "version": "^2.20"}))
    assert any(e.startswith("version:") for e in errors_of("kubernetes:helm.sh/v3:Release", {**good, "version": None}))
    assert any(e.startswith("values:") for e in errors_of("kubernetes:helm.sh/v3:Release", {**good, "values": ["a"]}))


# ------------------------------------------------------------- structural schema handling


def _valid(schema, value) -> bool:
    import jsonschema

    return jsonschema.Draft4Validator(crd_to_jsonschema(schema)).is_valid(value)


def test_structural_schema_conversion():
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        "bare": {"x-kubernetes-int-or-string": True},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "map": {"type": "object", "additionalProperties": {"type": "string"}},
        "empty": {"type": "object"},
        "opt": {"type": "string", "nullable": True},
        "embedded": {"type": "object", "x-kubernetes-embedded-resource": True,
                     "x-kubernetes-preserve-unknown-fields": True},
    }}}}
    assert _valid(schema, {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"}, "spec": {
        "port": 80, "bare": "http", "free": {"anything": [1]}, "map": {"k": "v"}, "empty": {},
        "opt": None, "embedded": {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "x": 1}}})
    assert not _valid(schema, {"spec": {"port": 1.5}})
    assert not _valid(schema, {"spec": {"bare": True}})
    assert not _valid(schema, {"spec": {"unknown": 1}})
    assert not _valid(schema, {"spec": {"empty": {"pruned": 1}}})
    assert not _valid(schema, {"spec": {"map": {"k": 1}}})
    assert not _valid(schema, {"status2": {}})
