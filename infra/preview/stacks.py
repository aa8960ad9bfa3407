"""Preview stacks: their names, the config they derive from `quick`, and their TTL.

A pull request's preview is the stack `pr-<number>`: the `quick` stack file's config
(mode, models, versions) retargeted at the shared preview cluster through its kubeconfig,
every namespace prefixed `pr-<number>-`, a smaller team quota, and the cluster-wide
operators (KubeRay, Seldon) referenced instead of installed - two previews installing
them on one cluster would fight over the same CRDs and webhooks. Its Pulumi stack tags
carry the pull request and an expiry time; `strata preview gc` destroys stacks past it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from infra.config import PROJECT, PROJECT_ROOT, SECRET_MARKER, parse_stack_config, read_stack_file
from workloads.spec import SpecError

BASE_STACK = "quick"
STACK_PREFIX = "pr-"
MAX_PR_NUMBER = 10**12 - 1  # `pr-<n>` must fit strata:environment (16 characters)
DEFAULT_TTL = timedelta(hours=72)

# Pulumi stack tags (and resource tags) of a preview stack.
TAG_PREVIEW = "strata:preview"
TAG_PR = "strata:pr"
TAG_CREATED_AT = "strata:created-at"
TAG_EXPIRES_AT = "strata:expires-at"

# Per team namespace: room for one single-worker RayJob and one predictor, not a platform.
PREVIEW_TEAM_QUOTA = {
    "requestsCpu": "4", "requestsMemory": "16Gi", "limitsCpu": "8", "limitsMemory": "32Gi",
    "pods": 40, "storage": "50Gi",
}
# Keys a preview never inherits: secrets are set per stack, AWS-only settings do not apply.
DROPPED_KEYS = (f"{PROJECT}:kubeconfig", f"{PROJECT}:pagerdutyRoutingKeys", f"{PROJECT}:network")

_STACK_NAME = re.compile(r"^(?:[^/]+/){0,2}pr-([1-9][0-9]*)$")  # bare or org/project/pr-<n>


def preview_stack_name(pr: int | str) -> str:
    """`42` -> `pr-42`; anything but a positive pull-request number is refused."""
    text = str(pr).strip()
    if not re.fullmatch(r"[1-9][0-9]*", text):
        raise SpecError([("--pr", f"a pull-request number is a positive integer, got {str(pr)!r}")])
    if int(text) > MAX_PR_NUMBER:
        raise SpecError([("--pr", f"{text} is too large for a stack name (at most {MAX_PR_NUMBER})")])
    return f"{STACK_PREFIX}{text}"


def pr_number(stack: str) -> int | None:
    """The pull request of a preview stack name (`pr-42`, `org/strata/pr-42`), else None."""
    match = _STACK_NAME.match(stack)
    return int(match.group(1)) if match else None


def is_preview_stack(stack: str) -> bool:
    return pr_number(stack) is not None


def namespace_prefix(stack: str) -> str:
    """Every namespace of the preview starts with this (`pr-42-team-vision`, `pr-42-mlflow`)."""
    number = pr_number(stack)
    if number is None:
        raise SpecError([("stack", f"{stack!r} is not a preview stack (pr-<number>)")])
    return f"{STACK_PREFIX}{number}-"


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    """The tags' UTC timestamps (`2026-11-27T03:00:00Z`); ValueError if not one."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class PreviewConfig:
    """What `strata preview create` hands Pulumi for one pull request."""

    stack: str
    pr: int
    config: dict[str, Any]  # the stack's config map, as a stack file holds it (no secrets)
    tags: dict[str, str]  # Pulumi stack tags: TTL and pull request, read by gc
    created_at: datetime
    expires_at: datetime

    @property
    def namespace_prefix(self) -> str:
        return self.config[f"{PROJECT}:namespacePrefix"]


def derive_preview_config(
    pr: int | str,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
    base: Mapping[str, Any] | None = None,
    root: Path = PROJECT_ROOT,
) -> PreviewConfig:
    """The preview of `pr`: the `quick` stack file's config retargeted at the shared cluster.

    Validated like any stack file (with the kubeconfig secret assumed set), so a config
    the program would refuse fails here, naming the property path."""
    stack = preview_stack_name(pr)
    number = pr_number(stack)
    assert number is not None
    if ttl <= timedelta(0):
        raise SpecError([("--ttl-hours", f"the time to live must be positive, got {ttl}")])
    if now.tzinfo is None:
        raise ValueError("derive_preview_config: `now` must be timezone-aware")
    config = copy.deepcopy(dict(base if base is not None else read_stack_file(BASE_STACK, root)))
    for key in DROPPED_KEYS:
        config.pop(key, None)
    cluster = dict(config.get(f"{PROJECT}:cluster") or {})
    cluster.pop("endpointAllowlist", None)  # the EKS API allowlist: no EKS here
    expires_at = now + ttl
    tags = {
        TAG_PREVIEW: "true",
        TAG_PR: str(number),
        TAG_CREATED_AT: _timestamp(now),
        TAG_EXPIRES_AT: _timestamp(expires_at),
    }
    config.update({
        f"{PROJECT}:environment": stack,
        f"{PROJECT}:target": "kubeconfig",
        f"{PROJECT}:namespacePrefix": namespace_prefix(stack),
        f"{PROJECT}:clusterOperators": "shared",
        f"{PROJECT}:teamQuota": dict(PREVIEW_TEAM_QUOTA),
        f"{PROJECT}:tags": {**dict(config.get(f"{PROJECT}:tags") or {}), **tags},
    })
    if cluster:
        config[f"{PROJECT}:cluster"] = cluster
    else:
        config.pop(f"{PROJECT}:cluster", None)
    parse_stack_config({**config, f"{PROJECT}:kubeconfig": SECRET_MARKER}, stack, root=root)
    return PreviewConfig(stack=stack, pr=number, config=config, tags=tags, created_at=now, expires_at=expires_at)


# ------------------------------------------------------------------------------ TTL / gc


@dataclass(frozen=True)
class StackInfo:
    """One stack as the backend lists it."""

    name: str
    tags: Mapping[str, str] = field(default_factory=dict)
    last_update: datetime | None = None
    update_in_progress: bool = False


@dataclass(frozen=True)
class Expired:
    stack: str
    reason: str


def select_expired(
    stacks: Iterable[StackInfo],
    now: datetime,
    default_ttl: timedelta = DEFAULT_TTL,
    open_prs: set[int] | None = None,
) -> list[Expired]:
    """The preview stacks gc destroys, sorted by name, each with why.

    * past its `strata:expires-at` tag;
    * no readable tag (a half-created stack): `last_update + default_ttl`; with neither,
      expired (nothing says it is young, and a running create holds the PR's lock);
    * its pull request is closed (when `open_prs` is known), whatever its TTL.
    Stacks that are not `pr-<n>`, and stacks with an update in progress, are never selected."""
    selected = []
    for info in stacks:
        number = pr_number(info.name)
        if number is None or info.update_in_progress:
            continue
        if open_prs is not None and number not in open_prs:
            selected.append(Expired(info.name, f"pull request #{number} is closed"))
            continue
        tag = info.tags.get(TAG_EXPIRES_AT)
        try:
            expires = parse_timestamp(tag) if tag else None
        except ValueError:
            expires = None
        if expires is not None:
            if expires <= now:
                selected.append(Expired(info.name, f"expired at {_timestamp(expires)} ({TAG_EXPIRES_AT} tag)"))
            continue
        why = f"unreadable {TAG_EXPIRES_AT} tag {tag!r}" if tag else f"no {TAG_EXPIRES_AT} tag"
        if info.last_update is None:
            selected.append(Expired(info.name, f"{why} and no update time"))
        elif info.last_update + default_ttl <= now:
            selected.append(Expired(info.name, f"{why}; last update {_timestamp(info.last_update)} is older than {default_ttl}"))
    return sorted(selected, key=lambda e: e.stack)
