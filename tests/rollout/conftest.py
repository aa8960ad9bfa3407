"""Live rollout fixtures: the session's own local services (Prometheus scraping every 1 s,
the nginx proxy), a registry export with a champion and a good challenger, and two real
Seldon model servers (`FaultyModel`: the real server plus a fault switch) behind the
proxy, scraped by Prometheus. Each test starts from champion v1, challenger v2, all
traffic on stable, no faults, no recorded rollout."""

from __future__ import annotations

import http.client
import json
import os
import random
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.serving.conftest import free_ports
from workloads.local.observability import write_prometheus_config, write_scrape_target
from workloads.local.services import LocalOptions
from workloads.local.supervisor import Supervisor
from tests.local_services import RunningServices, free_port_map
from workloads.rollout.local import HttpStablePredictor
from workloads.serving import registry
from workloads.serving.launch import ModelServer, ServerConfig, serving_python
from workloads.traffic.local_proxy import LocalProxyRouter
from workloads.traffic.split import CANDIDATE, STABLE, TrafficSplit
from workloads.traffic.state import register_upstream

MODEL = "fraud"
FAULTY = "tests.rollout.faulty_model.FaultyModel"


class FaultyServerConfig(ServerConfig):
    def command(self, python=None):
        argv = super().command(python)
        argv[argv.index("workloads.serving.server.StrataModel")] = FAULTY
        return argv


def export_versions(root: Path) -> None:
    """v1 and v2 share weights (a retrain that changed nothing that matters: a good challenger)."""
    from workloads.data.profile import build_profile, write_profile
    from workloads.serving.testing import fraud_schema, sample_rows, save_test_module

    schema = fraud_schema()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        schema.to_json(tmp / registry.SCHEMA)
        write_profile(build_profile(sample_rows(schema, 2048, seed=1), schema.names), tmp / registry.PROFILE)
        save_test_module(tmp, schema, seed=0)
        for version, alias in (("1", "champion"), ("2", "challenger")):
            registry.export_version(root, MODEL, version, tmp / registry.ARTIFACT, tmp / registry.SCHEMA,
                                    tmp / registry.PROFILE, info={"source": "tests.rollout"}, aliases=(alias,))


@dataclass
class Live:
    services: RunningServices
    root: Path
    router: LocalProxyRouter
    servers: dict[str, ModelServer]
    fault_files: dict[str, Path]
    rows: list = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.services.state_dir

    @property
    def prometheus(self) -> str:
        return self.services.prometheus_url

    @property
    def proxy_port(self) -> int:
        return self.router.running()[1]

    def fault(self, slot: str, **fault) -> None:
        self.fault_files[slot].write_text(json.dumps(fault))

    def prom(self, expr: str) -> list:
        url = f"{self.prometheus}/api/v1/query?query={urllib.parse.quote(expr)}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())["data"]["result"]


@pytest.fixture(scope="session")
def rollout_services(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("strata-rollout")
    ports = free_port_map()
    config = write_prometheus_config(state_dir / "prometheus.yml", prometheus_port=ports["prometheus"],
                                     alertmanager_port=None, targets_dir=state_dir / "config" / "prometheus" / "targets",
                                     scrape_interval="1s")
    supervisor = Supervisor(state_dir, ports=ports, options=LocalOptions(prometheus_config=config))
    # the controller tags decisions in the MLflow of $STRATA_STATE_DIR when there is one:
    # point it at this session's (empty) state dir, never at a developer's ./.strata
    saved = {key: os.environ.pop(key, None) for key in ("STRATA_STATE_DIR", "MLFLOW_TRACKING_URI")}
    os.environ["STRATA_STATE_DIR"] = str(state_dir)
    try:
        yield RunningServices(supervisor)("prometheus", "proxy")
    finally:
        supervisor.down()
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


@pytest.fixture(scope="session")
def live_env(rollout_services, tmp_path_factory):
    if not serving_python().exists():
        pytest.fail(f"serving environment missing ({serving_python()}); create it with workloads/serving/setup-env.sh")
    root = rollout_services.state_dir / "registry"  # where local mode keeps it: the rendered workloads find it
    export_versions(root)
    logs = tmp_path_factory.mktemp("rollout-logs")
    fault_files = {slot: logs / f"fault-{slot}.json" for slot in (STABLE, CANDIDATE)}
    servers: dict[str, ModelServer] = {}
    try:
        for slot, alias in ((STABLE, "champion"), (CANDIDATE, "challenger")):
            fault_files[slot].write_text("{}")
            http, grpc, metrics = free_ports(3)
            config = FaultyServerConfig(model=MODEL, alias=alias, registry_dir=str(root), http_port=http, grpc_port=grpc,
                                        metrics_port=metrics, predictor=slot, team="payments-risk", threads=8,
                                        # routing is judged here, not shedding (tests/serving/test_server_limits.py):
                                        # a 100 ms queue budget sheds on two shared cores
                                        queue_budget_ms=2000,
                                        extra_env={"STRATA_TEST_FAULT_FILE": str(fault_files[slot])})
            servers[slot] = ModelServer(config, log_path=logs / f"server-{slot}.log")
        threads = [threading.Thread(target=s.start, kwargs={"timeout": 180}) for s in servers.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for slot, server in servers.items():
            if server.proc is None:
                raise RuntimeError(f"{slot} server did not start; see {server.log_path}")
            register_upstream(rollout_services.state_dir, MODEL, slot, server.config.http_port)
            write_scrape_target(rollout_services.state_dir / "config" / "prometheus" / "targets",
                                f"{MODEL}-{slot}", server.config.http_port, "/metrics")
        router = LocalProxyRouter(rollout_services.state_dir)
        router.refresh()
        env = Live(rollout_services, root, router, servers, fault_files)
        deadline = time.monotonic() + 60
        while len(env.prom(f'up{{job=~"{MODEL}-.*"}} == 1')) < 2:
            assert time.monotonic() < deadline, "Prometheus never scraped both model servers"
            time.sleep(0.5)
        yield env
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def live(live_env):
    """Champion v1 / challenger v2, all stable, no faults, no recorded rollout."""
    env = live_env
    for slot in env.fault_files:
        env.fault(slot)
    registry.set_alias(env.root, MODEL, "champion", "1")
    registry.set_alias(env.root, MODEL, "challenger", "2")
    for name in ("rollout.json", "decisions.jsonl"):
        (env.root / MODEL / name).unlink(missing_ok=True)
    env.router.apply(TrafficSplit.all_stable(MODEL))
    HttpStablePredictor(env.state_dir).wait_serving(MODEL, "1", 60)
    time.sleep(1.5)  # let the previous test's traffic age out of the next window's edge
    return env


def spec_file(tmp_path: Path, strategy: str = "canary", **rollout) -> Path:
    import yaml

    body = {
        "name": MODEL, "team": "payments-risk", "owner": "risk@example.com", "pagerduty": {"routingKeyName": "payments-risk"},
        "training": {"entrypoint": "workloads.examples.fraud.train:hooks", "data": "synthetic://fraud"},
        "serving": {"rollout": {"strategy": strategy, "steps": [25, 50, 100], "analysisWindow": "6s",
                                "minRequestsPerStep": 30, "abWeight": 50, **rollout}},
        "slos": {"latencyP99Ms": 200},
    }
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


class Load:
    """Steady traffic through the proxy from `clients` keep-alive clients (~`rps` in total);
    records every answer: (status or the connection error, predictor header, version)."""

    def __init__(self, port: int, rps: float = 40.0, clients: int = 4, rows: int = 4):
        from workloads.serving.testing import fraud_schema, sample_rows

        self.port, self.clients, self.interval = port, clients, clients / rps
        # varied rows, like live traffic: the score histograms of the two arms are comparable
        self.bodies = [json.dumps({"data": {"ndarray": sample_rows(fraud_schema(), rows, seed=seed).tolist()}})
                       for seed in range(64)]
        self.results: list[tuple[float, object, str, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        # A new connection per request: a keep-alive connection that sits idle while nginx
        # reloads is closed by the old worker, and the client's next write on it races
        # that close (a client-side artefact, not a dropped request). With one connection
        # per request any connection error is a real drop.
        while not self._stop.is_set():
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("POST", f"/{MODEL}/api/v1.0/predictions", random.choice(self.bodies),
                             {"Content-Type": "application/json", "Connection": "close"})
                resp = conn.getresponse()
                payload = resp.read()
                version = ""
                if resp.status == 200:
                    version = json.loads(payload).get("meta", {}).get("tags", {}).get("version", "")
                result = (time.time(), resp.status, resp.getheader("X-Strata-Predictor", ""), version)
            except (OSError, http.client.HTTPException) as error:
                result = (time.time(), f"{type(error).__name__}: {error}", "", "")
            finally:
                conn.close()
            with self._lock:
                self.results.append(result)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def since(self, t: float) -> list:
        with self._lock:
            return [r for r in self.results if r[0] >= t]

    def dropped(self) -> list:
        """Answers no client should ever see: connection errors and proxy 502/503/504."""
        return [r for r in self.results if not isinstance(r[1], int) or r[1] in (502, 503, 504)]
