"""Reading both arms of a rollout from Prometheus (HTTP API), with the dashboards' queries.

Every expression comes from `workloads.monitoring.queries` (grouped by `predictor`), so
what the controller decides on is what the per-model dashboard shows. The candidate's
metrics carry `predictor="candidate"`, or `predictor="shadow"` when it only receives
mirrored copies (see `metrics_predictor`): the SLO rules exclude `shadow`.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from workloads.monitoring import queries
from workloads.rollout.stats import Arm
from workloads.traffic.split import (ALIAS_OF_PREDICTOR, CANDIDATE, SHADOW_PREDICTOR, STABLE,  # noqa: F401
                                     metrics_predictor)

# `predictor` label -> slot. Servers label themselves with the slot name (the contract);
# one started by alias without `--predictor` labels itself with the alias, read the same way.
SLOT_OF_LABEL = {STABLE: STABLE, CANDIDATE: CANDIDATE, SHADOW_PREDICTOR: CANDIDATE,
                 **{alias: slot for slot, alias in ALIAS_OF_PREDICTOR.items()}}


class PrometheusError(RuntimeError):
    """Prometheus could not answer a query (the message names the query and the cause)."""


class Prometheus:
    """A minimal Prometheus HTTP API client (`/api/v1/query`)."""

    def __init__(self, url: str, timeout_s: float = 10.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    @retry(retry=retry_if_exception_type((urllib.error.URLError, OSError)), stop=stop_after_attempt(4),
           wait=wait_exponential(multiplier=0.2, max=2), reraise=True)
    def _get(self, path: str, params: dict[str, str]) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}?{urllib.parse.urlencode(params)}", timeout=self.timeout_s) as resp:
            return json.loads(resp.read())

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            body = self._get("/api/v1/query", params)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise PrometheusError(f"query {expr!r} failed: HTTP {error.code} {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise PrometheusError(f"Prometheus at {self.url} unreachable for {expr!r}: {error}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"query {expr!r} failed: {body.get('error', body)}")
        return body["data"]["result"]

    def by_label(self, expr: str, label: str, at: float | None = None) -> dict[str, float]:
        out = {}
        for sample in self.query(expr, at):
            value = float(sample["value"][1])
            out[sample["metric"].get(label, "")] = value
        return out


def _window(seconds: float) -> str:
    return f"{max(int(math.ceil(seconds)), 1)}s"


def observe_arms(prom: Prometheus, model: str, window_s: float, at: float | None = None) -> dict[str, Arm]:
    """Each predictor's arm over the last `window_s` seconds (keys: stable, candidate;
    a `shadow` predictor is reported as the candidate)."""
    window = _window(window_s)
    requests = prom.by_label(queries.requests_in_window(model, window), "predictor", at)
    errors = prom.by_label(queries.errors_in_window(model, window), "predictor", at)
    p99 = prom.by_label(queries.latency_quantile(model, window, 0.99), "predictor", at)
    cdfs: dict[str, list[tuple[float, float]]] = {}
    for sample in prom.query(queries.score_buckets(model, window), at):
        bound = sample["metric"].get("le", "")
        if bound in ("+Inf", ""):
            continue
        cdfs.setdefault(sample["metric"].get("predictor", ""), []).append((float(bound), float(sample["value"][1])))
    arms = {}
    for predictor in set(requests) | set(cdfs):
        slot = SLOT_OF_LABEL.get(predictor)
        if slot is None or slot in arms:
            continue
        latency = p99.get(predictor)
        arms[slot] = Arm(
            requests=requests.get(predictor, 0.0),
            errors=errors.get(predictor, 0.0),
            p99_s=latency if latency is not None and math.isfinite(latency) else None,
            score_cdf=tuple(sorted(cdfs.get(predictor, []))),
        )
    return arms


def loaded_versions(prom: Prometheus, model: str, predictor: str) -> dict[str, int]:
    """Version -> how many server processes of one predictor report serving it now. A pod
    that is gone leaves the answer (its series go stale when its target drops)."""
    found = prom.by_label(queries.processes_by_loaded_version(model, predictor), "version", time.time())
    return {version: int(count) for version, count in found.items()}
