"""`ServiceMesh`: Istio (base CRDs, CNI node agent, istiod, ingress gateway) in sidecar mode,
mesh-wide `PeerAuthentication`, and the shared `Gateway` that Seldon's VirtualServices bind to.

The Istio CNI node agent replaces the `istio-init` container (NET_ADMIN/NET_RAW), which is
what lets meshed team namespaces stay on the Pod Security "restricted" profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from infra.crds import istio as istio_crds
from infra.k8s import HELM_CONTAINER_SECURITY_CONTEXT, resources
from infra.modes import MtlsMode
from infra.platform.charts import helm_release

GATEWAY_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
SELDON_GATEWAY = "seldon-gateway"

_MESH_MTLS = {
    MtlsMode.STRICT: istio_crds.MutualTlsMode.STRICT,
    MtlsMode.PERMISSIVE: istio_crds.MutualTlsMode.PERMISSIVE,
    MtlsMode.OFF: istio_crds.MutualTlsMode.DISABLE,
}


@dataclass(frozen=True)
class ServiceMeshArgs:
    """Istio in sidecar mode. Defaults: one istiod, two gateway replicas, PERMISSIVE mTLS."""

    namespace: str  # istiod + mesh root namespace (mesh-wide policies live here)
    gateway_namespace: str
    cni_namespace: str
    mtls: MtlsMode = MtlsMode.PERMISSIVE
    ha: bool = False  # istiod 2..5 replicas (HPA) instead of 1
    gateway_replicas: int = 2
    internal_load_balancer: bool = True  # AWS NLB scheme: internal unless the API is public
    aws_load_balancer: bool = True  # annotate the gateway Service for the AWS Load Balancer Controller
    gateway_hosts: tuple[str, ...] = ("*",)


class ServiceMesh(pulumi.ComponentResource):
    def __init__(self, name: str, args: ServiceMeshArgs, after: Sequence[pulumi.Resource] = (),
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:platform:ServiceMesh", name, None, opts)
        base_deps = list(after)  # namespaces (which wait for the cluster's node groups)
        child = pulumi.ResourceOptions(parent=self, depends_on=base_deps)
        then = lambda *deps: pulumi.ResourceOptions(parent=self, depends_on=[*base_deps, *deps])  # noqa: E731

        self.base = helm_release(f"{name}-base", "istio-base", namespace=args.namespace, opts=child, values={
            "defaultRevision": "default",
        })
        self.cni = helm_release(f"{name}-cni", "istio-cni", namespace=args.cni_namespace, opts=then(self.base), values={
            "resources": resources("100m", "128Mi", "500m", "256Mi"),
            "seccompProfile": {"type": "RuntimeDefault"},
        })
        self.istiod = helm_release(f"{name}-istiod", "istiod", namespace=args.namespace, opts=then(self.base, self.cni), values={
            "global": {
                "istioNamespace": args.namespace,
                "logAsJson": True,
                "proxy": {"resources": resources("50m", "128Mi", "1", "512Mi")},
                "proxy_init": {"resources": resources("10m", "32Mi", "100m", "64Mi")},
            },
            "cni": {"enabled": True},  # pods get istio-validation, not the privileged istio-init
            "replicaCount": 2 if args.ha else 1,
            "autoscaleEnabled": args.ha,
            "autoscaleMin": 2 if args.ha else 1,
            "autoscaleMax": 5,
            "resources": resources("250m", "512Mi", "1", "2Gi"),
            "seccompProfile": {"type": "RuntimeDefault"},
            "pdb": {"minAvailable": 1},
            "meshConfig": {
                "rootNamespace": args.namespace,
                "accessLogFile": "/dev/stdout",
                "accessLogEncoding": "JSON",
                "enablePrometheusMerge": True,
                "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},  # S3/STS from meshed pods
            },
        })
        service_annotations = {}
        if args.aws_load_balancer:
            service_annotations = {
                "service.beta.kubernetes.io/aws-load-balancer-type": "external",
                "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
                "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal" if args.internal_load_balancer else "internet-facing",
            }
        self.gateway = helm_release(f"{name}-gateway", "istio-gateway", release_name="istio-ingressgateway",
                                    namespace=args.gateway_namespace, opts=then(self.istiod), values={
            "replicaCount": args.gateway_replicas,
            "autoscaling": {"enabled": True, "minReplicas": args.gateway_replicas, "maxReplicas": 10,
                            "targetCPUUtilizationPercentage": 70},
            "resources": resources("200m", "256Mi", "2", "1Gi"),
            "labels": dict(GATEWAY_LABELS),
            "service": {"type": "LoadBalancer", "annotations": service_annotations},
            "podDisruptionBudget": {"maxUnavailable": 1},
            # Binding :80/:443 as uid 1337 needs only this safe sysctl (allowed by "restricted").
            "securityContext": {
                "seccompProfile": {"type": "RuntimeDefault"},
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
            },
            "containerSecurityContext": {**HELM_CONTAINER_SECURITY_CONTEXT, "runAsUser": 1337, "runAsGroup": 1337},
        })

        # Mesh-wide (root namespace, no selector) peer authentication.
        self.peer_authentication = istio_crds.peer_authentication(
            f"{name}-mesh-mtls", name="default", namespace=args.namespace,
            spec=istio_crds.PeerAuthenticationSpec(mtls=istio_crds.MutualTls(mode=_MESH_MTLS[args.mtls])),
            operator=self.istiod, opts=child)
        self.seldon_gateway = istio_crds.gateway(
            f"{name}-seldon-gateway", name=SELDON_GATEWAY, namespace=args.gateway_namespace,
            spec=istio_crds.GatewaySpec(selector=dict(GATEWAY_LABELS), servers=[istio_crds.Server(
                port=istio_crds.Port(number=80, name="http", protocol="HTTP"), hosts=list(args.gateway_hosts))]),
            operator=self.istiod, opts=then(self.gateway))
        self.seldon_gateway_ref = f"{args.gateway_namespace}/{SELDON_GATEWAY}"
        self.operator = self.istiod
        self.register_outputs({"istiod": self.istiod.status, "gateway": self.seldon_gateway_ref})
