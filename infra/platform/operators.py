"""Operators without further platform resources: `KubeRay`, `SeldonCore`, `NvidiaDevicePlugin`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s import HELM_CONTAINER_SECURITY_CONTEXT, HELM_POD_SECURITY_CONTEXT, resources
from infra.platform.charts import helm_release


# The CRD each cluster-wide operator serves that the models' custom resources need.
SHARED_OPERATOR_CRDS = {"kuberay": "rayjobs.ray.io", "seldon": "seldondeployments.machinelearning.seldon.io"}


def shared_operator(name: str, operator: str, opts: Optional[pulumi.ResourceOptions] = None) -> pulumi.Resource:
    """A read of the CRD that `operator`, already running on a shared cluster, installed.

    Custom resources depend on it as they would on the operator's release, so a preview
    on a cluster without the operator fails at the read, naming the missing CRD, and
    `destroy` never deletes it (a read resource is not owned by the stack)."""
    if operator not in SHARED_OPERATOR_CRDS:
        raise ValueError(f"shared_operator: unknown operator {operator!r}; known: {', '.join(sorted(SHARED_OPERATOR_CRDS))}")
    crd = SHARED_OPERATOR_CRDS[operator]
    return k8s.apiextensions.v1.CustomResourceDefinition.get(name, crd, opts=opts)


@dataclass(frozen=True)
class KubeRayArgs:
    """The KubeRay operator (RayJob/RayCluster/RayService). Defaults: one replica, cluster-wide."""

    namespace: str
    replicas: int = 1  # leader election: more replicas only shorten failover


class KubeRay(pulumi.ComponentResource):
    def __init__(self, name: str, args: KubeRayArgs, after: Sequence[pulumi.Resource] = (),
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:platform:KubeRay", name, None, opts)
        self.release = helm_release(f"{name}-release", "kuberay", namespace=args.namespace,
                                    opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)), values={
            "replicas": args.replicas,
            "resources": resources("100m", "256Mi", "1", "1Gi"),
            "podSecurityContext": dict(HELM_POD_SECURITY_CONTEXT),
            "securityContext": dict(HELM_CONTAINER_SECURITY_CONTEXT),
            "leaderElectionEnabled": True,
        })
        self.register_outputs({"release": self.release.status})


@dataclass(frozen=True)
class SeldonCoreArgs:
    """Seldon Core v1 operator (SeldonDeployment). Defaults: no Istio, no KEDA, no usage pings."""

    namespace: str
    istio: bool = False
    istio_gateway: str = ""  # "<namespace>/<gateway>" the generated VirtualServices bind to
    keda: bool = False


class SeldonCore(pulumi.ComponentResource):
    def __init__(self, name: str, args: SeldonCoreArgs, after: Sequence[pulumi.Resource] = (),
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:platform:SeldonCore", name, None, opts)
        if args.istio and not args.istio_gateway:
            raise ValueError("SeldonCoreArgs.istio_gateway: required when istio is enabled")
        self.release = helm_release(f"{name}-release", "seldon", namespace=args.namespace,
                                    opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)), values={
            "istio": {"enabled": args.istio, "gateway": args.istio_gateway or "istio-system/seldon-gateway"},
            "keda": {"enabled": args.keda},
            "usageMetrics": {"enabled": False},
            "crd": {"create": True},
            "manager": {
                "cpuRequest": "100m", "cpuLimit": "500m", "memoryRequest": "256Mi", "memoryLimit": "512Mi",
                "containerSecurityContext": dict(HELM_CONTAINER_SECURITY_CONTEXT),
            },
        })
        self.register_outputs({"release": self.release.status})


@dataclass(frozen=True)
class NvidiaDevicePluginArgs:
    """NVIDIA device plugin DaemonSet on the tainted GPU spot nodes."""

    namespace: str
    gpu_instance_types: tuple[str, ...]  # the GPU pools' EC2 types (spot + on-demand fallback)
    gpu_taint_key: str = "nvidia.com/gpu"


class NvidiaDevicePlugin(pulumi.ComponentResource):
    def __init__(self, name: str, args: NvidiaDevicePluginArgs, after: Sequence[pulumi.Resource] = (),
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:platform:NvidiaDevicePlugin", name, None, opts)
        if not args.gpu_instance_types:
            raise ValueError("NvidiaDevicePluginArgs.gpu_instance_types: needs at least one GPU instance type")
        self.release = helm_release(f"{name}-release", "nvidia-device-plugin", namespace=args.namespace,
                                    opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)), values={
            "tolerations": [
                {"key": args.gpu_taint_key, "operator": "Exists", "effect": "NoSchedule"},
                {"key": "CriticalAddonsOnly", "operator": "Exists"},
            ],
            # Without node-feature-discovery the chart's default affinity matches nothing:
            # select GPU nodes by instance type instead (a well-known label on every node).
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                                       "values": sorted(args.gpu_instance_types)}]}]}}},
            "resources": resources("50m", "64Mi", "200m", "128Mi"),
            # Non-root, no privilege escalation, no capabilities: the plugin only needs the
            # kubelet's device-plugin socket directory (a hostPath, hence a privileged namespace).
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"}},
        })
        self.register_outputs({"release": self.release.status})
