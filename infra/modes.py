"""Execution modes: the ONE table that says what each mode enables.

Everything that differs between `quick`, `standard` and `enterprise` is a row below.
Components never look at the mode name; they receive the resolved `Capabilities`.
A stack file may override only the fields listed in `infra.config` (sizes, versions,
allowlists) -- never a row of this table's security or topology decisions.
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Mapping

from pydantic import BaseModel, ConfigDict


class Mode(str, enum.Enum):
    QUICK = "quick"
    STANDARD = "standard"
    ENTERPRISE = "enterprise"


class NatStrategy(str, enum.Enum):
    """Like awsx `NatGatewayStrategy`: one shared NAT, or one per availability zone."""

    SINGLE = "single"
    ONE_PER_AZ = "one-per-az"


class EndpointAccess(str, enum.Enum):
    PUBLIC_ALLOWLIST = "public-allowlist"
    PUBLIC_AND_PRIVATE = "public-allowlist+private"
    PRIVATE = "private"


class MlflowBackend(str, enum.Enum):
    IN_CLUSTER_DB = "in-cluster-postgres"
    RDS = "rds"
    RDS_MULTI_AZ = "rds-multi-az"


class MtlsMode(str, enum.Enum):
    OFF = "off"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


class OnlineStore(str, enum.Enum):
    """Where the online feature store (Redis protocol) runs, for models that declare online views."""

    IN_CLUSTER_REDIS = "in-cluster-redis"  # a StatefulSet of the official image, auth on
    ELASTICACHE = "elasticache-valkey"  # one primary, transit + at-rest encryption, auth token
    ELASTICACHE_MULTI_AZ = "elasticache-valkey-multi-az"  # + a replica per further AZ, automatic failover


class PolicyEnforcement(str, enum.Enum):
    ADVISORY = "advisory"
    MANDATORY = "mandatory"


class LakeLayout(str, enum.Enum):
    SINGLE_BUCKET = "single-bucket"
    MEDALLION = "bronze-silver-gold"


class RolloutStrategy(str, enum.Enum):
    NONE = "none"  # one predictor, no traffic split
    CANARY = "canary"
    SHADOW = "shadow"
    AB = "ab"
    BLUE_GREEN = "blue-green"


class Capabilities(BaseModel):
    """What one execution mode enables. Frozen: resolved once by the entry point."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode
    az_count: int
    nat_strategy: NatStrategy
    endpoint_access: EndpointAccess
    cpu_spot_pool: bool  # fixed-size CPU spot managed node group
    cpu_spot_autoscaled: bool  # Karpenter NodePool for CPU spot
    gpu_spot_pool: bool  # GPU spot, tainted nvidia.com/gpu, on-demand fallback
    karpenter: bool  # Karpenter + SQS interruption queue + EventBridge rules
    mlflow_backend: MlflowBackend
    online_store: OnlineStore  # only where a model declares online feature views
    training_hpo: bool  # Ray Tune / Optuna
    training_max_workers: int  # DDP workers per RayJob
    training_gpu: bool
    rollout_strategies: frozenset[RolloutStrategy]
    istio: bool
    mtls: MtlsMode
    kafka: bool
    keda: bool
    monitoring: bool
    monitoring_ha: bool  # 2 Prometheus / 3 Alertmanager replicas
    drift_monitoring: bool
    policy_enforcement: PolicyEnforcement
    lake_layout: LakeLayout
    lake_versioning_lifecycle: bool
    system_pool_size: int  # on-demand system nodes (desired)
    cpu_spot_pool_size: int  # desired CPU spot nodes (0 when the pool is absent)
    gpu_spot_max: int  # GPU spot nodes at most (0 when absent)

    @property
    def gpu(self) -> bool:
        return self.gpu_spot_pool


_ALL_ROLLOUTS = frozenset(RolloutStrategy)
_R = RolloutStrategy

# fmt: off
#  capability                   quick                          standard                              enterprise
MODE_TABLE_ROWS: Mapping[str, tuple] = MappingProxyType({
    "az_count":                  (2,                            3,                                    3),
    "nat_strategy":              (NatStrategy.SINGLE,           NatStrategy.SINGLE,                   NatStrategy.ONE_PER_AZ),
    "endpoint_access":           (EndpointAccess.PUBLIC_ALLOWLIST, EndpointAccess.PUBLIC_AND_PRIVATE, EndpointAccess.PRIVATE),
    "cpu_spot_pool":             (True,                         True,                                 True),
    "cpu_spot_autoscaled":       (False,                        True,                                 True),
    "gpu_spot_pool":             (False,                        False,                                True),
    "karpenter":                 (False,                        True,                                 True),
    "mlflow_backend":            (MlflowBackend.IN_CLUSTER_DB,  MlflowBackend.RDS,                    MlflowBackend.RDS_MULTI_AZ),
    "online_store":              (OnlineStore.IN_CLUSTER_REDIS, OnlineStore.ELASTICACHE,          OnlineStore.ELASTICACHE_MULTI_AZ),
    "training_hpo":              (False,                        True,                                 True),
    "training_max_workers":      (1,                            1,                                    8),
    "training_gpu":              (False,                        False,                                True),
    "rollout_strategies":        (frozenset({_R.NONE}),         frozenset({_R.NONE, _R.CANARY}),      _ALL_ROLLOUTS),
    "istio":                     (False,                        True,                                 True),
    "mtls":                      (MtlsMode.OFF,                 MtlsMode.PERMISSIVE,                  MtlsMode.STRICT),
    "kafka":                     (False,                        False,                                True),
    "keda":                      (False,                        False,                                True),
    "monitoring":                (False,                        True,                                 True),
    "monitoring_ha":             (False,                        False,                                True),
    "drift_monitoring":          (False,                        True,                                 True),
    "policy_enforcement":        (PolicyEnforcement.ADVISORY,   PolicyEnforcement.ADVISORY,           PolicyEnforcement.MANDATORY),
    "lake_layout":               (LakeLayout.SINGLE_BUCKET,     LakeLayout.MEDALLION,                 LakeLayout.MEDALLION),
    "lake_versioning_lifecycle": (False,                        False,                                True),
    "system_pool_size":          (2,                            2,                                    3),
    "cpu_spot_pool_size":        (2,                            3,                                    3),
    "gpu_spot_max":              (0,                            0,                                    4),
})
# fmt: on

_MODE_ORDER = (Mode.QUICK, Mode.STANDARD, Mode.ENTERPRISE)


def capabilities(mode: Mode | str) -> Capabilities:
    """The table's column for `mode`."""
    mode = Mode(mode)
    column = _MODE_ORDER.index(mode)
    return Capabilities(mode=mode, **{row: values[column] for row, values in MODE_TABLE_ROWS.items()})


MODES: Mapping[Mode, Capabilities] = MappingProxyType({m: capabilities(m) for m in _MODE_ORDER})


def modes_markdown() -> str:
    """The table as Markdown, for the README (a test keeps the two identical)."""

    def cell(value: object) -> str:
        if isinstance(value, bool):
            return "yes" if value else "-"
        if isinstance(value, frozenset):
            return ", ".join(sorted(v.value for v in value))
        return str(value.value if isinstance(value, enum.Enum) else value)

    lines = ["| capability | " + " | ".join(m.value for m in _MODE_ORDER) + " |", "|---|---|---|---|"]
    for row, values in MODE_TABLE_ROWS.items():
        lines.append(f"| {row} | " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines)
