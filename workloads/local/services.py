"""The service registry: a service = command + env + ports + health check + dependencies.

Built-in entries: kafka, mlflow, prometheus, alertmanager, pagerduty. The workloads that
come later (model servers, stream workers, drift monitor, retraining trigger, traffic
proxy) are more ``ServiceSpec`` entries: add them to ``builtin_services()`` or
``Registry.add()`` them before building a ``Supervisor``. For example::

    registry.add(ServiceSpec(
        name="drift-monitor", description="drift monitor (PSI/KS) over the scored stream",
        ports=("drift-monitor",),
        command=lambda ctx: [ctx.python, "-m", "workloads.monitoring.drift",
                             "--port", str(ctx.port("drift-monitor")),
                             "--bootstrap", ctx.kafka_bootstrap],
        health=HttpHealth("drift-monitor", "/healthz"),
        depends_on=("kafka", "prometheus"),
        metrics_path="/metrics",
    ))
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from workloads.local import kafka_setup, observability
from workloads.local.errors import ConfigError, MissingDependencyError, UnknownServiceError
from workloads.local.health import Health, http_check, kafka_check
from workloads.local.ports import HOST

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LocalOptions:
    """Inputs that are not ports. Paths given here replace the generated defaults."""

    prometheus_config: Path | None = None  # a complete prometheus.yml; None: generated
    rule_files: tuple[Path, ...] = ()  # rule files for the generated prometheus.yml
    alertmanager_config: Path | None = None  # None: route everything to the local PagerDuty
    cache_dir: Path | None = None  # Kafka jars; default $STRATA_CACHE_DIR or <repo>/.cache/strata
    mlflow_backend_uri: str | None = None  # default sqlite:///<state>/data/mlflow/mlflow.db

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        env = os.environ.get("STRATA_CACHE_DIR")
        return Path(env) if env else REPO_ROOT / ".cache" / "strata"

    def check(self) -> None:
        for label, path in (
            ("--prometheus-config", self.prometheus_config),
            ("--alertmanager-config", self.alertmanager_config),
            *(("--rule-file", p) for p in self.rule_files),
        ):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{label} {path}: no such file")


@dataclass
class ServiceContext:
    """What a service's callables see: its ports, folders, options and the interpreter."""

    name: str
    state_dir: Path
    ports: dict[str, int]
    options: LocalOptions
    python: str = sys.executable
    repo_root: Path = REPO_ROOT
    log: Callable[[str], None] = lambda msg: None

    def port(self, key: str) -> int:
        return self.ports[key]

    def data_dir(self, name: str | None = None) -> Path:
        return self.state_dir / "data" / (name or self.name)

    def config_dir(self, name: str | None = None) -> Path:
        return self.state_dir / "config" / (name or self.name)

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    @property
    def targets_dir(self) -> Path:
        return self.state_dir / "config" / "prometheus" / "targets"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.ports['kafka']}"


@dataclass(frozen=True)
class Requirement:
    """A binary or Python module a service needs, with the command that installs it."""

    what: str
    fix: str
    binaries: tuple[str, ...] = ()
    module: str | None = None

    def found(self) -> str | None:
        for b in self.binaries:
            path = shutil.which(b)
            if path:
                return path
        if self.module and importlib.util.find_spec(self.module) is not None:
            return self.module
        return None

    def require(self, service: str) -> str:
        found = self.found()
        if not found:
            raise MissingDependencyError(service, self.what, self.fix)
        return found


@dataclass(frozen=True)
class HttpHealth:
    port_key: str
    path: str

    def __call__(self, ctx: ServiceContext) -> Health:
        return http_check(ctx.port(self.port_key), self.path)


@dataclass(frozen=True)
class KafkaHealth:
    port_key: str = "kafka"

    def __call__(self, ctx: ServiceContext) -> Health:
        return kafka_check(ctx.port(self.port_key))


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    description: str
    ports: tuple[str, ...]  # keys of the PORTS table; the first is the service's main port
    command: Callable[[ServiceContext], list[str]]
    health: Callable[[ServiceContext], Health]
    depends_on: tuple[str, ...] = ()
    requires: tuple[Requirement, ...] = ()
    prepare: Callable[[ServiceContext], None] | None = None  # runs before each start
    env: Callable[[ServiceContext], Mapping[str, str]] | None = None  # added to os.environ
    metrics_path: str | None = None  # scraped by the local Prometheus when set
    url: Callable[[ServiceContext], str] | None = None  # what a user opens
    start_timeout_s: float = 60.0
    stop_timeout_s: float = 15.0

    def url_for(self, ctx: ServiceContext) -> str:
        return self.url(ctx) if self.url else f"http://{HOST}:{ctx.port(self.ports[0])}"


@dataclass
class Registry:
    services: dict[str, ServiceSpec] = field(default_factory=dict)

    def add(self, spec: ServiceSpec) -> ServiceSpec:
        self.services[spec.name] = spec
        return spec

    def __contains__(self, name: str) -> bool:
        return name in self.services

    def __getitem__(self, name: str) -> ServiceSpec:
        if name not in self.services:
            raise UnknownServiceError(name, list(self.services))
        return self.services[name]

    def names(self) -> list[str]:
        return list(self.services)

    def closure(self, names: Iterable[str]) -> list[str]:
        """``names`` plus their dependencies, dependencies first (stable topological order)."""
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in order:
                return
            if name in visiting:
                raise ConfigError(f"dependency cycle: {' -> '.join(path + (name,))}")
            visiting.add(name)
            for dep in self[name].depends_on:
                visit(dep, path + (name,))
            visiting.discard(name)
            order.append(name)

        for n in names:
            visit(n, ())
        return order


# --- built-in services ---------------------------------------------------------------------
PROMETHEUS_FIX = "apt-get update && apt-get install -y --no-install-recommends prometheus"
ALERTMANAGER_FIX = "apt-get update && apt-get install -y --no-install-recommends prometheus-alertmanager"
MLFLOW_FIX = f"{sys.executable} -m pip install mlflow==3.18.0  (or: pip install -e '.[workloads]')"


def _kafka_prepare(ctx: ServiceContext) -> None:
    cache = ctx.options.resolved_cache_dir()
    if not kafka_setup.jars_cached(cache):
        ctx.log(f"fetching Kafka {kafka_setup.kafka_version()} jars with Maven (first run only)")
    jars = kafka_setup.ensure_jars(cache)
    config = kafka_setup.write_config(
        ctx.config_dir(), ctx.data_dir(), ctx.port("kafka"), ctx.port("kafka-controller")
    )
    ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
    kafka_setup.ensure_formatted(jars, config, ctx.data_dir(), ctx.log_path)


def _kafka_command(ctx: ServiceContext) -> list[str]:
    jars = kafka_setup.jar_dir(ctx.options.resolved_cache_dir())
    return kafka_setup.broker_command(jars, ctx.config_dir() / "server.properties")


def _mlflow_backend(ctx: ServiceContext) -> str:
    return ctx.options.mlflow_backend_uri or f"sqlite:///{ctx.data_dir() / 'mlflow.db'}"


def _mlflow_prepare(ctx: ServiceContext) -> None:
    (ctx.data_dir() / "artifacts").mkdir(parents=True, exist_ok=True)


def _mlflow_command(ctx: ServiceContext) -> list[str]:
    return [
        ctx.python, "-m", "mlflow", "server",
        "--backend-store-uri", _mlflow_backend(ctx),
        "--artifacts-destination", str(ctx.data_dir() / "artifacts"),
        "--host", HOST, "--port", str(ctx.port("mlflow")),
        "--workers", "1",
    ]


def _prometheus_config_path(ctx: ServiceContext) -> Path:
    if ctx.options.prometheus_config:
        return Path(ctx.options.prometheus_config).resolve()
    return ctx.config_dir("prometheus") / "prometheus.yml"


def _prometheus_prepare(ctx: ServiceContext) -> None:
    ctx.data_dir().mkdir(parents=True, exist_ok=True)
    ctx.targets_dir.mkdir(parents=True, exist_ok=True)
    if not ctx.options.prometheus_config:
        observability.write_prometheus_config(
            _prometheus_config_path(ctx),
            prometheus_port=ctx.port("prometheus"),
            alertmanager_port=ctx.port("alertmanager"),
            targets_dir=ctx.targets_dir,
            rule_files=ctx.options.rule_files,
        )


def _prometheus_command(ctx: ServiceContext) -> list[str]:
    binary = shutil.which("prometheus") or "prometheus"
    return [
        binary,
        f"--config.file={_prometheus_config_path(ctx)}",
        f"--storage.tsdb.path={ctx.data_dir()}",
        f"--web.listen-address={HOST}:{ctx.port('prometheus')}",
        f"--web.external-url=http://{HOST}:{ctx.port('prometheus')}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=2d",
    ]


def _alertmanager_config_path(ctx: ServiceContext) -> Path:
    if ctx.options.alertmanager_config:
        return Path(ctx.options.alertmanager_config).resolve()
    return ctx.config_dir() / "alertmanager.yml"


def _alertmanager_prepare(ctx: ServiceContext) -> None:
    ctx.data_dir().mkdir(parents=True, exist_ok=True)
    if not ctx.options.alertmanager_config:
        observability.write_alertmanager_config(_alertmanager_config_path(ctx), ctx.port("pagerduty"))


def _alertmanager_command(ctx: ServiceContext) -> list[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager") or "alertmanager"
    return [
        binary,
        f"--config.file={_alertmanager_config_path(ctx)}",
        f"--storage.path={ctx.data_dir()}",
        f"--web.listen-address={HOST}:{ctx.port('alertmanager')}",
        f"--web.external-url=http://{HOST}:{ctx.port('alertmanager')}",
        "--cluster.listen-address=",
    ]


def _pagerduty_command(ctx: ServiceContext) -> list[str]:
    return [
        ctx.python, "-m", "workloads.local.pagerduty_receiver",
        "--host", HOST, "--port", str(ctx.port("pagerduty")),
        "--events-file", str(ctx.data_dir() / "events.jsonl"),
    ]


def _python_env(ctx: ServiceContext) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ctx.repo_root) + (os.pathsep + path if path else "")}


def builtin_services() -> list[ServiceSpec]:
    from workloads.traffic.local_proxy import proxy_service  # here: it builds on this module's ServiceSpec

    return [
        ServiceSpec(
            name="kafka",
            description=f"Apache Kafka {kafka_setup.kafka_version()} (KRaft broker+controller)",
            ports=("kafka", "kafka-controller"),
            command=_kafka_command,
            health=KafkaHealth("kafka"),
            requires=(Requirement("Java 17+ (`java`)", kafka_setup.JAVA_FIX, binaries=("java",)),),
            prepare=_kafka_prepare,
            url=lambda ctx: f"kafka://{ctx.kafka_bootstrap}",
            start_timeout_s=120.0,
            stop_timeout_s=30.0,
        ),
        ServiceSpec(
            name="mlflow",
            description="MLflow tracking server (sqlite backend, local artifacts)",
            ports=("mlflow",),
            command=_mlflow_command,
            health=HttpHealth("mlflow", "/health"),
            requires=(Requirement("the `mlflow` Python package", MLFLOW_FIX, module="mlflow"),),
            prepare=_mlflow_prepare,
            env=_python_env,
            start_timeout_s=300.0,  # first start creates the sqlite schema; slow on a busy 2-core box
        ),
        ServiceSpec(
            name="pagerduty",
            description="local PagerDuty Events v2 receiver (records pages)",
            ports=("pagerduty",),
            command=_pagerduty_command,
            health=HttpHealth("pagerduty", "/health"),
            env=_python_env,
            metrics_path="/metrics",
            url=lambda ctx: observability.pagerduty_events_url(ctx.port("pagerduty")),
            start_timeout_s=30.0,
            stop_timeout_s=5.0,
        ),
        ServiceSpec(
            name="alertmanager",
            description="Prometheus Alertmanager (routes to the local PagerDuty)",
            ports=("alertmanager",),
            command=_alertmanager_command,
            health=HttpHealth("alertmanager", "/-/ready"),
            depends_on=("pagerduty",),
            requires=(Requirement("`prometheus-alertmanager`", ALERTMANAGER_FIX,
                                  binaries=("prometheus-alertmanager", "alertmanager")),),
            prepare=_alertmanager_prepare,
            metrics_path="/metrics",
            start_timeout_s=30.0,
        ),
        ServiceSpec(
            name="prometheus",
            description="Prometheus (scrapes registered services, alerts to Alertmanager)",
            ports=("prometheus",),
            command=_prometheus_command,
            health=HttpHealth("prometheus", "/-/ready"),
            depends_on=("alertmanager",),
            requires=(Requirement("`prometheus`", PROMETHEUS_FIX, binaries=("prometheus",)),),
            prepare=_prometheus_prepare,
            start_timeout_s=60.0,
        ),
        proxy_service(),
    ]


#: What ``strata local up`` starts when no service is named.
DEFAULT_SERVICES = ("kafka", "mlflow", "prometheus", "alertmanager", "pagerduty")


def default_registry() -> Registry:
    reg = Registry()
    for spec in builtin_services():
        reg.add(spec)
    return reg
