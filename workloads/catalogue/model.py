"""The typed shape of one workload declaration (Score's workload file, as pydantic).

A `Workload` says what runs and what it needs, never where: no host names, no local port
numbers, no namespaces. Renderers (`workloads.local.catalogue` for the supervisor,
`infra.workloads` for the cluster) turn it into processes or Kubernetes objects, resolving
its `${...}` placeholders through `workloads.catalogue.substitution`.

Every model is frozen and refuses unknown fields, so a typo in a declaration fails where
the catalogue is built, naming the field.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from workloads.catalogue.substitution import placeholders

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# IANA_SVC_NAME, what Kubernetes requires of a port name: <= 15 characters, starts with a letter.
PORT_NAME = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
METRICS_SUFFIX = "-metrics"

Name = Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)]
PortName = Annotated[str, StringConstraints(pattern=PORT_NAME, max_length=15)]
Duration = Annotated[str, StringConstraints(pattern=r"^[0-9]+(ms|s|m|h)$")]

PART_OF = "strata"
WORKLOAD_LABEL = "strata.dev/workload"  # the catalogue entry an object was rendered from


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Placement(str, enum.Enum):
    """Which namespace a workload lands in on the cluster (locally: all share loopback)."""

    TEAM = "team"  # the model's team namespace
    MONITORING = "monitoring"  # the platform's monitoring namespace
    MLFLOW = "mlflow"  # the tracking server's own namespace


class Port(Frozen):
    """A named port the workload listens on. `port` is the container port on the cluster;
    locally the supervisor's port table decides the number (same name, other number)."""

    name: PortName
    port: int = Field(ge=1024, le=65535)
    protocol: Literal["TCP"] = "TCP"
    app_protocol: Literal["http", "grpc", "kafka"] = "http"


class HttpProbe(Frozen):
    path: str = Field(pattern=r"^/")
    port: PortName  # a name from `ports`
    initial_delay_s: int = Field(10, ge=0)
    period_s: int = Field(10, ge=1)
    failures: int = Field(3, ge=1)


class Metrics(Frozen):
    """Where the workload's Prometheus metrics are. The port is named `*-metrics` (one generic
    scrape rule finds them), unless the metrics share the traffic port, which must be said."""

    port: PortName
    path: str = Field("/metrics", pattern=r"^/")
    interval: Duration = "30s"
    job: Name | None = None  # the Prometheus job; default: the workload's name
    on_traffic_port: bool = False  # e.g. the Seldon wrapper: contract metrics on the REST port

    @model_validator(mode="after")
    def _named(self) -> "Metrics":
        if not self.port.endswith(METRICS_SUFFIX) and not self.on_traffic_port:
            raise ValueError(f"metrics.port {self.port!r}: name the metrics port '*{METRICS_SUFFIX}' "
                             "(or set on_traffic_port when the metrics share the traffic port)")
        return self


class Dependency(Frozen):
    """An edge to another workload's named port (Score's `{workload, port}`): it resolves to
    host:port for each target, and on the cluster becomes an egress/ingress NetworkPolicy pair."""

    workload: Name
    port: PortName


class Resource(Frozen):
    """Something the workload uses that is not a catalogue workload (Score's `resources`):
    each renderer provisions it and exposes outputs to `${resources.<name>.<output>}`."""

    type: Literal["kafka", "model-registry", "model-version", "prometheus", "kubernetes-api", "state",
                  "object-store", "feature-store"]
    params: dict[str, str] = Field(default_factory=dict)


class SecretRef(Frozen):
    secret: Name
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$")


class EnvVar(Frozen):
    """A plain value (placeholders allowed) or a key of a Secret, never both."""

    name: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    value: str | None = None
    secret: SecretRef | None = None

    @model_validator(mode="after")
    def _one(self) -> "EnvVar":
        if (self.value is None) == (self.secret is None):
            raise ValueError(f"env {self.name}: set exactly one of value, secret")
        return self


class Resources(Frozen):
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str = "500m"
    memory_limit: str = "256Mi"


class Disruption(Frozen):
    """Voluntary disruptions: a PDB exists only when `replicas > 1` (one replica cannot keep
    any available while being moved)."""

    max_unavailable: int = Field(1, ge=1)


class Workload(Frozen):
    """One workload, declared once. See the module docstring and `workloads.catalogue`."""

    name: Name
    component: Name  # app.kubernetes.io/component: what kind of workload this is
    description: str
    image: str  # a key of infra.platform.charts.IMAGES (the image that carries `command`)
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    placement: Placement = Placement.TEAM
    replicas: int = Field(1, ge=0)
    singleton: bool = False  # never two at once (Recreate): its state is this one process
    ports: tuple[Port, ...] = ()
    liveness: HttpProbe | None = None
    readiness: HttpProbe | None = None
    metrics: Metrics | None = None
    depends_on: tuple[Dependency, ...] = ()
    resources_used: dict[Name, Resource] = Field(default_factory=dict)
    env: tuple[EnvVar, ...] = ()
    resources: Resources = Resources()
    disruption: Disruption = Disruption()
    labels: dict[str, str] = Field(default_factory=dict)  # identity beyond the name: model, team
    start_timeout_s: float = 60.0
    # Who builds the pod on the cluster when it is not a plain Deployment (e.g. "SeldonDeployment"):
    # the cluster renderer then adds Service, ServiceMonitor and NetworkPolicies around the
    # pods of `pod_selector`, and leaves the pod template to that owner.
    pod_owner: str | None = None
    pod_selector: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "Workload":
        names = [p.name for p in self.ports]
        if len(set(names)) != len(names):
            raise ValueError(f"workload {self.name}: duplicate port names {names}")
        for where, probe in (("liveness", self.liveness), ("readiness", self.readiness)):
            if probe is not None and probe.port not in names:
                raise ValueError(f"workload {self.name}: {where}.port {probe.port!r} is not one of ports {names}")
        if self.metrics is not None and self.metrics.port not in names:
            raise ValueError(f"workload {self.name}: metrics.port {self.metrics.port!r} is not one of ports {names}")
        if self.singleton and self.replicas > 1:
            raise ValueError(f"workload {self.name}: a singleton runs one replica, not {self.replicas}")
        if self.pod_owner and not self.pod_selector:
            raise ValueError(f"workload {self.name}: pod_owner {self.pod_owner!r} needs pod_selector")
        for text in (*self.command, *self.args, *(e.value for e in self.env if e.value)):
            for kind, target, _ in placeholders(text):
                if kind == "resources" and target not in self.resources_used:
                    raise ValueError(f"workload {self.name}: ${{resources.{target}...}} names no entry of "
                                     f"resources_used ({sorted(self.resources_used)})")
                if kind == "workloads" and target not in {d.workload for d in self.depends_on}:
                    raise ValueError(f"workload {self.name}: ${{workloads.{target}...}} is not in depends_on")
        return self

    def port(self, name: str) -> Port:
        for p in self.ports:
            if p.name == name:
                return p
        raise KeyError(f"workload {self.name}: no port {name!r} (has {[p.name for p in self.ports]})")

    @property
    def selector_labels(self) -> dict[str, str]:
        """The pods' identity: name + instance (kube-prometheus: common labels minus version)."""
        if self.pod_selector:
            return dict(self.pod_selector)
        return {"app.kubernetes.io/name": self.name, "app.kubernetes.io/instance": self.name}

    @property
    def common_labels(self) -> dict[str, str]:
        return {**self.labels, **self.selector_labels, "app.kubernetes.io/component": self.component,
                "app.kubernetes.io/part-of": PART_OF, WORKLOAD_LABEL: self.name}

    @property
    def job(self) -> str | None:
        return (self.metrics.job or self.name) if self.metrics else None


