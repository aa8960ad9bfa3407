"""What Seldon's executor and the model pods would add to a SeldonDeployment on the local
cluster, where no operator or image runs: steady traffic split by the predictors' live
`traffic` weights, each predictor answering as the version its graph names (its `version`
parameter once the controller patched it on promotion, else its slot's alias looked up in
MLflow, as the model server does), counted with the model server's own `ServingMetrics`
(the contract's names and labels) on one `/metrics` endpoint per (predictor, version), as
each pod has its own, for a real Prometheus to scrape. A pod reports its version loaded
(`mark_loaded`, as the server does once its bundle is in memory) and goes away when its
predictor no longer names that version, as Seldon rolls a predictor's pods.

Requests and scores are deterministic (a Weyl sequence per arm), so two healthy versions
look the same to the analysis; `faults` sets a version's share of 5xx answers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from kubernetes import client

from workloads.local.observability import remove_scrape_target, write_scrape_target
from workloads.rollout import kube
from workloads.serving.metrics import ServingMetrics
from workloads.traffic.split import ALIAS_OF_PREDICTOR

GOLDEN = 0.6180339887498949


@dataclass
class Pod:
    metrics: ServingMetrics
    server: object
    served: int = 0


@dataclass
class SeldonPods:
    admin: client.ApiClient
    namespace: str
    model: str
    team: str
    mlflow_uri: str
    targets_dir: Path
    rps: float = 100.0
    faults: dict[str, float] = field(default_factory=dict)  # version -> share of 5xx answers
    weights: list[tuple[float, int]] = field(default_factory=list)  # (time, candidate %) as routed

    def __post_init__(self) -> None:
        from mlflow import MlflowClient

        self.mlflow = MlflowClient(tracking_uri=self.mlflow_uri, registry_uri=self.mlflow_uri)
        self.custom = client.CustomObjectsApi(self.admin)
        self.pods: dict[tuple[str, str], Pod] = {}
        self.retired: dict[tuple[str, str], int] = {}  # (predictor, version) -> requests it served
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="seldon-pods")

    def __enter__(self) -> "SeldonPods":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)
        for (predictor, version), pod in self.pods.items():
            pod.server.shutdown()
            remove_scrape_target(self.targets_dir, self._target(predictor, version))

    def candidate_weight(self) -> int:
        return self.weights[-1][1] if self.weights else 0

    def served(self, predictor: str, version: str) -> int:
        pod = self.pods.get((predictor, version))
        return (pod.served if pod else 0) + self.retired.get((predictor, version), 0)

    def scraped(self, prometheus_url: str, predictor: str, version: str) -> bool:
        """Prometheus scrapes that pod already (so a window's first requests count)."""
        import json
        import urllib.parse
        import urllib.request

        query = urllib.parse.quote(f'up{{service="{self._target(predictor, version)}"}} == 1')
        with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?query={query}", timeout=5) as response:
            return bool(json.loads(response.read())["data"]["result"])

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the Seldon stand-in stopped: {self.error!r}")

    # ------------------------------------------------------------------

    def _target(self, predictor: str, version: str) -> str:
        return f"{self.model}-{predictor}-v{version}"

    def _pod(self, predictor: str, version: str) -> Pod:
        pod = self.pods.get((predictor, version))
        if pod is None:
            from prometheus_client import start_http_server

            metrics = ServingMetrics(self.model, version, predictor, self.team)
            metrics.mark_loaded()
            server, _ = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
            write_scrape_target(self.targets_dir, self._target(predictor, version), server.server_port, "/metrics")
            pod = self.pods[(predictor, version)] = Pod(metrics, server)
        return pod

    def _retire(self, predictor: str, version: str) -> None:
        pod = self.pods.pop((predictor, version))
        pod.server.shutdown()
        remove_scrape_target(self.targets_dir, self._target(predictor, version))
        self.retired[(predictor, version)] = self.retired.get((predictor, version), 0) + pod.served

    def _routes(self) -> list[tuple[str, int, str]]:
        """(predictor, traffic %, served version) from the live SeldonDeployment."""
        sdep = self.custom.get_namespaced_custom_object(kube.SELDON_GROUP, kube.SELDON_VERSION, self.namespace,
                                                        kube.SELDON_PLURAL, self.model)
        aliases = None
        routes = []
        for predictor in sdep["spec"]["predictors"]:
            params = {p["name"]: p["value"] for p in predictor.get("graph", {}).get("parameters", [])}
            version = params.get("version")
            if version is None:
                if aliases is None:
                    aliases = self.mlflow.get_registered_model(self.model).aliases
                alias = params.get("alias", ALIAS_OF_PREDICTOR.get(predictor["name"], ""))
                version = str(aliases[alias]) if alias in aliases else None
            if version is not None:
                routes.append((predictor["name"], int(predictor.get("traffic") or 0), version))
        return routes

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as error:  # noqa: BLE001 - surfaced by check()
            self.error = error

    def _serve(self) -> None:
        interval, sequence, routes, refreshed = 1.0 / self.rps, 0, [], 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now - refreshed > 0.25:
                routes, refreshed = self._routes(), now
                self.weights.append((time.time(), sum(w for name, w, _ in routes if name == "candidate")))
            for predictor, _, version in routes:  # pods run (and are scraped) before they take traffic
                self._pod(predictor, version)
            for gone in set(self.pods) - {(predictor, version) for predictor, _, version in routes}:
                self._retire(*gone)
            sequence += 1
            share = (sequence * GOLDEN) % 1.0  # which predictor takes this request, by weight
            cumulative = 0
            for predictor, weight, version in routes:
                cumulative += weight
                if share * 100 < cumulative:
                    self._answer(self._pod(predictor, version), version)
                    break
            self.stop.wait(max(interval - (time.monotonic() - now), 0))

    def _answer(self, pod: Pod, version: str) -> None:
        pod.served += 1
        u = (pod.served * GOLDEN) % 1.0
        failed = (pod.served * 0.7548776662466927) % 1.0 < self.faults.get(version, 0.0)
        pod.metrics.observe_request("rest", 500 if failed else 200, 0.004 + 0.012 * u)
        if not failed:
            pod.metrics.observe_predictions(1, np.array([u * u]))
