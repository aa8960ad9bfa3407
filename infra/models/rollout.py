"""`RolloutController`: the cluster side of a model's rollouts (issue 7, part 4).

One controller per model with a candidate slot (`effective_rollout` is not `none`):
`python -m workloads.rollout --model <model> --cluster --spec-file <the deployed spec>`, a
single replica (`Recreate`: never two writers) under its own service account.

RBAC is one namespaced Role, nothing cluster-wide, every grant pinned by `resourceNames`
except event creation (Kubernetes cannot name an object that does not exist yet):

| apiGroup                  | resource            | resourceNames            | verbs               |
|---------------------------|---------------------|--------------------------|---------------------|
| machinelearning.seldon.io | seldondeployments   | `<model>`                | get, patch          |
| "" (core)                 | configmaps          | `<model>-rollout-state`  | get, update, patch  |
| "" (core)                 | events              | -                        | create              |

`patch` on the SeldonDeployment is how it moves `spec.predictors[*].traffic`, `shadow`
and `replicas` (which `pulumi up` leaves alone: see `infra.models.serving`). Its state
(step, decision history) lives in the ConfigMap `<model>-rollout-state`, created here
empty because `create` cannot be limited to one name; after creation its `data` belongs
to the controller (`ignore_changes`). The registry (MLflow aliases and tags) is reached
over HTTP with `MLFLOW_TRACKING_URI`, Prometheus (canary analysis) with
`STRATA_PROMETHEUS_URL`.

Probes: the controller serves `GET /healthz` on `STRATA_HEALTH_PORT` (contract with
`workloads.rollout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi
import pulumi_kubernetes as k8s

from infra.contracts import ClusterHandle
from infra.crds import seldon
from infra.k8s import container, empty_dir, http_probe, resources, restricted_pod_security_context
from workloads.spec import ModelSpec

HEALTH_PORT = 8080
PROMETHEUS_PORT = 9090
PROMETHEUS_SERVICE = "prometheus-operated"  # the prometheus-operator's governing Service
SPEC_MOUNT = "/etc/strata/spec"


@dataclass(frozen=True)
class RolloutControllerArgs:
    """One model's controller. `monitoring_namespace` is None where the mode has no Prometheus."""

    model: ModelSpec
    namespace: str
    image: pulumi.Input[str]
    spec_config_map: str
    spec_config_map_key: str
    mlflow_tracking_uri: pulumi.Input[str]
    labels: Mapping[str, str]
    monitoring_namespace: Optional[str] = None

    @property
    def name(self) -> str:
        return f"{self.model.name}-rollout"

    @property
    def state_config_map(self) -> str:
        return f"{self.model.name}-rollout-state"


def role_rules(args: RolloutControllerArgs) -> list[dict]:
    """Exactly what the controller may do (see the module docstring)."""
    group = seldon.API_VERSION.split("/")[0]
    return [
        {"apiGroups": [group], "resources": ["seldondeployments"], "resourceNames": [args.model.name],
         "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [args.state_config_map],
         "verbs": ["get", "update", "patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]


class RolloutController(pulumi.ComponentResource):
    def __init__(self, name: str, args: RolloutControllerArgs, cluster: ClusterHandle,
                 after: tuple[pulumi.Resource, ...] = (), opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:models:RolloutController", name, None, opts)
        model, ns = args.model, args.namespace
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        match = {"app.kubernetes.io/name": args.name, "app.kubernetes.io/instance": args.name}
        labels = {**args.labels, **match, "app.kubernetes.io/component": "rollout-controller"}

        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata={"name": args.name, "namespace": ns, "labels": labels},
            automount_service_account_token=False,  # only the controller's pod mounts it (below)
            opts=child)
        self.role = k8s.rbac.v1.Role(
            f"{name}-role", metadata={"name": args.name, "namespace": ns, "labels": labels},
            rules=role_rules(args), opts=child)
        self.role_binding = k8s.rbac.v1.RoleBinding(
            f"{name}-role-binding", metadata={"name": args.name, "namespace": ns, "labels": labels},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": args.name},
            subjects=[{"kind": "ServiceAccount", "name": args.name, "namespace": ns}],
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                depends_on=[self.role, self.service_account])))
        self.state = k8s.core.v1.ConfigMap(
            f"{name}-state", metadata={"name": args.state_config_map, "namespace": ns, "labels": labels},
            data={},
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=["data"])))

        spec_file = f"{SPEC_MOUNT}/{args.spec_config_map_key}"
        env = [{"name": "MLFLOW_TRACKING_URI", "value": args.mlflow_tracking_uri},
               {"name": "STRATA_NAMESPACE", "value": ns},
               {"name": "STRATA_ROLLOUT_STATE_CONFIGMAP", "value": args.state_config_map},
               {"name": "STRATA_HEALTH_PORT", "value": str(HEALTH_PORT)},
               {"name": "HOME", "value": "/tmp"}]
        if args.monitoring_namespace:
            env.append({"name": "STRATA_PROMETHEUS_URL",
                        "value": f"http://{PROMETHEUS_SERVICE}.{args.monitoring_namespace}.svc:{PROMETHEUS_PORT}"})
        controller = container(
            name="rollout-controller", image=args.image,
            command=["python", "-m", "workloads.rollout"],
            args=["--model", model.name, "--cluster", "--spec-file", spec_file],
            resources=resources("100m", "256Mi", "500m", "512Mi"),
            liveness_probe=http_probe("/healthz", "health", initial_delay=15, period=15, failures=4),
            readiness_probe=http_probe("/healthz", "health", initial_delay=5, period=10),
            ports=[{"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
            env=env,
            volumeMounts=[{"name": "model-spec", "mountPath": SPEC_MOUNT, "readOnly": True},
                          {"name": "tmp", "mountPath": "/tmp"}],
        )
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata={"name": args.name, "namespace": ns, "labels": labels},
            spec={
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": match},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": args.name,
                        "automountServiceAccountToken": True,  # it talks to the API server
                        "securityContext": restricted_pod_security_context(),
                        "containers": [controller],
                        "volumes": [{"name": "model-spec", "configMap": {
                            "name": args.spec_config_map,
                            "items": [{"key": args.spec_config_map_key, "path": args.spec_config_map_key}]}},
                            empty_dir("tmp", "64Mi")],
                    },
                },
            },
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                depends_on=[*after, self.role_binding, self.state])))
        self.register_outputs({"deployment": self.deployment.metadata["name"], "role": self.role.metadata["name"]})
