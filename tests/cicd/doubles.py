"""Test doubles of the two outside systems a preview touches: a Pulumi backend and the
shared preview cluster. They model the behaviour teardown depends on - a stack's
resources and pending operations, stack locks, and Services/Ingresses held by a
load-balancer finalizer for a few polls - and record every call in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from infra.preview.stacks import StackInfo
from infra.preview.teardown import KubeObject


@dataclass
class FakeStack:
    tags: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)
    pending_operations: list[str] = field(default_factory=list)
    last_update: datetime | None = None
    update_in_progress: bool = False


class FakeStacks:
    """An in-memory Pulumi backend. `fail_destroy_once` makes the next destroy of a stack
    fail half-way (some resources deleted), as a killed job would leave it."""

    def __init__(self, cluster: "FakeCluster | None" = None):
        self.stacks: dict[str, FakeStack] = {}
        self.calls: list[str] = []
        self.cluster = cluster
        self.fail_destroy_once: set[str] = set()
        self.up_resources = ["namespace", "network-policy", "resource-quota", "mlflow", "rayjob"]

    def list_stacks(self) -> list[StackInfo]:
        self.calls.append("list")
        return [StackInfo(name, dict(s.tags), s.last_update, s.update_in_progress) for name, s in sorted(self.stacks.items())]

    def exists(self, stack: str) -> bool:
        return stack in self.stacks

    def create_or_select(self, stack: str) -> None:
        self.calls.append(f"select {stack}")
        self.stacks.setdefault(stack, FakeStack())

    def set_tags(self, stack: str, tags: Mapping[str, str]) -> None:
        self.calls.append(f"tags {stack}")
        self.stacks[stack].tags.update(tags)

    def set_config(self, stack: str, config: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        self.calls.append(f"config {stack}")
        self.stacks[stack].config = dict(config)
        self.stacks[stack].secrets = dict(secrets)

    def up(self, stack: str) -> dict[str, Any]:
        self.calls.append(f"up {stack}")
        state = self.stacks[stack]
        state.resources = list(self.up_resources)
        prefix = state.config["strata:namespacePrefix"]
        if self.cluster is not None:
            self.cluster.namespaces_made.update({f"{prefix}mlflow", f"{prefix}team-vision"})
        return {"mlflowTrackingUri": f"http://mlflow.{prefix}mlflow.svc.cluster.local:5000"}

    def destroy(self, stack: str) -> None:
        self.calls.append(f"destroy {stack}")
        state = self.stacks[stack]
        if stack in self.fail_destroy_once:
            self.fail_destroy_once.discard(stack)
            del state.resources[: len(state.resources) // 2]
            raise RuntimeError(f"destroy of {stack} interrupted")
        state.pending_operations.clear()  # the real one clears them, then refreshes
        state.resources.clear()
        if self.cluster is not None:
            prefix = state.config.get("strata:namespacePrefix")
            if prefix:
                self.cluster.namespaces_made = {n for n in self.cluster.namespaces_made if not n.startswith(prefix)}

    def remove(self, stack: str) -> None:
        self.calls.append(f"rm {stack}")
        if self.stacks[stack].resources:
            raise RuntimeError(f"stack {stack} still has resources")  # as `pulumi stack rm` without --force
        del self.stacks[stack]


class FakeCluster:
    """Services/Ingresses whose deletion completes only after `release_polls` more polls
    (the cloud load balancer being released behind the finalizer)."""

    def __init__(self, calls: list[str], release_polls: int = 2):
        self.calls = calls
        self.objects: dict[KubeObject, int | None] = {}  # object -> polls left once deleting
        self.namespaces_made: set[str] = set()
        self.release_polls = release_polls

    def add_load_balancer(self, kind: str, namespace: str, name: str) -> KubeObject:
        obj = KubeObject(kind, namespace, name)
        self.objects[obj] = None
        return obj

    def load_balancers(self, prefix: str) -> list[KubeObject]:
        self.calls.append(f"list-lb {prefix}")
        for obj, left in list(self.objects.items()):
            if left is not None:
                if left <= 0:
                    del self.objects[obj]
                else:
                    self.objects[obj] = left - 1
        return [obj for obj in self.objects if obj.namespace.startswith(prefix)]

    def namespaces(self, prefix: str) -> list[KubeObject]:
        return [KubeObject("Namespace", "", n) for n in sorted(self.namespaces_made) if n.startswith(prefix)]

    def delete(self, obj: KubeObject) -> None:
        self.calls.append(f"delete {obj}")
        if obj.kind == "Namespace":
            self.namespaces_made.discard(obj.name)
        elif obj in self.objects and self.objects[obj] is None:
            self.objects[obj] = self.release_polls
