"""`strata serve`: the real command serves a registered version, labels its metrics with the
traffic-split slot, and registers the server with the local proxy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from tests.serving.conftest import free_ports
from workloads.serving.testing import fraud_schema, sample_rows
from workloads.traffic.state import read_upstreams


def _wait(url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def test_strata_serve_challenger_registers_as_candidate_and_labels_metrics(serving_env, registry_root, tmp_path):
    [port] = free_ports(1)
    state = tmp_path / "state"
    env = {**os.environ, "STRATA_REGISTRY_DIR": str(registry_root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "serve", "fraud", "--alias", "challenger", "--port", str(port),
         "--state-dir", str(state)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/health/status")
        assert read_upstreams(state)["fraud"]["candidate"].endswith(f":{port}")
        row = sample_rows(fraud_schema(), 1)[0].tolist()
        body = json.dumps({"data": {"ndarray": [row]}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1.0/predictions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        # the example spec's strategy is canary: the challenger serves as `candidate`
        assert 'predictor="candidate"' in metrics and 'predictor="challenger"' not in metrics
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
