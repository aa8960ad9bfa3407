"""The service registry: a service = command + env + ports + health check + dependencies.

Built-in entries: kafka, mlflow, prometheus, alertmanager, pagerduty, proxy; then the
workloads of every example model (see "workloads" below): `<model>-stable` and
`<model>-candidate` model servers, `<model>-stream`, `<model>-drift`, `<model>-drift-feed`,
and the `retrain-trigger`. More services are ``ServiceSpec`` entries: add them to
``builtin_services()`` or ``Registry.add()`` them before building a ``Supervisor``::

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
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from workloads.local import kafka_connect, kafka_setup, observability, postgres, s3
from workloads.local.errors import ConfigError, MissingDependencyError, UnknownServiceError
from workloads.local.health import Health, http_check, kafka_check
from workloads.local.ports import HOST

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class WorkloadOptions:
    """Knobs of the workload services. Defaults suit a long-running local platform; the demo
    compresses time (short drift interval and window, `strata train --smoke` retrains)."""

    drift_interval_s: float = 15.0  # seconds between drift evaluations
    drift_window_rows: int = 50_000  # live rows kept per model
    drift_min_rows: int = 500  # fewer rows: no evaluation
    drift_alert_for: str | None = None  # `for:` of the drift/quality alerts; None: the spec's sustainedFor
    retrain_args: tuple[str, ...] = ()  # extra `strata train` arguments of a retrain (demo: --smoke ...)
    retrain_cooldown_s: float = 6 * 3600
    feed_batch: int = 200  # scored records per POST to the drift monitor


@dataclass(frozen=True)
class LocalOptions:
    """Inputs that are not ports. Paths given here replace the generated defaults."""

    prometheus_config: Path | None = None  # a complete prometheus.yml; None: generated
    rule_files: tuple[Path, ...] = ()  # rule files for the generated prometheus.yml; (): the generated rules
    alertmanager_config: Path | None = None  # None: the generated config, endpoints on loopback
    cache_dir: Path | None = None  # Kafka jars; default $STRATA_CACHE_DIR or <repo>/.cache/strata
    mlflow_backend_uri: str | None = None  # default sqlite:///<state>/data/mlflow/mlflow.db
    workloads: WorkloadOptions = WorkloadOptions()  # model servers, stream, drift, retrain

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


def split_port_key(key: str) -> tuple[str, int]:
    """``"model-servers+4"`` -> ``("model-servers", 4)``; ``"kafka"`` -> ``("kafka", 0)``."""
    base, sep, offset = key.partition("+")
    return base, int(offset) if sep else 0


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
        """A port of the table (``"kafka"``) or a derived one (``"model-servers+4"``: the
        row's port plus 4), for services that get one port each from a reserved row."""
        base, offset = split_port_key(key)
        return self.ports[base] + offset

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


def _mlflow_command(ctx: ServiceContext) -> list[str]:
    # As on AWS: clients write artifacts to S3 themselves; the server only tracks.
    return [
        ctx.python, "-m", "mlflow", "server",
        "--backend-store-uri", _mlflow_backend(ctx),
        "--no-serve-artifacts", "--default-artifact-root", f"s3://{s3.ARTIFACTS_BUCKET}/mlflow",
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
            rule_files=ctx.options.rule_files or (observability.write_rule_file(
                ctx.config_dir("prometheus") / "rules" / "strata-rules.yaml", workload_catalog(),
                ctx.options.workloads.drift_alert_for),),
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
        observability.write_alertmanager_config(_alertmanager_config_path(ctx), workload_catalog(),
                                                pagerduty_port=ctx.port("pagerduty"),
                                                retrain_port=ctx.port("retrain-trigger"))


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


def s3_setup_version() -> str:
    from workloads.local import s3_setup

    return s3_setup.VERSION


def builtin_services() -> list[ServiceSpec]:
    from workloads.traffic.local_proxy import proxy_service  # here: it builds on this module's ServiceSpec

    return [
        ServiceSpec(
            name="s3",
            description=f"S3 (SeaweedFS `weed mini`, {s3_setup_version()}): lake, artifacts, checkpoints, bundles",
            ports=tuple(f"s3+{offset}" if offset else "s3" for offset in sorted(s3.OFFSETS.values())),
            command=s3.command,
            health=s3.health,
            prepare=s3.prepare,
            url=s3.endpoint,
            start_timeout_s=1800.0,  # the first start builds SeaweedFS from the Go module proxy
        ),
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
            name="postgres",
            description="PostgreSQL (wal_level=logical; the CDC source)",
            ports=("postgres",),
            command=postgres.command,
            health=postgres.health,
            requires=(Requirement("PostgreSQL (`initdb`, `postgres`)", postgres.FIX, binaries=("initdb", "pg_ctl")),),
            prepare=postgres.prepare,
            url=postgres.dsn,
            start_timeout_s=60.0,
        ),
        ServiceSpec(
            name="kafka-connect",
            description=f"Kafka Connect + Debezium PostgreSQL ({kafka_connect.versions()})",
            ports=("kafka-connect",),
            command=kafka_connect.command,
            health=kafka_connect.health,
            depends_on=("kafka", "postgres"),
            requires=(Requirement("Java 17+ (`java`)", kafka_setup.JAVA_FIX, binaries=("java",)),),
            prepare=kafka_connect.prepare,
            url=kafka_connect.rest_url,
            start_timeout_s=180.0,
            stop_timeout_s=30.0,
        ),
        ServiceSpec(
            name="mlflow",
            description="MLflow tracking server (sqlite backend, artifacts in S3, written by clients)",
            ports=("mlflow",),
            command=_mlflow_command,
            health=HttpHealth("mlflow", "/health"),
            depends_on=("s3",),
            requires=(Requirement("the `mlflow` Python package", MLFLOW_FIX, module="mlflow"),),
            env=lambda ctx: {**_python_env(ctx), **s3.s3_env(ctx)},
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
DEFAULT_SERVICES = ("s3", "kafka", "mlflow", "prometheus", "alertmanager", "pagerduty", "postgres", "kafka-connect")


def default_registry() -> Registry:
    reg = Registry()
    for spec in builtin_services() + workload_services():
        reg.add(spec)
    return reg


# --- workloads: model servers, stream workers, drift monitors + feeds, retraining trigger -----
# One set per model of the catalog (workloads/examples/*/model.yaml), models in name order
# (index i). Ports come from the reserved rows of the ports table, plus an offset:
#
#   <model>-stable / <model>-candidate  model-servers + 6*i + 3*slot + (0 REST, 1 gRPC, 2 Seldon metrics)
#                                       slot 0 = stable (alias champion), 1 = candidate (challenger)
#   <model>-stream                      stream-workers + i   (metrics; models with streaming enabled)
#   <model>-drift                       drift-monitor + i    (drift/quality exporter, JSON API)
#   <model>-drift-feed                  no port              (scored topic -> <model>-drift)
#   retrain-trigger                     retrain-trigger      (Alertmanager webhook -> `strata train`)
MODEL_SERVER_PORTS_PER_MODEL = 6
MAX_WORKLOAD_MODELS = 10  # drift-monitor (19300) + 10 reaches retrain-trigger (19310)
SERVING_FIX = "workloads/serving/setup-env.sh  (creates .venv-serving: Python 3.12 + seldon-core 1.19)"


def registry_root(ctx: "ServiceContext") -> Path:
    """The registry export the workloads read (training writes it with STRATA_REGISTRY_DIR)."""
    return ctx.state_dir / "registry"


def workload_env(ctx: "ServiceContext") -> dict[str, str]:
    """Environment of every workload process: the repo on PYTHONPATH, the state dir's
    registry export, and the local MLflow server for anything that trains."""
    return {
        **_python_env(ctx),
        "STRATA_STATE_DIR": str(ctx.state_dir),
        "STRATA_REGISTRY_DIR": str(registry_root(ctx)),
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{ctx.port('mlflow')}",
        "STRATA_LOG_LEVEL": "WARNING",
        **s3.s3_env(ctx),
    }


def model_server_port_key(index: int, slot: int, which: int = 0) -> str:
    return f"model-servers+{MODEL_SERVER_PORTS_PER_MODEL * index + 3 * slot + which}"


def _resolve_alias(ctx: "ServiceContext", model: str, alias: str):
    from workloads.serving import registry

    try:
        return registry.resolve(registry_root(ctx), model, alias=alias)
    except registry.RegistryError as error:
        raise ConfigError(
            f"service '{ctx.name}' serves {model}@{alias}, which is not registered: {error}\n"
            f"  Fix: train and register it (`strata train {model} --local`, or `strata local up --demo`)"
        ) from None


@dataclass(frozen=True)
class HeartbeatHealth:
    """Healthy while the process touches its heartbeat file (services without a port)."""

    max_age_s: float = 10.0

    def __call__(self, ctx: "ServiceContext") -> Health:
        import time

        beat = ctx.data_dir() / "heartbeat"
        try:
            age = time.time() - beat.stat().st_mtime
        except OSError:
            return Health(False, f"no heartbeat yet ({beat})")
        return Health(age <= self.max_age_s, f"heartbeat {age:.1f}s ago")


def model_server_service(spec, index: int, slot: str) -> ServiceSpec:
    """`<model>-stable` (champion) or `<model>-candidate` (challenger): the Seldon model server.

    Runs Seldon's microservice directly as the group leader (not through
    `workloads.serving.launch`, which would put Seldon in a second process group the
    supervisor cannot see). Metrics carry `predictor` = the slot (`shadow` for the candidate
    of a shadow rollout, as on the cluster). Its prepare step registers the REST address with the local
    proxy's upstreams, so the proxy routes `/<model>/...` to it at its next reload."""
    from workloads.traffic.split import ALIAS_OF_PREDICTOR, PREDICTORS, metrics_predictor

    slot_index = PREDICTORS.index(slot)
    alias = ALIAS_OF_PREDICTOR[slot]
    predictor = metrics_predictor(slot, spec.serving.rollout.strategy)  # a shadow candidate: `shadow`
    keys = tuple(model_server_port_key(index, slot_index, w) for w in range(3))
    name = f"{spec.name}-{slot}"

    def config(ctx: ServiceContext):
        from workloads.serving.launch import ServerConfig

        realtime = spec.serving.realtime
        return ServerConfig(
            model=spec.name, alias=alias, registry_dir=str(registry_root(ctx)), http_port=ctx.port(keys[0]),
            grpc_port=ctx.port(keys[1]), metrics_port=ctx.port(keys[2]), predictor=predictor, team=spec.team,
            max_batch_rows=realtime.max_batch_rows, max_payload_bytes=realtime.max_payload_bytes,
            latency_target_ms=spec.slos.latency_p99_ms, workers=realtime.server.workers,
            threads=realtime.server.threads, grpc_threads=realtime.server.grpc_threads,
            queue_budget_ms=realtime.server.queue_budget_ms,
        )

    def prepare(ctx: ServiceContext) -> None:
        from workloads.traffic.state import register_upstream

        _resolve_alias(ctx, spec.name, alias)
        multiproc = ctx.data_dir() / "prometheus-multiproc"  # fresh per start: counters restart at 0
        shutil.rmtree(multiproc, ignore_errors=True)
        multiproc.mkdir(parents=True)
        register_upstream(ctx.state_dir, spec.name, slot, ctx.port(keys[0]))

    def command(ctx: ServiceContext) -> list[str]:
        from workloads.serving.launch import serving_python

        return config(ctx).command(serving_python())

    def env(ctx: ServiceContext) -> dict[str, str]:
        return {**workload_env(ctx), "PROMETHEUS_MULTIPROC_DIR": str(ctx.data_dir() / "prometheus-multiproc"),
                "PREDICTIVE_UNIT_ID": spec.name, "PREDICTOR_ID": predictor}

    from workloads.serving.launch import serving_python

    return ServiceSpec(
        name=name,
        description=f"{spec.name} model server, slot {slot} (alias {alias}; Seldon REST+gRPC)",
        ports=keys,
        command=command,
        health=HttpHealth(keys[0], "/health/status"),
        requires=(Requirement("the serving environment (.venv-serving)", SERVING_FIX,
                              binaries=(str(serving_python()),)),),
        prepare=prepare,
        env=env,
        metrics_path="/metrics",
        url=lambda ctx: f"http://{HOST}:{ctx.port(keys[0])}/api/v1.0/predictions",
        start_timeout_s=180.0,  # Seldon forks REST, gRPC and metrics processes; torch loads in each
        stop_timeout_s=15.0,
    )


def stream_worker_service(spec, index: int) -> ServiceSpec:
    """`<model>-stream`: the Kafka stream worker of the champion (at-least-once)."""
    key = f"stream-workers+{index}"

    def prepare(ctx: ServiceContext) -> None:
        _resolve_alias(ctx, spec.name, "champion")

    def command(ctx: ServiceContext) -> list[str]:
        return [ctx.python, "-m", "workloads.streaming", "--bootstrap", ctx.kafka_bootstrap, "--model", spec.name,
                "--alias", "champion", "--registry", str(registry_root(ctx)), "--team", spec.team,
                "--batch-size", str(spec.serving.streaming.batch_size), "--metrics-port", str(ctx.port(key)),
                "--log-level", "WARNING"]

    return ServiceSpec(
        name=f"{spec.name}-stream",
        description=f"{spec.name} Kafka stream worker (strata.{spec.name}.input -> .scored, bad -> .dlq)",
        ports=(key,),
        command=command,
        health=HttpHealth(key, "/metrics"),
        depends_on=("kafka",),
        prepare=prepare,
        env=workload_env,
        metrics_path="/metrics",
        start_timeout_s=90.0,
    )


def drift_monitor_service(spec, index: int) -> ServiceSpec:
    """`<model>-drift`: PSI/KS of the live window against the champion's reference profile."""
    key = f"drift-monitor+{index}"

    def command(ctx: ServiceContext) -> list[str]:
        version = _resolve_alias(ctx, spec.name, "champion")
        opts = ctx.options.workloads
        argv = [ctx.python, "-m", "workloads.monitoring.drift_service", "--model", spec.name,
                "--version", version.version, "--team", spec.team, "--profile", str(version.profile_path),
                "--port", str(ctx.port(key)), "--interval", str(opts.drift_interval_s),
                "--window-rows", str(opts.drift_window_rows), "--min-rows", str(opts.drift_min_rows)]
        metrics = version.info().get("metrics") or {}
        baseline = {k.removeprefix("val_"): v for k, v in metrics.items()
                    if k.removeprefix("val_") in ("accuracy", "auc") and isinstance(v, (int, float))}
        if baseline:
            argv += ["--baseline", ",".join(f"{k}={v}" for k, v in sorted(baseline.items()))]
        return argv

    return ServiceSpec(
        name=f"{spec.name}-drift",
        description=f"{spec.name} drift monitor (PSI/KS vs the champion's reference profile)",
        ports=(key,),
        command=command,
        health=HttpHealth(key, "/healthz"),
        env=workload_env,
        metrics_path="/metrics",
        start_timeout_s=60.0,
    )


def drift_feed_service(spec, index: int) -> ServiceSpec:
    """`<model>-drift-feed`: consumes the scored topic and posts its features to `<model>-drift`."""
    monitor_key = f"drift-monitor+{index}"

    def command(ctx: ServiceContext) -> list[str]:
        from workloads.streaming.topics import topics_for

        return [ctx.python, "-m", "workloads.local.drift_feed", "--bootstrap", ctx.kafka_bootstrap,
                "--topic", topics_for(spec.name).output, "--model", spec.name,
                "--monitor", f"http://{HOST}:{ctx.port(monitor_key)}",
                "--heartbeat", str(ctx.data_dir() / "heartbeat"),
                "--batch", str(ctx.options.workloads.feed_batch)]

    def prepare(ctx: ServiceContext) -> None:
        (ctx.data_dir() / "heartbeat").unlink(missing_ok=True)

    return ServiceSpec(
        name=f"{spec.name}-drift-feed",
        description=f"{spec.name} scored stream -> drift monitor",
        ports=(),
        command=command,
        health=HeartbeatHealth(),
        url=lambda ctx: f"kafka://{ctx.kafka_bootstrap}/strata.{spec.name}.scored",
        depends_on=("kafka", f"{spec.name}-drift"),
        prepare=prepare,
        env=workload_env,
        start_timeout_s=60.0,
    )


def retrain_trigger_service() -> ServiceSpec:
    """`retrain-trigger`: Alertmanager's retrain webhook; runs `strata train MODEL --local`
    against the local MLflow, one retrain per model at a time."""

    def command(ctx: ServiceContext) -> list[str]:
        opts = ctx.options.workloads
        train = [ctx.python, "-m", "infra.cli", "train", "{model}", "--local", *opts.retrain_args]
        rollout = [ctx.python, "-m", "workloads.rollout", "--model", "{model}", "--registry", str(registry_root(ctx)),
                   "--state-dir", str(ctx.state_dir), "--prometheus", f"http://{HOST}:{ctx.port('prometheus')}",
                   "--actor", "retrain-trigger"]
        data = ctx.data_dir()
        return [ctx.python, "-m", "workloads.monitoring.retrain", "--host", HOST,
                "--port", str(ctx.port("retrain-trigger")), "--command", shlex.join(train),
                "--cooldown", str(opts.retrain_cooldown_s), "--state-file", str(data / "state.json"),
                "--log-dir", str(ctx.state_dir / "logs" / "retrains"),
                # the loop: a new challenger goes to the rollout controller (spec autoPromote) or waits
                "--rollout-registry", str(registry_root(ctx)), "--rollout-command", shlex.join(rollout)]

    return ServiceSpec(
        name="retrain-trigger",
        description="retraining trigger (Alertmanager webhook -> local `strata train`)",
        ports=("retrain-trigger",),
        command=command,
        health=HttpHealth("retrain-trigger", "/healthz"),
        depends_on=("mlflow",),
        env=workload_env,
        metrics_path="/metrics",
        url=lambda ctx: f"http://{HOST}:{ctx.port('retrain-trigger')}/v1/retrains",
        start_timeout_s=60.0,
    )


def workload_catalog() -> tuple:
    """The onboarded example models (workloads/examples/*/model.yaml), in name order."""
    from workloads.monitoring.generate import load_catalog

    specs = tuple(sorted(load_catalog(), key=lambda s: s.name))
    if len(specs) > MAX_WORKLOAD_MODELS:
        raise ConfigError(f"{len(specs)} example models: local mode has ports for {MAX_WORKLOAD_MODELS}")
    return specs


def model_services(spec, index: int) -> list[ServiceSpec]:
    """Every workload service of one model (the candidate slot is started only for a rollout)."""
    services = [model_server_service(spec, index, "stable"), model_server_service(spec, index, "candidate"),
                drift_monitor_service(spec, index), drift_feed_service(spec, index) if spec.serving.streaming.enabled else None,
                stream_worker_service(spec, index) if spec.serving.streaming.enabled else None]
    return [s for s in services if s is not None]


def workload_services(specs=None) -> list[ServiceSpec]:
    specs = workload_catalog() if specs is None else specs
    services = [retrain_trigger_service()]
    for index, spec in enumerate(specs):
        services += model_services(spec, index)
    return services
