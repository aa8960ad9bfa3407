"""Strimzi custom resources: `Kafka`, `KafkaNodePool`, `KafkaTopic`, `KafkaUser`, `KafkaConnect`, `KafkaConnector`.

Mirrors the `kafka.strimzi.io/v1beta2` schemas served by Strimzi **0.51.0** (the
version pinned in `infra.platform.charts`), from the CRDs shipped in
`packaging/install/cluster-operator/04x-Crd-*.yaml` of strimzi/strimzi-kafka-operator
at tag 0.51.0; API reference: https://strimzi.io/docs/operators/0.51.0/configuring.html
(“Schema properties”). Only the properties the platform sets are modelled; every
enum, pattern and minimum below is the CRD's.

0.51 serves both `v1` (introduced in 0.49) and `v1beta2`; 1.0 removes `v1beta2`. The
cluster runs in KRaft mode with node pools, declared (for the v1beta2 API) by the
`strimzi.io/kraft: enabled` and `strimzi.io/node-pools: enabled` annotations.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field

from infra.crds import CrdModel, ObjectMeta, custom_resource

API_VERSION = "kafka.strimzi.io/v1beta2"
OPERATOR_VERSION = "0.51.0"
CLUSTER_LABEL = "strimzi.io/cluster"
KRAFT_ANNOTATIONS = {"strimzi.io/kraft": "enabled", "strimzi.io/node-pools": "enabled"}


class ListenerType(str, enum.Enum):
    INTERNAL = "internal"
    ROUTE = "route"
    LOADBALANCER = "loadbalancer"
    NODEPORT = "nodeport"
    INGRESS = "ingress"
    CLUSTER_IP = "cluster-ip"


class ListenerAuthenticationType(str, enum.Enum):
    TLS = "tls"
    SCRAM_SHA_512 = "scram-sha-512"
    OAUTH = "oauth"  # deprecated since 0.49
    CUSTOM = "custom"


class KafkaListenerAuthentication(CrdModel):
    type: ListenerAuthenticationType


class GenericKafkaListener(CrdModel):
    name: str = Field(pattern=r"^[a-z0-9]{1,11}$")
    port: int = Field(ge=9092)
    type: ListenerType
    tls: bool
    authentication: KafkaListenerAuthentication | None = None
    network_policy_peers: list[dict[str, Any]] | None = None  # NetworkPolicyPeer objects


class KafkaAuthorizationType(str, enum.Enum):
    SIMPLE = "simple"
    OPA = "opa"
    KEYCLOAK = "keycloak"
    CUSTOM = "custom"


class KafkaAuthorization(CrdModel):
    type: KafkaAuthorizationType
    super_users: list[str] | None = None


class Rack(CrdModel):
    topology_key: str


class ResourceRequirements(CrdModel):
    requests: dict[str, str] | None = None
    limits: dict[str, str] | None = None


class KafkaClusterSpec(CrdModel):
    version: str | None = None
    metadata_version: str | None = None
    listeners: list[GenericKafkaListener] = Field(min_length=1)
    config: dict[str, Any] | None = None
    authorization: KafkaAuthorization | None = None
    rack: Rack | None = None
    template: dict[str, Any] | None = None  # KafkaClusterTemplate (pod, podDisruptionBudget, ...)


class EntityOperatorComponentSpec(CrdModel):
    watched_namespace: str | None = None
    resources: ResourceRequirements | None = None


class EntityOperatorSpec(CrdModel):
    topic_operator: EntityOperatorComponentSpec | None = None
    user_operator: EntityOperatorComponentSpec | None = None
    template: dict[str, Any] | None = None


class KafkaExporterSpec(CrdModel):
    topic_regex: str | None = None
    group_regex: str | None = None
    resources: ResourceRequirements | None = None


class KafkaSpec(CrdModel):
    kafka: KafkaClusterSpec
    entity_operator: EntityOperatorSpec | None = None
    kafka_exporter: KafkaExporterSpec | None = None


class NodePoolRole(str, enum.Enum):
    CONTROLLER = "controller"
    BROKER = "broker"


class PersistentClaimVolume(CrdModel):
    id: int = Field(ge=0)
    type: Literal["persistent-claim"] = "persistent-claim"
    size: str
    class_: str | None = Field(None, alias="class")
    delete_claim: bool = False
    kraft_metadata: Literal["shared"] | None = None


class JbodStorage(CrdModel):
    type: Literal["jbod"] = "jbod"
    volumes: list[PersistentClaimVolume] = Field(min_length=1)


class KafkaNodePoolSpec(CrdModel):
    replicas: int = Field(ge=0)
    roles: list[NodePoolRole] = Field(min_length=1)
    storage: JbodStorage
    resources: ResourceRequirements | None = None
    template: dict[str, Any] | None = None


class KafkaTopicSpec(CrdModel):
    topic_name: str | None = None
    partitions: int | None = Field(None, ge=1)
    replicas: int | None = Field(None, ge=1, le=32767)
    config: dict[str, Any] | None = None


class KafkaUserAuthenticationType(str, enum.Enum):
    TLS = "tls"
    TLS_EXTERNAL = "tls-external"
    SCRAM_SHA_512 = "scram-sha-512"


class AclResourceType(str, enum.Enum):
    TOPIC = "topic"
    GROUP = "group"
    CLUSTER = "cluster"
    TRANSACTIONAL_ID = "transactionalId"


class AclOperation(str, enum.Enum):
    READ = "Read"
    WRITE = "Write"
    CREATE = "Create"
    DELETE = "Delete"
    ALTER = "Alter"
    DESCRIBE = "Describe"
    CLUSTER_ACTION = "ClusterAction"
    ALTER_CONFIGS = "AlterConfigs"
    DESCRIBE_CONFIGS = "DescribeConfigs"
    IDEMPOTENT_WRITE = "IdempotentWrite"
    ALL = "All"


class AclResource(CrdModel):
    type: AclResourceType
    name: str | None = None
    pattern_type: Literal["literal", "prefix"] | None = None


class AclRule(CrdModel):
    resource: AclResource
    operations: list[AclOperation] = Field(min_length=1)
    type: Literal["allow", "deny"] | None = None
    host: str | None = None


class KafkaUserAuthentication(CrdModel):
    type: KafkaUserAuthenticationType


class KafkaUserAuthorization(CrdModel):
    type: Literal["simple"] = "simple"
    acls: list[AclRule]


class KafkaUserSpec(CrdModel):
    authentication: KafkaUserAuthentication | None = None
    authorization: KafkaUserAuthorization | None = None
    template: dict[str, Any] | None = None  # KafkaUserTemplate: {"secret": {"metadata": {...}}}


REFLECTOR = "reflector.v1.k8s.emberstack.com/"


def mirrored_to(namespaces: str) -> dict[str, str]:
    """Annotations that make the reflector (charts: "reflector") keep a copy of a Secret in
    `namespaces` (a comma-separated list or regular expression of namespace names)."""
    return {f"{REFLECTOR}reflection-allowed": "true", f"{REFLECTOR}reflection-allowed-namespaces": namespaces,
            f"{REFLECTOR}reflection-auto-enabled": "true", f"{REFLECTOR}reflection-auto-namespaces": namespaces}


def _meta(name: str, namespace: str, cluster: str | None, annotations: dict[str, str] | None = None,
          labels: dict[str, str] | None = None) -> ObjectMeta:
    merged = dict(labels or {})
    if cluster:
        merged[CLUSTER_LABEL] = cluster
    return ObjectMeta(name=name, namespace=namespace, labels=merged or None, annotations=annotations)


def kafka(resource_name: str, *, name: str, namespace: str, spec: KafkaSpec, operator: pulumi.Resource,
          opts: pulumi.ResourceOptions | None = None, labels: dict[str, str] | None = None) -> k8s.apiextensions.CustomResource:
    """The `Kafka` CR (KRaft + node pools)."""
    return custom_resource(resource_name, api_version=API_VERSION, kind="Kafka",
                           metadata=_meta(name, namespace, None, dict(KRAFT_ANNOTATIONS), labels),
                           spec=spec, operator=operator, opts=opts)


def kafka_node_pool(resource_name: str, *, name: str, namespace: str, cluster: str, spec: KafkaNodePoolSpec,
                    operator: pulumi.Resource, opts: pulumi.ResourceOptions | None = None,
                    labels: dict[str, str] | None = None) -> k8s.apiextensions.CustomResource:
    """A `KafkaNodePool` of `cluster` (labelled `strimzi.io/cluster`)."""
    return custom_resource(resource_name, api_version=API_VERSION, kind="KafkaNodePool",
                           metadata=_meta(name, namespace, cluster, None, labels),
                           spec=spec, operator=operator, opts=opts)


def kafka_topic(resource_name: str, *, name: str, namespace: str, cluster: str, spec: KafkaTopicSpec,
                operator: pulumi.Resource, opts: pulumi.ResourceOptions | None = None,
                labels: dict[str, str] | None = None) -> k8s.apiextensions.CustomResource:
    """A `KafkaTopic`, reconciled by the cluster's Topic Operator (in the Kafka namespace)."""
    return custom_resource(resource_name, api_version=API_VERSION, kind="KafkaTopic",
                           metadata=_meta(name, namespace, cluster, None, labels),
                           spec=spec, operator=operator, opts=opts)


def kafka_user(resource_name: str, *, name: str, namespace: str, cluster: str, spec: KafkaUserSpec,
               operator: pulumi.Resource, opts: pulumi.ResourceOptions | None = None,
               labels: dict[str, str] | None = None) -> k8s.apiextensions.CustomResource:
    """A `KafkaUser` (TLS client certificate + ACLs), reconciled by the User Operator."""
    return custom_resource(resource_name, api_version=API_VERSION, kind="KafkaUser",
                           metadata=_meta(name, namespace, cluster, None, labels),
                           spec=spec, operator=operator, opts=opts)


# --- Kafka Connect (CDC: Debezium's PostgreSQL connector) --------------------------------------
class ConnectPluginArtifactType(str, enum.Enum):  # KafkaConnect .spec.build.plugins[].artifacts[].type
    JAR = "jar"
    TGZ = "tgz"
    ZIP = "zip"
    MAVEN = "maven"
    OTHER = "other"


class ConnectPluginArtifact(CrdModel):
    type: ConnectPluginArtifactType
    group: str | None = None  # maven
    artifact: str | None = None  # maven
    version: str | None = None  # maven
    repository: str | None = None  # maven: a mirror the cluster reaches
    url: str | None = None  # jar/tgz/zip


class ConnectPlugin(CrdModel):
    name: str = Field(pattern=r"^[a-z0-9][-_a-z0-9]*[a-z0-9]$")
    artifacts: list[ConnectPluginArtifact] = Field(min_length=1)


class ConnectBuildOutput(CrdModel):
    type: Literal["docker", "imagestream"]
    image: str
    push_secret: str | None = None


class ConnectBuild(CrdModel):
    output: ConnectBuildOutput
    plugins: list[ConnectPlugin] = Field(min_length=1)


class ExternalConfigurationEnvVarSource(CrdModel):
    secret_key_ref: dict[str, str] | None = None  # {"name": ..., "key": ...}
    config_map_key_ref: dict[str, str] | None = None


class ExternalConfigurationEnv(CrdModel):
    name: str
    value_from: ExternalConfigurationEnvVarSource


class TrustedCertificate(CrdModel):  # .spec.tls.trustedCertificates[]: certificate or pattern
    secret_name: str
    certificate: str | None = None
    pattern: str | None = None


class ClientTls(CrdModel):
    trusted_certificates: list[TrustedCertificate] | None = None


class CertificateAndKey(CrdModel):
    secret_name: str
    certificate: str
    key: str


class ClientAuthentication(CrdModel):  # .spec.authentication of KafkaConnect (mutual TLS only here)
    type: Literal["tls"]
    certificate_and_key: CertificateAndKey


class KafkaConnectSpec(CrdModel):
    replicas: int = Field(ge=0)
    bootstrap_servers: str
    tls: ClientTls | None = None
    authentication: ClientAuthentication | None = None
    version: str | None = None
    image: str | None = None
    config: dict[str, Any] | None = None
    resources: ResourceRequirements | None = None
    build: ConnectBuild | None = None
    template: dict[str, Any] | None = None
    # Strimzi 0.51 v1beta2 names it externalConfiguration (env from secrets: credentials)
    external_configuration: dict[str, list[ExternalConfigurationEnv]] | None = None


class KafkaConnectorState(str, enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class KafkaConnectorSpec(CrdModel):
    class_: str = Field(alias="class")
    tasks_max: int = Field(1, ge=1)
    config: dict[str, Any] | None = None
    state: KafkaConnectorState | None = None


def kafka_connect(resource_name: str, *, name: str, namespace: str, spec: KafkaConnectSpec | dict[str, Any],
                  operator: pulumi.Resource, opts: pulumi.ResourceOptions | None = None,
                  labels: dict[str, str] | None = None) -> k8s.apiextensions.CustomResource:
    """A `KafkaConnect` cluster whose connectors are `KafkaConnector` resources
    (`strimzi.io/use-connector-resources`)."""
    return custom_resource(resource_name, api_version=API_VERSION, kind="KafkaConnect",
                           metadata=_meta(name, namespace, None, {"strimzi.io/use-connector-resources": "true"}, labels),
                           spec=spec, operator=operator, opts=opts)


def kafka_connector(resource_name: str, *, name: str, namespace: str, connect_cluster: str, spec: KafkaConnectorSpec,
                    operator: pulumi.Resource, opts: pulumi.ResourceOptions | None = None,
                    labels: dict[str, str] | None = None) -> k8s.apiextensions.CustomResource:
    """A `KafkaConnector` of `connect_cluster` (labelled `strimzi.io/cluster`)."""
    return custom_resource(resource_name, api_version=API_VERSION, kind="KafkaConnector",
                           metadata=_meta(name, namespace, connect_cluster, None, labels),
                           spec=spec, operator=operator, opts=opts)
