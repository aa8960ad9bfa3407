"""The catalogue: every Strata workload, declared ONCE.

| workload                         | component          | per      | placement   |
|----------------------------------|--------------------|----------|-------------|
| `<model>-stable`/`<model>-candidate` | model-server   | model    | team        |
| `<model>-stream`                 | stream-worker      | model    | team        |
| `<model>-drift`                  | drift-monitor      | model    | team        |
| `<model>-quality`                | quality-service    | model    | team        |
| `<model>-rollout`                | rollout-controller | model    | team        |
| `<model>-registry-sync`          | registry-sync      | model    | team (sidecar) |
| `retrain-trigger`                | retrain-trigger    | platform | monitoring  |
| `cost-exporter`                  | cost-exporter      | platform | monitoring  |
| `training-metrics`               | training-metrics   | platform | monitoring  |
| `mlflow`                         | tracking-server    | platform | mlflow      |
| `<pipeline>-cdc-sink`            | cdc-sink           | CDC pipeline | team    |
| `<pipeline>-aggregator`          | feature-aggregator | CDC pipeline with `features` | team |

`model_workloads(spec, options)`, `platform_workloads(options)` and `training_metrics(specs)`
(it exports the runs of every model) build them; what a
mode enables (streaming needs Kafka, drift needs drift monitoring, ...) is the caller's
decision, not the declaration's. Renderers: `workloads.local.catalogue` (supervisor
services, scrape targets) and `infra.workloads` (Deployment, Service, ServiceMonitor,
NetworkPolicy pairs, PDB). Both resolve the same `${...}` placeholders
(`workloads.catalogue.substitution`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workloads.catalogue.model import (Dependency, EnvVar, HttpProbe, Metrics, Placement, Port, Resource, Resources,
                                       SecretRef, Workload)

HTTP_METRICS = "http-metrics"  # one port serving an API and /metrics: `http-` for Istio, `-metrics` for scraping
MLFLOW = "mlflow"
RETRAIN_TRIGGER = "retrain-trigger"
COST_EXPORTER = "cost-exporter"
TRAINING_METRICS = "training-metrics"
SLOTS = ("stable", "candidate")

# Container ports on the cluster (each pod has its own network; locally the port table decides).
DRIFT_PORT = 9108
QUALITY_PORT = 9110
COST_PORT = 9111
TRAINING_METRICS_PORT = 9112
CDC_SINK_METRICS_PORT = 9113
AGGREGATOR_METRICS_PORT = 9114
STREAM_METRICS_PORT = 9109
RETRAIN_PORT = 8080
ROLLOUT_PORT = 8080
MLFLOW_PORT = 5000
#: A Kafka client's certificate files (the `kafka` resource: mutual TLS on the cluster, unset locally).
KAFKA_TLS_ENV = (EnvVar(name="STRATA_KAFKA_SSL_CAFILE", value="${resources.kafka.ca_file}"),
                 EnvVar(name="STRATA_KAFKA_SSL_CERTFILE", value="${resources.kafka.cert_file}"),
                 EnvVar(name="STRATA_KAFKA_SSL_KEYFILE", value="${resources.kafka.key_file}"))
SERVING_HTTP_PORT, SERVING_GRPC_PORT, SERVING_METRICS_PORT = 9000, 5000, 6000


@dataclass(frozen=True)
class CatalogueOptions:
    """Knobs of the declarations, defaults stated (the local demo compresses time)."""

    drift_interval_s: float = 30.0
    drift_window_rows: int = 200_000
    drift_min_rows: int = 500
    retrain_cooldown_s: float = 6 * 3600
    quality_window: int = 10_000
    cost_interval_s: float = 60.0
    training_metrics_interval_s: float = 15.0
    spot_pools: tuple[str, ...] = ()


def model_identity(spec: Any) -> dict[str, str]:
    return {"strata.dev/model": spec.name, "strata.dev/team": spec.team}


def feature_plan(spec: Any) -> Any:
    """The model's online features (an EnrichmentPlan), or None: serving and streaming look them up."""
    from workloads.data.features.repo import enrichment_plan

    return enrichment_plan(spec)


def _feature_store(spec: Any) -> dict[str, Resource]:
    return {"features": Resource(type="feature-store", params={"model": spec.name})} if feature_plan(spec) else {}


def _metrics_probes(port: str) -> dict[str, HttpProbe]:
    """Liveness and readiness of a long-running consumer whose only HTTP endpoint is /metrics."""
    return {"liveness": HttpProbe(path="/metrics", port=port, initial_delay_s=30, period_s=15, failures=4),
            "readiness": HttpProbe(path="/metrics", port=port, initial_delay_s=5)}


def _mlflow_env() -> EnvVar:
    return EnvVar(name="MLFLOW_TRACKING_URI", value=f"http://${{workloads.{MLFLOW}.http}}")


def model_server(spec: Any, slot: str) -> Workload:
    """The Seldon wrapper serving one slot. On the cluster the SeldonDeployment builds its pods
    (`pod_owner`); locally `workloads.serving.launch` starts the same wrapper."""
    from workloads.traffic.split import ALIAS_OF_PREDICTOR

    realtime = spec.serving.realtime
    alias = ALIAS_OF_PREDICTOR[slot]
    return Workload(
        name=f"{spec.name}-{slot}", component="model-server",
        description=f"{spec.name} model server, slot {slot} (alias {alias}; Seldon REST+gRPC)",
        image="serving",
        command=("python", "-m", "seldon_core.microservice", "workloads.serving.server.StrataModel"),
        args=("--service-type", "MODEL", "--http-port", "${ports.http}", "--grpc-port", "${ports.grpc}",
              "--metrics-port", "${ports.seldon-metrics}"),
        ports=(Port(name="http", port=SERVING_HTTP_PORT), Port(name="grpc", port=SERVING_GRPC_PORT, app_protocol="grpc"),
               Port(name="seldon-metrics", port=SERVING_METRICS_PORT)),
        liveness=HttpProbe(path="/health/ping", port="http", initial_delay_s=30, failures=6),
        readiness=HttpProbe(path="/health/status", port="http", initial_delay_s=5, period_s=5),
        # the contract metrics (strata_model_*) are served by our server on the REST port
        metrics=Metrics(port="http", path="/metrics", interval="15s", job="strata-model-server", on_traffic_port=True),
        resources_used={"registry": Resource(type="model-registry", params={"model": spec.name, "alias": alias}),
                        **_feature_store(spec)},
        env=(EnvVar(name="STRATA_REGISTRY_DIR", value="${resources.registry.dir}"),),
        resources=Resources(cpu_request=f"{int(realtime.cpu * 1000)}m", memory_request=f"{int(realtime.memory_gib * 1024)}Mi",
                            cpu_limit=f"{int(realtime.cpu * 1000)}m", memory_limit=f"{int(realtime.memory_gib * 1024)}Mi"),
        replicas=realtime.autoscaling.min_replicas if slot == "stable" else 0,
        labels={**model_identity(spec), "strata.dev/predictor": slot},
        pod_owner="SeldonDeployment",
        pod_selector={"seldon-deployment-id": spec.name, "strata.dev/predictor": slot},
        start_timeout_s=180.0,
    )


def stream_worker(spec: Any) -> Workload:
    stream = spec.serving.streaming
    plan = feature_plan(spec)
    enrichment = ("--features", plan.to_json(), "--feature-store-url", "${resources.features.url}") if plan else ()
    return Workload(
        name=f"{spec.name}-stream", component="stream-worker",
        description=f"{spec.name} Kafka stream worker (strata.{spec.name}.input -> .scored, bad -> .dlq)",
        image="stream-worker",
        command=("python", "-m", "workloads.streaming"),
        args=("--bootstrap", "${resources.kafka.bootstrap}", "--model", spec.name, "--alias", "champion",
              "--team", spec.team, "--group", f"strata-{spec.name}-stream", "--batch-size", str(stream.batch_size),
              "--registry", "${resources.registry.dir}", "--metrics-port", "${ports.stream-metrics}",
              "--metrics-host", "${bind}", *enrichment),
        ports=(Port(name="stream-metrics", port=STREAM_METRICS_PORT),),
        **_metrics_probes("stream-metrics"),
        metrics=Metrics(port="stream-metrics", interval="15s", job="strata-stream-worker"),
        resources_used={"kafka": Resource(type="kafka", params={"user": f"{spec.name}-stream"}),
                        "registry": Resource(type="model-registry", params={"model": spec.name, "alias": "champion"}),
                        **_feature_store(spec)},
        env=(EnvVar(name="STRATA_REGISTRY_DIR", value="${resources.registry.dir}"),
             *KAFKA_TLS_ENV),
        resources=Resources(cpu_request="500m", memory_request="1Gi", cpu_limit="2", memory_limit="2Gi"),
        replicas=1,
        labels=model_identity(spec),
        start_timeout_s=90.0,
    )


def drift_monitor(spec: Any, options: CatalogueOptions = CatalogueOptions()) -> Workload:
    """PSI/KS of the live window against the champion's reference profile; its HTTP port takes
    the rows the model server and the stream (feed) post, and serves /metrics."""
    return Workload(
        name=f"{spec.name}-drift", component="drift-monitor",
        description=f"{spec.name} drift monitor (PSI/KS vs the champion's reference profile)",
        image="drift-monitor",
        command=("python", "-m", "workloads.monitoring.drift_service"),
        args=("--model", spec.name, "--version", "${resources.champion.version}", "--team", spec.team,
              "--profile", "${resources.champion.profile}", "--host", "${bind}", "--port", f"${{ports.{HTTP_METRICS}}}",
              "--interval", str(options.drift_interval_s), "--window-rows", str(options.drift_window_rows),
              "--min-rows", str(options.drift_min_rows), "--baseline", "${resources.champion.baseline}"),
        ports=(Port(name=HTTP_METRICS, port=DRIFT_PORT),),
        liveness=HttpProbe(path="/healthz", port=HTTP_METRICS, initial_delay_s=60, period_s=15, failures=4),
        readiness=HttpProbe(path="/healthz", port=HTTP_METRICS, initial_delay_s=5, period_s=5),
        metrics=Metrics(port=HTTP_METRICS, job="strata-drift"),
        depends_on=(Dependency(workload=MLFLOW, port="http"),),
        resources_used={"champion": Resource(type="model-version", params={"model": spec.name, "alias": "champion"})},
        env=(_mlflow_env(),),
        resources=Resources(cpu_request="250m", memory_request="512Mi", cpu_limit="1", memory_limit="1Gi"),
        singleton=True,  # the live window is the state of this one process
        labels=model_identity(spec),
    )


def quality_service(spec: Any, options: CatalogueOptions = CatalogueOptions()) -> Workload:
    """Model quality from delayed labels: joins `strata.<model>.scored` with `.labels`."""
    return Workload(
        name=f"{spec.name}-quality", component="quality-service",
        description=f"{spec.name} model quality (scored + labels topics)",
        image="drift-monitor",
        command=("python", "-m", "workloads.monitoring.quality"),
        args=("--bootstrap", "${resources.kafka.bootstrap}", "--model", spec.name, "--team", spec.team,
              "--registry", "${resources.registry.dir}", "--window", str(options.quality_window),
              "--host", "${bind}", "--port", f"${{ports.{HTTP_METRICS}}}"),
        ports=(Port(name=HTTP_METRICS, port=QUALITY_PORT),),
        liveness=HttpProbe(path="/healthz", port=HTTP_METRICS, initial_delay_s=20, period_s=15, failures=4),
        readiness=HttpProbe(path="/healthz", port=HTTP_METRICS, initial_delay_s=5, period_s=5),
        metrics=Metrics(port=HTTP_METRICS, job="strata-quality"),
        resources_used={"kafka": Resource(type="kafka", params={"user": f"{spec.name}-quality"}),
                        "registry": Resource(type="model-registry", params={"model": spec.name, "alias": "champion"})},
        env=(EnvVar(name="STRATA_REGISTRY_DIR", value="${resources.registry.dir}"),
             *KAFKA_TLS_ENV),
        resources=Resources(cpu_request="100m", memory_request="256Mi", cpu_limit="500m", memory_limit="512Mi"),
        singleton=True,  # the joined window is this process's state
        labels=model_identity(spec),
    )


def rollout_controller(spec: Any) -> Workload:
    return Workload(
        name=f"{spec.name}-rollout", component="rollout-controller",
        description=f"{spec.name} rollout controller (metric-gated canary/shadow/A-B/blue-green)",
        image="rollout-controller",
        command=("python", "-m", "workloads.rollout"),
        args=("--model", spec.name, "--cluster", "--spec-file", "${resources.spec.file}",
              "--health-host", "${bind}", "--health-port", f"${{ports.{HTTP_METRICS}}}"),
        ports=(Port(name=HTTP_METRICS, port=ROLLOUT_PORT),),
        liveness=HttpProbe(path="/healthz", port=HTTP_METRICS, initial_delay_s=15, period_s=15, failures=4),
        readiness=HttpProbe(path="/healthz", port=HTTP_METRICS, initial_delay_s=5),
        metrics=Metrics(port=HTTP_METRICS, job="strata-rollout"),
        depends_on=(Dependency(workload=MLFLOW, port="http"),),
        resources_used={"spec": Resource(type="state", params={"model": spec.name}),
                        "prometheus": Resource(type="prometheus"),
                        "kubernetes": Resource(type="kubernetes-api", params={"model": spec.name})},
        env=(_mlflow_env(), EnvVar(name="STRATA_PROMETHEUS_URL", value="${resources.prometheus.url}")),
        resources=Resources(cpu_request="100m", memory_request="256Mi", cpu_limit="500m", memory_limit="512Mi"),
        singleton=True,  # never two writers of one rollout
        labels=model_identity(spec),
    )


def registry_sync(spec: Any, alias: str = "champion") -> Workload:
    """Keeps the registry export (`/mnt/models`) in step with MLflow's alias: a sidecar of the
    model server and stream worker pods on the cluster."""
    return Workload(
        name=f"{spec.name}-registry-sync", component="registry-sync",
        description=f"{spec.name} registry export of @{alias} (MLflow -> files)",
        image="drift-monitor",
        command=("python", "-m", "workloads.serving.sync"),
        args=("--model", spec.name, "--alias", alias, "--root", "${resources.registry.dir}", "--interval", "30"),
        depends_on=(Dependency(workload=MLFLOW, port="http"),),
        resources_used={"registry": Resource(type="model-registry", params={"model": spec.name, "alias": alias})},
        env=(_mlflow_env(),),
        resources=Resources(cpu_request="20m", memory_request="96Mi", cpu_limit="200m", memory_limit="256Mi"),
        labels=model_identity(spec),
        pod_owner="sidecar",
        pod_selector={"strata.dev/model": spec.name},
    )


def retrain_trigger(options: CatalogueOptions = CatalogueOptions()) -> Workload:
    """Alertmanager's retrain webhook: one retrain per model at a time, cooldown on disk."""
    return Workload(
        name=RETRAIN_TRIGGER, component="retrain-trigger", placement=Placement.MONITORING,
        description="retraining trigger (Alertmanager webhook -> a training run)",
        image="drift-monitor",
        command=("python", "-m", "workloads.monitoring.retrain"),
        args=("--host", "${bind}", "--port", f"${{ports.{HTTP_METRICS}}}", "--command", "${resources.retrain.command}",
              "--cooldown", str(options.retrain_cooldown_s), "--state-file", "${resources.retrain.state_file}",
              "--log-dir", "${resources.retrain.log_dir}",
              # the loop (local): a new challenger goes to the rollout controller; "" on the cluster
              "--rollout-registry", "${resources.retrain.rollout_registry}",
              "--rollout-command", "${resources.retrain.rollout_command}",
              "--models", "${resources.retrain.models}"),  # only these models are retrained
        ports=(Port(name=HTTP_METRICS, port=RETRAIN_PORT),),
        liveness=HttpProbe(path="/healthz", port=HTTP_METRICS, initial_delay_s=10, period_s=15),
        readiness=HttpProbe(path="/healthz", port=HTTP_METRICS, initial_delay_s=3, period_s=5),
        metrics=Metrics(port=HTTP_METRICS, job="strata-retrain-trigger"),
        depends_on=(Dependency(workload=MLFLOW, port="http"),),
        resources_used={"retrain": Resource(type="state"), "kubernetes": Resource(type="kubernetes-api")},
        # the bearer token Alertmanager sends (a Secret on the cluster, a state-dir file locally)
        env=(EnvVar(name="STRATA_RETRAIN_TOKEN", secret=SecretRef(secret="retrain-trigger-token", key="token")),),
        resources=Resources(cpu_request="50m", memory_request="128Mi", cpu_limit="500m", memory_limit="256Mi"),
        singleton=True,  # "one retrain per model at a time" is this process's state
    )


def cost_exporter(options: CatalogueOptions = CatalogueOptions()) -> Workload:
    spot = tuple(arg for pool in options.spot_pools for arg in ("--spot-pool", pool))
    return Workload(
        name=COST_EXPORTER, component="cost-exporter", placement=Placement.MONITORING,
        description="cost and spot exporter (node prices, per-model cost, interruptions)",
        image="drift-monitor",
        command=("python", "-m", "workloads.monitoring.cost_exporter"),
        args=("--host", "${bind}", "--port", f"${{ports.{HTTP_METRICS}}}", "--interval", str(options.cost_interval_s),
              *spot),
        ports=(Port(name=HTTP_METRICS, port=COST_PORT),),
        liveness=HttpProbe(path="/metrics", port=HTTP_METRICS, initial_delay_s=20, period_s=30),
        readiness=HttpProbe(path="/metrics", port=HTTP_METRICS, initial_delay_s=5),
        metrics=Metrics(port=HTTP_METRICS, interval="60s", job="strata-cost-exporter"),
        resources_used={"kubernetes": Resource(type="kubernetes-api", params={"read": "nodes,pods,events"})},
        resources=Resources(cpu_request="50m", memory_request="128Mi", cpu_limit="250m", memory_limit="256Mi"),
        singleton=True,
    )


def training_metrics(specs: Any, options: CatalogueOptions = CatalogueOptions()) -> Workload:
    """The contract's `strata_training_*` from MLflow's run records (every run, local or a RayJob,
    writes one): a training job is too short-lived to be scraped itself, see
    `workloads.monitoring.training_metrics`."""
    models = tuple(arg for spec in sorted(specs, key=lambda s: s.name) for arg in ("--model", f"{spec.name}={spec.team}"))
    return Workload(
        name=TRAINING_METRICS, component="training-metrics", placement=Placement.MONITORING,
        description="training metrics exporter (MLflow run records -> strata_training_*)",
        image="drift-monitor",
        command=("python", "-m", "workloads.monitoring.training_metrics"),
        args=("--host", "${bind}", "--port", f"${{ports.{HTTP_METRICS}}}",
              "--interval", str(options.training_metrics_interval_s), *models),
        ports=(Port(name=HTTP_METRICS, port=TRAINING_METRICS_PORT),),
        liveness=HttpProbe(path="/metrics", port=HTTP_METRICS, initial_delay_s=20, period_s=30),
        readiness=HttpProbe(path="/healthz", port=HTTP_METRICS, initial_delay_s=5, period_s=5),
        metrics=Metrics(port=HTTP_METRICS, interval="15s", job="strata-training"),
        depends_on=(Dependency(workload=MLFLOW, port="http"),),
        env=(_mlflow_env(),),
        resources=Resources(cpu_request="50m", memory_request="128Mi", cpu_limit="250m", memory_limit="256Mi"),
        singleton=True,  # two replicas would each export every run: the sums would double
    )


def cdc_sink(pipeline: Any) -> Workload:
    """Debezium's change events of one pipeline (`workloads.data.ingest.pipeline.CdcPipeline`)
    -> its bronze table, exactly once per Kafka offset (the offsets live in bronze's Delta
    transactions, so it is one writer: a singleton). The demo's lake stage runs the same
    `CdcIngester` in its own process locally."""
    return Workload(
        name=f"{pipeline.name}-cdc-sink", component="cdc-sink",
        description=f"CDC sink {pipeline.topic} -> bronze/{pipeline.lake_table} (key {pipeline.key})",
        image="training",  # the image with workloads.data's deltalake + polars and kafka-python
        command=("python", "-m", "workloads.data.ingest.cdc"),
        args=("--bootstrap", "${resources.kafka.bootstrap}", "--topic", pipeline.topic, "--table", pipeline.lake_table,
              "--key", pipeline.key, "--bronze-bucket", "${resources.lake.bucket}",
              "--metrics-port", "${ports.cdc-metrics}", "--metrics-host", "${bind}"),
        ports=(Port(name="cdc-metrics", port=CDC_SINK_METRICS_PORT),),
        **_metrics_probes("cdc-metrics"),
        metrics=Metrics(port="cdc-metrics", interval="15s", job="strata-cdc-sink"),
        resources_used={"kafka": Resource(type="kafka", params={"user": f"{pipeline.name}-cdc-sink"}),
                        "lake": Resource(type="object-store", params={"bucket": "lake-bronze"})},
        env=KAFKA_TLS_ENV,
        resources=Resources(cpu_request="250m", memory_request="512Mi", cpu_limit="1", memory_limit="1Gi"),
        singleton=True,  # one writer of bronze's offsets
        labels={"strata.dev/team": pipeline.team, "strata.dev/cdc-pipeline": pipeline.name},
        start_timeout_s=90.0,
    )


#: The online store's URL, token included (a Secret in each team namespace that reads or writes
#: online features, `infra.platform.features`; locally the supervisor writes the local Redis's URL).
FEATURE_STORE_SECRET = SecretRef(secret="feature-store", key="url")
FEATURE_STORE_URL_ENV = "STRATA_FEATURE_STORE_URL"


def feature_aggregator(pipeline: Any) -> Workload:
    """The streaming features of one pipeline (`CdcPipeline.features`): the same change events
    as its sink -> per-entity rolling aggregates -> the online store. Its state is rebuilt from
    the topic's retained changes on start and re-writing a card is idempotent, but two replicas
    would write every card twice: a singleton. The Redis URL (a token in it) comes from the
    team's feature-store Secret as an env var, never from argv."""
    features = pipeline.features
    if features is None:
        raise ValueError(f"CDC pipeline {pipeline.name}: declares no streaming features (`features`)")
    windows = tuple(arg for window in features.windows for arg in ("--window", window))
    return Workload(
        name=f"{pipeline.name}-aggregator", component="feature-aggregator",
        description=f"streaming features {pipeline.topic} -> online view {features.view} "
                    f"(per {features.entity}: count, {features.value} sum over {', '.join(features.windows)})",
        image="training",  # the image with workloads.data (the CDC parser), kafka-python and redis
        command=("python", "-m", "workloads.data.features.streaming"),
        args=("--bootstrap", "${resources.kafka.bootstrap}", "--topic", pipeline.topic, "--view", features.view,
              "--entity", features.entity, "--record-key", pipeline.key, "--event-time", features.event_time,
              "--value", features.value, *windows, "--ttl-seconds", str(features.ttl_seconds),
              "--metrics-port", "${ports.agg-metrics}", "--metrics-host", "${bind}"),
        ports=(Port(name="agg-metrics", port=AGGREGATOR_METRICS_PORT),),
        **_metrics_probes("agg-metrics"),
        metrics=Metrics(port="agg-metrics", interval="15s", job="strata-feature-aggregator"),
        resources_used={"kafka": Resource(type="kafka", params={"user": f"{pipeline.name}-aggregator"}),
                        "features": Resource(type="feature-store", params={"view": features.view})},
        env=(EnvVar(name=FEATURE_STORE_URL_ENV, secret=FEATURE_STORE_SECRET),
             *KAFKA_TLS_ENV),
        # memory: the transactions of the longest window plus the lateness, per entity
        resources=Resources(cpu_request="250m", memory_request="512Mi", cpu_limit="1", memory_limit="2Gi"),
        singleton=True,
        labels={"strata.dev/team": pipeline.team, "strata.dev/cdc-pipeline": pipeline.name,
                "strata.dev/feature-view": features.view},
        start_timeout_s=90.0,
    )


def pipeline_workloads(pipeline: Any) -> tuple[Workload, ...]:
    """A CDC pipeline's workloads: its sink, and its feature aggregator where it declares features."""
    return (cdc_sink(pipeline), *((feature_aggregator(pipeline),) if pipeline.features is not None else ()))


MLFLOW_DB_SECRET = SecretRef(secret="mlflow-db", key="backend-store-uri")


def mlflow() -> Workload:
    """The tracking server, on both sides (the cluster's `MlflowTracking` renders its container
    from this). The backend store URI is a Secret's key, read from the environment (a password
    never in argv): on the cluster the program builds it from the database's outputs; locally
    the supervisor writes it (sqlite or the local PostgreSQL). Artifacts live in an object store
    (S3 on AWS, the local S3 server locally), written by the clients themselves
    (`--no-serve-artifacts`); a kubeconfig target without S3 serves a volume instead."""
    return Workload(
        name=MLFLOW, component="tracking-server", placement=Placement.MLFLOW,
        description="MLflow tracking server + model registry",
        image="mlflow",
        command=("mlflow", "server"),
        args=("--host", "${bind}", "--port", "${ports.http}", "--workers", "${resources.tracking.workers}",
              "--default-artifact-root", "${resources.artifacts.root}", "${resources.tracking.serve_flag}"),
        ports=(Port(name="http", port=MLFLOW_PORT),),
        liveness=HttpProbe(path="/health", port="http", initial_delay_s=30, period_s=15, failures=4),
        readiness=HttpProbe(path="/health", port="http", initial_delay_s=10),
        # No metrics block: `--expose-prometheus` needs prometheus-flask-exporter, which MLflow 3
        # no longer depends on; only the tracking image carries it (the cluster's ServiceMonitor
        # of MlflowTracking), and no alert reads MLflow's own metrics.
        resources_used={"tracking": Resource(type="state"),
                        "artifacts": Resource(type="object-store", params={"bucket": "mlflow-artifacts"})},
        # MLflow 3's server-side job runner (GenAI scoring, trace rollups: nothing Strata uses) is
        # 8 more Python processes polling the backend: measured 10 -> 2 processes, half the CPU
        env=(EnvVar(name="MLFLOW_BACKEND_STORE_URI", secret=MLFLOW_DB_SECRET),
             EnvVar(name="MLFLOW_SERVER_ENABLE_JOB_EXECUTION", value="false")),
        resources=Resources(cpu_request="250m", memory_request="512Mi", cpu_limit="1", memory_limit="2Gi"),
        start_timeout_s=300.0,  # a first start creates the database schema
    )


def model_workloads(spec: Any, options: CatalogueOptions = CatalogueOptions()) -> tuple[Workload, ...]:
    """Every workload a model can have; which of them a mode runs is the renderer's caller's choice."""
    workloads = []
    if spec.serving.realtime.enabled:
        workloads += [model_server(spec, slot) for slot in SLOTS]
        workloads.append(rollout_controller(spec))
    if spec.serving.streaming.enabled:
        workloads += [stream_worker(spec), quality_service(spec, options)]
    workloads += [drift_monitor(spec, options), registry_sync(spec)]
    return tuple(workloads)


def platform_workloads(options: CatalogueOptions = CatalogueOptions()) -> tuple[Workload, ...]:
    return (mlflow(), retrain_trigger(options), cost_exporter(options))


def catalogue(specs: Any, options: CatalogueOptions = CatalogueOptions()) -> dict[str, Workload]:
    """name -> workload for the platform and every model; a duplicate name is an error."""
    result: dict[str, Workload] = {}
    specs = tuple(specs)
    for workload in (*platform_workloads(options), training_metrics(specs, options),
                     *(w for s in specs for w in model_workloads(s, options))):
        if workload.name in result:
            raise ValueError(f"workload {workload.name!r} is declared twice")
        result[workload.name] = workload
    for workload in result.values():
        for dep in workload.depends_on:
            if dep.workload not in result:
                raise ValueError(f"workload {workload.name}: depends on unknown workload {dep.workload!r}")
            result[dep.workload].port(dep.port)
    return result
