"""`KafkaCluster`: the Strimzi operator and one KRaft Kafka cluster with node pools.

Clients connect to the TLS listener on 9093 with mutual TLS: each client is a
`KafkaUser` (created in the Kafka namespace with `infra.crds.strimzi.kafka_user`) whose
ACLs the `simple` authorizer enforces. Topics are `KafkaTopic` CRs in the same namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from infra.crds import strimzi
from infra.k8s import HELM_CONTAINER_SECURITY_CONTEXT, HELM_POD_SECURITY_CONTEXT, resources
from infra.platform.charts import helm_release

TLS_LISTENER_PORT = 9093


@dataclass(frozen=True)
class KafkaClusterArgs:
    """What the platform's Kafka needs to know. Defaults are stated, not implied."""

    namespace: str
    cluster_name: str = "strata"
    brokers: int = 3
    controllers: int = 3
    broker_storage_gib: int = 100
    controller_storage_gib: int = 20
    storage_class: Optional[str] = None  # cluster default (gp3 on EKS)
    kafka_version: str = "4.2.0"  # Strimzi 0.51's default Kafka
    metadata_version: str = "4.2-IV1"
    rack_aware: bool = True  # spread replicas over zones (topology.kubernetes.io/zone)
    exporter: bool = False  # Kafka Exporter (consumer lag metrics) for Prometheus
    # Namespaces (regex) whose clients get the cluster CA certificate and their KafkaUser
    # Secrets mirrored from this namespace (a pod reads Secrets of its own namespace only).
    client_namespaces: str = ""

    def __post_init__(self) -> None:
        if self.brokers < 3:
            raise ValueError(f"KafkaClusterArgs.brokers: replication factor 3 needs at least 3 brokers, got {self.brokers}")
        if self.controllers not in (1, 3, 5):
            raise ValueError(f"KafkaClusterArgs.controllers: a KRaft quorum is 1, 3 or 5 voters, got {self.controllers}")


class KafkaCluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: KafkaClusterArgs, after: Sequence[pulumi.Resource] = (),
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:platform:KafkaCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(after))
        self.operator = helm_release(f"{name}-operator", "strimzi", namespace=args.namespace, opts=child, values={
            "watchAnyNamespace": False,  # the operator watches its own namespace only
            "resources": resources("200m", "384Mi", "1", "768Mi"),
            "podSecurityContext": dict(HELM_POD_SECURITY_CONTEXT),
            "securityContext": dict(HELM_CONTAINER_SECURITY_CONTEXT),
            # Kafka, controller and entity-operator pods get restricted securityContexts.
            "extraEnvs": [{"name": "STRIMZI_POD_SECURITY_PROVIDER_CLASS", "value": "restricted"}],
            "generateNetworkPolicy": True,
            "generatePodDisruptionBudget": True,
        })
        # The reflector copies client credentials out of this namespace (see client_namespaces).
        self.reflector = helm_release(f"{name}-reflector", "reflector", namespace=args.namespace, opts=child, values={
            "resources": resources("50m", "128Mi", "200m", "256Mi"),
            "podSecurityContext": dict(HELM_POD_SECURITY_CONTEXT),
            "securityContext": dict(HELM_CONTAINER_SECURITY_CONTEXT),
        }) if args.client_namespaces else None
        cluster = args.cluster_name
        pod_selector = {strimzi.CLUSTER_LABEL: cluster, "strimzi.io/kind": "Kafka"}

        def pool(role: strimzi.NodePoolRole, replicas: int, size_gib: int, cpu: str, memory: str):
            return strimzi.kafka_node_pool(
                f"{name}-{role.value}-pool", name=role.value, namespace=args.namespace, cluster=cluster,
                operator=self.operator, opts=child,
                spec=strimzi.KafkaNodePoolSpec(
                    replicas=replicas,
                    roles=[role],
                    storage=strimzi.JbodStorage(volumes=[strimzi.PersistentClaimVolume(
                        id=0, size=f"{size_gib}Gi", class_=args.storage_class, delete_claim=False,
                        kraft_metadata="shared")]),
                    resources=strimzi.ResourceRequirements(requests={"cpu": cpu, "memory": memory},
                                                           limits={"cpu": cpu, "memory": memory}),
                ))

        self.controller_pool = pool(strimzi.NodePoolRole.CONTROLLER, args.controllers, args.controller_storage_gib, "500m", "2Gi")
        self.broker_pool = pool(strimzi.NodePoolRole.BROKER, args.brokers, args.broker_storage_gib, "2", "8Gi")

        min_isr = 2
        entity_resources = strimzi.ResourceRequirements(requests={"cpu": "100m", "memory": "256Mi"},
                                                        limits={"cpu": "500m", "memory": "512Mi"})
        self.kafka = strimzi.kafka(
            f"{name}-kafka", name=cluster, namespace=args.namespace, operator=self.operator,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*after, self.controller_pool, self.broker_pool,
                                                                 *([self.reflector] if self.reflector else [])]),
            spec=strimzi.KafkaSpec(
                kafka=strimzi.KafkaClusterSpec(
                    version=args.kafka_version,
                    metadata_version=args.metadata_version,
                    listeners=[strimzi.GenericKafkaListener(
                        name="tls", port=TLS_LISTENER_PORT, type=strimzi.ListenerType.INTERNAL, tls=True,
                        authentication=strimzi.KafkaListenerAuthentication(type=strimzi.ListenerAuthenticationType.TLS))],
                    authorization=strimzi.KafkaAuthorization(type=strimzi.KafkaAuthorizationType.SIMPLE),
                    config={
                        "default.replication.factor": 3,
                        "min.insync.replicas": min_isr,
                        "offsets.topic.replication.factor": 3,
                        "transaction.state.log.replication.factor": 3,
                        "transaction.state.log.min.isr": min_isr,
                        "auto.create.topics.enable": False,  # topics are KafkaTopic CRs
                    },
                    rack=strimzi.Rack(topology_key="topology.kubernetes.io/zone") if args.rack_aware else None,
                    template={
                        "pod": {"topologySpreadConstraints": [{
                            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": pod_selector}}]},
                        "podDisruptionBudget": {"maxUnavailable": 1},
                        **({"clusterCaCert": {"metadata": {"annotations": strimzi.mirrored_to(args.client_namespaces)}}}
                           if args.client_namespaces else {}),
                    },
                ),
                entity_operator=strimzi.EntityOperatorSpec(
                    topic_operator=strimzi.EntityOperatorComponentSpec(resources=entity_resources),
                    user_operator=strimzi.EntityOperatorComponentSpec(resources=entity_resources),
                ),
                kafka_exporter=strimzi.KafkaExporterSpec(topic_regex=".*", group_regex=".*", resources=entity_resources)
                if args.exporter else None,
            ),
        )
        self.cluster_name = cluster
        self.namespace = args.namespace
        self.bootstrap = pulumi.Output.concat(
            self.kafka.metadata["name"], "-kafka-bootstrap.", args.namespace, f".svc:{TLS_LISTENER_PORT}")
        self.register_outputs({"bootstrap": self.bootstrap, "clusterName": cluster})
