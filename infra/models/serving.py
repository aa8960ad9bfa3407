"""`ModelServing`: a model's real-time endpoint, one Seldon Core v1 `SeldonDeployment`.

Predictors are the two slots of the traffic-split contract (`workloads.traffic.split`):
`stable` serves the `champion` alias, `candidate` the `challenger` alias. Which slots
exist follows `effective_rollout` (the spec's strategy, capped by the mode):

| strategy    | predictors          | at creation                                     |
|-------------|---------------------|-------------------------------------------------|
| none        | stable              | stable 100                                      |
| canary      | stable + candidate  | stable 100, candidate 0                         |
| ab          | stable + candidate  | stable 100, candidate 0 (the controller applies `abWeight` when the experiment starts) |
| blue-green  | stable + candidate  | stable 100, candidate 0 (switched 0 -> 100 at once) |
| shadow      | stable + candidate  | stable 100, candidate `shadow: true`            |

Every strategy starts with all live traffic on `stable`: at creation no challenger exists
yet, and a weighted candidate would answer its share with errors. The candidate starts at
`replicas: 0` (a server for an alias that does not exist fails at start); the rollout
controller scales it to `strata.dev/candidate-replicas` when a challenger arrives.

Run-time state vs `pulumi up`
-----------------------------
The rollout controller owns `spec.predictors[*].traffic`, `spec.predictors[*].shadow` and
`spec.predictors[*].replicas` after creation; the SeldonDeployment is registered with
`ignore_changes` on exactly those property paths (Pulumi's property-path grammar: `[*]`
matches every element of the `predictors` list). The engine copies the values of the
stack's state into the program's inputs at those paths before diffing, so a `pulumi up`
that changes an image or a resource never resets a canary to 100/0. Checked against the
engine's own code (`resource.PropertyPath.Reset` of sdk v3.272.0 and `processIgnoreChanges`
of pkg v3.274): with a state of stable 75 / candidate 25 and a program of 100/0 plus a new
image, the update sends 75/25 with the new image; a predictor without `shadow` is fine.
When the number of predictors changes (a strategy moved between `none` and a split) the
engine cannot match elements, says "cannot ignore changes in added or removed elements of
the path" and uses the program's values: all traffic on `stable`, the safe state.

The state holds the *last value Pulumi saw*: run `pulumi up --refresh` (or `pulumi refresh`
first) so that it is the controller's live value; pulumi-kubernetes (>= 4.2, server-side
apply) also reads the live object's managed fields for ignored paths. Predictor order is
fixed (stable first). Rejected alternatives: the weights in a second object (our own Istio
VirtualService) would duplicate what Seldon generates, and ignoring all of
`spec.predictors` would freeze images and resources too.

Autoscaling (the stable predictor): where KEDA runs (enterprise), Seldon's `kedaSpec` (the
operator is installed with `keda.enabled`) gives KEDA two triggers and it scales on the
larger: the stable servers' request rate from the platform Prometheus against a per-pod
target (`serving.realtime.autoscaling.targetRequestsPerSecond`, by default the serving
benchmark's measured capacity per CPU x the pod's CPUs x `targetCpuPercent`), and CPU
(`targetCpuPercent`). A request-driven server adds pods before its queue sheds, not after
its CPU is pegged. Elsewhere, Seldon's `hpaSpec` (an autoscaling/v2 HPA) on CPU alone. The
stream workers, whose load is Kafka lag, use KEDA on lag (`infra.models.streaming`).

Online features (a spec with online views, `workloads.catalogue.declarations.feature_plan`,
the same plan the local supervisor passes): the graph gets the parameters `features` (the
plan as JSON) and `feature_store_url` = `$(STRATA_FEATURE_STORE_URL)`, and the model
container the env `STRATA_FEATURE_STORE_URL` from the team's Secret `feature-store`
(`infra.platform.features`). The operator appends `PREDICTIVE_UNIT_PARAMETERS` after the
container's own env (`addModelEnvs` -> `utils.SetEnvVar`, which appends a new name; read in
seldon-core v1.18.2's operator), and the kubelet expands `$(VAR)` of an earlier variable in
a later one's value: the URL, token included, is in no manifest, only in the Secret.

No engine: the annotation `seldon.io/no-engine: "true"` drops Seldon's executor
(service orchestrator) container. The operator injects it with a securityContext of
`{runAsUser: $EXECUTOR_CONTAINER_USER}` at most (`createEngineContainer` in the operator's
`controllers/seldondeployment_engine.go`): no `allowPrivilegeEscalation: false`, no
dropped capabilities, a writable root filesystem; the first two
are container-level requirements of the restricted Pod Security Standard (our pod-level
`runAsNonRoot`/seccomp cannot supply them), so the team namespaces' `restricted`
enforcement would refuse every predictor pod. A one-node graph does not need an
executor, and Istio (standard/enterprise) routes straight to the model container.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import pulumi
import pulumi_kubernetes as k8s

from infra.contracts import ClusterHandle
from infra.crds import keda, seldon
from infra.crds.kuberay import fill, marker
from infra.k8s import (container, empty_dir, exec_probe, http_probe, pod_disruption_budget_spec, resources,
                       restricted_pod_security_context, topology_spread)
from infra.modes import Capabilities, RolloutStrategy
from infra.workloads import scrape_annotations
from infra.platform.features import url_env, url_output
from workloads.catalogue.declarations import feature_plan, model_server
from workloads.spec import ModelSpec, ServerSettings
from workloads.traffic.split import ALIAS_OF_PREDICTOR, CANDIDATE, STABLE, TrafficSplit, metrics_predictor

HTTP_PORT = 9000  # workloads/serving/entrypoint.sh defaults (Seldon passes the same)
GRPC_PORT = 5000
METRICS_PORT = 6000  # Seldon's own metrics; the contract metrics are on HTTP_PORT /metrics
SERVING_UID = 8888  # the image's USER
GRAPH_NODE = "model"  # graph node = container name (short: Seldon derives object names from it)
REGISTRY_DIR = "/mnt/models"  # STRATA_REGISTRY_DIR of the image
PREDICTOR_LABEL = "strata.dev/predictor"
CANDIDATE_REPLICAS_ANNOTATION = "strata.dev/candidate-replicas"
STRATEGY_ANNOTATION = "strata.dev/rollout-strategy"
IMAGE = "image"  # marker key: the image may be an Output (ECR), filled after the typed spec renders
ALIASES_FILE = "aliases.json"  # workloads.serving.registry.ALIASES
SYNC_IMAGE = "syncImage"  # marker: the registry-sync sidecar's image (the monitoring image)
TRACKING_URI = "trackingUri"  # marker: the MLflow tracking URI the sidecar reads aliases from

# Property paths the rollout controller owns (see the module docstring).
RUNTIME_MANAGED_PATHS = (
    "spec.predictors[*].traffic",
    "spec.predictors[*].shadow",
    "spec.predictors[*].replicas",
)


@dataclass(frozen=True)
class ModelServingArgs:
    """What the SeldonDeployment is built from. `image` is the pinned serving image (or its ECR copy)."""

    model: ModelSpec
    capabilities: Capabilities
    namespace: str
    strategy: RolloutStrategy
    image: pulumi.Input[str]
    service_account: str  # the model's read-only serving identity
    labels: Mapping[str, str]
    # The registry-sync sidecar (workloads.serving.sync): which image, which MLflow.
    sync_image: pulumi.Input[str] = ""
    mlflow_tracking_uri: pulumi.Input[str] = ""
    # The platform Prometheus (in-cluster URL): with KEDA, the stable predictor scales on its request rate.
    prometheus_url: str = ""
    # The team's Secret with the online feature store's URL; required when the spec has online views.
    feature_store_secret: Optional[str] = None

    def __post_init__(self) -> None:
        plan = feature_plan(self.model)
        if plan is not None and not self.feature_store_secret:
            raise ValueError(f"ModelServingArgs.feature_store_secret: model {self.model.name!r} declares online "
                             f"feature view(s) {', '.join(v.name for v in plan.views)}, so its servers need the online store's "
                             "Secret (PlatformOutputs.feature_store_secret is unset)")
        if self.strategy is not RolloutStrategy.NONE and not self.capabilities.istio:
            # Seldon Core v1 splits and mirrors traffic through Istio's VirtualService.
            raise ValueError(f"ModelServingArgs.strategy: {self.strategy.value!r} (model {self.model.name!r}) "
                             f"needs Istio, which mode {self.capabilities.mode.value!r} does not deploy")


def _cpu(value: float) -> str:
    return f"{int(round(value * 1000))}m"


def _mib(gib: float) -> str:
    return f"{int(round(gib * 1024))}Mi"


def stable_autoscaler(args: ModelServingArgs) -> tuple[Optional[seldon.SeldonHpaSpec], Optional[seldon.SeldonKedaSpec]]:
    """Where KEDA runs and Prometheus has the servers' request rate: KEDA on requests/s per
    pod (the measured capacity, `Realtime.requests_per_pod_target`) or CPU, whichever asks
    for more pods; elsewhere Seldon's HPA on CPU alone."""
    realtime = args.model.serving.realtime
    scaling = realtime.autoscaling
    if args.capabilities.keda and args.prometheus_url:
        selector = f'model="{args.model.name}",predictor="{STABLE}"'
        requests = keda.PrometheusTrigger(server_address=args.prometheus_url,
                                          query=f"sum(rate(strata_serving_requests_total{{{selector}}}[1m]))",
                                          threshold=realtime.requests_per_pod_target)
        return None, seldon.SeldonKedaSpec(
            min_replica_count=scaling.min_replicas, max_replica_count=scaling.max_replicas,
            polling_interval=15, cooldown_period=300,
            triggers=[requests.trigger("requests-per-pod"), keda.cpu_trigger("cpu", scaling.target_cpu_percent)])
    return seldon.SeldonHpaSpec(
        min_replicas=scaling.min_replicas, max_replicas=scaling.max_replicas,
        metricsv2=[{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_percent}}}],
    ), None


def initial_split(model: ModelSpec, strategy: RolloutStrategy) -> Optional[TrafficSplit]:
    """The split at creation; None where the mode gives the model one predictor."""
    if strategy is RolloutStrategy.NONE:
        return None
    if strategy is RolloutStrategy.SHADOW:
        return TrafficSplit.mirrored(model.name)
    return TrafficSplit.all_stable(model.name)


def pod_selector(model: ModelSpec, slot: str) -> dict[str, str]:
    """Labels of one predictor's pods (the operator sets seldon-deployment-id = the CR's name)."""
    return {seldon.DEPLOYMENT_ID_LABEL: model.name, PREDICTOR_LABEL: slot}


def predictor_pod_spec(args: ModelServingArgs, slot: str) -> dict[str, Any]:
    model = args.model
    realtime = model.serving.realtime
    selector = pod_selector(model, slot)
    server = container(
        name=GRAPH_NODE,
        image=args.image,
        run_as_user=SERVING_UID,
        resources=resources(_cpu(realtime.cpu), _mib(realtime.memory_gib)),
        # /health/ping answers once gunicorn runs; /health/status once the model is loaded.
        liveness_probe=http_probe("/health/ping", HTTP_PORT, initial_delay=30, period=10, failures=6),
        readiness_probe=http_probe("/health/status", HTTP_PORT, initial_delay=5, period=5),
        ports=[{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
               {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
               {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        env=[{"name": "STRATA_REGISTRY_DIR", "value": REGISTRY_DIR},
             {"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/tmp/strata-metrics"},
             {"name": "HOME", "value": "/tmp"},
             *server_settings_env(realtime.server),
             *([url_env()] if args.feature_store_secret else [])],
        volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}, {"name": "registry", "mountPath": REGISTRY_DIR}],
    )
    server["image"] = marker(IMAGE)  # container() checked the real one
    sync = registry_sync_container(ALIAS_OF_PREDICTOR[slot], model.name, run_as_user=SERVING_UID)
    return {
        "serviceAccountName": args.service_account,
        "automountServiceAccountToken": False,
        "securityContext": restricted_pod_security_context(run_as_user=SERVING_UID),
        "terminationGracePeriodSeconds": 30,
        "containers": [server, sync],
        # The registry export (versions by alias): the sidecar fills it, the server reads it.
        "volumes": [empty_dir("tmp", "256Mi"), empty_dir("registry", "2Gi")],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector}},
        }]}},
        "topologySpreadConstraints": topology_spread(selector),
    }


def server_settings_env(server: ServerSettings) -> list[dict[str, str]]:
    """`serving.realtime.server` of the spec as the entrypoint's settings (workloads.serving.app)."""
    return [{"name": "STRATA_SERVING_HOST", "value": "0.0.0.0"},  # the pod IP; local mode binds 127.0.0.1
            {"name": "STRATA_SERVING_WORKERS", "value": str(server.workers)},
            {"name": "STRATA_SERVING_THREADS", "value": str(server.threads)},
            {"name": "STRATA_SERVING_GRPC_THREADS", "value": str(server.grpc_threads)},
            {"name": "STRATA_SERVING_QUEUE_BUDGET_MS", "value": f"{server.queue_budget_ms:g}"}]


def registry_sync_container(alias: str, model: str, run_as_user: int | None = None) -> dict[str, Any]:
    """The sidecar that keeps `/mnt/models` in step with the MLflow registry for `alias`
    (workloads.serving.sync): a new version is downloaded once and the alias moved, and the
    server follows the alias without a restart. A sidecar, not an init container: in the mesh
    an init container has no network, and a promotion must reach running pods."""
    sync = container(
        name="registry-sync", image="strata/drift-monitor:0.0.0",  # replaced by the marker below
        run_as_user=run_as_user,
        resources=resources("20m", "96Mi", "200m", "256Mi"),
        liveness_probe=exec_probe(["test", "-d", REGISTRY_DIR], initial_delay=30, period=60),
        # ready once the alias is exported: the pod takes traffic only with a model to serve
        readiness_probe=exec_probe(["test", "-s", f"{REGISTRY_DIR}/{model}/{ALIASES_FILE}"], initial_delay=5, period=10),
        command=["python", "-m", "workloads.serving.sync"],
        args=["--model", model, "--alias", alias, "--root", REGISTRY_DIR, "--interval", "30"],
        env=[{"name": "MLFLOW_TRACKING_URI", "value": marker(TRACKING_URI)}, {"name": "HOME", "value": "/tmp"},
             {"name": "STRATA_LOG_LEVEL", "value": "INFO"}],
        volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}, {"name": "registry", "mountPath": REGISTRY_DIR}],
    )
    sync["image"] = marker(SYNC_IMAGE)
    return sync


def predictor(args: ModelServingArgs, slot: str, split: Optional[TrafficSplit]) -> seldon.PredictorSpec:
    model = args.model
    realtime = model.serving.realtime
    scaling = realtime.autoscaling
    parameters = [
        seldon.Parameter(name=name, value=str(value), type=kind) for name, value, kind in (
            ("model", model.name, seldon.ParameterType.STRING),
            ("alias", ALIAS_OF_PREDICTOR[slot], seldon.ParameterType.STRING),
            # the metrics' `predictor` label: the slot, `shadow` for a mirrored candidate
            ("predictor", metrics_predictor(slot, args.strategy), seldon.ParameterType.STRING),
            ("team", model.team, seldon.ParameterType.STRING),
            ("max_batch_rows", realtime.max_batch_rows, seldon.ParameterType.INT),
            ("max_payload_bytes", realtime.max_payload_bytes, seldon.ParameterType.INT),
            ("latency_target_ms", model.slos.latency_p99_ms, seldon.ParameterType.FLOAT),
            ("torch_threads", max(1, int(realtime.cpu)), seldon.ParameterType.INT),
        )
    ]
    plan = feature_plan(model)
    if plan is not None:  # the same plan the local supervisor passes (workloads.local.services)
        parameters += [seldon.Parameter(name="features", value=plan.to_json(), type=seldon.ParameterType.STRING),
                       seldon.Parameter(name="feature_store_url", value=url_output("url"),
                                        type=seldon.ParameterType.STRING)]
    graph = seldon.PredictiveUnit(
        name=GRAPH_NODE, type=seldon.UnitType.MODEL, parameters=parameters,
        endpoint=seldon.Endpoint(type=seldon.EndpointType.GRPC if realtime.protocol == "grpc" else seldon.EndpointType.REST,
                                 http_port=HTTP_PORT, grpc_port=GRPC_PORT))
    stable = slot == STABLE
    hpa, keda_spec = stable_autoscaler(args) if stable else (None, None)
    # In the mesh Prometheus scrapes Istio's merged metrics: these annotations name the app's part.
    annotations = scrape_annotations(model_server(model, slot)) if args.capabilities.istio else None
    # the catalogue's identity (component, workload) on the pods: what the ServiceMonitor's Service selects
    pod_labels = {**args.labels, **model_server(model, slot).common_labels, PREDICTOR_LABEL: slot}
    component = seldon.SeldonPodSpec(metadata=seldon.PodMetadata(labels=pod_labels,
                                                                 annotations=annotations),
                                     spec=predictor_pod_spec(args, slot), hpa_spec=hpa,
                                     keda_spec=keda_spec)
    if split is None:
        traffic, shadow = 100, None
    elif stable:
        traffic, shadow = split.stable_weight, None
    else:
        traffic, shadow = (None, True) if split.shadow else (split.candidate_weight, None)
    return seldon.PredictorSpec(
        name=slot, graph=graph, component_specs=[component],
        replicas=scaling.min_replicas if stable else 0,
        labels={PREDICTOR_LABEL: slot}, traffic=traffic, shadow=shadow)


def seldon_deployment_spec(args: ModelServingArgs) -> seldon.SeldonDeploymentSpec:
    split = initial_split(args.model, args.strategy)
    slots = (STABLE,) if split is None else (STABLE, CANDIDATE)  # stable first: index paths never shift
    return seldon.SeldonDeploymentSpec(protocol=seldon.Protocol.SELDON,
                                       predictors=[predictor(args, slot, split) for slot in slots])


class ModelServing(pulumi.ComponentResource):
    def __init__(self, name: str, args: ModelServingArgs, cluster: ClusterHandle, seldon_operator: pulumi.Resource,
                 after: tuple[pulumi.Resource, ...] = (), opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:models:ModelServing", name, None, opts)
        model = args.model
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        spec = seldon_deployment_spec(args)
        annotations = {seldon.NO_ENGINE_ANNOTATION: "true", STRATEGY_ANNOTATION: args.strategy.value}
        if len(spec.predictors) > 1:
            annotations[CANDIDATE_REPLICAS_ANNOTATION] = str(model.serving.realtime.autoscaling.min_replicas)
        self.seldon_deployment = seldon.seldon_deployment(
            f"{name}-sdep", name=model.name, namespace=args.namespace, operator=seldon_operator,
            spec=fill(spec.render(), {IMAGE: args.image, SYNC_IMAGE: args.sync_image,
                                      TRACKING_URI: args.mlflow_tracking_uri}),
            labels=dict(args.labels), annotations=annotations,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                ignore_changes=list(RUNTIME_MANAGED_PATHS), depends_on=list(after))))
        # One PDB per predictor: a drain never takes more than one pod of a slot at a time.
        self.disruption_budgets = [
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb-{p.name}",
                metadata={"name": f"{model.name}-{p.name}", "namespace": args.namespace,
                          "labels": {**args.labels, PREDICTOR_LABEL: p.name}},
                spec=pod_disruption_budget_spec(pod_selector(model, p.name)),
                opts=child)
            for p in spec.predictors
        ]
        self.predictors = [p.name for p in spec.predictors]
        self.register_outputs({"seldonDeployment": self.seldon_deployment.metadata["name"],
                               "predictors": [p.name for p in spec.predictors]})
