"""Run the policy pack without the Pulumi engine: over the offline plan's `PlannedResource`s.

`evaluate()` builds the same `pulumi_policy` argument objects the analyzer builds
(`ResourceValidationArgs`, `StackValidationArgs`, `PolicyResource`) from harness records and
calls each policy's own `validate` -- there is one implementation of every check. Config
(enforcement level and per-policy properties) comes from the same JSON files that
`pulumi preview --policy-pack infra/policy --policy-pack-config infra/policy/<level>.json` uses.

The one thing offline evaluation sees that the engine does not: which inputs were Pulumi
secrets. The adapter exposes them as `args.secret_paths` (the analyzer hands policies
plaintext, so `secrets-are-pulumi-secrets` only runs here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import _NotApplicableError

from infra.modes import PolicyEnforcement
from infra.plan.harness import mock_resource_id
from infra.policy.policies import POLICIES

if TYPE_CHECKING:  # the harness imports Pulumi's runtime; policies only need its records' shape
    from infra.plan.harness import PlannedResource

PACK_DIR = Path(__file__).resolve().parent
CONFIG_FILES: Mapping[PolicyEnforcement, Path] = {
    PolicyEnforcement.MANDATORY: PACK_DIR / "enterprise.json",
    PolicyEnforcement.ADVISORY: PACK_DIR / "advisory.json",
}
# What __main__ passes to PolicyPack: mandatory unless a config asks for advisory
# (`--policy-pack-config infra/policy/advisory.json`); a forgotten flag must not weaken the pack.
PACK_DEFAULT_LEVEL = EnforcementLevel.MANDATORY


@dataclass(frozen=True)
class PolicyResult:
    """One violation: which policy, which resource (None for stack-wide), how hard it blocks."""

    policy: str
    description: str
    enforcement: PolicyEnforcement
    message: str
    urn: str | None
    resource_type: str | None
    resource_name: str | None

    @property
    def mandatory(self) -> bool:
        return self.enforcement is PolicyEnforcement.MANDATORY

    def format(self) -> str:
        return f"[{self.enforcement.value}] {self.policy}: {self.message}"


class PlanResourceValidationArgs(ResourceValidationArgs):
    """`ResourceValidationArgs` plus what only the offline plan knows: the secret input paths."""

    def __init__(self, *args: Any, secret_paths: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secret_paths = tuple(secret_paths)


def load_pack_config(enforcement: PolicyEnforcement | str) -> dict[str, Any]:
    """The policy-pack config file for an enforcement level (enterprise.json / advisory.json)."""
    path = CONFIG_FILES[PolicyEnforcement(enforcement)]
    return json.loads(path.read_text())


def _level(value: Any) -> EnforcementLevel | None:
    if isinstance(value, EnforcementLevel):
        return value
    if isinstance(value, str):
        return EnforcementLevel(value)
    if isinstance(value, Mapping) and value.get("enforcementLevel"):
        return EnforcementLevel(value["enforcementLevel"])
    return None


def resolve_policy_config(
    policy: ResourceValidationPolicy | StackValidationPolicy, pack_config: Mapping[str, Any]
) -> tuple[EnforcementLevel, dict[str, Any]]:
    """As the CLI does: the policy's own entry, then `all`, then the policy, then the pack default;
    properties are the config schema's defaults overlaid with the entry's properties."""
    entry = pack_config.get(policy.name)
    level = _level(entry) or _level(pack_config.get("all")) or policy.enforcement_level or PACK_DEFAULT_LEVEL
    properties: dict[str, Any] = {}
    if policy.config_schema is not None:
        for key, schema in (policy.config_schema.properties or {}).items():
            if "default" in schema:
                properties[key] = schema["default"]
    if isinstance(entry, Mapping):
        properties.update({k: v for k, v in entry.items() if k != "enforcementLevel"})
    return level, properties


def _to_enforcement(level: EnforcementLevel) -> PolicyEnforcement:
    # Stack policies and remediations are reported as mandatory by the analyzer too.
    return PolicyEnforcement.ADVISORY if level is EnforcementLevel.ADVISORY else PolicyEnforcement.MANDATORY


def _options(resource: "PlannedResource") -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=resource.parent_urn,
    )


def _provider(resource: "PlannedResource", by_urn: Mapping[str, "PlannedResource"]) -> PolicyProviderResource | None:
    if not resource.provider:
        return None
    urn = resource.provider.rsplit("::", 1)[0]  # "<urn>::<id>"
    found = by_urn.get(urn)
    if found is None:
        return None
    return PolicyProviderResource(found.type, found.inputs, found.urn, found.name)


def _stack_resources(resources: Sequence["PlannedResource"], by_urn: Mapping[str, "PlannedResource"]) -> list[PolicyResource]:
    built: dict[str, PolicyResource] = {}
    for r in resources:
        props = dict(r.inputs)
        if r.custom:
            props.setdefault("id", mock_resource_id(r.name))  # the engine hands stack policies outputs, id included
        built[r.urn] = PolicyResource(r.type, props, r.urn, r.name, _options(r), _provider(r, by_urn), None, [], {})
    for r in resources:
        policy_resource = built[r.urn]
        if r.parent_urn in built:
            policy_resource.parent = built[r.parent_urn]
        policy_resource.dependencies = [built[d] for d in r.dependencies if d in built]
    return list(built.values())


def evaluate(
    resources: Sequence["PlannedResource"],
    enforcement: PolicyEnforcement | str = PolicyEnforcement.ADVISORY,
    *,
    config: Mapping[str, Any] | None = None,
    policies: Sequence[ResourceValidationPolicy | StackValidationPolicy] | None = None,
) -> list[PolicyResult]:
    """Every violation the pack reports for these resources, at this enforcement level.

    `config` defaults to the level's config file (what `--policy-pack-config` passes);
    `policies` defaults to the whole pack."""
    pack_config = load_pack_config(enforcement) if config is None else config
    policies = POLICIES if policies is None else policies
    resources = [r for r in resources if r.type != "pulumi:pulumi:Stack"]
    by_urn = {r.urn: r for r in resources}
    results: list[PolicyResult] = []
    stack_resources: list[PolicyResource] | None = None

    for policy in policies:
        level, properties = resolve_policy_config(policy, pack_config)
        if level is EnforcementLevel.DISABLED:
            continue
        enforcement_level = _to_enforcement(level)

        def reporter(urn: str | None, rtype: str | None, rname: str | None, policy=policy, level=enforcement_level):
            def report_violation(message: str, violation_urn: str | None = None) -> None:
                target = by_urn.get(violation_urn) if violation_urn else None
                results.append(
                    PolicyResult(
                        policy=policy.name,
                        description=policy.description,
                        enforcement=level,
                        message=message,
                        urn=urn or violation_urn,
                        resource_type=rtype or (target.type if target else None),
                        resource_name=rname or (target.name if target else None),
                    )
                )

            return report_violation

        if isinstance(policy, ResourceValidationPolicy):
            for r in resources:
                args = PlanResourceValidationArgs(
                    r.type, r.inputs, r.urn, r.name, _options(r), _provider(r, by_urn), properties,
                    secret_paths=r.secret_paths,
                )
                try:
                    policy.validate(args, reporter(r.urn, r.type, r.name))
                except _NotApplicableError:
                    continue
        elif isinstance(policy, StackValidationPolicy):
            if stack_resources is None:
                stack_resources = _stack_resources(resources, by_urn)
            try:
                policy.validate(StackValidationArgs(stack_resources, properties), reporter(None, None, None))
            except _NotApplicableError:
                continue
    return results


def blocking(results: Sequence[PolicyResult]) -> list[PolicyResult]:
    """The violations that stop a deployment (mandatory ones)."""
    return [r for r in results if r.mandatory]
