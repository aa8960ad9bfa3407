"""Local mode: the supervisor of Strata's local services (`strata local ...`).

Python API::

    from workloads.local import Supervisor
    sup = Supervisor()                 # state in $STRATA_STATE_DIR or <repo>/.strata
    sup.up(["kafka", "prometheus"])    # starts dependencies too; idempotent
    sup.status(); sup.down()
"""

from workloads.local.errors import (
    ConfigError,
    LocalError,
    MissingDependencyError,
    PortInUseError,
    ServiceFailedError,
    UnknownServiceError,
)
from workloads.local.ports import HOST, PORTS, resolve_ports
from workloads.local.services import (
    DEFAULT_SERVICES,
    HttpHealth,
    KafkaHealth,
    LocalOptions,
    Registry,
    Requirement,
    ServiceContext,
    ServiceSpec,
    default_registry,
)
from workloads.local.supervisor import ServiceStatus, Supervisor

__all__ = [
    "ConfigError", "LocalError", "MissingDependencyError", "PortInUseError", "ServiceFailedError",
    "UnknownServiceError", "HOST", "PORTS", "resolve_ports", "DEFAULT_SERVICES", "HttpHealth",
    "KafkaHealth", "LocalOptions", "Registry", "Requirement", "ServiceContext", "ServiceSpec",
    "default_registry", "ServiceStatus", "Supervisor",
]
