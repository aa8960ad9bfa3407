"""The model server image: pinned base, non-root, it installs exactly the serving lock, the
serving environment the tests run holds exactly that lock, and its entrypoint, run with only
the files its COPY lines copy, serves the registry export as the cluster's pods do
(issue 12: every image installs exactly its lock and its environment is tested)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np

from tests.dockerfiles import REPO_ROOT, copy_image_files, lock_pins
from tests.serving.conftest import free_ports
from workloads.serving.launch import ServerConfig
from workloads.serving.testing import fraud_schema, reference_outputs, sample_rows

DOCKERFILE = REPO_ROOT / "workloads" / "serving" / "Dockerfile"
LOCK = REPO_ROOT / "workloads" / "serving" / "requirements.lock"


def test_base_is_pinned_the_user_is_not_root_and_it_installs_exactly_its_lock():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.12-slim-bookworm", text, re.M)  # seldon-core 1.19.0 needs 3.12
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "COPY workloads/serving/requirements.lock /tmp/requirements.lock" in text
    installs = re.findall(r"pip install ([^;\n]*)", text)
    # the lock as it is, or (a CPU torch) the lock less its torch/CUDA lines plus torch at the lock's pin
    assert installs == ["--no-deps -r /tmp/requirements.cpu.lock",
                        '--no-deps --index-url "$TORCH_INDEX_URL" "torch==2.15.0"',
                        "--no-deps -r /tmp/requirements.lock"], installs
    assert "grep -v -i -E '^(torch|triton|nvidia-|cuda-)' /tmp/requirements.lock > /tmp/requirements.cpu.lock" in text
    pins = lock_pins(LOCK)
    assert pins["seldon-core"] == "1.19.0" and pins["torch"] == re.search(r'"torch==([0-9.]+)"', text).group(1)


def test_the_serving_environment_holds_exactly_the_lock(serving_env):
    """What the serving tests run is what the image installs: no package more, none at another version."""
    probe = ("import importlib.metadata as m, json\n"
             "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))")
    installed = json.loads(subprocess.run([str(serving_env), "-I", "-c", probe], capture_output=True, text=True,
                                          check=True, timeout=60).stdout)
    pins = lock_pins(LOCK)
    tooling = {"pip", "setuptools", "wheel"}  # the venv's own installers (the image's base Python has them too)
    assert {n: v for n, v in installed.items() if n not in tooling} == {n: v for n, v in pins.items() if n not in tooling}


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read()


def test_the_entrypoint_serves_the_export_from_the_images_files_only(tmp_path, serving_env, registry_root):
    image = copy_image_files(DOCKERFILE, tmp_path / "app")
    http, grpc, metrics = free_ports(3)
    parameters = ServerConfig(model="fraud", alias="champion", team="payments-risk", http_port=http).parameters()
    env = {
        "PATH": f"{serving_env.parent}:/usr/bin:/bin",  # the image's `python` is the lock's environment
        "PYTHONPATH": str(image),  # the Dockerfile's PYTHONPATH=/app: the checkout is not on the path
        "PYTHONDONTWRITEBYTECODE": "1",
        "STRATA_REGISTRY_DIR": str(registry_root),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "STRATA_SERVING_HOST": "127.0.0.1",
        "PREDICTIVE_UNIT_PARAMETERS": json.dumps(parameters),
        "PREDICTIVE_UNIT_ID": "fraud", "PREDICTOR_ID": "champion",
        "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(http), "PREDICTIVE_UNIT_GRPC_SERVICE_PORT": str(grpc),
        "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(metrics),
    }
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["sh", str(image / "workloads" / "serving" / "entrypoint.sh")], cwd=str(image), env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, ready = time.monotonic() + 180, False
        while not ready and time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = _get(f"http://127.0.0.1:{http}/health/status")[0] == 200
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        assert ready, f"not ready (exit {proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}"
        rows = sample_rows(fraud_schema(), 4, seed=3)
        request = urllib.request.Request(f"http://127.0.0.1:{http}/api/v1.0/predictions",
                                         data=json.dumps({"data": {"ndarray": rows.tolist()}}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as resp:
            body = json.loads(resp.read())
        np.testing.assert_allclose(np.asarray(body["data"]["ndarray"], dtype=np.float32),
                                   reference_outputs(registry_root, "fraud", "champion", rows), rtol=1e-5, atol=1e-7)
        status, exposition = _get(f"http://127.0.0.1:{http}/metrics")
        assert status == 200 and b"strata_serving_loaded_version_info" in exposition
        loaded = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
        assert f"0.0.0.0:{http}" not in loaded and f"127.0.0.1:{http}" in loaded  # STRATA_SERVING_HOST is honoured
        # with that environment, `workloads` resolves to the image's copy, never the checkout
        where = subprocess.run(["python", "-c", "import workloads.serving.server as m; print(m.__file__)"], cwd=str(image),
                               env=env, capture_output=True, text=True, timeout=60)
        assert where.stdout.strip().startswith(str(image)), (where.stdout, where.stderr[-500:])
    finally:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, 9)
