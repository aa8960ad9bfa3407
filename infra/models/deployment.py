"""`ModelDeployment`: everything one onboarded model gets on the cluster.

This component is the fan-out target of the stack's `models` map (one per key, like
terraform-aws-eks's `for_each`). It owns the model's identities and its spec as
deployed; the training (RayJob), serving (SeldonDeployment, stream worker, KEDA,
topics) and observability sections add their children here:

| child (type token)                    | when                                                  |
|---------------------------------------|-------------------------------------------------------|
| `strata:models:TrainingJob`           | always                                                |
| `strata:models:ModelServing`          | `serving.realtime.enabled` (`infra.models.serving`)   |
| `strata:models:ModelStreaming`        | `serving.streaming.enabled` and the mode has Kafka + KEDA (`infra.models.streaming`) |
| `strata:models:RolloutController`     | real-time serving with a candidate slot, i.e. `effective_rollout` is not `none` (`infra.models.rollout`) |
| drift exporter (Deployment, Service, ServiceMonitor) | `capabilities.drift_monitoring`        |
| `strata:models:FeatureMaterialization` (CronJob) | the spec has online feature views that no CDC aggregator fills (`infra.models.features`; its records go to the platform's feature registry) |

Drift exporter (where `capabilities.drift_monitoring`): `python -m
workloads.monitoring.drift_service` for the model's champion version, as a Deployment +
Service `<model>-drift` + ServiceMonitor in the team namespace. The serving and stream
workers of the model post their rows to it (same namespace); Prometheus scrapes it from
the monitoring namespace, which the team namespace's `allow-explicit` NetworkPolicy
admits (`infra.platform`: team ingress from the monitoring namespace). Inside the Istio
mesh (team namespaces are injected) Prometheus, which has no sidecar, scrapes the
sidecar's merged metrics endpoint (`:15020/stats/prometheus`, Istio's metrics merging:
the app's own `/metrics` plus the proxy's), which works under STRICT mTLS; without a
mesh it scrapes `/metrics` directly. All drift exporters share the Prometheus job
`strata-drift` (`jobLabel`), which the `ScrapeTargetDown` alert watches.

The reference profile is the one stored with the champion version: the container first
downloads the version's artifacts (`models:/<model>@champion`) from MLflow into a
scratch volume, then `exec`s the exporter. Not an init container: in the mesh an init
container runs before the Istio proxy (no network without native sidecars), whereas a
failed download here just restarts the container until MLflow is reachable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from infra.contracts import CloudOutputs, ClusterHandle, PlatformOutputs
from infra.k8s import empty_dir
from infra.modes import Capabilities, RolloutStrategy
from infra.models.rollout import RolloutController, RolloutControllerArgs
from infra.models.serving import ModelServing, ModelServingArgs
from infra.models.rollout import PROMETHEUS_PORT, PROMETHEUS_SERVICE, SPEC_MOUNT
from infra.models.serving import REGISTRY_DIR
from infra.models.streaming import DEFAULT_KAFKA_BROKERS, TLS_DIR, ModelStreaming, ModelStreamingArgs
from infra.models.features import (FEATURE_SPEC_KEY, FeatureMaterialization, FeatureMaterializationArgs,
                                   online_views)
from infra.models.training import TrainingJob, TrainingJobArgs
from infra.platform.features import url_output
from infra.platform.observability import pinned_image
from infra.workloads import ClusterContext, PodPatch, RenderedWorkload, waits_for
from workloads.catalogue import model_workloads, platform_workloads
from workloads.catalogue.model import Placement
from workloads.spec import ModelSpec

SPEC_CONFIGMAP_KEY = "model.json"

CHAMPION_ALIAS = "champion"  # workloads.training.tracking.CHAMPION
PROFILE_DIR = "/profile"
REFERENCE_PROFILE = f"{PROFILE_DIR}/extra_files/reference_profile.json"  # workloads.training.artifacts.PROFILE


@dataclass(frozen=True)
class ModelDeploymentArgs:
    """One model, the mode it lands in, and where. Defaults: none; all four are required."""

    model: ModelSpec
    capabilities: Capabilities
    namespace: str  # the owning team's namespace
    environment: str
    kafka_brokers: int = DEFAULT_KAFKA_BROKERS  # caps the stream topics' replication


def effective_rollout(model: ModelSpec, caps: Capabilities) -> RolloutStrategy:
    """The spec's strategy if the mode offers it, else a single predictor (quick mode)."""
    wanted = RolloutStrategy(model.serving.rollout.strategy.value)
    return wanted if wanted in caps.rollout_strategies else RolloutStrategy.NONE


def model_labels(model: ModelSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "strata",
        "strata.dev/model": model.name,
        "strata.dev/team": model.team,
    }


class ModelDeployment(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: ModelDeploymentArgs,
        cluster: ClusterHandle,
        platform: PlatformOutputs,
        cloud: Optional[CloudOutputs] = None,
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        model, caps = args.model, args.capabilities
        views = online_views(model)
        if views and platform.feature_store_secret is None:
            # refused before anything is created: its servers and workers would have nowhere to look features up
            raise ValueError(f"model {model.name!r} declares online feature view(s) {', '.join(views)} but the "
                             "platform has no online store (PlatformOutputs.feature_store_secret is unset)")
        # The namespaces its objects land in: the team's and the platform's it joins.
        landing = {args.namespace, platform.mlflow_namespace, platform.monitoring_namespace, platform.kafka_namespace}
        namespaces = [platform.namespace_resources[n] for n in sorted(filter(None, landing)) if n in platform.namespace_resources]
        if namespaces:
            opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                depends_on=namespaces, transformations=[waits_for(namespaces)]))
        super().__init__("strata:models:ModelDeployment", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        labels = model_labels(model)
        self.rollout_strategy = effective_rollout(model, caps)
        self.workloads = {w.name: w for w in (*platform_workloads(), *model_workloads(model))}
        self.cluster_context = cluster_context(args, platform, self.workloads)

        def service_account(role: str, workload_key: str) -> k8s.core.v1.ServiceAccount:
            role_arn = cloud.identities.role_for(workload_key) if cloud else None
            annotations = {"eks.amazonaws.com/role-arn": role_arn} if role_arn is not None else None
            return k8s.core.v1.ServiceAccount(
                f"{name}-{role}-sa",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=f"{model.name}-{role}",
                    namespace=args.namespace,
                    labels={**labels, "strata.dev/role": role},
                    annotations=annotations,
                ),
                automount_service_account_token=False,
                opts=child,
            )

        # One identity per role: training writes checkpoints/artifacts, serving only reads.
        self.training_service_account = service_account("training", f"training/{model.team}")
        self.serving_service_account = service_account("serving", f"serving/{model.team}")

        deployed_spec = {
            "spec": model.model_dump(mode="json", by_alias=True),
            "mode": caps.mode.value,
            "environment": args.environment,
            "rolloutStrategy": self.rollout_strategy.value,
            "streaming": bool(model.serving.streaming.enabled and caps.kafka),
            "hpo": bool(model.training.hpo is not None and caps.training_hpo),
            "trainingWorkers": min(model.training.workers, caps.training_max_workers),
        }
        # One apply for the one deploy-time value (Output.json_dumps would lift every leaf).
        deployed_spec_json = pulumi.Output.from_input(platform.mlflow_tracking_uri).apply(
            lambda uri: json.dumps({**deployed_spec, "mlflowTrackingUri": uri}))
        # The spec as deployed: the rollout controller and retraining trigger read this.
        self.spec_config_map = k8s.core.v1.ConfigMap(
            f"{name}-spec",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{model.name}-spec", namespace=args.namespace, labels=labels),
            data={SPEC_CONFIGMAP_KEY: deployed_spec_json,
                  # the plain spec, for `strata features materialize --spec` (infra.models.features)
                  **({FEATURE_SPEC_KEY: json.dumps(deployed_spec["spec"])} if online_views(model) else {})},
            opts=child,
        )
        # Training on the cluster: a RayJob (+ its schedule) built from the same spec.
        self.training = TrainingJob(
            f"{name}-training",
            TrainingJobArgs(model=model, capabilities=caps, namespace=args.namespace),
            cluster, platform, cloud,
            after=(self.training_service_account, self.spec_config_map),  # the head mounts the spec
            opts=pulumi.ResourceOptions(parent=self),
        )

        self._serving(name, args, cluster, platform, cloud, labels)

        self.materialization: Optional[FeatureMaterialization] = None
        # the aggregators fill the streamed views online; the rest (in modes without Kafka, also the
        # streaming views: their offline copy gold/<view> is written by the lake step) come from gold
        from_gold = tuple(v for v in views if v not in platform.streamed_views)
        if from_gold:
            if platform.feature_registry_secret is None:
                # refused: its runs would record to a sqlite file in the pod's ephemeral storage
                raise ValueError(f"model {model.name!r} materializes feature view(s) {', '.join(from_gold)} but the "
                                 "platform has no feature registry (PlatformOutputs.feature_registry_secret is unset)")
            gold = cloud.storage.lake_buckets if cloud is not None else {}
            self.materialization = FeatureMaterialization(
                f"{name}-materialization",
                FeatureMaterializationArgs(
                    model=model, namespace=args.namespace,
                    image=pinned_image("training", cloud.storage.ecr_repositories if cloud is not None else None),
                    service_account=f"{model.name}-training", spec_config_map=f"{model.name}-spec", labels=labels,
                    registry_secret=platform.feature_registry_secret,
                    gold_bucket=gold.get("gold", gold.get("lake")), views=from_gold),
                after=(self.training_service_account, self.spec_config_map),
                opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider))

        self.drift_deployment: Optional[k8s.apps.v1.Deployment] = None
        self.drift_service: Optional[k8s.core.v1.Service] = None
        if caps.drift_monitoring:
            self._drift_exporter(name, args, cluster, platform, cloud, child, labels)

        self.namespace = args.namespace
        self.register_outputs(
            {
                "namespace": args.namespace,
                "rolloutStrategy": self.rollout_strategy.value,
                "specConfigMap": self.spec_config_map.metadata["name"],
                "driftService": self.drift_service.metadata["name"] if self.drift_service else None,
                "seldonDeployment": self.serving.seldon_deployment.metadata["name"] if self.serving else None,
                "streamWorker": self.streaming.worker.metadata["name"] if self.streaming else None,
            }
        )

    def _serving(self, name: str, args: ModelDeploymentArgs, cluster: ClusterHandle, platform: PlatformOutputs,
                 cloud: Optional[CloudOutputs], labels: dict[str, str]) -> None:
        """Real-time (SeldonDeployment), stream (worker + KEDA + topics) and the rollout controller."""
        model, caps = args.model, args.capabilities
        ecr = cloud.storage.ecr_repositories if cloud is not None else None
        children = pulumi.ResourceOptions(parent=self)
        # only a model with online views reads the online store (and gets its Secret)
        feature_store_secret = platform.feature_store_secret if online_views(model) else None
        self.serving: Optional[ModelServing] = None
        if model.serving.realtime.enabled:
            self.serving = ModelServing(
                f"{name}-serving",
                ModelServingArgs(model=model, capabilities=caps, namespace=args.namespace,
                                 strategy=self.rollout_strategy, image=pinned_image("serving", ecr),
                                 service_account=f"{model.name}-serving", labels=labels,
                                 sync_image=pinned_image("drift-monitor", ecr),
                                 mlflow_tracking_uri=platform.mlflow_tracking_uri,
                                 prometheus_url=platform_prometheus_url(platform),
                                 feature_store_secret=feature_store_secret),
                cluster, _operator(platform, "seldon", model),
                after=(self.serving_service_account, *_optional_operator(platform, "keda")),
                opts=children)

        self.streaming: Optional[ModelStreaming] = None
        if model.serving.streaming.enabled and caps.kafka and caps.keda:
            if platform.kafka_namespace is None or platform.kafka_cluster_name is None:
                raise ValueError(f"model {model.name!r}: serving.streaming needs the platform's Kafka "
                                 "(PlatformOutputs.kafka_namespace / kafka_cluster_name are unset)")
            self.streaming = ModelStreaming(
                f"{name}-streaming",
                ModelStreamingArgs(model=model, namespace=args.namespace, kafka_namespace=platform.kafka_namespace,
                                   kafka_cluster=platform.kafka_cluster_name, image=pinned_image("stream-worker", ecr),
                                   service_account=f"{model.name}-serving", labels=labels,
                                   kafka_brokers=args.kafka_brokers, sync_image=pinned_image("drift-monitor", ecr),
                                   mlflow_tracking_uri=platform.mlflow_tracking_uri,
                                   feature_store_secret=feature_store_secret),
                cluster, _operator(platform, "strimzi", model), _operator(platform, "keda", model),
                after=(self.serving_service_account,), context=self.cluster_context,
                prometheus_operator=platform.operators.get("prometheus"),
                quality=caps.drift_monitoring,  # quality metrics feed the drift/quality alerts
                opts=children)

        # The model servers' pods are the SeldonDeployment's; the catalogue adds what scrapes them
        # (Service `<model>-<slot>-metrics`, ServiceMonitor, scrape ingress), and the registry
        # sidecar's edge to MLflow.
        self.server_metrics: list[RenderedWorkload] = []
        if self.serving is not None:
            prometheus = platform.operators.get("prometheus")
            for predictor in self.serving.predictors:
                self.server_metrics.append(RenderedWorkload(
                    f"{name}-{predictor}", self.workloads[f"{model.name}-{predictor}"], self.cluster_context,
                    prometheus_operator=prometheus, opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider)))
        if self.serving is not None or self.streaming is not None:
            self.registry_sync = RenderedWorkload(
                f"{name}-registry-sync", self.workloads[f"{model.name}-registry-sync"], self.cluster_context,
                opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider))

        self.rollout_controller: Optional[RolloutController] = None
        if self.serving is not None and self.rollout_strategy is not RolloutStrategy.NONE:
            self.rollout_controller = RolloutController(
                f"{name}-rollout",
                RolloutControllerArgs(model=model, namespace=args.namespace,
                                      image=pinned_image("rollout-controller", ecr),
                                      spec_config_map=f"{model.name}-spec", spec_config_map_key=SPEC_CONFIGMAP_KEY,
                                      mlflow_tracking_uri=platform.mlflow_tracking_uri, labels=labels,
                                      monitoring_namespace=platform.monitoring_namespace),
                cluster, self.workloads[f"{model.name}-rollout"], self.cluster_context,
                prometheus_operator=platform.operators.get("prometheus"),
                after=(self.spec_config_map, self.serving.seldon_deployment), opts=children)

    def _drift_exporter(self, name: str, args: ModelDeploymentArgs, cluster: ClusterHandle, platform: PlatformOutputs,
                        cloud: Optional[CloudOutputs], child: pulumi.ResourceOptions, labels: dict[str, str]) -> None:
        model, caps, ns = args.model, args.capabilities, args.namespace
        app = f"{model.name}-drift"
        drift_labels = {**self.workloads[app].common_labels, "app.kubernetes.io/managed-by": "pulumi"}
        image = pinned_image("drift-monitor", cloud.storage.ecr_repositories if cloud is not None else None)

        # Reads the model version's artifacts only: the serving identity (read-only S3).
        role_arn = cloud.identities.role_for(f"serving/{model.team}") if cloud else None
        self.drift_service_account = k8s.core.v1.ServiceAccount(
            f"{name}-drift-sa",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=app, namespace=ns, labels={**drift_labels, "strata.dev/role": "drift"},
                annotations={"eks.amazonaws.com/role-arn": role_arn} if role_arn is not None else None),
            automount_service_account_token=False,
            opts=child,
        )
        # Model names are DNS labels ([a-z0-9-]): safe to place in the shell line as they are.
        fetch = f"mlflow artifacts download --artifact-uri models:/{model.name}@{CHAMPION_ALIAS} --dst-path {PROFILE_DIR}"
        # The download comes first and needs the mesh's proxy: start the app only once it is up.
        annotations = {"proxy.istio.io/config": '{"holdApplicationUntilProxyStarts": true}'} if caps.istio else {}
        self.drift = RenderedWorkload(
            f"{name}-drift", self.workloads[app], self.cluster_context,
            patch=PodPatch(service_account=app, image=image, prelude=(fetch,), annotations=annotations,
                           volumes=(empty_dir("profile", "1Gi"),),
                           volume_mounts=({"name": "profile", "mountPath": PROFILE_DIR},)),
            prometheus_operator=platform.operators.get("prometheus"), after=[self.drift_service_account],
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider))
        self.drift_deployment = self.drift.deployment
        self.drift_service = self.drift.service


def cluster_context(args: ModelDeploymentArgs, platform: PlatformOutputs, workloads) -> ClusterContext:
    """Where this model's catalogue workloads land and what their resources resolve to."""
    model = args.model
    stream = ModelStreamingArgs(model=model, namespace=args.namespace, kafka_namespace=platform.kafka_namespace or "",
                                kafka_cluster=platform.kafka_cluster_name or "", image="", service_account="", labels={},
                                feature_store_secret=platform.feature_store_secret if online_views(model) else None)

    def model_version(workload, resource, output: str) -> str:
        return {"version": CHAMPION_ALIAS, "profile": REFERENCE_PROFILE, "baseline": ""}[output]

    def registry(workload, resource, output: str) -> str:
        return {"dir": REGISTRY_DIR}[output]

    def kafka(workload, resource, output: str) -> str:
        return {"bootstrap": stream.bootstrap, "ca_file": f"{TLS_DIR}/ca.crt", "cert_file": f"{TLS_DIR}/user.crt",
                "key_file": f"{TLS_DIR}/user.key"}[output]

    def prometheus(workload, resource, output: str) -> str:
        return {"url": platform_prometheus_url(platform)}[output]

    def state(workload, resource, output: str) -> str:
        return {"file": f"{SPEC_MOUNT}/{SPEC_CONFIGMAP_KEY}"}[output]

    def feature_store(workload, resource, output: str) -> str:
        if platform.feature_store_secret is None:
            raise KeyError(f"feature-store: the platform has no online store for model {model.name!r}")
        return url_output(output)

    return ClusterContext(
        namespaces={Placement.MONITORING: platform.monitoring_namespace or "", Placement.MLFLOW: platform.mlflow_namespace},
        team_namespaces={model.team: args.namespace}, catalogue=workloads,
        provisioners={"model-version": model_version, "model-registry": registry, "kafka": kafka,
                      "prometheus": prometheus, "state": state, "kubernetes-api": lambda *_: "",
                      "feature-store": feature_store},
        prometheus=args.capabilities.monitoring and platform.operators.get("prometheus") is not None,
        istio=args.capabilities.istio)


def platform_prometheus_url(platform: PlatformOutputs) -> str:
    """The platform Prometheus inside the cluster; "" where the mode has none."""
    ns = platform.monitoring_namespace
    return f"http://{PROMETHEUS_SERVICE}.{ns}.svc:{PROMETHEUS_PORT}" if ns else ""


def _optional_operator(platform: PlatformOutputs, key: str) -> tuple[pulumi.Resource, ...]:
    operator = platform.operators.get(key)
    return (operator,) if operator is not None else ()


def _operator(platform: PlatformOutputs, key: str, model: ModelSpec) -> pulumi.Resource:
    operator = platform.operators.get(key)
    if operator is None:
        raise ValueError(f"model {model.name!r}: needs the platform's {key!r} operator release "
                         f"(PlatformOutputs.operators has {sorted(platform.operators)})")
    return operator
