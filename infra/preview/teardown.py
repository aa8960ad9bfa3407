"""Create and destroy preview stacks in a safe, repeatable order.

Two small interfaces stand for the outside world: `PulumiStacks` (the Pulumi Automation
API; `infra.preview.automation.AutomationStacks` in the workflows) and `PreviewCluster`
(the shared preview cluster; `infra.preview.automation.KubectlCluster`). Tests replace
both with in-memory doubles.

Why this order on teardown: LoadBalancer Services and Ingresses make cloud load
balancers (and their ENIs and security groups) that the cluster's controllers release
only while those objects are being deleted - a finalizer holds each object until its
load balancer is gone. Deleting them first, and waiting until the objects are gone,
means nothing the stack made outside Kubernetes is left behind when `destroy` then
deletes the namespaces. Then `destroy`, then `stack rm`, then namespaces with the
preview's prefix that no state tracks any more (a stack whose first `up` was killed).
Every step tolerates "already gone", so a retried job or gc finishes what one started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping, Protocol

from infra.preview.stacks import (DEFAULT_TTL, Expired, PreviewConfig, StackInfo, namespace_prefix,
                                  select_expired)


@dataclass(frozen=True, order=True)
class KubeObject:
    kind: str  # Service | Ingress | Namespace
    namespace: str  # "" for a Namespace
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


class PulumiStacks(Protocol):
    """The few Automation API operations previews need."""

    def list_stacks(self) -> list[StackInfo]: ...

    def exists(self, stack: str) -> bool: ...

    def create_or_select(self, stack: str) -> None: ...

    def set_tags(self, stack: str, tags: Mapping[str, str]) -> None: ...

    def set_config(self, stack: str, config: Mapping[str, Any], secrets: Mapping[str, str]) -> None: ...

    def up(self, stack: str) -> dict[str, Any]:
        """Returns the stack outputs."""
        ...

    def destroy(self, stack: str) -> None:
        """Destroy every resource in the state; a stack whose update was interrupted
        (pending operations, a stale lock) is refreshed and cleared first."""
        ...

    def remove(self, stack: str) -> None: ...


class PreviewCluster(Protocol):
    """The shared preview cluster, seen only through a namespace prefix."""

    def load_balancers(self, prefix: str) -> list[KubeObject]:
        """Services of type LoadBalancer and Ingresses in namespaces starting with `prefix`."""
        ...

    def namespaces(self, prefix: str) -> list[KubeObject]:
        """Strata's namespaces (label app.kubernetes.io/part-of=strata) starting with `prefix`."""
        ...

    def delete(self, obj: KubeObject) -> None:
        """Request deletion; no error when it is already gone; does not wait."""
        ...


class TeardownError(RuntimeError):
    pass


@dataclass
class TeardownReport:
    stack: str
    steps: list[str] = field(default_factory=list)

    def log(self, step: str) -> None:
        self.steps.append(step)


def create_preview(stacks: PulumiStacks, preview: PreviewConfig, kubeconfig: str) -> dict[str, Any]:
    """`pulumi up` of the preview. Tags first: a create that fails later is still found by gc."""
    if not kubeconfig.strip():
        raise ValueError("the shared preview cluster's kubeconfig is empty")
    stacks.create_or_select(preview.stack)
    stacks.set_tags(preview.stack, preview.tags)
    stacks.set_config(preview.stack, preview.config, {"strata:kubeconfig": kubeconfig})
    return stacks.up(preview.stack)


def destroy_preview(
    stacks: PulumiStacks,
    cluster: PreviewCluster,
    stack: str,
    timeout: timedelta = timedelta(minutes=10),
    poll_seconds: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> TeardownReport:
    """Tear one preview down (see the module docstring for the order). Safe to repeat."""
    prefix = namespace_prefix(stack)
    report = TeardownReport(stack)

    balancers = sorted(cluster.load_balancers(prefix))
    for obj in balancers:
        cluster.delete(obj)
        report.log(f"delete {obj}")
    if balancers:
        deadline = clock() + timeout.total_seconds()
        while True:
            left = sorted(cluster.load_balancers(prefix))
            if not left:
                report.log("load balancers released")
                break
            if clock() >= deadline:
                raise TeardownError(
                    f"{stack}: still deleting after {timeout} (their cloud load balancers are not released yet; "
                    f"destroy would orphan them): {', '.join(map(str, left))}")
            sleep(poll_seconds)

    if stacks.exists(stack):
        stacks.destroy(stack)
        report.log(f"pulumi destroy {stack}")
        stacks.remove(stack)
        report.log(f"pulumi stack rm {stack}")
    else:
        report.log(f"no stack {stack}: nothing to destroy")

    for namespace in sorted(cluster.namespaces(prefix)):
        cluster.delete(namespace)
        report.log(f"delete untracked {namespace}")
    return report


@dataclass
class GcResult:
    destroyed: list[Expired] = field(default_factory=list)
    failed: list[tuple[Expired, str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def collect_garbage(
    stacks: PulumiStacks,
    cluster: PreviewCluster,
    now: datetime,
    default_ttl: timedelta = DEFAULT_TTL,
    open_prs: set[int] | None = None,
    dry_run: bool = False,
    **teardown: Any,
) -> GcResult:
    """Destroy every expired preview stack; one failure does not stop the others."""
    listed = stacks.list_stacks()
    expired = select_expired(listed, now, default_ttl, open_prs)
    result = GcResult(kept=sorted({s.name for s in listed} - {e.stack for e in expired}))
    for item in expired:
        if dry_run:
            result.destroyed.append(item)
            continue
        try:
            destroy_preview(stacks, cluster, item.stack, **teardown)
        except Exception as error:  # noqa: BLE001 - reported per stack, gc goes on
            result.failed.append((item, f"{type(error).__name__}: {error}"))
        else:
            result.destroyed.append(item)
    return result
