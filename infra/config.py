"""Stack config -> typed, frozen `StackSpec`. Only the entry point calls this.

A stack file selects a mode and may override only the fields modelled here (sizes,
versions, allowlists, tags, the models map). Everything else comes from the mode table
in `infra.modes`. Every error names the property path, e.g.
`strata:network.azCount: Input should be less than or equal to 6, got 9`.
"""

from __future__ import annotations

import copy
import enum
import functools
import ipaddress
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from infra.modes import Capabilities, Mode, capabilities
from workloads.data.ingest.pipeline import CdcPipeline
from workloads.monitoring.rules import RUNBOOK_BASE_URL
from workloads.spec import ModelSpec, SpecError, parse_model_spec, spec_error_from

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present

PROJECT = "strata"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Minors in EKS standard support (14 months from each release) on 2026-12-01; the local
# control plane (.ci/cluster-binaries) runs the default one.
SUPPORTED_KUBERNETES_VERSIONS = ("1.34", "1.35", "1.36")
DEFAULT_KUBERNETES_VERSION = "1.35"

# Mode-owned decisions a stack file may NOT override; named so the error can say why.
MODE_OWNED = {
    "natStrategy", "endpointAccess", "istio", "mtls", "kafka", "keda", "monitoring",
    "policyEnforcement", "mlflowBackend", "gpuSpotPool", "karpenter",
}


SECRET_KEYS = {"kubeconfig", "pagerdutyRoutingKeys", "cdcCredentials"}
SECRET_MARKER = "<secret: set>"


class Target(str, enum.Enum):
    AWS = "aws"  # VPC + EKS + storage from this program
    KUBECONFIG = "kubeconfig"  # an existing cluster (preview environments, local clusters)


class ClusterOperators(str, enum.Enum):
    """Who installs the cluster-wide operators (KubeRay, Seldon: CRDs, webhooks, one per cluster)."""

    INSTALL = "install"  # this stack installs them
    SHARED = "shared"  # the cluster already runs them: preview stacks as namespaces on a shared cluster


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_mode_owned(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in MODE_OWNED:
                    raise ValueError(
                        f"{key} is decided by the execution mode and cannot be overridden in a stack file"
                    )
        return data


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as error:
        raise ValueError(f"not a valid CIDR block ({error})") from None


class NetworkOverrides(_Section):
    az_count: int | None = Field(None, ge=2, le=6)
    vpc_cidr: str = "10.42.0.0/16"
    flow_log_retention_days: int = Field(30, ge=1, le=3653)

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_size(cls, value: str) -> str:
        value = _cidr(value)
        prefix = ipaddress.ip_network(value).prefixlen
        if not 16 <= prefix <= 20:
            raise ValueError(f"VPC CIDR prefix must be /16../20 to fit the subnets, got /{prefix}")
        return value


class ClusterOverrides(_Section):
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    endpoint_allowlist: tuple[str, ...] = ()
    system_instance_types: tuple[str, ...] = ("m7i.large",)
    cpu_spot_instance_types: tuple[str, ...] = ("m7i.xlarge", "m6i.xlarge", "m6a.xlarge", "m5.xlarge")
    gpu_spot_instance_types: tuple[str, ...] = ("g5.xlarge", "g6.xlarge", "g4dn.xlarge")
    gpu_on_demand_fallback_type: str = "g5.xlarge"
    system_pool_size: int | None = Field(None, ge=1, le=20)
    cpu_spot_pool_size: int | None = Field(None, ge=0, le=200)
    gpu_spot_max: int | None = Field(None, ge=0, le=100)

    @field_validator("kubernetes_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value not in SUPPORTED_KUBERNETES_VERSIONS:
            raise ValueError(f"must be one of {', '.join(SUPPORTED_KUBERNETES_VERSIONS)}")
        return value

    @field_validator("endpoint_allowlist")
    @classmethod
    def _allowlist(cls, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        checked = []
        for index, cidr in enumerate(cidrs):
            try:
                network = ipaddress.ip_network(cidr, strict=True)
            except ValueError as error:
                raise ValueError(f"entry {index} is not a valid CIDR block ({error})") from None
            if network.prefixlen == 0:
                raise ValueError(f"entry {index} ({cidr}) opens the API server to the whole internet")
            checked.append(str(network))
        return tuple(checked)

    @field_validator("system_instance_types", "cpu_spot_instance_types", "gpu_spot_instance_types")
    @classmethod
    def _types(cls, types: tuple[str, ...]) -> tuple[str, ...]:
        if not types:
            raise ValueError("needs at least one instance type")
        for name in types:
            if "." not in name:
                raise ValueError(f"{name!r} is not an EC2 instance type like m7i.large")
        return types


_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$"


class TeamQuotaOverrides(_Section):
    """The ResourceQuota of each team namespace; unset fields keep the platform's defaults."""

    requests_cpu: str | None = Field(None, pattern=_QUANTITY)
    requests_memory: str | None = Field(None, pattern=_QUANTITY)
    limits_cpu: str | None = Field(None, pattern=_QUANTITY)
    limits_memory: str | None = Field(None, pattern=_QUANTITY)
    pods: int | None = Field(None, ge=1, le=10_000)
    storage: str | None = Field(None, pattern=_QUANTITY)


class StackConfig(_Section):
    """The `strata:*` keys of one stack file, already stripped of the `strata:` prefix."""

    mode: Mode
    environment: str = Field(pattern=r"^[a-z][-a-z0-9]{0,15}$")
    target: Target = Target.AWS
    kubeconfig: Any = None  # a Pulumi secret: only its presence is checked here
    namespace_prefix: str = Field("", pattern=r"^([a-z][-a-z0-9]{0,20}-)?$")
    cluster_operators: ClusterOperators = ClusterOperators.INSTALL
    team_quota: TeamQuotaOverrides = TeamQuotaOverrides()
    network: NetworkOverrides = NetworkOverrides()
    cluster: ClusterOverrides = ClusterOverrides()
    tags: dict[str, str] = Field(default_factory=dict)
    pagerduty_routing_keys: Any = None  # a Pulumi secret; only its presence is checked here
    # Where alerts' runbook_url points: this repository's runbooks/ folder as your team browses it.
    runbook_base_url: str = Field(RUNBOOK_BASE_URL, pattern=r"^https?://\S+/$")
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # CDC pipelines (workloads.data.ingest.pipeline.CdcPipeline without `name`: the key is it),
    # rendered where the mode has Kafka; their logins: the secret `cdcCredentials`
    # ({<pipeline>: {username, password}}).
    cdc: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cdc_credentials: Any = None  # a Pulumi secret; only its presence is checked here


class StackSpec(BaseModel):
    """Everything the program needs, resolved: the mode's column + the stack's overrides."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    project: str
    stack: str
    region: str
    config: StackConfig
    capabilities: Capabilities
    models: tuple[ModelSpec, ...]
    cdc_pipelines: tuple[CdcPipeline, ...] = ()

    @property
    def mode(self) -> Mode:
        return self.capabilities.mode

    @property
    def teams(self) -> tuple[str, ...]:
        return tuple(sorted({m.team for m in self.models}))

    @property
    def tags(self) -> dict[str, str]:
        return {
            "strata:project": self.project,
            "strata:stack": self.stack,
            "strata:mode": self.mode.value,
            "strata:environment": self.config.environment,
            "managed-by": "pulumi",
            **self.config.tags,
        }


def _decode(value: Any) -> Any:
    """Pulumi hands structured config to programs as JSON strings."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@functools.lru_cache(maxsize=256)
def _load_yaml_file(file: Path, mtime_ns: int) -> Any:
    """Spec files are shared by many models and stacks: parse each version once."""
    return yaml.load(file.read_text(), Loader=_YAML_LOADER)


def _model_specs(models: Mapping[str, Mapping[str, Any]], root: Path) -> tuple[ModelSpec, ...]:
    """Fan-in of the `models` map: each entry is a spec, or `specFile:` + overrides."""
    specs, problems = [], []
    for key in sorted(models):
        path = f"{PROJECT}:models.{key}"
        entry = dict(models[key] or {})
        raw: dict[str, Any] = {}
        spec_file = entry.pop("specFile", None)
        if spec_file is not None:
            file = (root / spec_file).resolve()
            if not file.is_file():
                problems.append((f"{path}.specFile", f"file not found: {spec_file}"))
                continue
            loaded = copy.deepcopy(_load_yaml_file(file, file.stat().st_mtime_ns)) or {}
            if not isinstance(loaded, dict):
                problems.append((f"{path}.specFile", f"{spec_file} is not a YAML mapping"))
                continue
            raw = loaded
        raw = _deep_merge(raw, entry)
        if raw.setdefault("name", key) != key:
            problems.append((f"{path}.name", f"must equal its key in the models map ({key!r}), got {raw['name']!r}"))
            continue
        try:
            specs.append(parse_model_spec(raw, path))
        except SpecError as error:
            problems.extend(error.problems)
    if problems:
        raise SpecError(problems)
    return tuple(specs)


def parse_stack_config(
    raw: Mapping[str, Any], stack: str, region: str | None = None, root: Path = PROJECT_ROOT
) -> StackSpec:
    """`raw` holds the stack's config keys (`strata:mode`, `aws:region`, ...)."""
    strata = {}
    for key, value in raw.items():
        namespace, _, name = key.partition(":")
        if namespace == PROJECT:
            # Secret values never enter the spec: the entry point reads them as secret Outputs.
            strata[name] = SECRET_MARKER if name in SECRET_KEYS else _decode(value)
    region = region or raw.get("aws:region")
    if not region:
        raise SpecError([("aws:region", "required (e.g. eu-west-1)")])
    try:
        config = StackConfig.model_validate(strata)
    except ValidationError as error:
        raise spec_error_from(error, f"{PROJECT}:") from None
    if config.target is Target.KUBECONFIG and not config.kubeconfig:
        raise SpecError([(f"{PROJECT}:kubeconfig", "target 'kubeconfig' needs a kubeconfig (set it as a secret)")])
    models = _model_specs(config.models, root)
    pipelines = _cdc_pipelines(config.cdc, {m.team for m in models})
    _check_streaming_views(pipelines, models)
    caps = _resolve_capabilities(config)
    _check_shared_operators(config, caps)
    _check_models_fit_cluster(models, caps, config)
    return StackSpec(project=PROJECT, stack=stack, region=region, config=config, capabilities=caps, models=models,
                     cdc_pipelines=pipelines)


def _cdc_pipelines(entries: Mapping[str, Mapping[str, Any]], teams: set[str]) -> tuple[CdcPipeline, ...]:
    """The `cdc` map: each key is a pipeline's name; its sink runs in a team's namespace."""
    pipelines, problems = [], []
    for key in sorted(entries):
        path = f"{PROJECT}:cdc.{key}"
        entry = entries[key] if isinstance(entries[key], Mapping) else {}
        if "name" in entry:
            problems.append((f"{path}.name", "the pipeline's name is its key in the cdc map; remove `name`"))
            continue
        try:
            pipeline = CdcPipeline.model_validate({"name": key, **entry})
        except ValidationError as error:
            problems.extend(spec_error_from(error, path).problems)
            continue
        if pipeline.team not in teams:
            problems.append((f"{path}.team", f"no model of team {pipeline.team!r} in this stack (teams: "
                                             f"{', '.join(sorted(teams)) or 'none'}); the sink runs in a team namespace"))
            continue
        pipelines.append(pipeline)
    if problems:
        raise SpecError(problems)
    return tuple(pipelines)


def _check_streaming_views(pipelines: Sequence[CdcPipeline], models: Sequence[ModelSpec]) -> None:
    """The models' online views agree with the pipelines' streaming features that serve them."""
    from workloads.data.ingest.pipeline import streaming_view_problems

    problems = streaming_view_problems(pipelines, models, prefix=f"{PROJECT}:cdc.")
    if problems:
        raise SpecError(problems)


def _resolve_capabilities(config: StackConfig) -> Capabilities:
    """The mode's column with the stack's listed size overrides applied."""
    caps = capabilities(config.mode)
    updates: dict[str, Any] = {}
    if config.network.az_count is not None:
        updates["az_count"] = config.network.az_count
    for field in ("system_pool_size", "cpu_spot_pool_size", "gpu_spot_max"):
        value = getattr(config.cluster, field)
        if value is not None:
            updates[field] = value
    if updates.get("gpu_spot_max") and not caps.gpu_spot_pool:
        raise SpecError([(f"{PROJECT}:cluster.gpuSpotMax", f"mode {caps.mode.value!r} has no GPU pool")])
    return caps.model_copy(update=updates)


def _check_shared_operators(config: StackConfig, caps: Capabilities) -> None:
    """Shared operators suit only a kubeconfig target whose mode needs no other cluster-wide service."""
    if config.cluster_operators is not ClusterOperators.SHARED:
        return
    path = f"{PROJECT}:clusterOperators"
    if config.target is not Target.KUBECONFIG:
        raise SpecError([(path, "'shared' needs strata:target: kubeconfig (an existing cluster that runs the operators)")])
    cluster_wide = [name for name in ("istio", "keda", "kafka", "monitoring", "gpu_spot_pool") if getattr(caps, name)]
    if cluster_wide:
        raise SpecError([(path, f"mode {caps.mode.value!r} installs further cluster-wide services ({', '.join(cluster_wide)}); "
                                "'shared' is for quick-mode previews")])


def _check_models_fit_cluster(models: tuple[ModelSpec, ...], caps: Capabilities, config: StackConfig) -> None:
    problems = []
    for model in models:
        path = f"{PROJECT}:models.{model.name}"
        if model.training.resources.gpu and not caps.training_gpu:
            problems.append((f"{path}.training.resources.gpu", f"mode {caps.mode.value!r} has no GPU nodes; set 0 in this stack"))
        if model.serving.streaming.enabled and caps.kafka:
            replication = model.serving.streaming.replication_factor
            if replication > 3:
                problems.append((f"{path}.serving.streaming.replicationFactor", f"the platform's Kafka has 3 brokers, got {replication}"))
    if config.target is Target.AWS and caps.endpoint_access.value.startswith("public") and not config.cluster.endpoint_allowlist:
        problems.append((f"{PROJECT}:cluster.endpointAllowlist", f"mode {caps.mode.value!r} exposes a public endpoint: list the CIDRs allowed to reach it"))
    if problems:
        raise SpecError(problems)


def read_stack_file(stack: str, root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The `config:` map of `stacks/Pulumi.<stack>.yaml` (secure values kept as-is)."""
    file = root / "stacks" / f"Pulumi.{stack}.yaml"
    if not file.is_file():
        available = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (root / "stacks").glob("Pulumi.*.yaml"))
        raise SpecError([(f"stacks/{file.name}", f"no such stack file; stacks: {', '.join(available)}")])
    return read_stack_document(file)


def read_stack_document(file: Path) -> dict[str, Any]:
    """The `config:` map of any Pulumi stack file."""
    try:
        document = yaml.safe_load(Path(file).read_text()) or {}
    except OSError as error:
        raise SpecError([(str(file), f"cannot read: {error.strerror}")]) from None
    except yaml.YAMLError as error:
        raise SpecError([(str(file), f"not valid YAML: {error}")]) from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise SpecError([(str(file), "needs a top-level `config:` mapping")])
    return config


def load_stack(stack: str, root: Path = PROJECT_ROOT) -> StackSpec:
    return parse_stack_config(read_stack_file(stack, root), stack, root=root)
