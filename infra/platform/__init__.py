"""Platform layer. PLACEHOLDER being replaced by the platform-layer work: namespaces only."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackSpec
from infra.contracts import ClusterHandle, PlatformOutputs


def build_platform(spec: StackSpec, cluster: ClusterHandle, cloud, secrets) -> PlatformOutputs:
    opts = pulumi.ResourceOptions(provider=cluster.provider)
    namespaces = {}
    for team in spec.teams:
        ns = k8s.core.v1.Namespace(f"{spec.stack}-team-{team}", metadata={"name": f"{spec.config.namespace_prefix}team-{team}"}, opts=opts)
        namespaces[team] = f"{spec.config.namespace_prefix}team-{team}"
    return PlatformOutputs(team_namespaces=namespaces, mlflow_tracking_uri=pulumi.Output.from_input("http://mlflow.mlflow.svc:5000"))
