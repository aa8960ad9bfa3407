"""Istio custom resources: `PeerAuthentication` and `Gateway`.

Mirrors `security.istio.io/v1` PeerAuthentication and `networking.istio.io/v1`
Gateway as served by Istio **1.30.3** (the `base` chart pinned in
`infra.platform.charts`), from `manifests/charts/base/files/crd-all.gen.yaml` of
istio/istio at tag 1.30.3; API reference:
https://istio.io/v1.30/docs/reference/config/security/peer_authentication/ and
https://istio.io/v1.30/docs/reference/config/networking/gateway/ .
"""

from __future__ import annotations

import enum

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field

from infra.crds import CrdModel, ObjectMeta, custom_resource

SECURITY_API_VERSION = "security.istio.io/v1"
NETWORKING_API_VERSION = "networking.istio.io/v1"
ISTIO_VERSION = "1.30.3"


class MutualTlsMode(str, enum.Enum):
    UNSET = "UNSET"
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


class MutualTls(CrdModel):
    mode: MutualTlsMode


class WorkloadSelector(CrdModel):
    match_labels: dict[str, str] = Field(min_length=1)


class PeerAuthenticationSpec(CrdModel):
    selector: WorkloadSelector | None = None  # none: every workload in the namespace
    mtls: MutualTls
    port_level_mtls: dict[int, MutualTls] | None = None


class Port(CrdModel):
    number: int = Field(ge=1, le=4294967295)
    protocol: str  # HTTP|HTTPS|GRPC|GRPC-WEB|HTTP2|MONGO|TCP|TLS
    name: str
    target_port: int | None = None


class TlsMode(str, enum.Enum):
    PASSTHROUGH = "PASSTHROUGH"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    AUTO_PASSTHROUGH = "AUTO_PASSTHROUGH"
    ISTIO_MUTUAL = "ISTIO_MUTUAL"
    OPTIONAL_MUTUAL = "OPTIONAL_MUTUAL"


class ServerTlsSettings(CrdModel):
    mode: TlsMode | None = None
    credential_name: str | None = None
    https_redirect: bool | None = None
    min_protocol_version: str | None = None


class Server(CrdModel):
    port: Port
    hosts: list[str] = Field(min_length=1)
    name: str | None = None
    tls: ServerTlsSettings | None = None


class GatewaySpec(CrdModel):
    selector: dict[str, str]
    servers: list[Server] = Field(min_length=1)


def peer_authentication(resource_name: str, *, name: str, namespace: str, spec: PeerAuthenticationSpec,
                        operator: pulumi.Resource, opts: pulumi.ResourceOptions | None = None,
                        labels: dict[str, str] | None = None) -> k8s.apiextensions.CustomResource:
    """A `PeerAuthentication`; in the root namespace (istio-system) without a selector it is mesh-wide."""
    return custom_resource(resource_name, api_version=SECURITY_API_VERSION, kind="PeerAuthentication",
                           metadata=ObjectMeta(name=name, namespace=namespace, labels=labels),
                           spec=spec, operator=operator, opts=opts)


def gateway(resource_name: str, *, name: str, namespace: str, spec: GatewaySpec, operator: pulumi.Resource,
            opts: pulumi.ResourceOptions | None = None, labels: dict[str, str] | None = None) -> k8s.apiextensions.CustomResource:
    """An Istio `Gateway` (servers bound on the ingress gateway pods picked by `selector`)."""
    return custom_resource(resource_name, api_version=NETWORKING_API_VERSION, kind="Gateway",
                           metadata=ObjectMeta(name=name, namespace=namespace, labels=labels),
                           spec=spec, operator=operator, opts=opts)
