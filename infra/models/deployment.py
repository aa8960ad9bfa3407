"""`ModelDeployment`: everything one onboarded model gets on the cluster.

This component is the fan-out target of the stack's `models` map (one per key, like
terraform-aws-eks's `for_each`). It owns the model's identities and its spec as
deployed; the training (RayJob), serving (SeldonDeployment, stream worker, KEDA,
topics) and observability (rules, dashboards) sections add their children here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from infra.contracts import CloudOutputs, ClusterHandle, PlatformOutputs
from infra.modes import Capabilities, RolloutStrategy
from workloads.spec import ModelSpec

SPEC_CONFIGMAP_KEY = "model.json"


@dataclass(frozen=True)
class ModelDeploymentArgs:
    """One model, the mode it lands in, and where. Defaults: none; all four are required."""

    model: ModelSpec
    capabilities: Capabilities
    namespace: str  # the owning team's namespace
    environment: str


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
        super().__init__("strata:models:ModelDeployment", name, None, opts)
        model, caps = args.model, args.capabilities
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        labels = model_labels(model)
        self.rollout_strategy = effective_rollout(model, caps)

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
            "mlflowTrackingUri": platform.mlflow_tracking_uri,
        }
        # The spec as deployed: the rollout controller and retraining trigger read this.
        self.spec_config_map = k8s.core.v1.ConfigMap(
            f"{name}-spec",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{model.name}-spec", namespace=args.namespace, labels=labels),
            data={SPEC_CONFIGMAP_KEY: pulumi.Output.json_dumps(deployed_spec)},
            opts=child,
        )
        self.namespace = args.namespace
        self.register_outputs(
            {
                "namespace": args.namespace,
                "rolloutStrategy": self.rollout_strategy.value,
                "specConfigMap": self.spec_config_map.metadata["name"],
            }
        )
