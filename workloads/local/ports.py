"""The ONE table of local-mode loopback ports.

Every port a local service listens on is a row here, with its default, the environment
variable that overrides it and what it is for. Nothing else in the code base hard-codes a
local port: services ask `resolve_ports()` (or the Supervisor) for theirs.

Override a port with its environment variable (``STRATA_PORT_KAFKA=29092``) or with
``strata local up --port kafka=29092``; an override given to ``up`` is recorded in the
state directory, so ``status``/``down`` find the service where it was started.

All services bind 127.0.0.1 only.

| key              | default | env var                        | what                                     |
|------------------|---------|--------------------------------|------------------------------------------|
| kafka            | 19092   | STRATA_PORT_KAFKA              | Kafka broker (PLAINTEXT, KRaft)          |
| kafka-controller | 19093   | STRATA_PORT_KAFKA_CONTROLLER   | Kafka KRaft controller listener          |
| prometheus       | 19090   | STRATA_PORT_PROMETHEUS         | Prometheus UI/API                        |
| alertmanager     | 19094   | STRATA_PORT_ALERTMANAGER       | Alertmanager UI/API                      |
| mlflow           | 19500   | STRATA_PORT_MLFLOW             | MLflow tracking server + UI              |
| pagerduty        | 19880   | STRATA_PORT_PAGERDUTY          | local PagerDuty Events v2 receiver       |
| proxy            | 19080   | STRATA_PORT_PROXY              | traffic proxy (nginx)                    |
| proxy-grpc       | 19081   | STRATA_PORT_PROXY_GRPC         | traffic proxy, gRPC (HTTP/2)             |
| model-servers    | 19100   | STRATA_PORT_MODEL_SERVERS      | model servers, 6 per model               |
| stream-workers   | 19200   | STRATA_PORT_STREAM_WORKERS     | stream worker metrics; +1 per model      |
| drift-monitor    | 19300   | STRATA_PORT_DRIFT_MONITOR      | drift monitors; +1 per model             |
| retrain-trigger  | 19310   | STRATA_PORT_RETRAIN_TRIGGER    | retraining trigger (webhook + metrics)   |
| quality-service  | 19320   | STRATA_PORT_QUALITY_SERVICE    | model-quality services; +1 per model     |
| training-metrics | 19330   | STRATA_PORT_TRAINING_METRICS   | training metrics exporter (MLflow runs)  |
| cdc-sink         | 19340   | STRATA_PORT_CDC_SINK           | CDC sink metrics (Kafka -> bronze)       |
| feature-aggregator | 19341 | STRATA_PORT_FEATURE_AGGREGATOR | streaming features metrics (CDC -> Redis) |
| s3               | 19400   | STRATA_PORT_S3                 | S3 (SeaweedFS): gateway +0, internals +1..+9 |
| postgres         | 19432   | STRATA_PORT_POSTGRES           | PostgreSQL (the CDC source)              |
| kafka-connect    | 19083   | STRATA_PORT_KAFKA_CONNECT      | Kafka Connect REST (Debezium)            |
| redis            | 19379   | STRATA_PORT_REDIS              | Redis (the online feature store)         |

The model-servers ... quality-service rows are the workloads' (workloads/local/services.py gives each model its
offset within a row).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from workloads.local.errors import ConfigError

HOST = "127.0.0.1"


@dataclass(frozen=True)
class PortSpec:
    key: str
    default: int
    description: str
    span: int = 1  # ports the row reserves from its port on (a service's internal listeners)

    @property
    def env_var(self) -> str:
        return "STRATA_PORT_" + self.key.upper().replace("-", "_")


PORTS: dict[str, PortSpec] = {
    p.key: p
    for p in (
        PortSpec("kafka", 19092, "Kafka broker (PLAINTEXT, KRaft)"),
        PortSpec("kafka-controller", 19093, "Kafka KRaft controller listener"),
        PortSpec("prometheus", 19090, "Prometheus UI/API"),
        PortSpec("alertmanager", 19094, "Alertmanager UI/API"),
        PortSpec("mlflow", 19500, "MLflow tracking server + UI"),
        PortSpec("pagerduty", 19880, "local PagerDuty Events v2 receiver"),
        PortSpec("proxy", 19080, "traffic proxy (nginx: canary/shadow/A-B split)"),
        PortSpec("proxy-grpc", 19081, "traffic proxy, gRPC (HTTP/2; `seldon: <model>` metadata)"),
        PortSpec("model-servers", 19100, "model servers: 6 per model (stable/candidate x REST/gRPC/metrics)"),
        PortSpec("stream-workers", 19200, "stream worker metrics; +1 per model"),
        PortSpec("drift-monitor", 19300, "drift monitors; +1 per model"),
        PortSpec("retrain-trigger", 19310, "retraining trigger (webhook + metrics)"),
        PortSpec("quality-service", 19320, "model-quality services; +1 per model"),
        PortSpec("training-metrics", 19330, "training metrics exporter (strata_training_* from MLflow's runs)"),
        PortSpec("cdc-sink", 19340, "CDC sink metrics (the local pipeline's change events -> bronze)"),
        PortSpec("feature-aggregator", 19341, "streaming features metrics (the same change events -> Redis)"),
        PortSpec("postgres", 19432, "PostgreSQL (wal_level=logical: the CDC source)"),
        PortSpec("kafka-connect", 19083, "Kafka Connect REST API (Debezium PostgreSQL connector)"),
        PortSpec("redis", 19379, "Redis (the online feature store)"),
        PortSpec("s3", 19400, "S3 gateway (SeaweedFS); +1..+9 its master, volume, filer, gRPC and metrics", span=10),
    )
}


def _check_port(value: object, where: str) -> int:
    try:
        port = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a port number") from None
    if not 1024 <= port <= 65535:
        raise ConfigError(f"{where}: port {port} is outside 1024-65535")
    return port


def resolve_ports(
    overrides: Mapping[str, int] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, int]:
    """Defaults, then ``STRATA_PORT_*`` environment variables, then explicit overrides."""
    env = os.environ if env is None else env
    ports: dict[str, int] = {}
    for key, spec in PORTS.items():
        ports[key] = spec.default
        if spec.env_var in env and env[spec.env_var].strip():
            ports[key] = _check_port(env[spec.env_var], spec.env_var)
    for key, value in (overrides or {}).items():
        if key not in PORTS:
            raise ConfigError(
                f"port override {key}={value}: unknown port key {key!r}; known: {', '.join(PORTS)}"
            )
        ports[key] = _check_port(value, f"port override {key}")
    seen: dict[int, str] = {}
    for key, port in ports.items():
        if port in seen:
            raise ConfigError(f"ports {seen[port]!r} and {key!r} are both set to {port}")
        seen[port] = key
    return ports


def parse_port_overrides(items: list[str] | None) -> dict[str, int]:
    """``["kafka=29092", ...]`` (the CLI's ``--port``) as a mapping."""
    out: dict[str, int] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--port {item!r}: expected KEY=PORT, e.g. kafka=29092")
        out[key.strip()] = _check_port(value, f"--port {key.strip()}")
    return out


def free_port_map(low: int = 20000, high: int = 32000, seed: int | None = None) -> dict[str, int]:
    """A free loopback port for every key of the ports table (below the ephemeral range)."""
    import random

    from workloads.local.supervisor import port_free  # a socket probe; imported late (supervisor imports us)

    rng = random.Random(seed)
    chosen: dict[str, int] = {}
    used: set[int] = set()
    for key, spec in PORTS.items():
        for _ in range(500):
            port = rng.randrange(low, high - spec.span)
            span = set(range(port, port + spec.span))  # a row's whole span: its service's internal ports
            if not span & used and all(port_free(p) for p in span):
                chosen[key] = port
                used |= span
                break
        else:
            raise RuntimeError(f"no free port for {key} in {low}-{high}")
    return chosen
