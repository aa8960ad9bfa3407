"""KubeRay custom resources: `RayJob` (the one kind the platform creates).

Mirrors the `ray.io/v1` RayJob served by KubeRay **1.6.0** (the `kuberay-operator` chart
pinned in `infra.platform.charts`): the Go types `RayJobSpec`, `RayClusterSpec`,
`HeadGroupSpec` and `WorkerGroupSpec` in `ray-operator/apis/ray/v1/rayjob_types.go` and
`raycluster_types.go` of ray-project/kuberay at tag v1.6.0, from which the CRD
`ray-operator/config/crd/bases/ray.io_rayjobs.yaml` is generated; API reference:
https://ray-project.github.io/kuberay/reference/api/ (RayJob, v1). Only the properties
the platform sets are modelled; the enum, the minimums and the rules below are those of
the CRD and of the operator's admission checks (`controllers/ray/utils/validation.go`:
a RayJob name of at most 47 characters, `minReplicas <= replicas <= maxReplicas`, a
positive `activeDeadlineSeconds`, a TTL only with `shutdownAfterJobFinishes`, no
submitter pod template outside `K8sJobMode`).

Pod templates are Kubernetes `PodTemplateSpec`s and stay plain camelCase dicts (built
with `infra.k8s`'s hardened helpers); the tests validate the rendered object against the
real CRD schema of 1.6.0.

Values only known at deploy time (an ECR repository URL, a bucket name, the MLflow URI)
are written into the typed model as `{{key}}` markers and filled in from `values` by
`ray_job()` / `manifest()` after validation, so the model never holds a `pulumi.Output`.

`manifest()` renders the object for something other than Pulumi to create (a ConfigMap
that a CronJob or the retraining trigger copies): with a fixed `name`, or with a
`generate_name` prefix so that every `kubectl create` makes a new RayJob.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any, Mapping

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field, model_validator

from infra.crds import CrdModel, ObjectMeta, custom_resource

API_VERSION = "ray.io/v1"
OPERATOR_VERSION = "1.6.0"
KIND = "RayJob"
# utils.MaxRayJobNameLength = MaxRayClusterNameLength (53) - 6: the RayCluster gets a suffix.
MAX_RAYJOB_NAME_LENGTH = 47
# The API server appends 5 random characters to `metadata.generateName`
# (k8s.io/apiserver's names.SimpleNameGenerator).
GENERATED_SUFFIX_LENGTH = 5


class SubmissionMode(str, enum.Enum):
    """`RayJobSpec.submissionMode` (`JobSubmissionMode`)."""

    K8S_JOB = "K8sJobMode"  # a submitter Kubernetes Job runs `ray job submit` (the CRD default)
    HTTP = "HTTPMode"  # the operator posts the job to the head's dashboard (:8265); no submitter pod
    INTERACTIVE = "InteractiveMode"  # the operator waits for a user to submit
    SIDECAR = "SidecarMode"  # a submitter container injected into the head pod


class HeadGroupSpec(CrdModel):
    ray_start_params: dict[str, str] = Field(default_factory=dict)
    template: dict[str, Any]  # PodTemplateSpec

    @model_validator(mode="after")
    def _one_container(self) -> "HeadGroupSpec":
        if not (self.template.get("spec") or {}).get("containers"):
            raise ValueError("headGroupSpec should have at least one container")
        return self


class WorkerGroupSpec(CrdModel):
    group_name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    replicas: int = Field(ge=0)
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=0)
    num_of_hosts: int | None = Field(None, ge=1)
    ray_start_params: dict[str, str] = Field(default_factory=dict)
    template: dict[str, Any]  # PodTemplateSpec

    @model_validator(mode="after")
    def _replicas(self) -> "WorkerGroupSpec":
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"worker group {self.group_name}: need minReplicas <= replicas <= maxReplicas, "
                             f"got {self.min_replicas}/{self.replicas}/{self.max_replicas}")
        if not (self.template.get("spec") or {}).get("containers"):
            raise ValueError(f"worker group {self.group_name}: workerGroupSpec should have at least one container")
        return self


class RayClusterSpec(CrdModel):
    ray_version: str | None = Field(None, pattern=r"^\d+\.\d+\.\d+$")
    enable_in_tree_autoscaling: bool | None = None
    head_group_spec: HeadGroupSpec
    worker_group_specs: list[WorkerGroupSpec] | None = None

    @model_validator(mode="after")
    def _unique_groups(self) -> "RayClusterSpec":
        names = [group.group_name for group in self.worker_group_specs or []]
        if len(names) != len(set(names)):
            raise ValueError(f"worker group names must be unique, got {names}")
        return self


class RayJobSpec(CrdModel):
    entrypoint: str = Field(min_length=1)
    runtime_env_yaml: str | None = Field(None, alias="runtimeEnvYAML")
    ray_cluster_spec: RayClusterSpec
    submission_mode: SubmissionMode = SubmissionMode.K8S_JOB
    backoff_limit: int | None = Field(None, ge=0)
    active_deadline_seconds: int | None = Field(None, ge=1, le=2**31 - 1)
    shutdown_after_job_finishes: bool | None = None
    ttl_seconds_after_finished: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None  # stored with the Ray job (not object metadata)
    entrypoint_num_cpus: float | None = Field(None, ge=0)
    entrypoint_num_gpus: float | None = Field(None, ge=0)
    submitter_pod_template: dict[str, Any] | None = None  # PodTemplateSpec, K8sJobMode only

    @model_validator(mode="after")
    def _operator_rules(self) -> "RayJobSpec":
        if self.ttl_seconds_after_finished and not self.shutdown_after_job_finishes:
            raise ValueError("ttlSecondsAfterFinished only applies with shutdownAfterJobFinishes: true")
        if self.submitter_pod_template is not None and self.submission_mode is not SubmissionMode.K8S_JOB:
            raise ValueError(f"submitterPodTemplate is only used in K8sJobMode, not {self.submission_mode.value}")
        if self.submission_mode is SubmissionMode.INTERACTIVE and self.backoff_limit:
            raise ValueError("backoffLimit is incompatible with InteractiveMode")
        return self


_MARKER = re.compile(r"\{\{([a-zA-Z0-9_.-]+)\}\}")


def marker(key: str) -> str:
    """The placeholder for a deploy-time value `key` inside a typed model's strings."""
    return "{{" + key + "}}"


def fill(value: Any, values: Mapping[str, pulumi.Input[str]]) -> Any:
    """`value` with every `{{key}}` marker replaced by `values[key]` (an Output where it is one)."""
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    if not isinstance(value, str) or "{{" not in value:
        return value
    parts: list[pulumi.Input[str]] = []
    position = 0
    for match in _MARKER.finditer(value):
        key = match.group(1)
        if key not in values:
            raise KeyError(f"no value for marker {match.group(0)} in {value!r}")
        parts.extend([value[position:match.start()], values[key]])
        position = match.end()
    parts.append(value[position:])
    parts = [p for p in parts if p != ""]
    if all(isinstance(p, str) for p in parts):
        return "".join(parts)  # type: ignore[arg-type]
    return parts[0] if len(parts) == 1 else pulumi.Output.concat(*parts)


def _document(*, namespace: str, spec: RayJobSpec, name: str | None, generate_name: str | None,
              labels: dict[str, str] | None) -> dict[str, Any]:
    """The whole RayJob object (apiVersion, kind, metadata, spec), markers still in place.

    Exactly one of `name` (a fixed name) and `generate_name` (a prefix the API server
    completes with 5 random characters: every create is a new object).
    """
    if (name is None) == (generate_name is None):
        raise ValueError("a RayJob manifest needs exactly one of name and generate_name")
    metadata = (_meta(name, namespace, labels) if name is not None
                else _generated_meta(generate_name, namespace, labels))  # type: ignore[arg-type]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata.render(), "spec": spec.render()}


def manifest(*, namespace: str, spec: RayJobSpec, name: str | None = None, generate_name: str | None = None,
             values: Mapping[str, pulumi.Input[str]] | None = None,
             labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The whole RayJob object with every marker filled in (Outputs where the values are)."""
    document = _document(namespace=namespace, spec=spec, name=name, generate_name=generate_name, labels=labels)
    document["spec"] = fill(document["spec"], values or {})
    return document


def manifest_json(*, namespace: str, spec: RayJobSpec, name: str | None = None, generate_name: str | None = None,
                  values: Mapping[str, pulumi.Input[str]] | None = None,
                  labels: dict[str, str] | None = None) -> pulumi.Output[str]:
    """`manifest()` as one JSON string (a ConfigMap payload), filled through ONE Output.

    `Output.json_dumps` of the filled dict would lift every nested value into an Output
    of its own; substituting the markers in the rendered text costs one apply.
    """
    values = values or {}
    text = json.dumps(_document(namespace=namespace, spec=spec, name=name, generate_name=generate_name, labels=labels))
    keys = sorted(set(_MARKER.findall(text)))
    missing = [key for key in keys if key not in values]
    if missing:
        raise KeyError(f"no value for marker(s) {', '.join(marker(k) for k in missing)}")

    def substitute(resolved: list[Any]) -> str:
        by_key = dict(zip(keys, resolved))
        return _MARKER.sub(lambda match: json.dumps(str(by_key[match.group(1)]))[1:-1], text)

    return pulumi.Output.all(*(values[key] for key in keys)).apply(substitute)


class GeneratedObjectMeta(CrdModel):
    """`metadata` of an object named by the API server from a `generateName` prefix."""

    generate_name: str = Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*)?$")
    namespace: str | None = None
    labels: dict[str, str] | None = None


def _meta(name: str, namespace: str, labels: dict[str, str] | None) -> ObjectMeta:
    if len(name) > MAX_RAYJOB_NAME_LENGTH:
        raise ValueError(f"RayJob name {name!r} is longer than {MAX_RAYJOB_NAME_LENGTH} characters (KubeRay refuses it)")
    return ObjectMeta(name=name, namespace=namespace, labels=labels)


def _generated_meta(prefix: str, namespace: str, labels: dict[str, str] | None) -> GeneratedObjectMeta:
    if len(prefix) + GENERATED_SUFFIX_LENGTH > MAX_RAYJOB_NAME_LENGTH:
        raise ValueError(f"RayJob generateName {prefix!r} leaves names longer than {MAX_RAYJOB_NAME_LENGTH} characters "
                         f"(the API server adds {GENERATED_SUFFIX_LENGTH}; KubeRay refuses them)")
    return GeneratedObjectMeta(generate_name=prefix, namespace=namespace, labels=labels)


def ray_job(resource_name: str, *, name: str, namespace: str, spec: RayJobSpec, operator: pulumi.Resource,
            values: Mapping[str, pulumi.Input[str]] | None = None, opts: pulumi.ResourceOptions | None = None,
            labels: dict[str, str] | None = None) -> k8s.apiextensions.CustomResource:
    """A `RayJob`, registered after the KubeRay operator release (its CRD provider)."""
    return custom_resource(resource_name, api_version=API_VERSION, kind=KIND,
                           metadata=_meta(name, namespace, labels),
                           spec=fill(spec.render(), values or {}), operator=operator, opts=opts)
