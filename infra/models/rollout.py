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
from infra.workloads import ClusterContext, PodPatch, RenderedWorkload
from workloads.catalogue.model import Workload
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
    def __init__(self, name: str, args: RolloutControllerArgs, cluster: ClusterHandle, workload: Workload,
                 context: ClusterContext, prometheus_operator: Optional[pulumi.Resource] = None,
                 after: tuple[pulumi.Resource, ...] = (), opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:models:RolloutController", name, None, opts)
        model, ns = args.model, args.namespace
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        labels = workload.common_labels

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

        # The pod: the catalogue's declaration (workloads.catalogue.declarations.rollout_controller),
        # with the cluster's identity, the deployed spec and the state ConfigMap's name.
        self.workload = RenderedWorkload(
            f"{name}-workload", workload, context,
            patch=PodPatch(
                service_account=args.name, automount_token=True,  # it talks to the API server
                image=args.image,
                volumes=({"name": "model-spec", "configMap": {
                    "name": args.spec_config_map,
                    "items": [{"key": args.spec_config_map_key, "path": args.spec_config_map_key}]}},),
                volume_mounts=({"name": "model-spec", "mountPath": SPEC_MOUNT, "readOnly": True},),
                extra_env=({"name": "STRATA_NAMESPACE", "value": ns},
                           {"name": "STRATA_ROLLOUT_STATE_CONFIGMAP", "value": args.state_config_map})),
            prometheus_operator=prometheus_operator, after=[*after, self.role_binding, self.state],
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider))
        self.deployment = self.workload.deployment
        self.register_outputs({"deployment": self.deployment.metadata["name"], "role": self.role.metadata["name"]})
