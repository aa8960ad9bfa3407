"""Seldon Core v1 custom resource: `SeldonDeployment` (`machinelearning.seldon.io/v1`).

Mirrors the CRD served by seldon-core-operator **1.18.2** (the chart pinned in
`infra.platform.charts`), from `operator/apis/machinelearning.seldon.io/v1/
seldondeployment_types.go` of SeldonIO/seldon-core at v1.18.2; reference:
https://docs.seldon.io/projects/seldon-core/en/v1.18.2/reference/seldon-deployment.html.
No package registry ships that CRD (see `infra.plan.schemas.CRD_SOURCES`), so these
models are the only structural check of a SeldonDeployment besides the pod specs, which
the plan validates as core/v1 PodSpecs. Only the properties the platform sets are
modelled; enums are the Go types' constants.

Predictor names are the two slots of the traffic-split contract
(`workloads.traffic.split`: `stable`, `candidate`): the builder refuses any other name,
so the rollout controller, the local proxy and the `predictor` metrics label all agree
with the cluster.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field, field_validator, model_validator

from infra.crds import CrdModel, ObjectMeta, custom_resource
from infra.crds import keda
from workloads.traffic.split import PREDICTORS

API_VERSION = "machinelearning.seldon.io/v1"
KIND = "SeldonDeployment"
OPERATOR_VERSION = "1.18.2"
DEPLOYMENT_ID_LABEL = "seldon-deployment-id"  # the operator puts it on every pod: value = the CR's name
NO_ENGINE_ANNOTATION = "seldon.io/no-engine"


class Protocol(str, enum.Enum):
    SELDON = "seldon"
    TENSORFLOW = "tensorflow"
    KFSERVING = "kfserving"
    V2 = "v2"


class EndpointType(str, enum.Enum):
    REST = "REST"
    GRPC = "GRPC"


class UnitType(str, enum.Enum):
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    ROUTER = "ROUTER"
    COMBINER = "COMBINER"
    MODEL = "MODEL"
    TRANSFORMER = "TRANSFORMER"
    OUTPUT_TRANSFORMER = "OUTPUT_TRANSFORMER"


class ParameterType(str, enum.Enum):
    INT = "INT"
    FLOAT = "FLOAT"
    DOUBLE = "DOUBLE"
    STRING = "STRING"
    BOOL = "BOOL"


class Parameter(CrdModel):
    name: str
    value: str
    type: ParameterType


class Endpoint(CrdModel):
    type: EndpointType | None = None
    http_port: int | None = Field(None, ge=1, le=65535)
    grpc_port: int | None = Field(None, ge=1, le=65535)


class PredictiveUnit(CrdModel):
    """One node of the inference graph; `name` must equal a container's name."""

    name: str
    type: UnitType | None = None
    endpoint: Endpoint | None = None
    parameters: list[Parameter] | None = None
    children: list["PredictiveUnit"] | None = None
    model_uri: str | None = None
    service_account_name: str | None = None
    env_secret_ref_name: str | None = None


class SeldonHpaSpec(CrdModel):
    """`hpaSpec`: the operator creates an autoscaling/v2 HPA for the component."""

    min_replicas: int | None = Field(None, ge=1)
    max_replicas: int = Field(ge=1)
    metricsv2: list[dict[str, Any]] | None = None  # autoscaling/v2 MetricSpec

    @model_validator(mode="after")
    def _order(self) -> "SeldonHpaSpec":
        if self.min_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"hpaSpec: minReplicas ({self.min_replicas}) > maxReplicas ({self.max_replicas})")
        return self


class SeldonKedaSpec(CrdModel):
    """`kedaSpec` (a `SeldonScaledObjectSpec`): with the operator installed with
    `keda.enabled`, it creates a KEDA ScaledObject for the component's Deployment."""

    triggers: list[keda.ScaleTrigger] = Field(min_length=1)
    min_replica_count: int | None = Field(None, ge=0)
    max_replica_count: int | None = Field(None, ge=1)
    polling_interval: int | None = Field(None, ge=1)
    cooldown_period: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _order(self) -> "SeldonKedaSpec":
        low, high = self.min_replica_count, self.max_replica_count
        if low is not None and high is not None and low > high:
            raise ValueError(f"kedaSpec: minReplicaCount ({low}) > maxReplicaCount ({high})")
        return self


class SeldonPdbSpec(CrdModel):
    min_available: int | str | None = None
    max_unavailable: int | str | None = None


class PodMetadata(CrdModel):
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class SeldonPodSpec(CrdModel):
    """`componentSpecs[]`: a pod template (core/v1 PodSpec in `spec`) plus its scaling."""

    metadata: PodMetadata | None = None
    spec: dict[str, Any]  # core/v1 PodSpec (validated as such by infra.plan.schemas)
    hpa_spec: SeldonHpaSpec | None = None
    keda_spec: SeldonKedaSpec | None = None
    pdb_spec: SeldonPdbSpec | None = None
    replicas: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_autoscaler(self) -> "SeldonPodSpec":
        if self.hpa_spec is not None and self.keda_spec is not None:
            raise ValueError("componentSpecs: hpaSpec and kedaSpec both set: two autoscalers would fight over replicas")
        return self


class PredictorSpec(CrdModel):
    name: str
    graph: PredictiveUnit
    component_specs: list[SeldonPodSpec] | None = None
    replicas: int | None = Field(None, ge=0)
    annotations: dict[str, str] | None = None
    labels: dict[str, str] | None = None
    traffic: int | None = Field(None, ge=0, le=100)
    shadow: bool | None = None
    protocol: Protocol | None = None

    @field_validator("name")
    @classmethod
    def _slot(cls, name: str) -> str:
        if name not in PREDICTORS:
            raise ValueError(f"predictor name must be one of the traffic-split slots {PREDICTORS}, got {name!r}")
        return name

    @model_validator(mode="after")
    def _containers_match_graph(self) -> "PredictorSpec":
        names = {c.get("name") for spec in self.component_specs or [] for c in spec.spec.get("containers", [])}
        if self.component_specs and self.graph.name not in names:
            raise ValueError(f"predictor {self.name!r}: graph node {self.graph.name!r} has no container of that "
                             f"name (containers: {sorted(n for n in names if n)})")
        return self


class SeldonDeploymentSpec(CrdModel):
    predictors: list[PredictorSpec] = Field(min_length=1)
    protocol: Protocol | None = None
    annotations: dict[str, str] | None = None
    transport: Literal["rest", "grpc"] | None = None

    @model_validator(mode="after")
    def _traffic(self) -> "SeldonDeploymentSpec":
        names = [p.name for p in self.predictors]
        if len(set(names)) != len(names):
            raise ValueError(f"predictor names must be unique, got {names}")
        live = [p for p in self.predictors if not p.shadow]
        if not live:
            raise ValueError("at least one predictor must take live traffic (not shadow)")
        if len(live) > 1 or any(p.traffic is not None for p in live):
            total = sum(p.traffic or 0 for p in live)
            if total != 100:
                raise ValueError(f"traffic of the non-shadow predictors must sum to 100, got {total} "
                                 f"({', '.join(f'{p.name}={p.traffic}' for p in live)})")
        return self


def seldon_deployment(resource_name: str, *, name: str, namespace: str,
                      spec: SeldonDeploymentSpec | dict[str, Any],
                      operator: pulumi.Resource, labels: dict[str, str] | None = None,
                      annotations: dict[str, str] | None = None,
                      opts: pulumi.ResourceOptions | None = None) -> k8s.apiextensions.CustomResource:
    """A `SeldonDeployment`, registered after the seldon-core-operator release (its CRD).
    `spec` is the typed model, or its `render()` with deploy-time values filled in."""
    return custom_resource(resource_name, api_version=API_VERSION, kind=KIND,
                           metadata=ObjectMeta(name=name, namespace=namespace, labels=labels, annotations=annotations),
                           spec=spec, operator=operator, opts=opts)
