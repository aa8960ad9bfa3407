"""The controller's collaborators in local mode: registry export, local proxy, Prometheus.

- `LocalRegistry`: aliases from `<registry>/<model>/aliases.json`; promotion rewrites it
  (atomic) and moves the MLflow alias too when a tracking server is reachable;
- `HttpStablePredictor`: waits until the stable server (its address from the proxy's
  upstreams.json) reports the new version on `/health/status` (alias-following reload);
- `PrometheusArms`: both arms from the Prometheus HTTP API (`analysis.observe_arms`);
- `http_smoke_check`: blue-green smoke checks straight against the candidate server.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from workloads.rollout.analysis import Prometheus, observe_arms
from workloads.rollout.controller import RolloutError
from workloads.rollout.record import MlflowTagSink
from workloads.rollout.stats import Arm
from workloads.serving import registry
from workloads.traffic.split import CANDIDATE, STABLE


class LocalRegistry:
    def __init__(self, root: Path | str, mlflow: MlflowTagSink | None = None):
        self.root = Path(root)
        self.mlflow = mlflow

    def aliases(self, model: str) -> dict[str, str]:
        return registry.read_aliases(self.root, model)

    def set_champion(self, model: str, version: str) -> None:
        if self.aliases(model).get("champion") != version:
            registry.set_alias(self.root, model, "champion", version)
        if self.mlflow is not None:
            self.mlflow.set_alias(model, "champion", version)


class PrometheusArms:
    def __init__(self, prometheus: Prometheus):
        self.prometheus = prometheus

    def arms(self, model: str, window_s: float) -> dict[str, Arm]:
        return observe_arms(self.prometheus, model, window_s)


def upstream_url(state_dir: Path | str, model: str, slot: str) -> str:
    from workloads.traffic.state import read_upstreams

    address = read_upstreams(state_dir).get(model, {}).get(slot)
    if not address:
        raise RolloutError(f"no {slot} server of {model} is registered with the local proxy in {state_dir} "
                           f"(`strata upstream {model} --{slot}-port N`)")
    return f"http://{address}"


LOADED_VERSION = "strata_serving_loaded_version_info"


def served_version(url: str, timeout_s: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url + "/health/status", timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    data = body.get("jsonData", body) if isinstance(body, dict) else {}
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version is not None else None


def loaded_versions(url: str, model: str, timeout_s: float = 2.0) -> dict[str, str] | None:
    """Process -> the version it serves now, from the server's `/metrics` (every gunicorn
    worker and the gRPC process reports its own); None when the server does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url + "/metrics", timeout=timeout_s) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return None
    served: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LOADED_VERSION and sample.value == 1 and sample.labels.get("model") == model:
                served[sample.labels.get("pid", "server")] = sample.labels["version"]
    return served


class HttpStablePredictor:
    """The stable server follows the `champion` alias; wait until every one of its
    processes serves `version` (each follows the alias on its own)."""

    def __init__(self, state_dir: Path | str):
        self.state_dir = state_dir

    def wait_serving(self, model: str, version: str, timeout_s: float) -> None:
        url = upstream_url(self.state_dir, model, STABLE)
        deadline = time.monotonic() + timeout_s
        served = None
        while time.monotonic() < deadline:
            served = loaded_versions(url, model)
            if served and set(served.values()) == {version}:
                return
            time.sleep(0.1)
        raise RolloutError(f"the stable server of {model} at {url} serves {served or 'nothing it reports'} "
                           f"(process: version) after {timeout_s:.0f}s, not only the new champion v{version}: "
                           f"is it following the alias (served by alias, not --version)?")


def smoke_rows(root: Path | str, model: str, version: str, rows: int = 8) -> list[list[float]]:
    """Valid rows inside every feature's bounds, from the version's own schema."""
    import numpy as np

    from workloads.data.schema import FeatureSchema

    schema = FeatureSchema.from_json(registry.resolve(root, model, version=version).schema_path)
    low, high = schema.bounds()
    low = np.where(np.isfinite(low), low, -1.0)
    high = np.where(np.isfinite(high), high, low + 1.0)
    grid = np.linspace(0.1, 0.9, rows)[:, None]
    return np.round(low + grid * (high - low), 3).tolist()


def http_smoke_check(state_dir: Path | str, registry_root: Path | str, requests: int = 5):
    """Blue-green smoke check: health reports the candidate version, and `requests` valid
    predictions answer 200 with that version in `meta.tags`."""

    def check(model: str, version: str) -> tuple[bool, str]:
        url = upstream_url(state_dir, model, CANDIDATE)
        seen = served_version(url)
        if seen != version:
            return False, f"candidate at {url} reports version {seen}, expected {version}"
        body = json.dumps({"data": {"ndarray": smoke_rows(registry_root, model, version)}}).encode()
        for index in range(requests):
            request = urllib.request.Request(url + "/api/v1.0/predictions", body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    answer = json.loads(resp.read())
            except urllib.error.HTTPError as error:
                return False, f"prediction {index + 1} answered HTTP {error.code}"
            except OSError as error:
                return False, f"prediction {index + 1} failed: {error}"
            tags = answer.get("meta", {}).get("tags", {})
            if str(tags.get("version")) != version:
                return False, f"prediction {index + 1} came from version {tags.get('version')}"
        return True, f"{requests} predictions from v{version} at {url}"

    return check
