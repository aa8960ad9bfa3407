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
import pulumi_kubernetes as k8s

from infra.contracts import ClusterHandle
from infra.crds import keda, strimzi
from infra.k8s import (container, empty_dir, http_probe, pod_disruption_budget_spec, resources,
                       restricted_pod_security_context, topology_spread)
from infra.platform.kafka import TLS_LISTENER_PORT, KafkaClusterArgs
from infra.models.serving import registry_sync_container
from workloads.spec import ModelSpec
from workloads.streaming.topics import topics_for

DEFAULT_KAFKA_BROKERS = KafkaClusterArgs.__dataclass_fields__["brokers"].default  # what the platform deploys
METRICS_PORT = 9109
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


def worker_deployment_spec(args: ModelStreamingArgs) -> dict:
    model, stream = args.model, args.model.serving.streaming
    match = {"app.kubernetes.io/name": args.worker_name, "app.kubernetes.io/instance": args.worker_name}
    labels = {**args.labels, **match, "app.kubernetes.io/component": "stream-worker"}
    argv = ["python", "-m", "workloads.streaming", "--bootstrap", args.bootstrap, "--model", model.name,
            "--alias", "champion", "--team", model.team, "--group", args.consumer_group,
            "--batch-size", str(stream.batch_size), "--registry", REGISTRY_DIR,
            "--metrics-port", str(METRICS_PORT), "--metrics-host", "0.0.0.0",
            "--ssl-cafile", f"{TLS_DIR}/ca.crt", "--ssl-certfile", f"{TLS_DIR}/user.crt",
            "--ssl-keyfile", f"{TLS_DIR}/user.key"]
    worker = container(
        name="stream-worker", image=args.image,
        command=argv[:3], args=argv[3:],
        resources=resources("500m", "1Gi", "2", "2Gi"),
        liveness_probe=http_probe("/metrics", "metrics", initial_delay=30, period=15, failures=4),
        readiness_probe=http_probe("/metrics", "metrics", initial_delay=5, period=10),
        ports=[{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        env=[{"name": "HOME", "value": "/tmp"}, {"name": "STRATA_REGISTRY_DIR", "value": REGISTRY_DIR}],
        volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}, {"name": "registry", "mountPath": REGISTRY_DIR},
                      {"name": "kafka-tls", "mountPath": TLS_DIR, "readOnly": True}],
    )
    sync = registry_sync_container("champion", model.name)
    sync["image"] = args.sync_image
    sync["env"] = [{**e, "value": args.mlflow_tracking_uri} if e["name"] == "MLFLOW_TRACKING_URI" else e
                   for e in sync["env"]]
    return {
        "replicas": 1,  # KEDA's HPA owns it after creation
        "selector": {"matchLabels": match},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "serviceAccountName": args.service_account,
                "automountServiceAccountToken": False,
                "securityContext": restricted_pod_security_context(),
                # SIGTERM: the worker finishes its batch, commits and exits.
                "terminationGracePeriodSeconds": 60,
                "containers": [worker, sync],
                "volumes": [empty_dir("tmp", "256Mi"), empty_dir("registry", "2Gi"),
                            {"name": "kafka-tls", "projected": {"defaultMode": 0o440, "sources": [
                                {"secret": {"name": secret, "items": [{"key": key, "path": key}]}}
                                for _, secret, key in args.tls_files()]}}],
                "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                       "labelSelector": {"matchLabels": match}}}]}},
                "topologySpreadConstraints": topology_spread(match),
            },
        },
    }


class ModelStreaming(pulumi.ComponentResource):
    def __init__(self, name: str, args: ModelStreamingArgs, cluster: ClusterHandle, strimzi_operator: pulumi.Resource,
                 keda_operator: pulumi.Resource, after: tuple[pulumi.Resource, ...] = (),
                 opts: Optional[pulumi.ResourceOptions] = None):
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
        deployment_spec = worker_deployment_spec(args)
        self.worker = k8s.apps.v1.Deployment(
            f"{name}-worker",
            metadata={"name": args.worker_name, "namespace": args.namespace,
                      "labels": deployment_spec["template"]["metadata"]["labels"]},
            spec=deployment_spec,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                ignore_changes=["spec.replicas"], depends_on=[*after, *self.topics.values(), self.user])))
        self.disruption_budget = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-worker-pdb",
            metadata={"name": args.worker_name, "namespace": args.namespace, "labels": labels},
            spec=pod_disruption_budget_spec(deployment_spec["selector"]["matchLabels"]),
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
