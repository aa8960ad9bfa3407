"""`ModelStreaming`: a model's stream scoring on the cluster (modes with Kafka and KEDA).

- Three Strimzi `KafkaTopic`s in the Kafka namespace (the Topic Operator watches only
  that one), named by `workloads.streaming.topics.topics_for`: input and scored with the
  spec's partitions (scored keeps the input's keys, so the same partition count keeps
  per-key order), the dead-letter topic with at most 3 (it carries only bad records) and
  at least a week of retention (people read it after the fact). Replication is the spec's,
  capped by the broker count; `min.insync.replicas` is one less (at most 2), so acks=all
  producers keep writing while one replica is down.
- A `KafkaUser` (mutual TLS, the platform listener's authentication) with the least ACLs
  the worker needs: Read on the input topic and on its consumer group, Write on the
  scored and dead-letter topics. Read and Write imply Describe; since Kafka 3.0 Write
  also covers the idempotent producer. KEDA's lag check (describe group, list offsets)
  uses the same identity.
- The stream worker `Deployment` (`python -m workloads.streaming`), which KEDA scales:
  a `ScaledObject` with the kafka trigger on the input topic and the worker's consumer
  group, `lagThreshold`/`activationLagThreshold` from the spec, `maxReplicaCount` =
  `streaming.maxReplicas` (never above the partitions: idle consumers get nothing), and
  `minReplicaCount` 1: with 0, records below the activation threshold would wait for
  more traffic before anything scores them. Scale-down is slow (one pod a minute after 5
  minutes) because every change of the group's membership is a rebalance.
  The worker's `spec.replicas` belongs to KEDA's HPA after creation (`ignore_changes`).
- A `TriggerAuthentication` giving KEDA the client certificate, key and the cluster CA.

The client credentials: Strimzi's User Operator writes the KafkaUser's certificate into the
Secret `<model>-stream` in the *Kafka* namespace, beside the cluster CA certificate
`<cluster>-cluster-ca-cert`; a pod and a TriggerAuthentication read only Secrets of their
own namespace. Both Secrets carry reflector annotations (the KafkaUser's `template.secret`,
the Kafka CR's `template.clusterCaCert`), so the platform's reflector (infra.platform.kafka)
keeps copies of them in the team namespace. The worker mounts `ca.crt`, `user.crt` and
`user.key` from them (one projected volume at `/etc/strata/kafka`) and speaks mutual TLS
with those files (`--ssl-cafile`, `--ssl-certfile`, `--ssl-keyfile`); KEDA's
TriggerAuthentication reads the same three keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi

from infra.contracts import ClusterHandle
from infra.crds import keda, strimzi
from infra.k8s import empty_dir, topology_spread
from infra.platform.features import url_env, url_output
from infra.platform.kafka import TLS_LISTENER_PORT, KafkaClusterArgs
from infra.models.serving import registry_sync_container
from infra.workloads import ClusterContext, PodPatch, RenderedWorkload, deployment_spec
from workloads.catalogue import model_workloads, platform_workloads
from workloads.catalogue.declarations import feature_plan, quality_service, stream_worker
from workloads.catalogue.model import Placement
from workloads.spec import ModelSpec
from workloads.streaming.topics import labels_topic_for, topics_for

DEFAULT_KAFKA_BROKERS = KafkaClusterArgs.__dataclass_fields__["brokers"].default  # what the platform deploys
TLS_DIR = "/etc/strata/kafka"
REGISTRY_DIR = "/mnt/models"
DLQ_MAX_PARTITIONS = 3
DLQ_MIN_RETENTION_HOURS = 7 * 24


@dataclass(frozen=True)
class ModelStreamingArgs:
    """Where the stream lands. `kafka_brokers` caps the topics' replication (default: the platform's)."""

    model: ModelSpec
    namespace: str  # the team namespace (worker, KEDA objects)
    kafka_namespace: str  # topics and users (the entity operator's namespace)
    kafka_cluster: str
    image: pulumi.Input[str]
    service_account: str
    labels: Mapping[str, str]
    kafka_brokers: int = DEFAULT_KAFKA_BROKERS
    # The registry-sync sidecar (workloads.serving.sync) that exports the champion to /mnt/models.
    sync_image: pulumi.Input[str] = ""
    mlflow_tracking_uri: pulumi.Input[str] = ""
    # The team's Secret with the online feature store's URL (infra.platform.features); a spec
    # with online views needs it: the worker's `--feature-store-url` is `$(STRATA_FEATURE_STORE_URL)`.
    feature_store_secret: Optional[str] = None

    def __post_init__(self) -> None:
        plan = feature_plan(self.model)
        if plan is not None and not self.feature_store_secret:
            raise ValueError(f"ModelStreamingArgs.feature_store_secret: model {self.model.name!r} declares online "
                             f"feature view(s) {', '.join(v.name for v in plan.views)}, so its stream worker needs "
                             "the online store's Secret (PlatformOutputs.feature_store_secret is unset)")

    @property
    def bootstrap(self) -> str:
        return f"{self.kafka_cluster}-kafka-bootstrap.{self.kafka_namespace}.svc:{TLS_LISTENER_PORT}"

    @property
    def consumer_group(self) -> str:
        return f"strata-{self.model.name}-stream"  # = workloads.streaming.worker.WorkerConfig.resolved_group()

    @property
    def worker_name(self) -> str:
        return f"{self.model.name}-stream"

    @property
    def user_secret(self) -> str:
        """The KafkaUser's Secret (user.crt, user.key), mirrored into the team namespace."""
        return self.worker_name

    @property
    def cluster_ca_secret(self) -> str:
        """Strimzi's cluster CA certificate Secret (ca.crt), mirrored into the team namespace."""
        return f"{self.kafka_cluster}-cluster-ca-cert"

    @property
    def trigger_authentication(self) -> str:
        return f"{self.model.name}-stream-kafka-tls"

    def tls_files(self) -> tuple[tuple[str, str, str], ...]:
        """(KEDA parameter, Secret, key): the three files of mutual TLS, as mounted and as KEDA reads them."""
        return (("ca", self.cluster_ca_secret, "ca.crt"), ("cert", self.user_secret, "user.crt"),
                ("key", self.user_secret, "user.key"))


def topic_specs(args: ModelStreamingArgs) -> dict[str, tuple[str, strimzi.KafkaTopicSpec]]:
    """role -> (KafkaTopic name, spec)."""
    stream = args.model.serving.streaming
    topics = topics_for(args.model.name)
    replicas = min(stream.replication_factor, args.kafka_brokers)
    min_isr = max(1, min(2, replicas - 1))

    def spec(topic: str, partitions: int, retention_hours: int) -> strimzi.KafkaTopicSpec:
        return strimzi.KafkaTopicSpec(topic_name=topic, partitions=partitions, replicas=replicas, config={
            "retention.ms": retention_hours * 3_600_000, "min.insync.replicas": min_isr, "cleanup.policy": "delete"})

    return {
        "input": (f"{args.model.name}-input", spec(topics.input, stream.partitions, stream.retention_hours)),
        "scored": (f"{args.model.name}-scored", spec(topics.output, stream.partitions, stream.retention_hours)),
        "dlq": (f"{args.model.name}-dlq", spec(topics.dead_letter, min(stream.partitions, DLQ_MAX_PARTITIONS),
                                               max(stream.retention_hours, DLQ_MIN_RETENTION_HOURS))),
    }


def user_acls(args: ModelStreamingArgs) -> list[strimzi.AclRule]:
    topics = topics_for(args.model.name)

    def rule(kind: strimzi.AclResourceType, name: str, operation: strimzi.AclOperation) -> strimzi.AclRule:
        return strimzi.AclRule(resource=strimzi.AclResource(type=kind, name=name, pattern_type="literal"),
                               operations=[operation], type="allow")

    topic, group = strimzi.AclResourceType.TOPIC, strimzi.AclResourceType.GROUP
    read, write = strimzi.AclOperation.READ, strimzi.AclOperation.WRITE
    return [rule(topic, topics.input, read), rule(group, args.consumer_group, read),
            rule(topic, topics.output, write), rule(topic, topics.dead_letter, write)]


def scaled_object_spec(args: ModelStreamingArgs) -> keda.ScaledObjectSpec:
    stream = args.model.serving.streaming
    trigger = keda.KafkaTrigger(
        bootstrap_servers=args.bootstrap, consumer_group=args.consumer_group, topic=topics_for(args.model.name).input,
        lag_threshold=stream.lag_threshold, activation_lag_threshold=stream.activation_lag_threshold,
        tls="enable", sasl="none")
    max_replicas = min(stream.effective_max_replicas, stream.partitions)
    return keda.ScaledObjectSpec(
        scale_target_ref=keda.ScaleTargetRef(name=args.worker_name, api_version="apps/v1", kind="Deployment"),
        triggers=[trigger.trigger("input-lag", keda.AuthenticationRef(name=args.trigger_authentication,
                                                                       kind="TriggerAuthentication"))],
        min_replica_count=1, max_replica_count=max_replicas, polling_interval=15, cooldown_period=300,
        fallback=keda.Fallback(failure_threshold=3, replicas=min(2, max_replicas)),
        advanced=keda.Advanced(horizontal_pod_autoscaler_config={"behavior": {"scaleDown": {
            "stabilizationWindowSeconds": 300, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}),
    )


def stream_context(args: ModelStreamingArgs, *, prometheus: bool = False, istio: bool = False,
                   monitoring_namespace: str = "", mlflow_namespace: str = "mlflow") -> ClusterContext:
    """What the worker's declaration resolves to here: the TLS listener and the mounted files."""
    def kafka(workload, resource, output: str) -> str:
        return {"bootstrap": args.bootstrap, "ca_file": f"{TLS_DIR}/ca.crt", "cert_file": f"{TLS_DIR}/user.crt",
                "key_file": f"{TLS_DIR}/user.key"}[output]

    return ClusterContext(
        namespaces={Placement.MONITORING: monitoring_namespace, Placement.MLFLOW: mlflow_namespace},
        team_namespaces={args.model.team: args.namespace},
        catalogue={w.name: w for w in (*platform_workloads(), *model_workloads(args.model))},
        provisioners={"kafka": kafka, "model-registry": lambda w, r, o: {"dir": REGISTRY_DIR}[o],
                      **({"feature-store": lambda w, r, o: url_output(o)} if args.feature_store_secret else {})},
        prometheus=prometheus, istio=istio)


def worker_patch(args: ModelStreamingArgs) -> PodPatch:
    """The cluster's part of the worker pod: identity, the registry-sync sidecar, TLS files, spread."""
    stream = args.model.serving.streaming
    match = stream_worker(args.model).selector_labels
    sync = registry_sync_container("champion", args.model.name)
    sync["image"] = args.sync_image
    sync["env"] = [{**e, "value": args.mlflow_tracking_uri} if e["name"] == "MLFLOW_TRACKING_URI" else e
                   for e in sync["env"]]
    return PodPatch(
        service_account=args.service_account, image=args.image, sidecars=(sync,),
        extra_env=(url_env(),) if args.feature_store_secret else (),
        volumes=(empty_dir("registry", "2Gi"),
                 {"name": "kafka-tls", "projected": {"defaultMode": 0o440, "sources": [
                     {"secret": {"name": secret, "items": [{"key": key, "path": key}]}}
                     for _, secret, key in args.tls_files()]}}),
        volume_mounts=({"name": "registry", "mountPath": REGISTRY_DIR},
                       {"name": "kafka-tls", "mountPath": TLS_DIR, "readOnly": True}),
        max_replicas=min(stream.effective_max_replicas, stream.partitions),
        pod_spec={
            # SIGTERM: the worker finishes its batch, commits and exits.
            "terminationGracePeriodSeconds": 60,
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                   "labelSelector": {"matchLabels": match}}}]}},
            "topologySpreadConstraints": topology_spread(match),
        })


def quality_acls(args: ModelStreamingArgs) -> list[strimzi.AclRule]:
    """The quality service reads the scored and labels topics in its own consumer group."""
    topics = topics_for(args.model.name)

    def rule(kind: strimzi.AclResourceType, name: str) -> strimzi.AclRule:
        return strimzi.AclRule(resource=strimzi.AclResource(type=kind, name=name, pattern_type="literal"),
                               operations=[strimzi.AclOperation.READ], type="allow")

    return [rule(strimzi.AclResourceType.TOPIC, topics.output),
            rule(strimzi.AclResourceType.TOPIC, labels_topic_for(args.model.name)),
            rule(strimzi.AclResourceType.GROUP, f"strata-{args.model.name}-quality")]


def quality_patch(args: ModelStreamingArgs) -> PodPatch:
    """The quality pod: its own Kafka identity's files, the registry export (baselines) and its sync."""
    user_secret = f"{args.model.name}-quality"
    sync = registry_sync_container("champion", args.model.name)
    sync["image"] = args.sync_image
    sync["env"] = [{**e, "value": args.mlflow_tracking_uri} if e["name"] == "MLFLOW_TRACKING_URI" else e
                   for e in sync["env"]]
    files = (("ca", args.cluster_ca_secret, "ca.crt"), ("cert", user_secret, "user.crt"), ("key", user_secret, "user.key"))
    return PodPatch(
        service_account=args.service_account, image=args.sync_image, sidecars=(sync,),
        volumes=(empty_dir("registry", "2Gi"),
                 {"name": "kafka-tls", "projected": {"defaultMode": 0o440, "sources": [
                     {"secret": {"name": secret, "items": [{"key": key, "path": key}]}} for _, secret, key in files]}}),
        volume_mounts=({"name": "registry", "mountPath": REGISTRY_DIR},
                       {"name": "kafka-tls", "mountPath": TLS_DIR, "readOnly": True}))


def worker_deployment_spec(args: ModelStreamingArgs, context: Optional[ClusterContext] = None) -> dict:
    """The worker Deployment's spec: the catalogue's declaration + `worker_patch` (KEDA owns replicas)."""
    return deployment_spec(stream_worker(args.model), context or stream_context(args), worker_patch(args))


class ModelStreaming(pulumi.ComponentResource):
    def __init__(self, name: str, args: ModelStreamingArgs, cluster: ClusterHandle, strimzi_operator: pulumi.Resource,
                 keda_operator: pulumi.Resource, after: tuple[pulumi.Resource, ...] = (),
                 context: Optional[ClusterContext] = None, prometheus_operator: Optional[pulumi.Resource] = None,
                 quality: bool = False, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:models:ModelStreaming", name, None, opts)
        labels = dict(args.labels)
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        self.topics = {
            role: strimzi.kafka_topic(f"{name}-topic-{role}", name=topic_name, namespace=args.kafka_namespace,
                                      cluster=args.kafka_cluster, spec=spec, operator=strimzi_operator,
                                      labels=labels, opts=child)
            for role, (topic_name, spec) in topic_specs(args).items()
        }
        self.user = strimzi.kafka_user(
            f"{name}-kafka-user", name=args.worker_name, namespace=args.kafka_namespace, cluster=args.kafka_cluster,
            operator=strimzi_operator, labels=labels, opts=child,
            spec=strimzi.KafkaUserSpec(
                authentication=strimzi.KafkaUserAuthentication(type=strimzi.KafkaUserAuthenticationType.TLS),
                authorization=strimzi.KafkaUserAuthorization(acls=user_acls(args)),
                # the User Operator writes the Secret in the Kafka namespace; the reflector
                # keeps a copy in the worker's namespace (infra.platform.kafka)
                template={"secret": {"metadata": {"annotations": strimzi.mirrored_to(args.namespace)}}}))
        self.rendered = RenderedWorkload(
            f"{name}-worker", stream_worker(args.model), context or stream_context(args), patch=worker_patch(args),
            prometheus_operator=prometheus_operator,
            deployment_opts=pulumi.ResourceOptions(ignore_changes=["spec.replicas"],
                                                   depends_on=[*after, *self.topics.values(), self.user]),
            opts=child)
        self.worker = self.rendered.deployment
        self.disruption_budget = self.rendered.disruption_budget
        self.quality: Optional[RenderedWorkload] = None
        if quality:
            # model quality from delayed labels: the labels topic, a read-only identity, the service
            labels_spec = topic_specs(args)["input"][1].model_copy(update={"topic_name": labels_topic_for(args.model.name)})
            self.topics["labels"] = strimzi.kafka_topic(
                f"{name}-topic-labels", name=f"{args.model.name}-labels", namespace=args.kafka_namespace,
                cluster=args.kafka_cluster, spec=labels_spec, operator=strimzi_operator, labels=labels, opts=child)
            self.quality_user = strimzi.kafka_user(
                f"{name}-quality-kafka-user", name=f"{args.model.name}-quality", namespace=args.kafka_namespace,
                cluster=args.kafka_cluster, operator=strimzi_operator, labels=labels, opts=child,
                spec=strimzi.KafkaUserSpec(
                    authentication=strimzi.KafkaUserAuthentication(type=strimzi.KafkaUserAuthenticationType.TLS),
                    authorization=strimzi.KafkaUserAuthorization(acls=quality_acls(args)),
                    template={"secret": {"metadata": {"annotations": strimzi.mirrored_to(args.namespace)}}}))
            self.quality = RenderedWorkload(
                f"{name}-quality", quality_service(args.model), context or stream_context(args),
                patch=quality_patch(args), prometheus_operator=prometheus_operator,
                deployment_opts=pulumi.ResourceOptions(depends_on=[*after, self.topics["scored"], self.topics["labels"],
                                                                   self.quality_user]),
                opts=child)
        self.trigger_authentication = keda.trigger_authentication(
            f"{name}-trigger-auth", name=args.trigger_authentication, namespace=args.namespace, operator=keda_operator,
            labels=labels, opts=child,
            spec=keda.TriggerAuthenticationSpec(secret_target_ref=[
                keda.SecretTargetRef(parameter=parameter, name=secret, key=key)
                for parameter, secret, key in args.tls_files()]))
        self.scaled_object = keda.scaled_object(
            f"{name}-scaled-object", name=args.worker_name, namespace=args.namespace, spec=scaled_object_spec(args),
            operator=keda_operator, labels=labels,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                depends_on=[self.worker, self.trigger_authentication])))
        self.register_outputs({"worker": self.worker.metadata["name"],
                               "topics": [spec.topic_name for _, spec in topic_specs(args).values()],
                               "kafkaUser": args.worker_name})
