"""Kubernetes helpers for the policy pack: type tokens, plain-data access, ONE pod-spec extractor.

Every function here reads resource properties as the Pulumi engine hands them to a policy
(camelCase input names, `Mapping`/`Sequence` proxies in the engine, plain dicts/lists in the
offline plan) -- never `isinstance(x, dict)`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_EMPTY: Mapping[str, Any] = {}


def is_map(value: Any) -> bool:
    return isinstance(value, Mapping)


def is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


def as_list(value: Any) -> Sequence[Any]:
    return value if is_list(value) else ()


def is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def as_int(value: Any) -> int | None:
    """Engine numbers arrive as floats (443.0); strings stay strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def k8s_gvk(resource_type: str) -> tuple[str, str, str] | None:
    """`kubernetes:apps/v1:Deployment` -> ("apps", "v1", "Deployment"); None for non-Kubernetes tokens."""
    parts = resource_type.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes" or "/" not in parts[1]:
        return None
    group, version = parts[1].rsplit("/", 1)
    return group, version, parts[2]


def k8s_kind(resource_type: str) -> tuple[str, str] | None:
    """(group, kind) of a Kubernetes type token, version-independent (CRDs move v1beta2 -> v1)."""
    gvk = k8s_gvk(resource_type)
    return (gvk[0], gvk[2]) if gvk else None


def metadata(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_map(props.get("metadata"))


def object_name(props: Mapping[str, Any], logical_name: str) -> str:
    """metadata.name, else the logical name (Pulumi auto-names from it)."""
    name = metadata(props).get("name")
    return name if isinstance(name, str) and name else logical_name


def object_namespace(props: Mapping[str, Any]) -> str:
    namespace = metadata(props).get("namespace")
    return namespace if isinstance(namespace, str) and namespace else "default"


def labels_match(selector_labels: Mapping[str, Any], pod_labels: Mapping[str, Any]) -> bool:
    """A non-empty matchLabels selector selects pods carrying all of its labels."""
    return bool(selector_labels) and all(pod_labels.get(k) == v for k, v in selector_labels.items())


# ---------------------------------------------------------------------------------------------
# Pod specs: the one extractor every workload policy uses.
# ---------------------------------------------------------------------------------------------

# Workloads that run until told to stop: they need probes, and with >1 replica a PDB.
LONG_RUNNING_KINDS = frozenset(
    {
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ReplicaSet"),
        ("machinelearning.seldon.io", "SeldonDeployment"),
    }
)

# (group, kind) -> property paths (lists of keys) of the pod *template* (metadata + spec).
_TEMPLATE_PATHS: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("apps", "Deployment"): (("spec", "template"),),
    ("apps", "StatefulSet"): (("spec", "template"),),
    ("apps", "DaemonSet"): (("spec", "template"),),
    ("apps", "ReplicaSet"): (("spec", "template"),),
    ("batch", "Job"): (("spec", "template"),),
    ("batch", "CronJob"): (("spec", "jobTemplate", "spec", "template"),),
    ("core", "PodTemplate"): (("template",),),
    ("keda.sh", "ScaledJob"): (("spec", "jobTargetRef", "template"),),
}


@dataclass(frozen=True)
class PodSpecRef:
    """One pod spec embedded in a resource, with where it sits and the labels its pods get."""

    path: str  # property path of the PodSpec, e.g. "spec.template.spec"
    spec: Mapping[str, Any]
    labels: Mapping[str, Any] = field(default_factory=dict)
    long_running: bool = False


@dataclass(frozen=True)
class ContainerRef:
    path: str  # e.g. "spec.template.spec.containers[0]"
    container: Mapping[str, Any]
    pod: PodSpecRef
    init: bool = False

    @property
    def name(self) -> str:
        name = self.container.get("name")
        return name if isinstance(name, str) else "?"


def _dig(value: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        value = as_map(value).get(key)
    return value


def _template_ref(template: Any, path: str, long_running: bool, extra_labels: Mapping[str, Any] | None = None) -> PodSpecRef | None:
    template = as_map(template)
    spec = template.get("spec")
    if not is_map(spec):
        return None
    labels = dict(as_map(metadata(template).get("labels")))
    labels.update(extra_labels or {})
    return PodSpecRef(path=f"{path}.spec", spec=spec, labels=labels, long_running=long_running)


def _ray_cluster_spec_refs(cluster_spec: Any, path: str, long_running: bool) -> Iterator[PodSpecRef]:
    cluster_spec = as_map(cluster_spec)
    head = _template_ref(_dig(cluster_spec, ("headGroupSpec", "template")), f"{path}.headGroupSpec.template", long_running)
    if head:
        yield head
    for i, group in enumerate(as_list(cluster_spec.get("workerGroupSpecs"))):
        ref = _template_ref(as_map(group).get("template"), f"{path}.workerGroupSpecs[{i}].template", long_running)
        if ref:
            yield ref


def _seldon_refs(props: Mapping[str, Any]) -> Iterator[PodSpecRef]:
    sdep_name = metadata(props).get("name")
    for i, predictor in enumerate(as_list(as_map(props.get("spec")).get("predictors"))):
        predictor = as_map(predictor)
        for j, component in enumerate(as_list(predictor.get("componentSpecs"))):
            component = as_map(component)
            spec = component.get("spec")
            if not is_map(spec):
                continue
            labels: dict[str, Any] = dict(as_map(predictor.get("labels")))
            labels.update(as_map(metadata(component).get("labels")))
            if isinstance(sdep_name, str):
                labels["seldon-deployment-id"] = sdep_name  # set by the Seldon operator on every pod
            yield PodSpecRef(
                path=f"spec.predictors[{i}].componentSpecs[{j}].spec", spec=spec, labels=labels, long_running=True
            )


def pod_specs(resource_type: str, props: Mapping[str, Any]) -> list[PodSpecRef]:
    """Every pod spec a resource embeds: core workloads, CronJob, KEDA ScaledJob, Seldon, KubeRay."""
    kind = k8s_kind(resource_type)
    if kind is None:
        return []
    long_running = kind in LONG_RUNNING_KINDS
    if kind == ("core", "Pod"):
        spec = props.get("spec")
        return [PodSpecRef("spec", spec, dict(as_map(metadata(props).get("labels"))), True)] if is_map(spec) else []
    if kind in _TEMPLATE_PATHS:
        refs = []
        for keys in _TEMPLATE_PATHS[kind]:
            ref = _template_ref(_dig(props, keys), ".".join(keys), long_running)
            if ref:
                refs.append(ref)
        return refs
    if kind == ("machinelearning.seldon.io", "SeldonDeployment"):
        return list(_seldon_refs(props))
    if kind[0] == "ray.io":
        spec = as_map(props.get("spec"))
        if kind[1] == "RayJob":
            return list(_ray_cluster_spec_refs(spec.get("rayClusterSpec"), "spec.rayClusterSpec", False))
        if kind[1] == "RayCluster":
            return list(_ray_cluster_spec_refs(spec, "spec", True))
        if kind[1] == "RayService":
            return list(_ray_cluster_spec_refs(spec.get("rayClusterConfig"), "spec.rayClusterConfig", True))
    return []


def containers(pod: PodSpecRef, include_init: bool = True) -> Iterator[ContainerRef]:
    for i, container in enumerate(as_list(pod.spec.get("containers"))):
        if is_map(container):
            yield ContainerRef(f"{pod.path}.containers[{i}]", container, pod, init=False)
    if include_init:
        for i, container in enumerate(as_list(pod.spec.get("initContainers"))):
            if is_map(container):
                yield ContainerRef(f"{pod.path}.initContainers[{i}]", container, pod, init=True)


def all_containers(resource_type: str, props: Mapping[str, Any], include_init: bool = True) -> Iterator[ContainerRef]:
    for pod in pod_specs(resource_type, props):
        yield from containers(pod, include_init)


def effective_security(ref: ContainerRef, key: str) -> tuple[Any, str]:
    """A securityContext field as the kubelet resolves it: container first, then the pod.

    Returns (value, property path it came from, or the container path it should be set at)."""
    container_sc = as_map(ref.container.get("securityContext"))
    if key in container_sc and container_sc.get(key) is not None:
        return container_sc.get(key), f"{ref.path}.securityContext.{key}"
    pod_sc = as_map(ref.pod.spec.get("securityContext"))
    if key in pod_sc and pod_sc.get(key) is not None:
        return pod_sc.get(key), f"{ref.pod.path}.securityContext.{key}"
    return None, f"{ref.path}.securityContext.{key}"
