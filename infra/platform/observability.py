"""`Observability`: the generated monitoring artifacts and the retraining trigger on the cluster.

Child of `Monitoring` (kube-prometheus-stack), created where the mode has monitoring and
the stack has models. Everything is generated from the SAME source as the committed
files (`workloads.monitoring.generate`), from this stack's own model specs, so the
cluster and the repository cannot disagree:

| object (monitoring namespace)                  | from                                          |
|------------------------------------------------|-----------------------------------------------|
| one `PrometheusRule` per rule group            | `workloads.monitoring.rules.rule_groups`      |
| one dashboard `ConfigMap` per dashboard        | `workloads.monitoring.dashboards.dashboards`  |
|   (label `grafana_dashboard: "1"`, loaded by the Grafana sidecar into folder "Strata")          |
| the Alertmanager config                        | `workloads.monitoring.alertmanager` (Monitoring's Helm values) |

Where the mode has drift monitoring (`capabilities.drift_monitoring`), the retraining
trigger too: `python -m workloads.monitoring.retrain` behind the Service
`retrain-trigger` (the generated Alertmanager config's `retrain-webhook`
receiver must point at `retrain_webhook_url(<monitoring namespace>)`; `Monitoring`
refuses a config that does not). Its action creates the model's RayJob from the manifest
`<RETRAIN_JOBS_DIR>/<model>.json` in the model's team namespace, with the stdlib submitter
(`python -m workloads.training.submit --template-namespace --trigger retrain`: the pod's
service-account token, no kubectl in the image). That manifest is NOT built here: it is the
model's own training RayJob (`infra.models.training.ray_job_spec`, the one typed
builder: same plan, placement, image, checkpoint URI, service account, security
context, spec file as the deploy-time and scheduled RayJobs) with retrain metadata
(`retrain_rayjob`: `generateName`, so every retrain is a new RayJob). Each model's
`TrainingJob`, which holds the deploy-time values (ECR image, checkpoints bucket, MLflow
URI), writes it to the ConfigMap `retrain_job_config_map_name(<model>)` in this
namespace; the trigger mounts all of them, by name, as one projected volume (each
source optional: a model's ConfigMap may land after the trigger starts, and the kubelet
adds it to the volume when it does). Least privilege: ONE Role per team namespace that
owns models, allowing only create/get/list on `rayjobs.ray.io`, bound to the trigger's
ServiceAccount; nothing cluster-wide.

Prometheus selects every PrometheusRule in the cluster (`ruleSelectorNilUsesHelmValues:
false` in `Monitoring`), so no release label is needed; the rules carry the recommended
labels only.
"""

from __future__ import annotations

import re
import secrets as _secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra.crds import kuberay
from infra.crds import prometheus as prometheus_crds
from infra.k8s import empty_dir, labels
from infra.platform.charts import IMAGES
from workloads.monitoring import dashboards as dash
from workloads.monitoring.alertmanager import RETRAIN_TOKEN_SECRET
from workloads.monitoring.generate import to_json
from workloads.monitoring.metrics import Emitter
from workloads.monitoring.shipping import ship_dashboard, ship_rules
from workloads.monitoring.rules import RuleOptions, rule_groups
from infra.workloads import ClusterContext, PodPatch, RenderedWorkload
from workloads.catalogue import CatalogueOptions, catalogue
from workloads.catalogue.declarations import (COST_EXPORTER, RETRAIN_TRIGGER, cost_exporter, retrain_trigger,
                                              training_metrics)
from workloads.catalogue.declarations import RETRAIN_PORT as RETRAIN_CONTAINER_PORT
from workloads.catalogue.model import Placement
from workloads.data.ingest.pipeline import CdcPipeline
from workloads.spec import ModelSpec

__all__ = [
    "DASHBOARD_FOLDER", "GRAFANA_DASHBOARD_LABEL", "RETRAIN_APP", "RETRAIN_PORT", "RETRAIN_JOBS_DIR",
    "Observability", "ObservabilityArgs", "dashboard_config_map_name", "pinned_image", "retrain_job_config_map_name",
    "retrain_job_file", "retrain_rayjob", "retrain_webhook_url",
]

GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"  # the kube-prometheus-stack sidecar's label (value "1")
GRAFANA_FOLDER_ANNOTATION = "strata.dev/grafana-folder"  # the sidecar's folderAnnotation
DASHBOARD_FOLDER = "Strata"

RETRAIN_APP = RETRAIN_TRIGGER  # the catalogue's name: Service, Deployment, ServiceAccount
RETRAIN_PORT = RETRAIN_CONTAINER_PORT
RETRAIN_WEBHOOK_PATH = "/v1/alertmanager"
RETRAIN_JOBS_DIR = "/etc/strata/retrain-jobs"  # one `<model>.json` RayJob manifest per model
RETRAIN_STATE_DIR = "/var/lib/strata-retrain"
RETRAIN_COOLDOWN_S = 6 * 3600  # = AlertmanagerOptions.retrain_repeat_interval
RETRAIN_TRIGGER_LABEL = "strata.dev/trigger"  # "deploy" | "schedule" | "retrain" on training RayJobs


def retrain_webhook_url(namespace: str) -> str:
    """Where Alertmanager (same namespace) reaches the retraining trigger."""
    return f"http://{RETRAIN_APP}.{namespace}.svc:{RETRAIN_PORT}{RETRAIN_WEBHOOK_PATH}"


def cluster_emitters(caps: Any, models: Sequence[ModelSpec], aggregators: bool = False) -> frozenset:
    """The contract emitters a mode runs on the cluster (what is deployed, not what is declared);
    `aggregators`: the CDC pipelines' feature aggregators run (`PlatformArgs.feature_writers`)."""
    rollout = any(m.serving.realtime.enabled and m.serving.rollout.strategy.value != "none"
                  and m.serving.rollout.strategy.value in {s.value for s in caps.rollout_strategies} for m in models)
    running = {
        Emitter.SERVING: any(m.serving.realtime.enabled for m in models),
        Emitter.STREAMING: caps.kafka and caps.keda and any(m.serving.streaming.enabled for m in models),
        Emitter.DRIFT: caps.drift_monitoring,
        Emitter.RETRAIN: caps.drift_monitoring,
        Emitter.COST: caps.monitoring,
        Emitter.ROLLOUT: rollout,
        Emitter.TRAINING: caps.monitoring,  # the training metrics exporter (MLflow's run records)
        Emitter.FEATURES: any(m.features is not None for m in models),  # servers/workers that enrich
        Emitter.FEATURE_AGGREGATES: aggregators,
    }
    return frozenset(e for e, on in running.items() if on)


def pinned_image(key: str, ecr_repositories: Mapping[str, pulumi.Input[str]] | None = None) -> pulumi.Input[str]:
    """`IMAGES[key]`, from the stack's ECR repository of the same name where there is one."""
    pin = IMAGES[key]
    if ecr_repositories and key in ecr_repositories:
        return pulumi.Output.concat(ecr_repositories[key], ":", pin.tag)
    return pin.ref


def dashboard_config_map_name(file_name: str) -> str:
    """`strata-model.json` -> `strata-dashboard-model` (a DNS-1123 name)."""
    stem = file_name.removesuffix(".json").removeprefix("strata-")
    name = re.sub(r"[^a-z0-9-]+", "-", f"strata-dashboard-{stem}".lower()).strip("-")
    return name[:63].rstrip("-")


def retrain_job_file(model_name: str) -> str:
    """The manifest's file name under `RETRAIN_JOBS_DIR` (and its ConfigMap key)."""
    return f"{model_name}.json"


# The retraining trigger's Role in each team namespace: create/get/list RayJobs, nothing else.
RETRAIN_ROLE_RULES = [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "list"]}]


def retrain_job_config_map_name(model_name: str) -> str:
    """The ConfigMap (monitoring namespace) holding `model_name`'s retrain RayJob manifest."""
    return f"{RETRAIN_APP}-{model_name}"


def retrain_rayjob(spec: kuberay.RayJobSpec, *, model: ModelSpec, namespace: str,
                   values: Mapping[str, pulumi.Input[str]] | None = None,
                   labels: Mapping[str, str] | None = None) -> pulumi.Output[str]:
    """The RayJob the trigger creates for one retrain of `model` (the submitter), as JSON.

    `spec` is the model's training RayJob spec (`infra.models.training.ray_job_spec`),
    deploy-time markers filled from `values`; only the metadata is the retrain's own:
    `generateName` `<model>-retrain-` (every retrain is its own object; a spec name is at
    most 32 characters, so the generated names fit KubeRay's 47) and the label
    `strata.dev/trigger: retrain`.
    """
    return kuberay.manifest_json(generate_name=f"{model.name}-retrain-", namespace=namespace, spec=spec, values=values,
                                 labels={**(labels or {}), "strata.dev/model": model.name, "strata.dev/team": model.team,
                                         RETRAIN_TRIGGER_LABEL: "retrain"})


@dataclass(frozen=True)
class ObservabilityArgs:
    """Defaults: no retraining trigger, the committed runbook base URL, images from `IMAGES`."""

    namespace: str  # the monitoring namespace
    models: tuple[ModelSpec, ...]
    team_namespaces: Mapping[str, str] = field(default_factory=dict)  # team -> namespace (retrain RBAC)
    retrain: bool = False  # capabilities.drift_monitoring
    rule_options: RuleOptions = RuleOptions()
    ecr_repositories: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    # Not read here any more: each model's TrainingJob renders its retrain RayJob with the
    # mode's own plan and values (see the module docstring). Kept for the platform's call.
    retrain_cooldown_s: int = RETRAIN_COOLDOWN_S
    mlflow_namespace: str = "mlflow"  # NetworkPolicy peer of the trigger's MLflow edge
    cost_exporter: bool = True  # the cost/spot exporter (its alerts ship with the rules)
    # The contract emitters this mode runs (`cluster_emitters`); None: every emitter. Rules and
    # panels reading another emitter's metrics are not shipped (workloads.monitoring.shipping).
    emitters: Optional[frozenset] = None
    spot_pools: tuple[str, ...] = ()  # pools that run spot first (--spot-pool)
    # The CDC pipelines whose feature aggregators run (`PlatformArgs.feature_writers`): their
    # FeatureFreshnessHigh / FeatureAggregatorStalled rules (one PrometheusRule per pipeline).
    pipelines: tuple[CdcPipeline, ...] = ()

    def __post_init__(self) -> None:
        if self.retrain:
            missing = sorted({m.team for m in self.models} - set(self.team_namespaces))
            if missing:
                raise ValueError(f"ObservabilityArgs.team_namespaces: no namespace for team(s) {', '.join(missing)}")


class Observability(pulumi.ComponentResource):
    def __init__(self, name: str, args: ObservabilityArgs, prometheus_operator: pulumi.Resource,
                 after: Sequence[pulumi.Resource] = (), team_namespaces: Sequence[pulumi.Resource] = (),
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:platform:Observability", name, None, opts)
        deps = list(after)
        child = pulumi.ResourceOptions(parent=self, depends_on=deps)
        ns = args.namespace
        specs = tuple(sorted(args.models, key=lambda m: m.name))

        # --- rules: one PrometheusRule per generated group --------------------------------
        self.groups = rule_groups(specs, args.rule_options, args.pipelines)
        if args.emitters is not None:
            self.groups = ship_rules(self.groups, args.emitters)
        self.rules: dict[str, k8s.apiextensions.CustomResource] = {}
        for group in self.groups["groups"]:
            self.rules[group["name"]] = prometheus_crds.prometheus_rule(
                f"{name}-rules-{group['name']}", name=group["name"], namespace=ns,
                spec=prometheus_crds.PrometheusRuleSpec.model_validate({"groups": [group]}),
                operator=prometheus_operator, opts=child, labels=labels("strata-rules", "alerting-rules"))

        # --- dashboards: ConfigMaps for the Grafana sidecar -------------------------------
        self.dashboards: dict[str, k8s.core.v1.ConfigMap] = {}
        for file_name, dashboard in dash.dashboards(specs).items():
            if args.emitters is not None:
                dashboard = ship_dashboard(dashboard, args.emitters)
                if dashboard is None:
                    continue
            cm_name = dashboard_config_map_name(file_name)
            self.dashboards[file_name] = k8s.core.v1.ConfigMap(
                f"{name}-{cm_name}",
                metadata={"name": cm_name, "namespace": ns,
                          "labels": {**labels("strata-dashboards", "dashboard"), GRAFANA_DASHBOARD_LABEL: "1"},
                          "annotations": {GRAFANA_FOLDER_ANNOTATION: DASHBOARD_FOLDER}},
                data={file_name: to_json(dashboard)},
                opts=child)

        self.cost: Optional[RenderedWorkload] = None
        if args.cost_exporter:
            self._cost_exporter(name, args, prometheus_operator, deps)
        self.training = RenderedWorkload(
            f"{name}-training-metrics", training_metrics(specs), self.cluster_context(args, {}),
            prometheus_operator=prometheus_operator,
            patch=PodPatch(image=pinned_image("drift-monitor", args.ecr_repositories)),
            after=deps, opts=pulumi.ResourceOptions(parent=self))
        self.webhook_url: Optional[str] = None
        if args.retrain:
            self._retrain_trigger(name, args, specs, prometheus_operator, deps, team_namespaces)
        self.register_outputs({
            "rules": sorted(self.rules),
            "dashboards": sorted(self.dashboards),
            "retrainWebhookUrl": self.webhook_url,
        })

    def cluster_context(self, args: ObservabilityArgs, provisioners) -> ClusterContext:
        return ClusterContext(
            namespaces={Placement.MONITORING: args.namespace, Placement.MLFLOW: args.mlflow_namespace},
            team_namespaces=dict(args.team_namespaces), catalogue=catalogue(args.models),
            provisioners={"kubernetes-api": lambda *_: "", **provisioners}, prometheus=True)

    def _cost_exporter(self, name: str, args: ObservabilityArgs, prometheus_operator: pulumi.Resource,
                       deps: list[pulumi.Resource]) -> None:
        """Node prices and per-model cost shares: reads nodes, pods and events, cluster-wide, read-only."""
        child = pulumi.ResourceOptions(parent=self, depends_on=deps)
        app, meta_labels = COST_EXPORTER, labels(COST_EXPORTER, "cost-exporter")
        account = k8s.core.v1.ServiceAccount(
            f"{name}-cost-sa", metadata={"name": app, "namespace": args.namespace, "labels": meta_labels},
            automount_service_account_token=False, opts=child)
        role = k8s.rbac.v1.ClusterRole(
            f"{name}-cost-role", metadata={"name": f"strata-{app}", "labels": meta_labels},
            rules=[{"apiGroups": [""], "resources": ["nodes", "pods", "events"], "verbs": ["get", "list", "watch"]}],
            opts=child)
        binding = k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-cost-binding", metadata={"name": f"strata-{app}", "labels": meta_labels},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"strata-{app}"},
            subjects=[{"kind": "ServiceAccount", "name": app, "namespace": args.namespace}],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*deps, role, account]))
        self.cost = RenderedWorkload(
            f"{name}-cost-exporter", cost_exporter(CatalogueOptions(spot_pools=args.spot_pools)),
            self.cluster_context(args, {}), prometheus_operator=prometheus_operator,
            patch=PodPatch(service_account=app, automount_token=True,  # it reads the API
                           image=pinned_image("drift-monitor", args.ecr_repositories)),
            after=[*deps, binding], opts=pulumi.ResourceOptions(parent=self))

    def _retrain_trigger(self, name: str, args: ObservabilityArgs, specs: tuple[ModelSpec, ...],
                         prometheus_operator: pulumi.Resource, deps: list[pulumi.Resource],
                         team_namespaces: Sequence[pulumi.Resource]) -> None:
        ns, app = args.namespace, RETRAIN_APP
        child = pulumi.ResourceOptions(parent=self, depends_on=deps)
        meta_labels = labels(app, "retrain-trigger")
        image = pinned_image("drift-monitor", args.ecr_repositories)

        self.retrain_service_account = k8s.core.v1.ServiceAccount(
            f"{name}-retrain-sa", metadata={"name": app, "namespace": ns, "labels": meta_labels},
            automount_service_account_token=False, opts=child)

        # RBAC: per team namespace, create/get/list RayJobs and nothing else.
        in_teams = pulumi.ResourceOptions(parent=self, depends_on=[*deps, *team_namespaces])
        self.retrain_roles: dict[str, k8s.rbac.v1.Role] = {}
        for team in sorted({m.team for m in specs}):
            team_ns = args.team_namespaces[team]
            role = k8s.rbac.v1.Role(
                f"{name}-retrain-role-{team}",
                metadata={"name": app, "namespace": team_ns, "labels": meta_labels},
                rules=RETRAIN_ROLE_RULES,
                opts=in_teams)
            k8s.rbac.v1.RoleBinding(
                f"{name}-retrain-binding-{team}",
                metadata={"name": app, "namespace": team_ns, "labels": meta_labels},
                role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": app},
                subjects=[{"kind": "ServiceAccount", "name": app, "namespace": ns}],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*deps, *team_namespaces, role]))
            self.retrain_roles[team] = role

        # One RayJob manifest per model, <model>.json, from the ConfigMap its TrainingJob writes.
        jobs_volume = {"name": "jobs", "projected": {"sources": [
            {"configMap": {"name": retrain_job_config_map_name(m.name),
                           "items": [{"key": retrain_job_file(m.name), "path": retrain_job_file(m.name)}],
                           "optional": True}}
            for m in specs]}}

        command = (f"python -m workloads.training.submit --template {RETRAIN_JOBS_DIR}/{{model}}.json "
                   "--template-namespace --trigger retrain")
        state = {"command": command, "state_file": f"{RETRAIN_STATE_DIR}/state.json",
                 "log_dir": f"{RETRAIN_STATE_DIR}/logs", "rollout_registry": "", "rollout_command": "",
                 "models": ",".join(m.name for m in specs)}
        # The webhook's bearer token: generated on first `up` and kept (the Secret ignores later
        # changes); Alertmanager mounts it (alertmanagerSpec.secrets), the trigger reads it as env.
        self.retrain_token = k8s.core.v1.Secret(
            f"{name}-retrain-token",
            metadata={"name": RETRAIN_TOKEN_SECRET, "namespace": ns, "labels": meta_labels},
            type="Opaque", string_data={"token": pulumi.Output.secret(_secrets.token_urlsafe(32))},
            opts=pulumi.ResourceOptions(parent=self, depends_on=deps, ignore_changes=["stringData", "data"]))
        # The cooldown and run history survive a rescheduled pod (an emptyDir would not).
        self.retrain_state = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-retrain-state",
            metadata={"name": f"{app}-state", "namespace": ns, "labels": meta_labels},
            spec={"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            opts=child)
        ctx = self.cluster_context(args, {"state": lambda w, r, output: state[output]})
        workload = retrain_trigger(CatalogueOptions(retrain_cooldown_s=args.retrain_cooldown_s))
        self.retrain = RenderedWorkload(
            f"{name}-retrain-trigger", workload, ctx, prometheus_operator=prometheus_operator,
            patch=PodPatch(
                service_account=app, image=image,
                automount_token=True,  # the submitter talks to the API server
                volumes=(jobs_volume, {"name": "state", "persistentVolumeClaim": {"claimName": f"{app}-state"}}),
                volume_mounts=({"name": "jobs", "mountPath": RETRAIN_JOBS_DIR, "readOnly": True},
                               {"name": "state", "mountPath": RETRAIN_STATE_DIR})),
            after=[*deps, self.retrain_service_account, self.retrain_token, self.retrain_state],
            opts=pulumi.ResourceOptions(parent=self))
        self.retrain_deployment = self.retrain.deployment
        self.retrain_service = self.retrain.service
        self.webhook_url = retrain_webhook_url(ns)
