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

from workloads.local import kafka_connect, kafka_setup, observability, postgres, redis, s3
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
    metrics_port: str | None = None  # the port key scraped; default the first port
    metrics_job: str | None = None  # the scrape job; default the service's name
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
MLFLOW_FIX = ".ci/setup  (installs requirements/main.lock into this checkout's .venv)"


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
    # A fresh notification log per start: the last run's log (kept across `down`/`up`) would
    # make Alertmanager treat a still-firing group as already notified for `repeat_interval`,
    # so a re-run's page (e.g. the demo's drift page) would never come. Silences are kept.
    (ctx.data_dir() / "nflog").unlink(missing_ok=True)
    if not ctx.options.alertmanager_config:
        from workloads.local.catalogue import local_secret, local_secret_path
        from workloads.monitoring.alertmanager import RETRAIN_TOKEN_SECRET

        local_secret(ctx.state_dir, RETRAIN_TOKEN_SECRET, "token")  # the same Secret the trigger reads
        observability.write_alertmanager_config(_alertmanager_config_path(ctx), workload_catalog(),
                                                pagerduty_port=ctx.port("pagerduty"),
                                                retrain_port=ctx.port("retrain-trigger"),
                                                retrain_token_file=local_secret_path(ctx.state_dir, RETRAIN_TOKEN_SECRET,
                                                                                     "token"))


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
            name="redis",
            description="Redis (the online feature store; append-only file under the state dir)",
            ports=("redis",),
            command=redis.command,
            health=redis.health,
            requires=(Requirement("`redis-server`", redis.FIX, binaries=("redis-server",)),),
            prepare=redis.prepare,
            url=redis.url,
            start_timeout_s=30.0,
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
DEFAULT_SERVICES = ("s3", "kafka", "mlflow", "prometheus", "alertmanager", "pagerduty", "postgres", "kafka-connect",
                    "redis")


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
    registry export, the local MLflow server for anything that trains, and Ray Train's
    checkpoints in the local S3's checkpoint bucket (the `s3://` root a RayJob gets on AWS)."""
    return {
        **_python_env(ctx),
        "STRATA_STATE_DIR": str(ctx.state_dir),
        "STRATA_REGISTRY_DIR": str(registry_root(ctx)),
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{ctx.port('mlflow')}",
        "STRATA_LOG_LEVEL": "WARNING",
        "STRATA_CHECKPOINT_URI": f"s3://{s3.CHECKPOINTS_BUCKET}/local/",
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


# --- catalogue workloads: rendered from workloads.catalogue (one declaration per workload) ----
def _registry_output(ctx: ServiceContext, workload, resource, output: str) -> str:
    if output == "dir":
        return str(registry_root(ctx))
    raise KeyError(f"model-registry has no output {output!r} (dir)")


def _version_output(ctx: ServiceContext, workload, resource, output: str) -> str:
    version = _resolve_alias(ctx, resource.params["model"], resource.params["alias"])
    if output == "version":
        return version.version
    if output == "profile":
        return str(version.profile_path)
    if output == "baseline":  # the offline evaluation the quality ratios compare with
        metrics = version.info().get("metrics") or {}
        baseline = {k.removeprefix("val_"): v for k, v in metrics.items()
                    if k.removeprefix("val_") in ("accuracy", "auc") and isinstance(v, (int, float))}
        return ",".join(f"{k}={v}" for k, v in sorted(baseline.items()))
    raise KeyError(f"model-version has no output {output!r} (version, profile, baseline)")


def _kafka_output(ctx: ServiceContext, workload, resource, output: str) -> str:
    if output == "bootstrap":
        return ctx.kafka_bootstrap
    if output in ("ca_file", "cert_file", "key_file"):
        return ""  # the local broker's listener is PLAINTEXT on loopback
    raise KeyError(f"kafka has no output {output!r} (bootstrap, ca_file, cert_file, key_file)")


def _prometheus_output(ctx: ServiceContext, workload, resource, output: str) -> str:
    if output == "url":
        return f"http://{HOST}:{ctx.port('prometheus')}"
    raise KeyError(f"prometheus has no output {output!r} (url)")


def _state_output(ctx: ServiceContext, workload, resource, output: str) -> str:
    """Per-workload local state: files under the state dir, and the local retrain action."""
    opts = ctx.options.workloads
    values: dict[str, Callable[[], str]] = {
        "state_file": lambda: str(ctx.data_dir() / "state.json"),
        "log_dir": lambda: str(ctx.state_dir / "logs" / "retrains"),
        "command": lambda: shlex.join([ctx.python, "-m", "infra.cli", "train", "{model}", "--local",
                                       "--trigger", "retrain", *opts.retrain_args]),
        "rollout_registry": lambda: str(registry_root(ctx)),
        "rollout_command": lambda: shlex.join([
            ctx.python, "-m", "workloads.rollout", "--model", "{model}", "--registry", str(registry_root(ctx)),
            "--state-dir", str(ctx.state_dir), "--prometheus", f"http://{HOST}:{ctx.port('prometheus')}",
            "--actor", "retrain-trigger"]),
        "models": lambda: ",".join(spec.name for spec in workload_catalog()),
        "serve_flag": lambda: "--no-serve-artifacts",
        "workers": lambda: "1",
    }
    if output not in values:
        raise KeyError(f"state has no local output {output!r} ({', '.join(values)})")
    return values[output]()


def _object_store_output(ctx: ServiceContext, workload, resource, output: str) -> str:
    """The local S3 server's buckets (workloads.local.s3), by the resource's `bucket` role."""
    from workloads.data.storage import LAKE_BUCKETS

    buckets = {"mlflow-artifacts": s3.ARTIFACTS_BUCKET, "ray-checkpoints": s3.CHECKPOINTS_BUCKET,
               "serving-bundles": s3.BUNDLES_BUCKET, **{f"lake-{layer}": b for layer, b in LAKE_BUCKETS.items()}}
    bucket = resource.params.get("bucket", "")
    if bucket not in buckets:
        raise KeyError(f"object-store bucket {bucket!r} is not one of the local buckets ({', '.join(buckets)})")
    if output == "root":
        return f"s3://{buckets[bucket]}/{workload.name}"
    if output == "bucket":
        return buckets[bucket]
    raise KeyError(f"object-store has no output {output!r} (root, bucket)")


def _feature_store_output(ctx: ServiceContext, workload, resource, output: str) -> str:
    """The online feature store: the local Redis (workloads.local.redis)."""
    if output == "url":
        return redis.url(ctx)
    raise KeyError(f"feature-store has no output {output!r} (url)")


LOCAL_PROVISIONERS = {"model-registry": _registry_output, "model-version": _version_output, "kafka": _kafka_output,
                      "prometheus": _prometheus_output, "state": _state_output, "object-store": _object_store_output,
                      "feature-store": _feature_store_output}


def _model_server_prepare(workload, keys: tuple[str, ...]) -> Callable[[ServiceContext], None]:
    model, slot = workload.labels["strata.dev/model"], workload.labels["strata.dev/predictor"]

    def prepare(ctx: ServiceContext) -> None:
        from workloads.traffic.split import ALIAS_OF_PREDICTOR
        from workloads.traffic.state import register_upstream

        _resolve_alias(ctx, model, ALIAS_OF_PREDICTOR[slot])
        multiproc = ctx.data_dir() / "prometheus-multiproc"  # fresh per start: counters restart at 0
        shutil.rmtree(multiproc, ignore_errors=True)
        multiproc.mkdir(parents=True)
        register_upstream(ctx.state_dir, model, slot, ctx.port(keys[0]), grpc_port=ctx.port(keys[1]))
    return prepare


def _model_server_command(spec, workload, keys: tuple[str, ...]) -> Callable[[ServiceContext], list[str]]:
    """Seldon's wrapper as `workloads.serving.launch` starts it, run directly as the group leader
    (launch's own process group would hide Seldon's children from the supervisor)."""
    from workloads.traffic.split import ALIAS_OF_PREDICTOR, metrics_predictor

    slot = workload.labels["strata.dev/predictor"]

    def command(ctx: ServiceContext) -> list[str]:
        from workloads.catalogue.declarations import feature_plan
        from workloads.serving.launch import ServerConfig, serving_python

        realtime = spec.serving.realtime
        plan = feature_plan(spec)
        enrichment = {"features": plan.to_json(), "feature_store_url": redis.url(ctx)} if plan else {}
        return ServerConfig(
            model=spec.name, alias=ALIAS_OF_PREDICTOR[slot], registry_dir=str(registry_root(ctx)),
            http_port=ctx.port(keys[0]), grpc_port=ctx.port(keys[1]), metrics_port=ctx.port(keys[2]),
            predictor=metrics_predictor(slot, spec.serving.rollout.strategy), team=spec.team,
            max_batch_rows=realtime.max_batch_rows, max_payload_bytes=realtime.max_payload_bytes,
            latency_target_ms=spec.slos.latency_p99_ms, workers=realtime.server.workers,
            threads=realtime.server.threads, grpc_threads=realtime.server.grpc_threads,
            queue_budget_ms=realtime.server.queue_budget_ms, **enrichment,
        ).command(serving_python())
    return command


def _tracking_prepare(ctx: ServiceContext) -> None:
    """The backend store URI the declaration reads from its Secret (`MLFLOW_DB_SECRET`)."""
    from workloads.catalogue.declarations import MLFLOW_DB_SECRET
    from workloads.local.catalogue import write_local_secret

    write_local_secret(ctx.state_dir, MLFLOW_DB_SECRET.secret, MLFLOW_DB_SECRET.key, _mlflow_backend(ctx))


def _feature_store_secret_prepare(ctx: ServiceContext) -> None:
    """The URL the declaration reads from the feature-store Secret (`FEATURE_STORE_SECRET`): the local Redis's."""
    from workloads.catalogue.declarations import FEATURE_STORE_SECRET
    from workloads.local.catalogue import write_local_secret

    write_local_secret(ctx.state_dir, FEATURE_STORE_SECRET.secret, FEATURE_STORE_SECRET.key, redis.url(ctx))


def _stream_prepare(workload) -> Callable[[ServiceContext], None]:
    """The champion must be exported before the worker starts (a clear error instead of a crash loop)."""
    model = workload.labels["strata.dev/model"]

    def prepare(ctx: ServiceContext) -> None:
        _resolve_alias(ctx, model, "champion")
    return prepare


def catalogue_options(opts: WorkloadOptions):
    """The local knobs (ctx.options.workloads, read at start time) as the catalogue's options."""
    from workloads.catalogue import CatalogueOptions

    return CatalogueOptions(drift_interval_s=opts.drift_interval_s, drift_window_rows=opts.drift_window_rows,
                            drift_min_rows=opts.drift_min_rows, retrain_cooldown_s=opts.retrain_cooldown_s)


def catalogue_service(workload, keys: tuple[str, ...], placements, declare, spec=None) -> ServiceSpec:
    """One catalogue workload as a supervisor service (see workloads.local.catalogue).
    `declare(options)` is the catalogue: the declaration is re-read at each start with the
    options of that start (the demo compresses time)."""
    from workloads.local import catalogue as local_catalogue

    def resolver(ctx: ServiceContext) -> "local_catalogue.LocalResolver":
        return local_catalogue.LocalResolver(ctx, placements, declare(catalogue_options(ctx.options.workloads)),
                                             LOCAL_PROVISIONERS)

    def current(ctx: ServiceContext):
        return declare(catalogue_options(ctx.options.workloads))[workload.name]

    def command(ctx: ServiceContext) -> list[str]:
        return local_catalogue.render_command(current(ctx), resolver(ctx), ctx.python)

    def env(ctx: ServiceContext) -> dict[str, str]:
        extra = {}
        if workload.component == "model-server":
            extra = {"PROMETHEUS_MULTIPROC_DIR": str(ctx.data_dir() / "prometheus-multiproc"),
                     "PREDICTIVE_UNIT_ID": workload.labels["strata.dev/model"],
                     "PREDICTOR_ID": spec_predictor}
        return {**workload_env(ctx), **local_catalogue.render_env(current(ctx), resolver(ctx)), **extra}

    prepare = None
    requires: tuple[Requirement, ...] = ()
    spec_predictor = ""
    url = None
    if workload.component == "model-server":
        from workloads.serving.launch import serving_python
        from workloads.traffic.split import metrics_predictor

        spec_predictor = metrics_predictor(workload.labels["strata.dev/predictor"], spec.serving.rollout.strategy)
        command = _model_server_command(spec, workload, keys)
        prepare = _model_server_prepare(workload, keys)
        requires = (Requirement("the serving environment (.venv-serving)", SERVING_FIX,
                                binaries=(str(serving_python()),)),)
        url = lambda ctx: f"http://{HOST}:{ctx.port(keys[0])}/api/v1.0/predictions"  # noqa: E731
    elif workload.component == "stream-worker":
        prepare = _stream_prepare(workload)
    elif workload.component == "tracking-server":
        requires = (Requirement("the `mlflow` Python package", MLFLOW_FIX, module="mlflow"),)
        prepare = _tracking_prepare
    elif workload.component == "feature-aggregator":
        prepare = _feature_store_secret_prepare
    elif workload.component == "retrain-trigger":
        url = lambda ctx: f"http://{HOST}:{ctx.port(keys[0])}/v1/retrains"  # noqa: E731
    readiness = workload.readiness
    metrics = workload.metrics
    return ServiceSpec(
        name=workload.name,
        description=workload.description,
        ports=keys,
        command=command,
        health=HttpHealth(placements[workload.name].key(workload, readiness.port), readiness.path),
        depends_on=local_catalogue.local_dependencies(workload, list(placements)),
        requires=requires,
        prepare=prepare,
        env=env,
        metrics_path=metrics.path if metrics else None,
        metrics_port=placements[workload.name].key(workload, metrics.port) if metrics else None,
        metrics_job=workload.job,
        url=url,
        start_timeout_s=workload.start_timeout_s,
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


def workload_catalog() -> tuple:
    """The onboarded example models (workloads/examples/*/model.yaml), in name order."""
    from workloads.monitoring.generate import load_catalog

    specs = tuple(sorted(load_catalog(), key=lambda s: s.name))
    if len(specs) > MAX_WORKLOAD_MODELS:
        raise ConfigError(f"{len(specs)} example models: local mode has ports for {MAX_WORKLOAD_MODELS}")
    return specs


def catalogue_services(specs, options: "WorkloadOptions | None" = None) -> list[ServiceSpec]:
    """Every catalogue workload the local mode runs (workloads.local.catalogue.NOT_RENDERED says
    which it does not, and why), plus the local-only drift feeds."""
    from workloads.catalogue import CatalogueOptions, catalogue
    from workloads.local import catalogue as local_catalogue

    def declare(catalogue_opts: CatalogueOptions):
        declared, sinks = catalogue(specs, catalogue_opts), local_cdc_sinks()
        if set(declared) & set(sinks):
            raise ConfigError(f"workload {sorted(set(declared) & set(sinks))} is declared twice (catalogue, CDC sinks)")
        return {**declared, **sinks}

    workloads = declare(catalogue_options(options or WorkloadOptions()))
    index = {spec.name: i for i, spec in enumerate(specs)}
    by_name = {spec.name: spec for spec in specs}
    placements: dict[str, local_catalogue.Placement] = {}
    for name, workload in workloads.items():
        if local_catalogue.renders(workload):
            model = workload.labels.get("strata.dev/model")
            placements[name] = local_catalogue.Placement(
                local_catalogue.port_keys(workload, index[model] if model else None))
    services = [catalogue_service(workloads[name], placement.keys, placements, declare,
                                  by_name.get(workloads[name].labels.get("strata.dev/model", "")))
                for name, placement in placements.items()]
    services += [drift_feed_service(spec, index[spec.name]) for spec in specs if spec.serving.streaming.enabled]
    local_catalogue.check_complete(workloads, [s.name for s in services])
    return services


def local_cdc_sinks() -> dict:
    """The local CDC pipeline's workloads (workloads.local.cdc_sink): its sink and its feature
    aggregator, from the catalogue's `pipeline_workloads` declarations the cluster renders too;
    started by the demo's lake stage."""
    from workloads.catalogue.declarations import pipeline_workloads
    from workloads.local.cdc_sink import local_pipeline

    return {w.name: w for w in pipeline_workloads(local_pipeline())}


def workload_services(specs=None, options: "WorkloadOptions | None" = None) -> list[ServiceSpec]:
    """The catalogue's services (MLflow, retrain trigger, per model: servers, stream, drift, quality)."""
    specs = workload_catalog() if specs is None else specs
    return catalogue_services(specs, options)
