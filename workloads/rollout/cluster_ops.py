"""`strata rollback|rollout-status|promote MODEL --kubeconfig K` on a cluster: the same
controller pieces as the in-cluster controller (`workloads.rollout.kube`: the
SeldonDeployment's predictors, the ConfigMap state, Events), driven from a laptop or CI
with the caller's kubeconfig.

The model's namespace is its team's (`<namespacePrefix>team-<team>`, as infra creates
it); `--stack S` supplies the prefix and the model's spec, `--namespace` overrides it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workloads.rollout.controller import record_decision
from workloads.rollout.state import Phase, RolloutState
from workloads.spec import ModelSpec
from workloads.traffic.split import TrafficSplit


@dataclass(frozen=True)
class ClusterTarget:
    kubeconfig: Path
    namespace: str


def team_namespace(spec: ModelSpec, stack: str | None) -> str:
    prefix = ""
    if stack is not None:
        from infra.config import load_stack  # lazily: the serving images have no Pulumi

        prefix = load_stack(stack).config.namespace_prefix
    return f"{prefix}team-{spec.team}"


def api_client(target: ClusterTarget):
    from kubernetes import config

    return config.new_client_from_config(config_file=str(target.kubeconfig))


@dataclass(frozen=True)
class RollbackResult:
    before: TrafficSplit
    ended: RolloutState | None
    seconds_to_stable: float  # decision -> the API server holds 100% stable


def rollback(model: str, target: ClusterTarget, actor: str = "strata rollback") -> RollbackResult:
    """End the recorded rollout (a running controller sees it before its next step and
    stops), then move 100% of the traffic to `stable`; timed until the SeldonDeployment
    read back from the API server says so."""
    from kubernetes import client

    from workloads.rollout import kube

    started = time.monotonic()
    api = api_client(target)
    router = kube.KubernetesTrafficRouter(target.namespace, api=client.CustomObjectsApi(api))
    store = kube.ConfigMapStateStore(target.namespace, api=client.CoreV1Api(api))
    events = kube.EventSink(target.namespace, api=client.CoreV1Api(api), component=actor.replace(" ", "-"))
    before = router.current(model)
    state = store.load(model)
    ended = None
    if state is not None and state.active:
        state.phase, state.reason = Phase.ROLLED_BACK, f"rolled back by {actor}"
        record_decision(state, store, [events], "rollback", state.reason, actor, 0)
        ended = state
    router.apply(TrafficSplit.all_stable(model))
    while router.current(model) != TrafficSplit.all_stable(model):  # a conflicting writer: apply retries
        router.apply(TrafficSplit.all_stable(model))
    return RollbackResult(before, ended, time.monotonic() - started)


def status(model: str, target: ClusterTarget) -> tuple[TrafficSplit, RolloutState | None, list[dict[str, Any]]]:
    """The split in force, the recorded state and the decision Events (oldest first)."""
    from kubernetes import client

    from workloads.rollout import kube

    api = api_client(target)
    core = client.CoreV1Api(api)
    split = kube.KubernetesTrafficRouter(target.namespace, api=client.CustomObjectsApi(api)).current(model)
    state = kube.ConfigMapStateStore(target.namespace, api=core).load(model)
    found = core.list_namespaced_event(target.namespace, field_selector=f"involvedObject.name={model}").items
    decisions = [{"at": e.first_timestamp or e.metadata.creation_timestamp, "reason": e.reason, "message": e.message,
                  "source": e.source.component if e.source else ""}
                 for e in found if (e.reason or "").startswith("Rollout")]
    return split, state, sorted(decisions, key=lambda d: d["at"])
