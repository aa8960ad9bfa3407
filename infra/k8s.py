"""Shared Kubernetes building blocks for every layer (platform, models, ...).

Manifests are written as plain camelCase dicts (exactly what the API server sees and
what the offline plan records), built by the small functions below so that every
workload in the repository gets the same hardening:

- `restricted_container_security_context()`: the Pod Security Standard "restricted"
  profile for a container (non-root, read-only root filesystem, no privilege escalation,
  ALL capabilities dropped, seccomp RuntimeDefault);
- `restricted_pod_security_context()`: the pod-level half of the same profile;
- `resources()`: requests AND limits, always both;
- `http_probe()` / `tcp_probe()` / `exec_probe()`: liveness/readiness probes;
- `labels()` / `selector_labels()`: the recommended `app.kubernetes.io/*` labels;
- `PodSecurityLevel` + `pod_security_labels()`: Pod Security Admission namespace labels;
- `container()`: a container with all of the above required, so nobody can forget one.
"""

from __future__ import annotations

import enum
from typing import Any, Mapping, Sequence

PART_OF = "strata"
MANAGED_BY = "pulumi"

# Label put on every namespace this program creates; NetworkPolicies select peers by it.
TENANT_LABEL = "strata.dev/tenant"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace

# UID/GID used for our own images (a high, non-system id; images must not need root).
DEFAULT_UID = 10001


class PodSecurityLevel(str, enum.Enum):
    """Pod Security Standards levels (`pod-security.kubernetes.io/enforce`)."""

    RESTRICTED = "restricted"
    BASELINE = "baseline"
    PRIVILEGED = "privileged"


POD_SECURITY_VERSION = "latest"


def pod_security_labels(enforce: PodSecurityLevel) -> dict[str, str]:
    """PSA labels. `warn`/`audit` are always `restricted`, so a relaxed namespace still
    reports every pod that would fail the strict profile."""
    return {
        "pod-security.kubernetes.io/enforce": enforce.value,
        "pod-security.kubernetes.io/enforce-version": POD_SECURITY_VERSION,
        "pod-security.kubernetes.io/warn": PodSecurityLevel.RESTRICTED.value,
        "pod-security.kubernetes.io/warn-version": POD_SECURITY_VERSION,
        "pod-security.kubernetes.io/audit": PodSecurityLevel.RESTRICTED.value,
        "pod-security.kubernetes.io/audit-version": POD_SECURITY_VERSION,
    }


def labels(name: str, component: str | None = None, *, instance: str | None = None,
           version: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Recommended labels (`app.kubernetes.io/*`)."""
    result = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance or name,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    if component:
        result["app.kubernetes.io/component"] = component
    if version:
        result["app.kubernetes.io/version"] = version
    if extra:
        result.update(extra)
    return result


def selector_labels(name: str, instance: str | None = None) -> dict[str, str]:
    """The immutable subset of `labels()` used in selectors."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": instance or name}


def restricted_container_security_context(run_as_user: int | None = None,
                                          read_only_root_filesystem: bool = True) -> dict[str, Any]:
    """Container securityContext satisfying the PSS "restricted" profile."""
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root_filesystem,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if run_as_user is not None:
        context["runAsUser"] = run_as_user
        context["runAsGroup"] = run_as_user
    return context


def restricted_pod_security_context(run_as_user: int = DEFAULT_UID, fs_group: int | None = None) -> dict[str, Any]:
    """Pod securityContext satisfying the PSS "restricted" profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_user,
        "fsGroup": fs_group if fs_group is not None else run_as_user,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(cpu_request: str, memory_request: str, cpu_limit: str | None = None,
              memory_limit: str | None = None) -> dict[str, dict[str, str]]:
    """Requests and limits, always both. Limits default to the requests (Guaranteed QoS)."""
    return {
        "requests": {"cpu": cpu_request, "memory": memory_request},
        "limits": {"cpu": cpu_limit or cpu_request, "memory": memory_limit or memory_request},
    }


def _probe(handler: dict[str, Any], initial_delay: int, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        **handler,
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def http_probe(path: str, port: int | str, *, initial_delay: int = 10, period: int = 10, timeout: int = 3,
               failures: int = 3, host_header: str | None = None) -> dict[str, Any]:
    get: dict[str, Any] = {"path": path, "port": port, "scheme": "HTTP"}
    if host_header:
        get["httpHeaders"] = [{"name": "Host", "value": host_header}]
    return _probe({"httpGet": get}, initial_delay, period, timeout, failures)


def tcp_probe(port: int | str, *, initial_delay: int = 10, period: int = 10, timeout: int = 3,
              failures: int = 3) -> dict[str, Any]:
    return _probe({"tcpSocket": {"port": port}}, initial_delay, period, timeout, failures)


def exec_probe(command: Sequence[str], *, initial_delay: int = 10, period: int = 10, timeout: int = 5,
               failures: int = 3) -> dict[str, Any]:
    return _probe({"exec": {"command": list(command)}}, initial_delay, period, timeout, failures)


def container(*, name: str, image: str | Any, resources: Mapping[str, Any], liveness_probe: Mapping[str, Any],
              readiness_probe: Mapping[str, Any], run_as_user: int | None = None, **fields: Any) -> dict[str, Any]:
    """A container with requests/limits, probes and the restricted securityContext all
    required. Extra camelCase fields (`args`, `env`, `ports`, `volumeMounts`, ...) pass through."""
    check_image_pinned(image)
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": dict(resources),
        "livenessProbe": dict(liveness_probe),
        "readinessProbe": dict(readiness_probe),
        "securityContext": restricted_container_security_context(run_as_user),
        **fields,
    }


def check_image_pinned(image: Any) -> None:
    """Images are pinned by tag or digest; `:latest` and untagged images are refused."""
    if not isinstance(image, str):  # an Output (e.g. an ECR URL): checked where it is built
        return
    if "@sha256:" in image:
        return
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        raise ValueError(f"image {image!r} is not pinned: add a tag or digest")
    if last.rsplit(":", 1)[1] == "latest":
        raise ValueError(f"image {image!r} uses ':latest'; pin a version")


def pod_disruption_budget_spec(selector: Mapping[str, str], *, max_unavailable: int = 1) -> dict[str, Any]:
    return {
        "maxUnavailable": max_unavailable,
        "selector": {"matchLabels": dict(selector)},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


def topology_spread(selector: Mapping[str, str], key: str = "topology.kubernetes.io/zone") -> list[dict[str, Any]]:
    """Spread replicas across zones (best effort)."""
    return [{
        "maxSkew": 1,
        "topologyKey": key,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": dict(selector)},
    }]


def empty_dir(name: str, size_limit: str = "64Mi", medium: str | None = None) -> dict[str, Any]:
    """A writable scratch volume (the root filesystem is read-only)."""
    source: dict[str, Any] = {"sizeLimit": size_limit}
    if medium:
        source["medium"] = medium
    return {"name": name, "emptyDir": source}


# The hardening block for Helm values of upstream charts that expose the usual keys.
HELM_POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
HELM_CONTAINER_SECURITY_CONTEXT = restricted_container_security_context()
