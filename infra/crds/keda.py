"""KEDA custom resources: `ScaledObject` and `TriggerAuthentication` (`keda.sh/v1alpha1`).

Mirrors the CRDs of KEDA **2.20.2** (the chart pinned in `infra.platform.charts`),
`config/crd/bases/keda.sh_{scaledobjects,triggerauthentications}.yaml` of
kedacore/keda at v2.20.2 (the same files `infra.plan.schemas` validates rendered objects
against); reference: https://keda.sh/docs/2.20/reference/scaledobject-spec/ and
https://keda.sh/docs/2.20/scalers/apache-kafka/. Only the properties the platform sets
are modelled; bounds and enums are the CRD's.

Trigger `metadata` is a map of strings in the CRD: `KafkaTrigger` types the Kafka
scaler's parameters and renders them as strings, so a threshold cannot be misspelt or
silently left at KEDA's default.
"""

from __future__ import annotations

import enum
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field, model_validator

from infra.crds import CrdModel, ObjectMeta, custom_resource

API_VERSION = "keda.sh/v1alpha1"
OPERATOR_VERSION = "2.20.2"


class ScaleTargetRef(CrdModel):
    name: str = Field(min_length=1)
    api_version: str | None = None
    kind: str | None = None
    env_source_container_name: str | None = None


class AuthenticationRef(CrdModel):
    name: str
    kind: Literal["TriggerAuthentication", "ClusterTriggerAuthentication"] | None = None


class MetricType(str, enum.Enum):
    VALUE = "Value"
    AVERAGE_VALUE = "AverageValue"
    UTILIZATION = "Utilization"


class ScaleTrigger(CrdModel):
    type: str
    metadata: dict[str, str]
    name: str | None = None
    authentication_ref: AuthenticationRef | None = None
    metric_type: MetricType | None = None
    use_cached_metrics: bool | None = None


class KafkaTrigger(CrdModel):
    """The `kafka` scaler's parameters (rendered into a `ScaleTrigger`'s string metadata)."""

    bootstrap_servers: str
    consumer_group: str
    topic: str
    lag_threshold: int = Field(ge=1)
    activation_lag_threshold: int = Field(ge=0)
    offset_reset_policy: Literal["earliest", "latest"] = "earliest"  # = the stream worker's auto_offset_reset
    allow_idle_consumers: bool = False  # never more consumers than partitions
    scale_to_zero_on_invalid_offset: bool = False
    exclude_persistent_lag: bool = False
    tls: Literal["enable", "disable"] = "disable"
    sasl: Literal["none", "plaintext", "scram_sha256", "scram_sha512", "oauthbearer", "gssapi"] = "none"

    def trigger(self, name: str, authentication: AuthenticationRef | None) -> ScaleTrigger:
        def text(value: object) -> str:
            return str(value).lower() if isinstance(value, bool) else str(value)

        return ScaleTrigger(type="kafka", name=name, authentication_ref=authentication,
                            metadata={key: text(value) for key, value in self.render().items()})


class PrometheusTrigger(CrdModel):
    """The `prometheus` scaler's parameters: KEDA's HPA divides the query's value by
    `threshold` (an AverageValue target) to get the replicas it wants."""

    server_address: str = Field(pattern=r"^https?://")
    query: str = Field(min_length=1)
    threshold: float = Field(gt=0)

    def trigger(self, name: str) -> ScaleTrigger:
        return ScaleTrigger(type="prometheus", name=name, metadata={
            "serverAddress": self.server_address, "query": self.query, "threshold": f"{self.threshold:g}"})


def cpu_trigger(name: str, utilization_percent: int) -> ScaleTrigger:
    """The `cpu` scaler (the pods' CPU requests are the 100%)."""
    return ScaleTrigger(type="cpu", name=name, metric_type=MetricType.UTILIZATION,
                        metadata={"value": str(utilization_percent)})


class Fallback(CrdModel):
    failure_threshold: int = Field(ge=0)
    replicas: int = Field(ge=0)


class Advanced(CrdModel):
    horizontal_pod_autoscaler_config: dict | None = None  # {name?, behavior: autoscaling/v2 behavior}
    restore_to_original_replica_count: bool | None = None


class ScaledObjectSpec(CrdModel):
    scale_target_ref: ScaleTargetRef
    triggers: list[ScaleTrigger] = Field(min_length=1)
    min_replica_count: int | None = Field(None, ge=0)
    max_replica_count: int | None = Field(None, ge=1)
    idle_replica_count: int | None = Field(None, ge=0)
    polling_interval: int | None = Field(None, ge=1)
    cooldown_period: int | None = Field(None, ge=0)
    fallback: Fallback | None = None
    advanced: Advanced | None = None

    @model_validator(mode="after")
    def _bounds(self) -> "ScaledObjectSpec":
        low, high = self.min_replica_count, self.max_replica_count
        if low is not None and high is not None and low > high:
            raise ValueError(f"minReplicaCount ({low}) > maxReplicaCount ({high})")
        if self.idle_replica_count is not None and low is not None and self.idle_replica_count >= low:
            raise ValueError(f"idleReplicaCount ({self.idle_replica_count}) must be < minReplicaCount ({low})")
        return self


class SecretTargetRef(CrdModel):
    parameter: str
    name: str
    key: str


class TriggerAuthenticationSpec(CrdModel):
    secret_target_ref: list[SecretTargetRef] = Field(min_length=1)


def scaled_object(resource_name: str, *, name: str, namespace: str, spec: ScaledObjectSpec, operator: pulumi.Resource,
                  labels: dict[str, str] | None = None,
                  opts: pulumi.ResourceOptions | None = None) -> k8s.apiextensions.CustomResource:
    """A `ScaledObject`: KEDA creates and drives the HPA of `spec.scaleTargetRef`."""
    return custom_resource(resource_name, api_version=API_VERSION, kind="ScaledObject",
                           metadata=ObjectMeta(name=name, namespace=namespace, labels=labels),
                           spec=spec, operator=operator, opts=opts)


def trigger_authentication(resource_name: str, *, name: str, namespace: str, spec: TriggerAuthenticationSpec,
                           operator: pulumi.Resource, labels: dict[str, str] | None = None,
                           opts: pulumi.ResourceOptions | None = None) -> k8s.apiextensions.CustomResource:
    """A namespaced `TriggerAuthentication` (secrets of its own namespace only)."""
    return custom_resource(resource_name, api_version=API_VERSION, kind="TriggerAuthentication",
                           metadata=ObjectMeta(name=name, namespace=namespace, labels=labels),
                           spec=spec, operator=operator, opts=opts)
