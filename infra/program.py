"""The Pulumi program: one `StackSpec` in, the whole platform out.

Layers run in order (cloud -> platform -> models); each receives only what the
previous one returned (`infra.contracts`). Custom resources are created in the same
program as the operator releases that install their CRDs and depend on them
explicitly (see README, "Why one program").
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackSpec, Target
from infra.contracts import CloudOutputs, ClusterHandle, PlatformOutputs


@dataclass(frozen=True)
class StackSecrets:
    """Secret config values, kept as secret Outputs from the entry point down."""

    pagerduty_routing_keys: pulumi.Output[dict] | None
    kubeconfig: pulumi.Output[str] | None = None
    cdc_credentials: pulumi.Output[dict] | None = None  # {<pipeline>: {username, password}}


def existing_cluster(spec: StackSpec, secrets: StackSecrets) -> ClusterHandle:
    """A kubeconfig target: no AWS layer, everything lands on an existing cluster."""
    provider = k8s.Provider(
        f"{spec.stack}-kubeconfig",
        kubeconfig=secrets.kubeconfig,
        enable_server_side_apply=True,
    )
    return ClusterHandle(
        name=f"{spec.stack}-existing",
        provider=provider,
        kubernetes_version=spec.config.cluster.kubernetes_version,
        gpu_nodes=spec.capabilities.gpu_spot_pool,
    )


# The providers' SDKs load submodules lazily, on first attribute access: seconds of
# imports that would otherwise land inside the first program evaluation.
PROVIDER_SUBMODULES = (
    "pulumi_aws.cloudwatch", "pulumi_aws.ec2", "pulumi_aws.ecr", "pulumi_aws.eks", "pulumi_aws.elasticache", "pulumi_aws.iam",
    "pulumi_aws.kms", "pulumi_aws.rds", "pulumi_aws.s3", "pulumi_aws.secretsmanager", "pulumi_aws.sqs",
    "pulumi_aws.vpc", "pulumi_kubernetes.apiextensions", "pulumi_kubernetes.apps.v1",
    "pulumi_kubernetes.batch.v1", "pulumi_kubernetes.core.v1", "pulumi_kubernetes.helm.v3", "pulumi_kubernetes.meta.v1",
    "pulumi_kubernetes.networking.v1", "pulumi_kubernetes.policy.v1", "pulumi_kubernetes.rbac.v1",
    "pulumi_kubernetes.storage.v1",
)


def import_layers() -> None:
    """Import the layers' modules and the provider submodules they use."""
    import importlib

    import infra.cloud  # noqa: F401
    import infra.models  # noqa: F401
    import infra.platform  # noqa: F401

    for module in PROVIDER_SUBMODULES:
        dir(importlib.import_module(module))  # attribute access runs a lazily loaded module


def build(spec: StackSpec, secrets: StackSecrets) -> dict[str, object]:
    """Create every resource of the stack; returns the stack outputs."""
    from infra.cloud import build_cloud
    from infra.models import ModelDeployment, ModelDeploymentArgs
    from infra.platform import build_platform

    cloud: CloudOutputs | None = None
    if spec.config.target is Target.AWS:
        cloud = build_cloud(spec)
        cluster = cloud.cluster
    else:
        cluster = existing_cluster(spec, secrets)

    platform: PlatformOutputs = build_platform(spec, cluster, cloud, secrets)

    deployments = {
        model.name: ModelDeployment(
            model.name,
            ModelDeploymentArgs(
                model=model,
                capabilities=spec.capabilities,
                namespace=platform.team_namespaces[model.team],
                environment=spec.config.environment,
            ),
            cluster=cluster,
            cloud=cloud,
            platform=platform,
        )
        for model in spec.models
    }

    outputs: dict[str, object] = {
        "mode": spec.mode.value,
        "clusterName": cluster.name,
        "mlflowTrackingUri": platform.mlflow_tracking_uri,
        "teamNamespaces": platform.team_namespaces,
        "models": sorted(deployments),
    }
    if cloud is not None:
        outputs["vpcId"] = cloud.vpc_id
        outputs["artifactsBucket"] = cloud.storage.artifacts_bucket
        outputs["ecrRepositories"] = cloud.storage.ecr_repositories  # what CI pushes (infra.cloud.images)
    if platform.kafka_bootstrap is not None:
        outputs["kafkaBootstrap"] = platform.kafka_bootstrap
    return outputs
