"""The controller's collaborators on the cluster (official `kubernetes` Python client).

Least privilege (what infra grants the controller's service account, namespace-scoped):
`get`/`patch` on its model's SeldonDeployment, `get`/`create`/`update` on the ConfigMap
`<model>-rollout-state`, `create` on Events.

- `KubernetesTrafficRouter`: the split lives in the SeldonDeployment's predictors
  (`stable` / `candidate`: `traffic`, `shadow`); a change is one JSON patch with a
  `test` of the resourceVersion (optimistic concurrency), retried on conflict;
- `ConfigMapStateStore`: `RolloutState` as `data["state.json"]`;
- `EventSink`: one Event per decision, on the SeldonDeployment;
- `KubernetesStablePredictor`: promotion sets the stable predictor's `version` graph
  parameter (Seldon rolls the stable pods) and waits until every stable server process
  Prometheus scrapes reports that version loaded, and none another;
- `MlflowRegistry`: aliases from the MLflow registry (the cluster's source of truth).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from workloads.rollout.analysis import Prometheus, loaded_versions
from workloads.rollout.controller import RolloutError
from workloads.rollout.record import Decision
from workloads.rollout.state import RolloutState
from workloads.traffic.split import CANDIDATE, STABLE, TrafficSplit

log = logging.getLogger("workloads.rollout")

SELDON_GROUP, SELDON_VERSION, SELDON_PLURAL = "machinelearning.seldon.io", "v1", "seldondeployments"
STATE_KEY = "state.json"


def state_config_map_name(model: str) -> str:
    return f"{model}-rollout-state"


def load_config(kubeconfig: str | None = None) -> None:
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig)


def _conflict(error: BaseException) -> bool:
    return getattr(error, "status", None) in (409, 422)


def split_from_predictors(model: str, predictors: list[dict[str, Any]]) -> TrafficSplit:
    by_name = {p.get("name"): p for p in predictors}
    candidate = by_name.get(CANDIDATE)
    if candidate is None:
        return TrafficSplit.all_stable(model)
    if candidate.get("shadow"):
        return TrafficSplit.mirrored(model)
    return TrafficSplit.weighted(model, int(candidate.get("traffic") or 0))


def predictors_for(split: TrafficSplit, predictors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The predictors list with `split`'s traffic and shadow flags (other fields kept)."""
    names = [p.get("name") for p in predictors]
    if STABLE not in names:
        raise RolloutError(f"SeldonDeployment {split.model} has no `{STABLE}` predictor (predictors: {names})")
    if split.candidate_active and CANDIDATE not in names:
        raise RolloutError(f"SeldonDeployment {split.model} has no `{CANDIDATE}` predictor for {split.describe()} "
                           "(the model's serving.rollout.strategy needs a mode that offers it)")
    out = []
    for predictor in predictors:
        predictor = dict(predictor)
        if predictor.get("name") == STABLE:
            predictor["traffic"] = split.stable_weight
        elif predictor.get("name") == CANDIDATE:
            predictor["traffic"] = split.candidate_weight
            predictor["shadow"] = split.shadow
        out.append(predictor)
    return out


class KubernetesTrafficRouter:
    def __init__(self, namespace: str, api: Any = None):
        from kubernetes import client

        self.namespace = namespace
        self.api = api or client.CustomObjectsApi()

    def _get(self, model: str) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(SELDON_GROUP, SELDON_VERSION, self.namespace, SELDON_PLURAL, model)

    def current(self, model: str) -> TrafficSplit:
        return split_from_predictors(model, self._get(model)["spec"]["predictors"])

    @retry(retry=retry_if_exception(_conflict), stop=stop_after_attempt(5), wait=wait_exponential(0.1, max=1), reraise=True)
    def _patch(self, model: str, mutate: Any) -> None:
        sdep = self._get(model)
        predictors = mutate(sdep["spec"]["predictors"])
        patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": sdep["metadata"]["resourceVersion"]},
                 {"op": "replace", "path": "/spec/predictors", "value": predictors}]
        # A JSON patch (a list); the client would send it as a merge patch, which the API server refuses (400).
        self.api.patch_namespaced_custom_object(SELDON_GROUP, SELDON_VERSION, self.namespace, SELDON_PLURAL, model, patch,
                                                _content_type="application/json-patch+json")

    def apply(self, split: TrafficSplit) -> None:
        self._patch(split.model, lambda predictors: predictors_for(split, predictors))

    def set_stable_version(self, model: str, version: str) -> None:
        def mutate(predictors: list[dict[str, Any]]) -> list[dict[str, Any]]:
            out = []
            for predictor in predictors:
                predictor = json.loads(json.dumps(predictor))
                if predictor.get("name") == STABLE:
                    graph = predictor.setdefault("graph", {})
                    params = [p for p in graph.get("parameters", []) if p.get("name") not in ("version", "alias")]
                    params.append({"name": "version", "value": str(version), "type": "STRING"})
                    graph["parameters"] = params
                out.append(predictor)
            return out

        self._patch(model, mutate)


class ConfigMapStateStore:
    def __init__(self, namespace: str, api: Any = None):
        from kubernetes import client

        self.namespace = namespace
        self.api = api or client.CoreV1Api()

    def load(self, model: str) -> RolloutState | None:
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self.api.read_namespaced_config_map(state_config_map_name(model), self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        raw = (cm.data or {}).get(STATE_KEY)
        return RolloutState.model_validate_json(raw) if raw else None

    def save(self, state: RolloutState) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        state.updated_at = time.time()
        name = state_config_map_name(state.model)
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, labels={"app.kubernetes.io/managed-by": "strata-rollout",
                                                            "strata.io/model": state.model}),
            data={STATE_KEY: state.to_json()})
        try:
            self.api.replace_namespaced_config_map(name, self.namespace, body)
        except ApiException as error:
            if error.status != 404:
                raise
            self.api.create_namespaced_config_map(self.namespace, body)


EVENT_REASONS = {"start": "RolloutStarted", "resume": "RolloutResumed", "advance": "RolloutAdvanced",
                 "hold": "RolloutHeld", "promote": "RolloutPromoted", "rollback": "RolloutRolledBack",
                 "discard": "RolloutDiscarded", "no_winner": "RolloutNoWinner"}


class EventSink:
    """One core/v1 Event per decision on the model's SeldonDeployment."""

    def __init__(self, namespace: str, api: Any = None, component: str = "strata-rollout"):
        from kubernetes import client

        self.namespace = namespace
        self.api = api or client.CoreV1Api()
        self.component = component

    def record(self, decision: Decision) -> None:
        from kubernetes import client

        now = datetime.fromtimestamp(decision.at, timezone.utc)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{decision.model}-rollout-", namespace=self.namespace,
                                         annotations={"strata.io/decision": json.dumps(decision.to_dict(), default=str)[:60000]}),
            involved_object=client.V1ObjectReference(api_version=f"{SELDON_GROUP}/{SELDON_VERSION}", kind="SeldonDeployment",
                                                     name=decision.model, namespace=self.namespace),
            reason=EVENT_REASONS.get(decision.outcome, "RolloutDecision"),
            message=decision.line()[:1024],
            type="Warning" if decision.outcome in ("rollback", "discard") else "Normal",
            source=client.V1EventSource(component=self.component),
            first_timestamp=now, last_timestamp=now, count=1,
        )
        self.api.create_namespaced_event(self.namespace, event)


class KubernetesStablePredictor:
    """Promotion on the cluster: patch the stable predictor's `version`, then wait until
    every stable server process reports it loaded (`strata_serving_loaded_version_info`)
    and none reports another. The gauge needs no traffic, so a canary at 100% stays there
    until stable is confirmed, and no request meets the old champion after that."""

    def __init__(self, router: KubernetesTrafficRouter, prometheus: Prometheus):
        self.router = router
        self.prometheus = prometheus

    def wait_serving(self, model: str, version: str, timeout_s: float) -> None:
        self.router.set_stable_version(model, version)
        deadline = time.monotonic() + timeout_s
        loaded: dict[str, int] = {}
        while time.monotonic() < deadline:
            loaded = loaded_versions(self.prometheus, model, STABLE)
            if set(loaded) == {version}:
                return
            time.sleep(1)
        raise RolloutError(f"stable predictor of {model} not serving only v{version} after {timeout_s:.0f}s "
                           f"(server processes by loaded version: {loaded or 'none reporting'})")


class MlflowRegistry:
    def __init__(self, tracking_uri: str):
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def aliases(self, model: str) -> dict[str, str]:
        return {alias: str(version) for alias, version in self.client.get_registered_model(model).aliases.items()}

    def set_champion(self, model: str, version: str) -> None:
        self.client.set_registered_model_alias(model, "champion", version)
