"""`PlatformNamespace`: a namespace that starts closed.

Every namespace the program creates gets Pod Security Admission labels, a `default-deny`
NetworkPolicy (ingress AND egress) and one `allow-explicit` policy: DNS egress to
kube-dns, same-namespace traffic, and only the peers listed in its args. Team
namespaces add a ResourceQuota and LimitRange.
Peers are selected by the `kubernetes.io/metadata.name` label (set by the API server,
so it cannot be spoofed by a namespace owner) or by our `strata.dev/tenant` label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s import NAMESPACE_NAME_LABEL, TENANT_LABEL, PodSecurityLevel, pod_security_labels

ANYWHERE_V4 = "0.0.0.0/0"
API_SERVER_PORTS = (443, 6443)  # EKS endpoint / most self-managed clusters


@dataclass(frozen=True)
class Peer:
    """Who may talk to (or be talked to by) a namespace's pods, and on which TCP ports.

    Exactly one of `namespaces`, `tenant`, `all_namespaces`, `cidr` is set.
    `ports` empty means every port.
    """

    namespaces: tuple[str, ...] = ()
    tenant: Optional[str] = None
    all_namespaces: bool = False
    cidr: Optional[str] = None
    ports: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        chosen = sum((bool(self.namespaces), self.tenant is not None, self.all_namespaces, self.cidr is not None))
        if chosen != 1:
            raise ValueError("Peer: set exactly one of namespaces, tenant, all_namespaces, cidr")

    def render(self) -> dict[str, Any]:
        if self.cidr is not None:
            selector: dict[str, Any] = {"ipBlock": {"cidr": self.cidr}}
        elif self.tenant is not None:
            selector = {"namespaceSelector": {"matchLabels": {TENANT_LABEL: self.tenant}}}
        elif self.all_namespaces:
            selector = {"namespaceSelector": {}}
        else:
            selector = {"namespaceSelector": {"matchExpressions": [
                {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": sorted(self.namespaces)}]}}
        rule: dict[str, Any] = {"peers": [selector]}
        if self.ports:
            rule["ports"] = [{"port": port, "protocol": "TCP"} for port in self.ports]
        return rule


def anywhere(*ports: int) -> Peer:
    return Peer(cidr=ANYWHERE_V4, ports=tuple(ports))


def api_server() -> Peer:
    """Egress to the Kubernetes API (not a pod: only an ipBlock can match it)."""
    return anywhere(*API_SERVER_PORTS)


@dataclass(frozen=True)
class QuotaArgs:
    """Team namespace quota. Defaults sized for a team's training + serving on spot nodes."""

    requests_cpu: str = "32"
    requests_memory: str = "128Gi"
    limits_cpu: str = "64"
    limits_memory: str = "256Gi"
    gpus: int = 0  # requests.nvidia.com/gpu; 0 where the mode has no GPU pool
    pods: int = 200
    persistent_volume_claims: int = 20
    storage: str = "1Ti"
    load_balancers: int = 0  # traffic enters through the Istio gateway only
    node_ports: int = 0


@dataclass(frozen=True)
class LimitRangeArgs:
    """Container defaults for pods that do not state resources (ours always do)."""

    default_request_cpu: str = "100m"
    default_request_memory: str = "128Mi"
    default_limit_cpu: str = "1"
    default_limit_memory: str = "1Gi"
    max_cpu: str = "16"
    max_memory: str = "64Gi"


@dataclass(frozen=True)
class PlatformNamespaceArgs:
    """One namespace. Defaults: restricted PSA, no quota, nothing allowed beyond DNS and
    same-namespace traffic."""

    name: str
    tenant: str  # "team" or "platform": the value of `strata.dev/tenant`
    pod_security: PodSecurityLevel = PodSecurityLevel.RESTRICTED
    labels: Mapping[str, str] = field(default_factory=dict)  # e.g. istio-injection
    ingress_from: tuple[Peer, ...] = ()
    egress_to: tuple[Peer, ...] = ()
    quota: Optional[QuotaArgs] = None
    limit_range: Optional[LimitRangeArgs] = None


class PlatformNamespace(pulumi.ComponentResource):
    """Namespace + PSA labels + default-deny and explicit-allow NetworkPolicies (+ quota)."""

    def __init__(self, name: str, args: PlatformNamespaceArgs, after: Sequence[pulumi.Resource] = (),
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:platform:PlatformNamespace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(after))  # e.g. node groups
        ns = args.name
        self.name = ns
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-ns",
            metadata={
                "name": ns,
                "labels": {
                    **pod_security_labels(args.pod_security),
                    TENANT_LABEL: args.tenant,
                    "app.kubernetes.io/part-of": "strata",
                    "app.kubernetes.io/managed-by": "pulumi",
                    **args.labels,
                },
            },
            opts=child,
        )
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])

        def policy(role: str, policy_name: str, spec: dict[str, Any]) -> k8s.networking.v1.NetworkPolicy:
            return k8s.networking.v1.NetworkPolicy(
                f"{name}-{role}", metadata={"name": policy_name, "namespace": ns}, spec=spec, opts=in_ns)

        # Deny everything not allowed below (NetworkPolicies are additive allows).
        self.default_deny = policy("default-deny", "default-deny",
                                   {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
        # The explicit allows, in one policy: DNS, same-namespace traffic, and the peers
        # listed in the args (one policy instead of five keeps the plan small and fast).
        dns = {
            "to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        }
        self.allow = policy("allow", "allow-explicit", {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}}]}, *(_rule(peer, "from") for peer in args.ingress_from)],
            "egress": [dns, {"to": [{"podSelector": {}}]}, *(_rule(peer, "to") for peer in args.egress_to)],
        })

        if args.quota is not None:
            q = args.quota
            k8s.core.v1.ResourceQuota(f"{name}-quota", metadata={"name": "team-quota", "namespace": ns}, spec={"hard": {
                "requests.cpu": q.requests_cpu,
                "requests.memory": q.requests_memory,
                "limits.cpu": q.limits_cpu,
                "limits.memory": q.limits_memory,
                "requests.nvidia.com/gpu": str(q.gpus),
                "pods": str(q.pods),
                "persistentvolumeclaims": str(q.persistent_volume_claims),
                "requests.storage": q.storage,
                "services.loadbalancers": str(q.load_balancers),
                "services.nodeports": str(q.node_ports),
            }}, opts=in_ns)
        if args.limit_range is not None:
            lr = args.limit_range
            k8s.core.v1.LimitRange(f"{name}-limits", metadata={"name": "team-limits", "namespace": ns}, spec={"limits": [{
                "type": "Container",
                "defaultRequest": {"cpu": lr.default_request_cpu, "memory": lr.default_request_memory},
                "default": {"cpu": lr.default_limit_cpu, "memory": lr.default_limit_memory},
                "max": {"cpu": lr.max_cpu, "memory": lr.max_memory},
            }]}, opts=in_ns)

        self.register_outputs({"name": ns})


def _rule(peer: Peer, direction: str) -> dict[str, Any]:
    rendered = peer.render()
    rule: dict[str, Any] = {direction: rendered["peers"]}
    if "ports" in rendered:
        rule["ports"] = rendered["ports"]
    return rule
