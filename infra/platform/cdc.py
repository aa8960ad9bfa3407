"""`ChangeDataCapture`: the stack's CDC pipelines on the cluster (modes with Kafka).

Each `workloads.data.ingest.pipeline.CdcPipeline` of the stack (`strata:cdc`) becomes, from the
same declaration the local demo renders:

- a `KafkaConnector` (Debezium's PostgreSQL connector, `CdcPipeline.connector_config`) whose
  database login is two `${secrets:<kafka-ns>/<pipeline>-cdc-db:username|password}`
  references: Strimzi's `KubernetesSecretConfigProvider` resolves them inside the Connect pod
  when the task starts, so neither the custom resource nor the operator's status holds them;
- that Secret, from the stack secret `strata:cdcCredentials` (`{<pipeline>: {username,
  password}}`), and the Role + RoleBinding that let Connect's service account read exactly
  those Secrets (the provider reads them through the Kubernetes API);
- a `KafkaTopic` for the table's change events (one partition: the table's LSN order);
- the sink, the catalogue's `cdc_sink` workload (`python -m workloads.data.ingest.cdc`) in
  the team's namespace, with its own `KafkaUser` (Read on that topic only) and the lake's
  bronze bucket; on AWS its ServiceAccount names its IRSA role (`sink_role_arns`), which may
  write that table's prefix of bronze and nothing else;
- where the pipeline declares `features` and the stack has an online store (`feature_store`),
  its feature aggregator, the catalogue's `feature_aggregator` workload (`python -m
  workloads.data.features.streaming`), in the same team namespace: its own `KafkaUser` (Read
  on the topic only; it assigns partitions itself, no group), the Redis URL from the team's
  `feature-store` Secret (an env var from a `secretKeyRef`), a ServiceMonitor, and a
  NetworkPolicy whose only egress is the Kafka listener and the online store (the team
  namespace's baseline allows, `infra.platform.namespaces`, still add up for every pod).
  Without an online store there is nowhere to write: no aggregator (the plan's notes say so).

One `KafkaConnect` (`strata-connect`, image "kafka-connect": Strimzi's Kafka + the Debezium
jars of the local worker's pom.xml) runs every connector, with its own `KafkaUser` on the
platform's mutual-TLS listener.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra.crds import strimzi
from infra.k8s import NAMESPACE_NAME_LABEL, empty_dir
from infra.platform.kafka import TLS_LISTENER_PORT
from infra.workloads import ClusterContext, PodPatch, RenderedWorkload, waits_for
from infra.platform.features import FeatureStoreAccess
from workloads.catalogue.declarations import cdc_sink, feature_aggregator
from workloads.catalogue.model import Placement
from workloads.data.ingest.pipeline import PASSWORD_KEY, USERNAME_KEY, CdcPipeline, secret_reference
from workloads.data.storage import LAKE_BUCKETS

CONNECT_NAME = "strata-connect"
CONNECT_VERSION = "4.1.1"  # Kafka Connect of the image = the local worker's (pom.xml kafka.version)
TLS_DIR = "/etc/strata/kafka"
BRONZE_BUCKET_ENV = "STRATA_LAKE_BRONZE_BUCKET"
CDC_TOPIC_RETENTION_HOURS = 7 * 24  # bronze keeps the events; the topic only has to outlast an outage


@dataclass(frozen=True)
class ChangeDataCaptureArgs:
    """Where the pipelines land. Defaults are stated, not implied."""

    pipelines: tuple[CdcPipeline, ...]
    kafka_namespace: str
    kafka_cluster: str
    team_namespaces: Mapping[str, str]
    connect_image: pulumi.Input[str]
    sink_image: pulumi.Input[str]
    bronze_bucket: pulumi.Input[str] = LAKE_BUCKETS["bronze"]
    connect_replicas: int = 2  # a worker's tasks move to the other on failure
    replication: int = 3  # the platform's brokers
    monitoring_namespace: str = ""
    prometheus: bool = False
    istio: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    # IRSA (AWS): the role each pipeline's sink assumes to write its bronze table, by pipeline
    # name (infra.cloud.iam `cdc-sink/<pipeline>`); a kubeconfig target has none.
    sink_role_arns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    # the online store (`OnlineFeatureStore.access`); None: no store, no feature aggregators
    feature_store: Optional[FeatureStoreAccess] = None

    @property
    def aggregated(self) -> tuple[CdcPipeline, ...]:
        """The pipelines whose feature aggregator runs: they declare features and there is a store."""
        return tuple(p for p in self.pipelines if p.features is not None) if self.feature_store is not None else ()

    def __post_init__(self) -> None:
        names = [p.name for p in self.pipelines]
        if len(set(names)) != len(names):
            raise ValueError(f"ChangeDataCaptureArgs.pipelines: duplicate names {names}")
        for pipeline in self.pipelines:
            if pipeline.team not in self.team_namespaces:
                raise ValueError(f"ChangeDataCaptureArgs.pipelines[{pipeline.name}].team: no namespace for team "
                                 f"{pipeline.team!r}")
        unknown = sorted(set(self.sink_role_arns) - set(names))
        if unknown:
            raise ValueError(f"ChangeDataCaptureArgs.sink_role_arns: no pipeline named {', '.join(unknown)}")

    @property
    def bootstrap(self) -> str:
        return f"{self.kafka_cluster}-kafka-bootstrap.{self.kafka_namespace}.svc:{TLS_LISTENER_PORT}"

    @property
    def cluster_ca_secret(self) -> str:
        return f"{self.kafka_cluster}-cluster-ca-cert"

    @property
    def connect_service_account(self) -> str:
        return f"{CONNECT_NAME}-connect"  # Strimzi names it <KafkaConnect>-connect


def _rule(kind: strimzi.AclResourceType, name: str, pattern: str, *ops: strimzi.AclOperation) -> strimzi.AclRule:
    return strimzi.AclRule(resource=strimzi.AclResource(type=kind, name=name, pattern_type=pattern),
                           operations=list(ops), type="allow")


def connect_acls(args: ChangeDataCaptureArgs) -> list[strimzi.AclRule]:
    """Connect's own: its group and internal topics; Debezium's: write (and create, for the
    heartbeat topic) under each pipeline's topic prefix."""
    topic, group, op = strimzi.AclResourceType.TOPIC, strimzi.AclResourceType.GROUP, strimzi.AclOperation
    rules = [_rule(group, CONNECT_NAME, "literal", op.READ),
             _rule(topic, f"{CONNECT_NAME}-", "prefix", op.READ, op.WRITE, op.CREATE, op.DESCRIBE, op.DESCRIBE_CONFIGS)]
    for prefix in sorted({p.topic_prefix for p in args.pipelines}):
        rules += [_rule(topic, f"{prefix}.", "prefix", op.WRITE, op.CREATE, op.DESCRIBE),
                  _rule(topic, f"__debezium-heartbeat.{prefix}", "literal", op.WRITE, op.CREATE, op.DESCRIBE)]
    return rules


def connect_spec(args: ChangeDataCaptureArgs) -> strimzi.KafkaConnectSpec:
    user = CONNECT_NAME
    return strimzi.KafkaConnectSpec(
        replicas=args.connect_replicas, bootstrap_servers=args.bootstrap, version=CONNECT_VERSION,
        tls=strimzi.ClientTls(trusted_certificates=[strimzi.TrustedCertificate(secret_name=args.cluster_ca_secret,
                                                                                certificate="ca.crt")]),
        authentication=strimzi.ClientAuthentication(type="tls", certificate_and_key=strimzi.CertificateAndKey(
            secret_name=user, certificate="user.crt", key="user.key")),
        config={
            "group.id": CONNECT_NAME,
            "offset.storage.topic": f"{CONNECT_NAME}-offsets",
            "config.storage.topic": f"{CONNECT_NAME}-configs",
            "status.storage.topic": f"{CONNECT_NAME}-status",
            "config.storage.replication.factor": args.replication,
            "offset.storage.replication.factor": args.replication,
            "status.storage.replication.factor": args.replication,
            "offset.flush.interval.ms": 1000,  # = the local worker's: what a crash replays
            # ${secrets:<ns>/<secret>:<key>} in connector configs, read from the API at task start
            "config.providers": "secrets",
            "config.providers.secrets.class": "io.strimzi.kafka.KubernetesSecretConfigProvider",
        },
        resources=strimzi.ResourceRequirements(requests={"cpu": "500m", "memory": "1Gi"},
                                               limits={"cpu": "2", "memory": "2Gi"}),
    )


def connector_spec(pipeline: CdcPipeline, args: ChangeDataCaptureArgs) -> strimzi.KafkaConnectorSpec:
    """The pipeline's Debezium config, its login as config-provider references."""
    secret = pipeline.credentials_secret
    config: dict[str, Any] = pipeline.connector_config(
        user=secret_reference(args.kafka_namespace, secret, USERNAME_KEY),
        password=secret_reference(args.kafka_namespace, secret, PASSWORD_KEY))
    connector_class, tasks = config.pop("connector.class"), int(config.pop("tasks.max"))
    # topics Connect creates itself (Debezium's heartbeat topic); the table's is a KafkaTopic
    config |= {"topic.creation.default.replication.factor": str(args.replication),
               "topic.creation.default.partitions": "1"}
    return strimzi.KafkaConnectorSpec(class_=connector_class, tasks_max=tasks, config=config,
                                      state=strimzi.KafkaConnectorState.RUNNING)


def topic_spec(pipeline: CdcPipeline, args: ChangeDataCaptureArgs) -> strimzi.KafkaTopicSpec:
    return strimzi.KafkaTopicSpec(topic_name=pipeline.topic, partitions=1, replicas=args.replication, config={
        "retention.ms": CDC_TOPIC_RETENTION_HOURS * 3_600_000, "min.insync.replicas": max(1, min(2, args.replication - 1)),
        "cleanup.policy": "delete"})


def sink_acls(pipeline: CdcPipeline) -> list[strimzi.AclRule]:
    """The sink assigns partitions itself (no consumer group: its offsets live in bronze)."""
    op = strimzi.AclOperation
    return [_rule(strimzi.AclResourceType.TOPIC, pipeline.topic, "literal", op.READ, op.DESCRIBE)]


def _kafka_output(args: ChangeDataCaptureArgs):
    def kafka(workload, resource, output: str) -> str:
        return {"bootstrap": args.bootstrap, "ca_file": f"{TLS_DIR}/ca.crt", "cert_file": f"{TLS_DIR}/user.crt",
                "key_file": f"{TLS_DIR}/user.key"}[output]
    return kafka


def sink_context(pipeline: CdcPipeline, args: ChangeDataCaptureArgs) -> ClusterContext:
    kafka = _kafka_output(args)

    def lake(workload, resource, output: str) -> str:
        if resource.params.get("bucket") != "lake-bronze" or output != "bucket":
            raise KeyError(f"object-store {resource.params} has no cluster output {output!r} here (lake-bronze.bucket)")
        return f"$({BRONZE_BUCKET_ENV})"  # the bucket name is an Output: passed as env, expanded by Kubernetes

    workload = cdc_sink(pipeline)
    return ClusterContext(
        namespaces={Placement.MONITORING: args.monitoring_namespace, Placement.MLFLOW: ""},
        team_namespaces={pipeline.team: args.team_namespaces[pipeline.team]},
        catalogue={workload.name: workload}, provisioners={"kafka": kafka, "object-store": lake},
        prometheus=args.prometheus, istio=args.istio)


def _kafka_tls_volume(args: ChangeDataCaptureArgs, user_secret: str) -> dict[str, Any]:
    """The cluster CA and the KafkaUser's certificate (Secrets mirrored into the team namespace)."""
    files = ((args.cluster_ca_secret, "ca.crt"), (user_secret, "user.crt"), (user_secret, "user.key"))
    return {"name": "kafka-tls", "projected": {"defaultMode": 0o440, "sources": [
        {"secret": {"name": secret, "items": [{"key": key, "path": key}]}} for secret, key in files]}}


def sink_patch(pipeline: CdcPipeline, args: ChangeDataCaptureArgs) -> PodPatch:
    user_secret = cdc_sink(pipeline).name
    return PodPatch(
        service_account=user_secret, image=args.sink_image,
        extra_env=({"name": BRONZE_BUCKET_ENV, "value": args.bronze_bucket},),
        volumes=(_kafka_tls_volume(args, user_secret), empty_dir("lake-cache", "1Gi")),
        volume_mounts=({"name": "kafka-tls", "mountPath": TLS_DIR, "readOnly": True},),
        pod_spec={"terminationGracePeriodSeconds": 60})  # SIGTERM: the poll in hand is committed to bronze


def aggregator_context(pipeline: CdcPipeline, args: ChangeDataCaptureArgs) -> ClusterContext:
    """The aggregator's Redis URL is its env var from the team's Secret (the declaration's
    `FEATURE_STORE_SECRET`); `${resources.features.*}` is not read by its argv."""
    workload = feature_aggregator(pipeline)
    return ClusterContext(
        namespaces={Placement.MONITORING: args.monitoring_namespace, Placement.MLFLOW: ""},
        team_namespaces={pipeline.team: args.team_namespaces[pipeline.team]},
        catalogue={workload.name: workload}, provisioners={"kafka": _kafka_output(args)},
        prometheus=args.prometheus, istio=args.istio)


def aggregator_patch(pipeline: CdcPipeline, args: ChangeDataCaptureArgs) -> PodPatch:
    user_secret = feature_aggregator(pipeline).name
    return PodPatch(
        service_account=user_secret, image=args.sink_image,
        volumes=(_kafka_tls_volume(args, user_secret),),
        volume_mounts=({"name": "kafka-tls", "mountPath": TLS_DIR, "readOnly": True},),
        pod_spec={"terminationGracePeriodSeconds": 30})


def aggregator_egress(pipeline: CdcPipeline, args: ChangeDataCaptureArgs) -> dict[str, Any]:
    """The aggregator's own egress: DNS, the Kafka listener, the online store. Nothing else."""
    assert args.feature_store is not None
    workload = feature_aggregator(pipeline)
    store = args.feature_store
    return {
        "metadata": {"name": f"{workload.name}-egress", "namespace": args.team_namespaces[pipeline.team],
                     "labels": workload.common_labels},
        "spec": {"podSelector": {"matchLabels": workload.selector_labels}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
             "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
            {"to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: args.kafka_namespace}}}],
             "ports": [{"port": TLS_LISTENER_PORT, "protocol": "TCP"}]},
            {"to": [dict(store.peer)], "ports": [{"port": store.port, "protocol": "TCP"}]},
        ]},
    }


def pipeline_login(credentials: Any, pipeline: CdcPipeline) -> dict[str, str]:
    """The pipeline's entry of `strata:cdcCredentials` as the Secret's keys; an error names what is missing."""
    entry = credentials.get(pipeline.name) if isinstance(credentials, Mapping) else None
    if not isinstance(entry, Mapping) or not entry.get(USERNAME_KEY) or not entry.get(PASSWORD_KEY):
        raise ValueError(f"strata:cdcCredentials.{pipeline.name}: needs {USERNAME_KEY} and {PASSWORD_KEY}")
    return {USERNAME_KEY: str(entry[USERNAME_KEY]), PASSWORD_KEY: str(entry[PASSWORD_KEY])}


class ChangeDataCapture(pulumi.ComponentResource):
    """See the module docstring."""

    def __init__(self, name: str, args: ChangeDataCaptureArgs, strimzi_operator: pulumi.Resource,
                 credentials: Optional[pulumi.Output], prometheus_operator: Optional[pulumi.Resource] = None,
                 after: Sequence[pulumi.Resource] = (), opts: Optional[pulumi.ResourceOptions] = None):
        if credentials is None:  # before registering anything
            raise ValueError("strata:cdcCredentials: the CDC pipelines need their database logins; set them with "
                             "`pulumi config set --secret strata:cdcCredentials '{\"<pipeline>\": "
                             "{\"username\": ..., \"password\": ...}}'`")
        super().__init__("strata:platform:ChangeDataCapture", name, None, opts)
        labels = {"app.kubernetes.io/part-of": "strata", "app.kubernetes.io/component": "cdc", **args.labels}
        child = pulumi.ResourceOptions(parent=self, depends_on=list(after))
        ns = args.kafka_namespace
        names = [p.name for p in args.pipelines]

        def login(pipeline: CdcPipeline):
            return pulumi.Output.secret(pulumi.Output.from_input(credentials).apply(
                lambda given: pipeline_login(given, pipeline)))

        self.secrets = {
            p.name: k8s.core.v1.Secret(f"{name}-{p.name}-db", metadata={"name": p.credentials_secret, "namespace": ns,
                                                                      "labels": labels},
                                       type="Opaque", string_data=login(p), opts=child)
            for p in args.pipelines}
        self.role = k8s.rbac.v1.Role(
            f"{name}-secrets-role", metadata={"name": f"{CONNECT_NAME}-cdc-secrets", "namespace": ns, "labels": labels},
            rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                    "resourceNames": sorted(p.credentials_secret for p in args.pipelines)}], opts=child)
        self.role_binding = k8s.rbac.v1.RoleBinding(
            f"{name}-secrets-binding", metadata={"name": f"{CONNECT_NAME}-cdc-secrets", "namespace": ns, "labels": labels},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{CONNECT_NAME}-cdc-secrets"},
            subjects=[{"kind": "ServiceAccount", "name": args.connect_service_account, "namespace": ns}], opts=child)

        tls_user = strimzi.KafkaUserSpec(
            authentication=strimzi.KafkaUserAuthentication(type=strimzi.KafkaUserAuthenticationType.TLS),
            authorization=strimzi.KafkaUserAuthorization(acls=connect_acls(args)))
        self.connect_user = strimzi.kafka_user(f"{name}-connect-user", name=CONNECT_NAME, namespace=ns,
                                               cluster=args.kafka_cluster, spec=tls_user, operator=strimzi_operator,
                                               labels=labels, opts=child)
        spec = {**connect_spec(args).render(), "image": args.connect_image}  # an Output where ECR has the image
        self.connect = strimzi.kafka_connect(
            f"{name}-connect", name=CONNECT_NAME, namespace=ns, spec=spec, operator=strimzi_operator, labels=labels,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*after, self.connect_user, self.role_binding]))

        self.topics, self.connectors, self.sinks, self.sink_users = {}, {}, {}, {}
        for pipeline in args.pipelines:
            team_ns = args.team_namespaces[pipeline.team]
            self.topics[pipeline.name] = strimzi.kafka_topic(
                f"{name}-{pipeline.name}-topic", name=f"{pipeline.name}-cdc", namespace=ns, cluster=args.kafka_cluster,
                spec=topic_spec(pipeline, args), operator=strimzi_operator, labels=labels, opts=child)
            self.connectors[pipeline.name] = strimzi.kafka_connector(
                f"{name}-{pipeline.name}-connector", name=pipeline.name, namespace=ns, connect_cluster=CONNECT_NAME,
                spec=connector_spec(pipeline, args), operator=strimzi_operator, labels=labels,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[
                    self.connect, self.secrets[pipeline.name], self.topics[pipeline.name]]))
            sink = cdc_sink(pipeline)
            self.sink_users[pipeline.name] = strimzi.kafka_user(
                f"{name}-{pipeline.name}-sink-user", name=sink.name, namespace=ns, cluster=args.kafka_cluster,
                operator=strimzi_operator, labels=labels, opts=child,
                spec=strimzi.KafkaUserSpec(
                    authentication=strimzi.KafkaUserAuthentication(type=strimzi.KafkaUserAuthenticationType.TLS),
                    authorization=strimzi.KafkaUserAuthorization(acls=sink_acls(pipeline)),
                    # the User Operator writes the Secret here; the reflector copies it to the team
                    template={"secret": {"metadata": {"annotations": strimzi.mirrored_to(team_ns)}}}))
            role_arn = args.sink_role_arns.get(pipeline.name)
            account = k8s.core.v1.ServiceAccount(
                f"{name}-{pipeline.name}-sink-sa", metadata={
                    "name": sink.name, "namespace": team_ns, "labels": sink.common_labels,
                    **({"annotations": {"eks.amazonaws.com/role-arn": role_arn}} if role_arn is not None else {})},
                automount_service_account_token=False, opts=child)
            self.sinks[pipeline.name] = RenderedWorkload(
                f"{name}-{pipeline.name}-sink", sink, sink_context(pipeline, args), patch=sink_patch(pipeline, args),
                prometheus_operator=prometheus_operator,
                deployment_opts=pulumi.ResourceOptions(depends_on=[account, self.sink_users[pipeline.name],
                                                                   self.topics[pipeline.name]]),
                # its Service, ServiceMonitor, ... too wait for the team's namespace (`after`)
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(transformations=[waits_for(after)])))
        self.aggregators, self.aggregator_users = {}, {}
        for pipeline in args.aggregated:
            team_ns = args.team_namespaces[pipeline.team]
            aggregator = feature_aggregator(pipeline)
            self.aggregator_users[pipeline.name] = strimzi.kafka_user(
                f"{name}-{pipeline.name}-aggregator-user", name=aggregator.name, namespace=ns,
                cluster=args.kafka_cluster, operator=strimzi_operator, labels=labels, opts=child,
                spec=strimzi.KafkaUserSpec(
                    authentication=strimzi.KafkaUserAuthentication(type=strimzi.KafkaUserAuthenticationType.TLS),
                    authorization=strimzi.KafkaUserAuthorization(acls=sink_acls(pipeline)),  # the same: Read the topic
                    template={"secret": {"metadata": {"annotations": strimzi.mirrored_to(team_ns)}}}))
            account = k8s.core.v1.ServiceAccount(
                f"{name}-{pipeline.name}-aggregator-sa", metadata={
                    "name": aggregator.name, "namespace": team_ns, "labels": aggregator.common_labels},
                automount_service_account_token=False, opts=child)
            egress = aggregator_egress(pipeline, args)
            k8s.networking.v1.NetworkPolicy(f"{name}-{pipeline.name}-aggregator-egress", metadata=egress["metadata"],
                                            spec=egress["spec"], opts=child)
            self.aggregators[pipeline.name] = RenderedWorkload(
                f"{name}-{pipeline.name}-aggregator", aggregator, aggregator_context(pipeline, args),
                patch=aggregator_patch(pipeline, args), prometheus_operator=prometheus_operator,
                deployment_opts=pulumi.ResourceOptions(depends_on=[account, self.aggregator_users[pipeline.name],
                                                                   self.topics[pipeline.name]]),
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(transformations=[waits_for(after)])))
        self.register_outputs({"connect": CONNECT_NAME, "connectors": names,
                               "topics": [p.topic for p in args.pipelines],
                               "aggregators": [feature_aggregator(p).name for p in args.aggregated]})
