"""Platform layer: the cluster services every model relies on (pulumi-kubernetes).

`build_platform(spec, cluster, cloud, secrets)` creates one `Platform` component whose
children are, per the mode's capabilities (`infra.modes`):

| component (type token)                     | when                          |
|--------------------------------------------|-------------------------------|
| `strata:platform:PlatformNamespace`        | one per team + per service    |
| `strata:platform:ServiceMesh` (Istio)      | `capabilities.istio`          |
| `strata:platform:Keda`                     | `capabilities.keda`           |
| `strata:platform:KafkaCluster` (Strimzi)   | `capabilities.kafka`          |
| `strata:platform:ChangeDataCapture` (Connect, Debezium, sinks; feature aggregators where there is an online store) | `capabilities.kafka` and `strata:cdc` |
| `strata:platform:Monitoring`               | `capabilities.monitoring`     |
| `strata:platform:Observability` (child of Monitoring: rules, dashboards, retrain trigger) | `capabilities.monitoring` |
| `strata:platform:KubeRay`                  | always                        |
| `strata:platform:SeldonCore` (v1)          | always                        |
| `strata:platform:NvidiaDevicePlugin`       | GPU nodes                     |
| `strata:platform:MlflowTracking`           | always                        |
| `strata:platform:OnlineFeatureStore`       | a model declares online feature views (`infra.platform.features`) |
| `strata:platform:FeatureRegistry` (on MLflow's PostgreSQL) | a model materializes online views from gold (`infra.platform.feature_registry`) |

Chart versions are pinned in ONE table, `infra.platform.charts`; the custom resources
are built by typed builders in `infra.crds.<operator>` whose models mirror the CRD
schema of exactly those versions.

Why one program (custom resources and the operators that define them)
--------------------------------------------------------------------
A custom resource (Kafka, KafkaNodePool, PeerAuthentication, Gateway, ServiceMonitor,
and later the models' RayJob, SeldonDeployment, ScaledObject, KafkaTopic, ...) can only
be created once its CustomResourceDefinition exists and is reconciled once its operator
runs. Both come from the operator's Helm release, which lives in this same program, so
every custom resource declares `depends_on=[<its operator's Release>]` (enforced by
`infra.crds.custom_resource`, which every builder goes through). Pulumi then orders the
graph: the Release is installed (and awaited: `atomic`, CRDs included) before any CR
of its kinds is sent to the API server, on the first `up` of an empty cluster as on
every later one, and the destroy order is the reverse (CRs before the operator that
would otherwise leave finalizers unserved). The releases are exposed to the models
layer as `PlatformOutputs.operators` ("kuberay", "seldon", and where deployed "keda",
"strimzi", "istio", "prometheus") for exactly this purpose. Splitting the operators and
the CRs into two programs/stacks would turn this edge into a manual sequencing step.

Every resource here uses the cluster's provider (inherited from the `Platform`
component) and waits for `cluster.ready` (node groups): namespaces depend on it, and
everything else depends on the namespaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import pulumi

from infra.config import ClusterOperators, StackSpec, Target
from infra.contracts import CloudOutputs, ClusterHandle, PlatformOutputs
from infra.k8s import PodSecurityLevel
from infra.modes import Capabilities, MlflowBackend, OnlineStore
from infra.platform.features import OnlineFeatureStore, OnlineFeatureStoreArgs
from infra.platform.feature_registry import FeatureRegistry, FeatureRegistryArgs
from infra.platform.cdc import ChangeDataCapture, ChangeDataCaptureArgs
from infra.platform.istio import ServiceMesh, ServiceMeshArgs
from infra.platform.kafka import TLS_LISTENER_PORT, KafkaCluster, KafkaClusterArgs
from infra.platform.keda import Keda, KedaArgs
from infra.platform.mlflow import PORT as MLFLOW_PORT
from infra.platform.mlflow import MlflowTracking, MlflowTrackingArgs
from infra.platform.monitoring import Monitoring, MonitoringArgs
from infra.platform.observability import ObservabilityArgs, cluster_emitters, retrain_webhook_url
from workloads.monitoring.rules import RUNBOOK_BASE_URL, RuleOptions
from infra.platform.namespaces import (LimitRangeArgs, Peer, PlatformNamespace, PlatformNamespaceArgs, QuotaArgs,
                                       anywhere, api_server)
from infra.platform.operators import (KubeRay, KubeRayArgs, NvidiaDevicePlugin, NvidiaDevicePluginArgs, SeldonCore,
                                      SeldonCoreArgs, shared_operator)

from workloads.monitoring.alertmanager import AlertmanagerOptions, alertmanager_config  # noqa: E402  (one source with the rules)
from workloads.data.ingest.pipeline import CdcPipeline
from workloads.spec import ModelSpec

__all__ = ["Platform", "PlatformArgs", "build_platform"]

TEAM_TENANT = "team"
PLATFORM_TENANT = "platform"

# Service namespaces (before the stack's namespace prefix).
SERVICES = ("istio-system", "istio-ingress", "istio-cni", "keda", "kafka", "monitoring",
            "kuberay-system", "seldon-system", "nvidia-device-plugin", "mlflow", "features")


@dataclass(frozen=True)
class PlatformArgs:
    """Everything the platform needs from the stack, resolved once by `build_platform`."""

    capabilities: Capabilities
    teams: tuple[str, ...]
    namespace_prefix: str = ""
    gpu_nodes: bool = False
    gpu_instance_types: tuple[str, ...] = ()
    aws: bool = True  # AWS load balancers / RDS / S3 (False: a kubeconfig target)
    vpc_cidr: Optional[str] = None  # narrows the RDS egress allow
    alertmanager_config: Mapping[str, Any] = field(default_factory=dict)  # generated from the model specs
    models: tuple[ModelSpec, ...] = ()  # generated rules, dashboards, retraining trigger
    runbook_base_url: str = RUNBOOK_BASE_URL  # alerts' runbook_url = this + <Alert>.md
    team_quota: QuotaArgs = field(default_factory=QuotaArgs)
    team_limits: LimitRangeArgs = field(default_factory=LimitRangeArgs)
    # KubeRay and Seldon already run on the cluster (a shared preview cluster): reference
    # their CRDs instead of installing a second copy that would clash with the first.
    shared_operators: bool = False
    cdc_pipelines: tuple[CdcPipeline, ...] = ()  # rendered where the mode has Kafka
    feature_models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # team -> models with online views

    @property
    def feature_writers(self) -> dict[str, tuple[str, ...]]:
        """team -> its CDC pipelines' feature aggregators (workload names), where they run: the
        mode has Kafka (the CDC stream) and the stack an online store (somewhere to write)."""
        from workloads.catalogue.declarations import feature_aggregator

        if not (self.capabilities.kafka and self.feature_models):
            return {}
        teams: dict[str, tuple[str, ...]] = {}
        for pipeline in self.cdc_pipelines:
            if pipeline.features is not None:
                teams[pipeline.team] = tuple(sorted((*teams.get(pipeline.team, ()), feature_aggregator(pipeline).name)))
        return teams

    @property
    def aggregated_pipelines(self) -> tuple[CdcPipeline, ...]:
        """The CDC pipelines whose feature aggregators run (`feature_writers`)."""
        if not self.feature_writers:
            return ()
        return tuple(p for p in self.cdc_pipelines if p.features is not None)

    @property
    def streamed_views(self) -> frozenset:
        """The online views the running feature aggregators fill (`feature_writers`)."""
        if not self.feature_writers:
            return frozenset()
        return frozenset(p.features.view for p in self.cdc_pipelines if p.features is not None)

    @property
    def feature_registry_clients(self) -> dict[str, tuple[str, ...]]:
        """team -> its models that materialize an online view from gold (one not in `streamed_views`):
        the models layer gives exactly those a materialization CronJob, the registry's clients."""
        teams: dict[str, tuple[str, ...]] = {}
        for model in self.models:
            if model.team in self.feature_models and model.name in self.feature_models[model.team] and any(
                    v.online and v.name not in self.streamed_views for v in model.features.views):
                teams[model.team] = tuple(sorted((*teams.get(model.team, ()), model.name)))
        return teams

    @property
    def online_store(self) -> Optional[OnlineStore]:
        """Where the online features live; None without feature models. A kubeconfig target has
        no ElastiCache: the in-cluster Redis stands in there."""
        if not self.feature_models:
            return None
        return self.capabilities.online_store if self.aws else OnlineStore.IN_CLUSTER_REDIS

    def ns(self, service: str) -> str:
        return f"{self.namespace_prefix}{service}"

    def team_ns(self, team: str) -> str:
        return f"{self.namespace_prefix}team-{team}"


class Platform(pulumi.ComponentResource):
    """All cluster services of one stack; see the module docstring."""

    def __init__(self, name: str, args: PlatformArgs, cluster: ClusterHandle, cloud: Optional[CloudOutputs],
                 pagerduty_routing_keys: Optional[pulumi.Output] = None, opts: Optional[pulumi.ResourceOptions] = None,
                 cdc_credentials: Optional[pulumi.Output] = None):
        super().__init__("strata:platform:Platform", name, None,
                         pulumi.ResourceOptions.merge(pulumi.ResourceOptions(providers=[cluster.provider]), opts))
        caps = args.capabilities
        child = pulumi.ResourceOptions(parent=self)
        ns = args.ns
        enabled = {
            "istio-system": caps.istio, "istio-ingress": caps.istio, "istio-cni": caps.istio,
            "keda": caps.keda, "kafka": caps.kafka, "monitoring": caps.monitoring,
            "kuberay-system": not args.shared_operators, "seldon-system": not args.shared_operators,
            "nvidia-device-plugin": args.gpu_nodes, "mlflow": True,
            "features": args.online_store is OnlineStore.IN_CLUSTER_REDIS,
        }
        kuberay_ns = "kuberay-system" if args.shared_operators else ns("kuberay-system")  # shared: the cluster's own
        teams = Peer(tenant=TEAM_TENANT)

        def scraped() -> tuple[Peer, ...]:
            return (Peer(namespaces=(ns("monitoring"),)),) if caps.monitoring else ()

        # --- namespaces: who may talk to whom ----------------------------------------------
        mesh_egress = (Peer(namespaces=(ns("istio-system"),), ports=(15012, 15014)),) if caps.istio else ()
        team_ingress = (
            *((Peer(namespaces=(ns("istio-ingress"),)),) if caps.istio else ()),
            Peer(namespaces=(kuberay_ns,), ports=(8265,)),  # RayJob submission to the head
            *scraped(),
        )
        team_egress = (
            Peer(namespaces=(ns("mlflow"),), ports=(MLFLOW_PORT,)),
            *((Peer(namespaces=(ns("kafka"),), ports=(TLS_LISTENER_PORT,)),) if caps.kafka else ()),
            *mesh_egress,
            # rollout controllers query Prometheus for their canary analysis
            *((Peer(namespaces=(ns("monitoring"),), ports=(9090,)),) if caps.monitoring else ()),
            anywhere(443),  # S3 (data, artifacts, checkpoints), STS, ECR; the API server on EKS
        )
        # A kubeconfig target has no RDS: MLflow falls back to the in-cluster database there.
        mlflow_backend = caps.mlflow_backend if args.aws else MlflowBackend.IN_CLUSTER_DB
        rds_egress = Peer(cidr=args.vpc_cidr, ports=(5432,)) if args.vpc_cidr else anywhere(5432)
        service_rules: dict[str, tuple[PodSecurityLevel, tuple[Peer, ...], tuple[Peer, ...], dict[str, str]]] = {
            # name: (PSA enforce level, ingress from, egress to, extra labels)
            "istio-system": (PodSecurityLevel.RESTRICTED,
                             (Peer(all_namespaces=True, ports=(15010, 15012, 15014)), anywhere(15017), *scraped()),
                             (api_server(),), {}),
            "istio-ingress": (PodSecurityLevel.RESTRICTED,
                              (anywhere(80, 443, 15021), *scraped()),
                              (teams, *mesh_egress), {"istio-injection": "enabled"}),
            # The CNI node agent rewrites pod network namespaces and writes the host's CNI
            # config (hostPath, hostNetwork, NET_ADMIN): it cannot run under baseline.
            "istio-cni": (PodSecurityLevel.PRIVILEGED, scraped(), (api_server(),), {}),
            "keda": (PodSecurityLevel.RESTRICTED,
                     (anywhere(6443, 9443), *scraped()),  # metrics API + webhooks, called by the API server
                     (api_server(),
                      *((Peer(namespaces=(ns("kafka"),), ports=(TLS_LISTENER_PORT,)),) if caps.kafka else ()),
                      *((Peer(namespaces=(ns("monitoring"),), ports=(9090,)),) if caps.monitoring else ())), {}),
            "kafka": (PodSecurityLevel.RESTRICTED,
                      (Peer(tenant=TEAM_TENANT, ports=(TLS_LISTENER_PORT,)),
                       *((Peer(namespaces=(ns("keda"),), ports=(TLS_LISTENER_PORT,)),) if caps.keda else ()),
                       *scraped()),
                      # Kafka Connect reads the CDC pipelines' source databases
                      (api_server(), *((anywhere(*sorted({p.database.port for p in args.cdc_pipelines})),)
                                       if args.cdc_pipelines else ())), {}),
            # node-exporter (part of kube-prometheus-stack) needs hostNetwork, hostPID and
            # hostPath mounts of /proc and /sys: only "privileged" admits it. warn/audit stay
            # "restricted", so every other pod here is still reported if it drifts.
            "monitoring": (PodSecurityLevel.PRIVILEGED,
                           (*((Peer(namespaces=(ns("keda"),), ports=(9090,)),) if caps.keda else ()),
                            Peer(tenant=TEAM_TENANT, ports=(9090,))),  # rollout controllers' queries
                           (Peer(all_namespaces=True), anywhere(443, 6443, 9100, 10250)), {}),
            "kuberay-system": (PodSecurityLevel.RESTRICTED, (anywhere(9443), *scraped()),
                               (api_server(), Peer(tenant=TEAM_TENANT, ports=(8265,))), {}),
            "seldon-system": (PodSecurityLevel.RESTRICTED, (anywhere(4443, 9443), *scraped()), (api_server(),), {}),
            # The device plugin registers through the kubelet's socket directory (a hostPath
            # volume), which baseline forbids; the container itself is non-root with no caps.
            "nvidia-device-plugin": (PodSecurityLevel.PRIVILEGED, (), (api_server(),), {}),
            "mlflow": (PodSecurityLevel.RESTRICTED,
                       (Peer(tenant=TEAM_TENANT, ports=(MLFLOW_PORT,)), *scraped()),
                       (anywhere(443), *((rds_egress,) if mlflow_backend is not MlflowBackend.IN_CLUSTER_DB else ())),
                       {}),
            # No namespace-level ingress: the Redis pods' own policy admits exactly the consumers
            # (NetworkPolicies add up; a namespace rule here would admit every team pod).
            "features": (PodSecurityLevel.RESTRICTED, scraped(), (), {}),
        }

        self.namespaces: dict[str, PlatformNamespace] = {}
        for service in SERVICES:
            if not enabled[service]:
                continue
            level, ingress, egress, extra = service_rules[service]
            self.namespaces[service] = PlatformNamespace(
                f"{name}-ns-{service}",
                PlatformNamespaceArgs(name=ns(service), tenant=PLATFORM_TENANT, pod_security=level,
                                      labels=extra, ingress_from=ingress, egress_to=egress),
                after=cluster.ready, opts=child)
        self.team_namespaces: dict[str, str] = {}
        team_components = []
        for team in args.teams:
            quota = args.team_quota
            if not args.gpu_nodes and quota.gpus:
                quota = QuotaArgs(**{**quota.__dict__, "gpus": 0})
            component = PlatformNamespace(
                f"{name}-team-{team}",
                PlatformNamespaceArgs(
                    name=args.team_ns(team), tenant=TEAM_TENANT, pod_security=PodSecurityLevel.RESTRICTED,
                    labels={"strata.dev/team": team, **({"istio-injection": "enabled"} if caps.istio else {})},
                    ingress_from=team_ingress, egress_to=team_egress, quota=quota, limit_range=args.team_limits),
                after=cluster.ready, opts=child)
            team_components.append(component)
            self.team_namespaces[team] = args.team_ns(team)

        def placed(*services: str) -> list[pulumi.Resource]:
            return [self.namespaces[s] for s in services]

        # --- operators ----------------------------------------------------------------------
        self.operators: dict[str, pulumi.Resource] = {}
        self.monitoring: Optional[Monitoring] = None
        if caps.monitoring:
            storage = cloud.storage if cloud is not None else None
            observability = ObservabilityArgs(
                namespace=ns("monitoring"), models=args.models, team_namespaces=dict(self.team_namespaces),
                retrain=caps.drift_monitoring, rule_options=RuleOptions(runbook_base_url=args.runbook_base_url),
                ecr_repositories=dict(storage.ecr_repositories) if storage is not None else {},
                mlflow_namespace=ns("mlflow"),
                emitters=cluster_emitters(caps, args.models, aggregators=bool(args.feature_writers)),
                pipelines=args.aggregated_pipelines,
            ) if args.models else None
            self.monitoring = Monitoring(
                f"{name}-monitoring",
                MonitoringArgs(namespace=ns("monitoring"), ha=caps.monitoring_ha,
                               alertmanager_config=args.alertmanager_config, observability=observability),
                pagerduty_routing_keys, after=placed("monitoring", "mlflow"), opts=child, team_namespaces=team_components)
            self.operators["prometheus"] = self.monitoring.release
        prometheus = self.operators.get("prometheus")
        with_prometheus = [prometheus] if prometheus is not None else []

        self.mesh: Optional[ServiceMesh] = None
        if caps.istio:
            self.mesh = ServiceMesh(
                f"{name}-istio",
                ServiceMeshArgs(namespace=ns("istio-system"), gateway_namespace=ns("istio-ingress"),
                                cni_namespace=ns("istio-cni"), mtls=caps.mtls, ha=caps.monitoring_ha,
                                internal_load_balancer=True,  # model endpoints are served inside the VPC
                                aws_load_balancer=args.aws),
                after=placed("istio-system", "istio-ingress", "istio-cni"), opts=child)
            self.operators["istio"] = self.mesh.operator

        if caps.keda:
            keda = Keda(f"{name}-keda", KedaArgs(namespace=ns("keda"), ha=caps.monitoring_ha,
                                                 service_monitors=caps.monitoring),
                        after=[*placed("keda"), *with_prometheus], opts=child)
            self.operators["keda"] = keda.release

        # --- online feature store ---------------------------------------------------------
        self.feature_store: Optional[OnlineFeatureStore] = None
        if args.online_store is not None:
            cache = cloud.feature_cache if cloud is not None else None
            if args.online_store is not OnlineStore.IN_CLUSTER_REDIS and cache is None:
                raise ValueError(f"online store {args.online_store.value!r} needs the cloud layer's FeatureCache "
                                 "(CloudOutputs.feature_cache is unset)")
            self.feature_store = OnlineFeatureStore(
                f"{name}-feature-store",
                OnlineFeatureStoreArgs(
                    consumers={args.team_ns(team): models for team, models in sorted(args.feature_models.items())},
                    writers={args.team_ns(team): names for team, names in sorted(args.feature_writers.items())},
                    cache=cache if args.online_store is not OnlineStore.IN_CLUSTER_REDIS else None,
                    namespace=ns("features"), cache_cidr=args.vpc_cidr),
                after=[*(placed("features") if "features" in self.namespaces else []),
                       *(c for team, c in zip(args.teams, team_components)
                         if team in args.feature_models or team in args.feature_writers)],
                opts=child)

        self.kafka: Optional[KafkaCluster] = None
        if caps.kafka:
            self.kafka = KafkaCluster(f"{name}-kafka", KafkaClusterArgs(namespace=ns("kafka"), exporter=caps.monitoring,
                                                                          client_namespaces=",".join(args.team_ns(t) for t in args.teams),
                                                                        rack_aware=args.aws),
                                      after=placed("kafka"), opts=child)
            self.operators["strimzi"] = self.kafka.operator
            self.cdc: Optional[ChangeDataCapture] = None
            if args.cdc_pipelines:
                from infra.platform.observability import pinned_image
                from workloads.data.storage import LAKE_BUCKETS

                repositories = dict(cloud.storage.ecr_repositories) if cloud is not None else {}
                lake = cloud.storage.lake_buckets if cloud is not None else {}
                self.cdc = ChangeDataCapture(
                    f"{name}-cdc",
                    ChangeDataCaptureArgs(
                        pipelines=args.cdc_pipelines, kafka_namespace=ns("kafka"), kafka_cluster=self.kafka.cluster_name,
                        team_namespaces=dict(self.team_namespaces),
                        connect_image=pinned_image("kafka-connect", repositories),
                        sink_image=pinned_image("training", repositories),
                        bronze_bucket=lake.get("bronze", lake.get("lake", LAKE_BUCKETS["bronze"])),
                        monitoring_namespace=ns("monitoring") if caps.monitoring else "",
                        prometheus=caps.monitoring, istio=caps.istio,
                        sink_role_arns={p.name: arn for p in args.cdc_pipelines
                                        if cloud is not None
                                        and (arn := cloud.identities.role_for(f"cdc-sink/{p.name}")) is not None},
                        feature_store=self.feature_store.access if self.feature_store is not None else None),
                    strimzi_operator=self.kafka.operator, credentials=cdc_credentials,
                    prometheus_operator=prometheus, after=[self.kafka.kafka, *team_components], opts=child)

        if args.shared_operators:
            self.operators["kuberay"] = shared_operator(f"{name}-kuberay-crd", "kuberay", opts=child)
            self.operators["seldon"] = shared_operator(f"{name}-seldon-crd", "seldon", opts=child)
        else:
            kuberay = KubeRay(f"{name}-kuberay", KubeRayArgs(namespace=ns("kuberay-system")),
                              after=placed("kuberay-system"), opts=child)
            self.operators["kuberay"] = kuberay.release
            seldon = SeldonCore(
                f"{name}-seldon",
                SeldonCoreArgs(namespace=ns("seldon-system"), istio=caps.istio,
                               istio_gateway=self.mesh.seldon_gateway_ref if self.mesh else "", keda=caps.keda),
                after=[*placed("seldon-system"), *([self.mesh] if self.mesh else [])], opts=child)
            self.operators["seldon"] = seldon.release

        if args.gpu_nodes:
            NvidiaDevicePlugin(f"{name}-gpu", NvidiaDevicePluginArgs(namespace=ns("nvidia-device-plugin"),
                                                                     gpu_instance_types=args.gpu_instance_types),
                               after=placed("nvidia-device-plugin"), opts=child)

        # --- MLflow -------------------------------------------------------------------------
        storage = cloud.storage if cloud is not None else None
        image = None
        if storage is not None and "mlflow" in storage.ecr_repositories:
            from infra.platform.charts import IMAGES
            image = pulumi.Output.concat(storage.ecr_repositories["mlflow"], ":", IMAGES["mlflow"].tag)
        mlflow_args = MlflowTrackingArgs(
            namespace=ns("mlflow"),
            backend=mlflow_backend,
            artifacts_bucket=storage.artifacts_bucket if storage is not None else None,
            database=storage.mlflow_database if storage is not None else None,
            role_arn=cloud.identities.role_for("mlflow") if cloud is not None else None,
            **({"image": image} if image is not None else {}),
        )
        self.mlflow = MlflowTracking(f"{name}-mlflow", mlflow_args, prometheus_operator=prometheus,
                                     after=placed("mlflow"), opts=child)

        # --- the feature store's SQL registry, on MLflow's database server ---------------------------
        self.feature_registry: Optional[FeatureRegistry] = None
        registry_clients = args.feature_registry_clients
        if registry_clients:
            from infra.platform.observability import pinned_image

            self.feature_registry = FeatureRegistry(
                f"{name}-feature-registry",
                FeatureRegistryArgs(
                    server=self.mlflow.database_server,
                    clients={args.team_ns(team): models for team, models in sorted(registry_clients.items())},
                    image=pinned_image("training", dict(storage.ecr_repositories) if storage is not None else None),
                    server_cidr=args.vpc_cidr),
                after=[*placed("mlflow"), *(c for team, c in zip(args.teams, team_components) if team in registry_clients)],
                opts=child)

        self.outputs = PlatformOutputs(
            team_namespaces=dict(self.team_namespaces),
            namespace_resources={c.name: c for c in (*self.namespaces.values(), *team_components)},
            mlflow_tracking_uri=self.mlflow.tracking_uri,
            operators=dict(self.operators),
            kafka_bootstrap=self.kafka.bootstrap if self.kafka else None,
            kafka_cluster_name=self.kafka.cluster_name if self.kafka else None,
            kafka_namespace=self.kafka.namespace if self.kafka else None,
            monitoring_namespace=ns("monitoring") if caps.monitoring else None,
            mlflow_namespace=ns("mlflow"),
            feature_store_secret=self.feature_store.secret_name if self.feature_store is not None else None,
            feature_registry_secret=self.feature_registry.secret_name if self.feature_registry is not None else None,
            streamed_views=args.streamed_views,
        )
        self.register_outputs({
            "teamNamespaces": self.outputs.team_namespaces,
            "mlflowTrackingUri": self.outputs.mlflow_tracking_uri,
            "kafkaBootstrap": self.outputs.kafka_bootstrap,
        })


def feature_models(models) -> dict[str, tuple[str, ...]]:
    """team -> its models with online feature views (the online store's consumers)."""
    from workloads.catalogue.declarations import feature_plan

    teams: dict[str, tuple[str, ...]] = {}
    for model in models:
        if feature_plan(model) is not None:
            teams[model.team] = tuple(sorted((*teams.get(model.team, ()), model.name)))
    return teams


def build_platform(spec: StackSpec, cluster: ClusterHandle, cloud: Optional[CloudOutputs], secrets) -> PlatformOutputs:
    """The platform for `spec` on `cluster` (`cloud` is None on a kubeconfig target)."""
    caps = spec.capabilities
    cluster_config = spec.config.cluster
    aws = spec.config.target is Target.AWS and cloud is not None
    args = PlatformArgs(
        capabilities=caps,
        teams=spec.teams,
        namespace_prefix=spec.config.namespace_prefix,
        gpu_nodes=cluster.gpu_nodes,
        gpu_instance_types=tuple(dict.fromkeys((*cluster_config.gpu_spot_instance_types,
                                                cluster_config.gpu_on_demand_fallback_type))),
        aws=aws,
        vpc_cidr=spec.config.network.vpc_cidr if aws else None,
        alertmanager_config=alertmanager_config(spec.models, AlertmanagerOptions(
            retrain_webhook_url=retrain_webhook_url(f"{spec.config.namespace_prefix}monitoring")))
        if caps.monitoring else {},
        models=tuple(spec.models),
        runbook_base_url=spec.config.runbook_base_url,
        team_quota=QuotaArgs(gpus=caps.gpu_spot_max if cluster.gpu_nodes else 0,
                             **spec.config.team_quota.model_dump(exclude_none=True)),
        shared_operators=spec.config.cluster_operators is ClusterOperators.SHARED,
        cdc_pipelines=spec.cdc_pipelines,
        feature_models=feature_models(spec.models),
    )
    platform = Platform(f"{spec.stack}-platform", args, cluster, cloud,
                        pagerduty_routing_keys=getattr(secrets, "pagerduty_routing_keys", None),
                        cdc_credentials=getattr(secrets, "cdc_credentials", None))
    return platform.outputs
