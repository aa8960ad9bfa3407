"""The declarative model spec a model team writes (one YAML file per model).

Pure pydantic, no Pulumi, no MLflow: the training image, the serving image and the
Pulumi program all import it. Field names are camelCase in YAML; every validation
error names the property path (see `SpecError`).
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

NAME_PATTERN = r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$"  # DNS-1123 label, short enough for suffixes
ENTRYPOINT_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"  # package.module:function
DURATION_PATTERN = r"^[1-9][0-9]*(s|m|h)$"
CRON_PATTERN = r"^(\S+\s+){4}\S+$"
#: The model spec file a process reads when none is passed (`strata train`, the rollout
#: controller, the retraining trigger's hand-off): a bare spec or the <model>-spec ConfigMap.
SPEC_FILE_ENV = "STRATA_MODEL_SPEC_FILE"


class SpecError(ValueError):
    """An invalid spec or stack file. `problems` are `(property.path, message)` pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{path}: {message}" for path, message in problems))


def _join_path(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and part.startswith(("function-", "tagged-union[")):
            continue  # pydantic's internal validator names, not user-visible fields
        else:
            path += f".{part}" if path and not path.endswith(":") else str(part)
    return path.removesuffix(":")


def spec_error_from(error: ValidationError, prefix: str = "") -> SpecError:
    """Turn pydantic's error list into property-path messages a person can act on."""
    problems = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown property (check spelling; see the JSON Schema)"
        elif "input" in item and "got " not in message and item["type"] != "missing" and not isinstance(
            item["input"], (dict, list)
        ):
            message = f"{message}, got {item['input']!r}"
        problems.append((_join_path(prefix, item["loc"]), message))
    return SpecError(problems)


class _Spec(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )


class Direction(str, enum.Enum):
    MAX = "max"
    MIN = "min"


class RolloutStrategyName(str, enum.Enum):
    NONE = "none"
    CANARY = "canary"
    SHADOW = "shadow"
    AB = "ab"
    BLUE_GREEN = "blue-green"


# ---------------------------------------------------------------- training


class Resources(_Spec):
    """Per Ray worker. Defaults: 1 CPU, 2 GiB, no GPU."""

    cpu: float = Field(1.0, gt=0, le=96)
    memory_gib: float = Field(2.0, gt=0, le=768)
    gpu: int = Field(0, ge=0, le=8)


class UniformParam(_Spec):
    type: Literal["uniform", "loguniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds(self) -> "UniformParam":
        if not self.low < self.high:
            raise ValueError(f"low must be < high, got low={self.low} high={self.high}")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        return self


class IntParam(_Spec):
    type: Literal["randint"]
    low: int
    high: int

    @model_validator(mode="after")
    def _bounds(self) -> "IntParam":
        if not self.low < self.high:
            raise ValueError(f"low must be < high, got low={self.low} high={self.high}")
        return self


class ChoiceParam(_Spec):
    type: Literal["choice"]
    values: list[Union[float, int, str, bool]] = Field(min_length=1)


SearchParam = Annotated[Union[UniformParam, IntParam, ChoiceParam], Field(discriminator="type")]


class Hpo(_Spec):
    """Ray Tune + Optuna search with ASHA early stopping."""

    trials: int = Field(8, ge=1, le=1000)
    max_concurrent: int = Field(2, ge=1, le=64)
    metric: str = "val_loss"
    direction: Direction = Direction.MIN
    space: dict[str, SearchParam] = Field(min_length=1)
    grace_period_epochs: int = Field(1, ge=1)


class Baseline(_Spec):
    """Evaluation gate: what a candidate must beat to become `challenger`."""

    primary_metric: str = "val_loss"
    direction: Direction = Direction.MIN
    max_regression_pct: float = Field(5.0, ge=0, le=100)  # vs champion
    trivial: Literal["majority-class", "mean", "none"] = "none"
    max_invalid_row_fraction: float = Field(0.001, ge=0, le=1)


class Training(_Spec):
    entrypoint: str = Field(pattern=ENTRYPOINT_PATTERN)  # module:function returning the model-team hooks
    data: str  # URI: synthetic://..., file://..., s3://..., sklearn://digits, lake://gold/<table>[?version=N]
    data_key: str | None = None  # the record key of the model's lake tables (dedup in silver, joins)
    resources: Resources = Resources()
    workers: int = Field(1, ge=1, le=64)
    epochs: int = Field(5, ge=1, le=10_000)
    batch_size: int = Field(256, ge=1, le=1_000_000)
    seed: int = 0  # picks the train/val/holdout split (and, unless initSeed is set, the initial weights)
    # Seed of the initial weights and the batch order. Another init seed on the same data and
    # split gives a second model of the same recipe (a challenger judged on the same holdout).
    init_seed: int | None = None
    max_failures: int = Field(3, ge=0, le=100)
    hpo: Hpo | None = None
    schedule: str | None = Field(None, pattern=CRON_PATTERN)  # cron, retrain periodically
    baseline: Baseline = Baseline()
    active_deadline_seconds: int = Field(6 * 3600, ge=60)

    @property
    def weights_seed(self) -> int:
        return self.seed if self.init_seed is None else self.init_seed

    @field_validator("data")
    @classmethod
    def _data_uri(cls, value: str) -> str:
        if not re.match(r"^(synthetic|file|s3|sklearn|lake)://\S+$", value):
            raise ValueError("must be a URI with scheme synthetic://, file://, s3://, sklearn:// or lake://")
        return value


# ---------------------------------------------------------------- serving


# Answered 1-row requests/s one CPU of a model server holds at saturation: the serving
# benchmark (tests/benchmarks/test_serving_bench.py, 128 clients, the server pinned to one
# CPU it has to itself, as a pod's CPU request gives it) measured 1015-1065 REST; rounded
# down, so a pod is never assumed to hold more than it did. (A CPU shared with other work
# held 340-400: that is what an undersized request costs, not the server's capacity.)
SERVER_CAPACITY_RPS_PER_CPU = 1000.0


class Autoscaling(_Spec):
    min_replicas: int = Field(2, ge=1, le=100)
    max_replicas: int = Field(4, ge=1, le=500)
    target_cpu_percent: int = Field(70, ge=10, le=100)
    # Requests/s per stable pod before another is added (where KEDA scales on requests);
    # default: the measured capacity of the pod's CPUs at `targetCpuPercent`.
    target_requests_per_second: float | None = Field(None, gt=0, le=1_000_000)

    @model_validator(mode="after")
    def _order(self) -> "Autoscaling":
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"maxReplicas ({self.max_replicas}) must be >= minReplicas ({self.min_replicas})"
            )
        return self


class ServerSettings(_Spec):
    """How each model server pod runs Seldon's wrapper (`workloads.serving.app`). The
    defaults are what the serving benchmark (`make bench`, tests/benchmarks) measured best
    on one CPU: two REST worker processes of two threads each (one process spends much of
    each request handing it between gunicorn's poller thread and a pool thread under the
    GIL; a second process computes meanwhile; more threads only contend for the GIL), two
    gRPC threads, and a queue budget of 100 ms (half the default p99 objective): a request
    that waited longer for a thread is shed at once (503 + Retry-After; gRPC UNAVAILABLE)
    instead of being answered after its client gave up."""

    workers: int = Field(2, ge=1, le=32)
    threads: int = Field(2, ge=1, le=64)
    grpc_threads: int = Field(2, ge=1, le=64)
    queue_budget_ms: float = Field(100.0, ge=0, le=60_000)  # 0: never shed


class Realtime(_Spec):
    enabled: bool = True
    protocol: Literal["rest", "grpc", "both"] = "both"
    autoscaling: Autoscaling = Autoscaling()
    server: ServerSettings = ServerSettings()
    cpu: float = Field(1.0, gt=0, le=64)
    memory_gib: float = Field(1.0, gt=0, le=256)
    max_batch_rows: int = Field(1024, ge=1, le=100_000)
    max_payload_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)

    @property
    def requests_per_pod_target(self) -> float:
        """Requests/s per stable pod the request-driven autoscaler aims at."""
        scaling = self.autoscaling
        if scaling.target_requests_per_second is not None:
            return scaling.target_requests_per_second
        return round(SERVER_CAPACITY_RPS_PER_CPU * self.cpu * scaling.target_cpu_percent / 100, 1)


class Streaming(_Spec):
    enabled: bool = False
    partitions: int = Field(6, ge=1, le=1000)
    replication_factor: int = Field(3, ge=1, le=5)
    max_replicas: int | None = Field(None, ge=1)  # defaults to partitions; never above them
    lag_threshold: int = Field(100, ge=1)
    activation_lag_threshold: int = Field(10, ge=0)
    batch_size: int = Field(256, ge=1, le=100_000)
    retention_hours: int = Field(72, ge=1, le=24 * 365)

    @model_validator(mode="after")
    def _replicas_within_partitions(self) -> "Streaming":
        if self.max_replicas is not None and self.max_replicas > self.partitions:
            raise ValueError(
                f"maxReplicas ({self.max_replicas}) must be <= partitions ({self.partitions}): "
                "extra consumers would sit idle"
            )
        return self

    @property
    def effective_max_replicas(self) -> int:
        return self.max_replicas or self.partitions


class Rollout(_Spec):
    strategy: RolloutStrategyName = RolloutStrategyName.CANARY
    steps: list[int] = Field(default_factory=lambda: [5, 25, 50, 100])  # canary weights, %
    analysis_window: str = Field("5m", pattern=DURATION_PATTERN)
    min_requests_per_step: int = Field(200, ge=1)
    ab_weight: int = Field(50, ge=1, le=99)  # % of traffic to the challenger arm in A/B
    auto_promote: bool = False

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[int]) -> list[int]:
        if not steps:
            raise ValueError("needs at least one step")
        for index, weight in enumerate(steps):
            if not 1 <= weight <= 100:
                raise ValueError(f"step {index} is {weight}: weights are percentages 1..100")
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"weights must strictly increase, got {steps}")
        if steps[-1] != 100:
            raise ValueError(f"the last step must be 100, got {steps[-1]}")
        return steps


class Serving(_Spec):
    realtime: Realtime = Realtime()
    streaming: Streaming = Streaming()
    rollout: Rollout = Rollout()


# ---------------------------------------------------------------- features
FEATURE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"  # a column name in gold, a hash field online
TTL_PATTERN = r"^[1-9][0-9]*(s|m|h|d)$"
_TTL_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Entity(_Spec):
    """What features are keyed by (a card, a merchant): its name and its join key column(s)."""

    name: str = Field(pattern=FEATURE_NAME_PATTERN)
    join_keys: list[str] = Field(min_length=1, max_length=4)
    description: str = ""

    @field_validator("join_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        bad = [k for k in keys if not re.match(FEATURE_NAME_PATTERN, k)]
        if bad:
            raise ValueError(f"join key(s) {', '.join(map(repr, bad))} must match {FEATURE_NAME_PATTERN}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"join keys repeat: {keys}")
        return keys


class Feature(_Spec):
    """One column of a feature view, and the value an unknown entity gets online."""

    name: str = Field(pattern=FEATURE_NAME_PATTERN)
    dtype: Literal["int64", "float64", "bool", "string"] = "float64"
    default: float | int | bool | str | None = None

    @model_validator(mode="after")
    def _default_matches(self) -> "Feature":
        d = self.default
        ok = d is None or {
            "int64": isinstance(d, int) and not isinstance(d, bool),
            "float64": isinstance(d, (int, float)) and not isinstance(d, bool),
            "bool": isinstance(d, bool),
            "string": isinstance(d, str),
        }[self.dtype]
        if not ok:
            raise ValueError(f"default {d!r} is not a {self.dtype}")
        return self


class FeatureView(_Spec):
    """Features of one gold table, per entity, valid for `ttl` after their event time."""

    name: str = Field(pattern=FEATURE_NAME_PATTERN)
    source: str = Field(pattern=r"^gold/[a-z0-9][-a-z0-9_]*$")  # gold/<table> of the lake
    entities: list[str] = Field(min_length=1)
    timestamp_field: str = Field("event_ts", pattern=FEATURE_NAME_PATTERN)
    # when the row became known (late data): a row is visible at t only when this is <= t too
    created_timestamp_field: str | None = Field(None, pattern=FEATURE_NAME_PATTERN)
    ttl: str = Field("1d", pattern=TTL_PATTERN)
    owner: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")  # default: the model's owner
    features: list[Feature] = Field(min_length=1, max_length=500)
    online: bool = True

    @property
    def ttl_seconds(self) -> int:
        return int(self.ttl[:-1]) * _TTL_SECONDS[self.ttl[-1]]

    @model_validator(mode="after")
    def _columns(self) -> "FeatureView":
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature(s) {', '.join(dupes)} declared twice")
        reserved = {self.timestamp_field, self.created_timestamp_field} & set(names)
        if reserved:
            raise ValueError(f"feature(s) {', '.join(sorted(reserved - {None}))} are also the view's timestamp fields")
        if self.created_timestamp_field == self.timestamp_field:
            raise ValueError("createdTimestampField must differ from timestampField")
        return self


class Features(_Spec):
    """The features a model needs: entities and feature views over gold tables. At serving time
    an unknown entity gets each feature's `default`; when the online store is down the model
    `onOutage`: serves the defaults (`defaults`) or refuses with 503 and a reason (`reject`)."""

    entities: list[Entity] = Field(min_length=1)
    views: list[FeatureView] = Field(min_length=1)
    on_outage: Literal["defaults", "reject"] = "reject"

    @model_validator(mode="after")
    def _references(self) -> "Features":
        known = {e.name: e for e in self.entities}
        if len(known) != len(self.entities):
            raise ValueError("entity names repeat")
        names = [v.name for v in self.views]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"view(s) {', '.join(dupes)} declared twice")
        for view in self.views:
            unknown = [e for e in view.entities if e not in known]
            if unknown:
                raise ValueError(f"view {view.name!r} names unknown entit(y/ies) {', '.join(unknown)}; "
                                 f"declared: {', '.join(known)}")
            keys = [k for e in view.entities for k in known[e].join_keys]
            clash = sorted(set(keys) & {f.name for f in view.features})
            if clash:
                raise ValueError(f"view {view.name!r}: feature(s) {', '.join(clash)} are also join keys")
        return self

    def entity(self, name: str) -> Entity:
        return next(e for e in self.entities if e.name == name)

    def join_keys(self, view: FeatureView) -> list[str]:
        return [k for e in view.entities for k in self.entity(e).join_keys]


# ---------------------------------------------------------------- SLOs, drift, routing


class Slos(_Spec):
    availability_percent: float = Field(99.9, gt=50, lt=100)
    latency_p99_ms: float = Field(200, gt=0, le=60_000)
    latency_objective_percent: float = Field(99.0, gt=50, lt=100)  # share of requests under p99 target


class Drift(_Spec):
    psi_threshold: float = Field(0.2, gt=0, le=10)
    ks_threshold: float = Field(0.1, gt=0, le=1)
    window: str = Field("15m", pattern=DURATION_PATTERN)
    sustained_for: str = Field("10m", pattern=DURATION_PATTERN)
    quality_degradation_pct: float = Field(5.0, gt=0, le=100)


class PagerDuty(_Spec):
    """Where this model's pages go. The routing key itself is a Pulumi secret in the
    stack (`strata:pagerdutyRoutingKeys`), looked up by `routingKeyName`."""

    routing_key_name: str = Field(pattern=r"^[a-z0-9][-a-z0-9_]*$")
    service: str | None = None


class ModelSpec(_Spec):
    """One onboarded model. `name` is the key in the stack's `models` map."""

    name: str = Field(pattern=NAME_PATTERN)
    team: str = Field(pattern=NAME_PATTERN)
    owner: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")  # e-mail
    description: str = ""
    pagerduty: PagerDuty
    training: Training
    serving: Serving = Serving()
    slos: Slos = Slos()
    drift: Drift = Drift()
    features: Features | None = None  # the feature store's entities and views (workloads/data/features)


def parse_model_spec(raw: Mapping[str, Any], path: str = "") -> ModelSpec:
    """Validate one spec document; errors carry `path` as their prefix."""
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as error:
        raise spec_error_from(error, path) from None


def load_model_spec_file(file: Path | str, path: str | None = None) -> ModelSpec:
    """A spec file; its `name` defaults to its folder's name (`examples/fraud/model.yaml` -> fraud)."""
    file = Path(file)
    raw = yaml.safe_load(file.read_text())
    if not isinstance(raw, dict):
        raise SpecError([(path or str(file), "a model spec must be a YAML mapping")])
    raw.setdefault("name", file.parent.name)
    return parse_model_spec(raw, path if path is not None else str(file))


def model_spec_json_schema() -> dict[str, Any]:
    schema = ModelSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Strata model spec"
    return schema
