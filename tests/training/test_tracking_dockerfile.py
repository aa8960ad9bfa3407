"""The MLflow tracking server image: pinned base, non-root, exactly requirements/tracking.lock
(under the main lock's versions), and a fresh environment built from exactly its install
lines (same Python) runs its entry point, `mlflow server`, with the flags the cluster's
Deployment passes (`--expose-prometheus`, an `s3://` artifact root, `--no-serve-artifacts`)
on a PostgreSQL backend (the real local server, through the image's own driver): the
metrics endpoint answers and a client's artifact lands in the real local S3 (issue 12
Build 3, Why 4)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.dockerfiles import REPO_ROOT, assert_installs_exactly, fresh_environment
from tests.serving.conftest import free_ports

DOCKERFILE = REPO_ROOT / "workloads" / "tracking" / "Dockerfile"
LOCK = REPO_ROOT / "requirements" / "tracking.lock"
OWN = ("prometheus-flask-exporter",)  # the server's alone: no other environment has it


def test_base_is_pinned_the_user_is_not_root_and_it_installs_exactly_its_lock():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-bookworm$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["mlflow", "server"\]$', text, re.M)
    assert_installs_exactly(DOCKERFILE, LOCK, own=OWN)


@pytest.fixture(scope="module")
def image_python() -> str:
    return fresh_environment(DOCKERFILE, python=f"{sys.version_info.major}.{sys.version_info.minor}")


def test_the_server_runs_the_clusters_flags_on_postgresql_and_clients_write_artifacts_to_s3(
        tmp_path, image_python, local_services):
    import psycopg

    from workloads.data.storage import S3Settings
    from workloads.local import postgres
    from workloads.local import s3 as local_s3

    svc = local_services("s3", "postgres")  # also puts the local S3's endpoint and keys in the environment
    database = f"mlflow_image_{uuid.uuid4().hex[:8]}"
    admin = postgres.dsn(svc.supervisor.context("postgres"), "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    port, = free_ports(1)
    prefix = f"image-test/{uuid.uuid4().hex}"
    mlflow = Path(image_python).with_name("mlflow")
    # the Deployment's argv and env (infra/platform/mlflow.py renders them from the catalogue's
    # declaration; tests/catalogue checks that), with loopback for the pod's IP
    argv = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--default-artifact-root", f"s3://{local_s3.ARTIFACTS_BUCKET}/{prefix}", "--no-serve-artifacts"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_BACKEND_STORE_URI": postgres.dsn(svc.supervisor.context("postgres"), database),
           "MLFLOW_EXPOSE_PROMETHEUS": str(tmp_path / "metrics"), "HOME": str(tmp_path)}
    log = tmp_path / "mlflow.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                                  start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a first start creates the schema
        while True:
            assert server.poll() is None, f"mlflow server exited {server.returncode}:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"mlflow server never healthy:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:  # the ServiceMonitor's endpoint
            body = resp.read()
            assert resp.status == 200 and b"# TYPE " in body, body[:500]  # an exposition, not the UI's page
        # a client in the same environment (the image's CLI, e.g. `mlflow artifacts`): log an artifact
        probe = ("import sys, mlflow\n"
                 "mlflow.set_tracking_uri(sys.argv[1])\n"
                 "with mlflow.start_run() as run:\n"
                 "    mlflow.log_text('written by the client', 'note.txt')\n"
                 "print(run.info.artifact_uri)\n")
        result = subprocess.run([image_python, "-I", "-c", probe, url], capture_output=True, text=True, timeout=120,
                                env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        artifact_uri = result.stdout.strip().splitlines()[-1]
        assert artifact_uri.startswith(f"s3://{local_s3.ARTIFACTS_BUCKET}/{prefix}/"), artifact_uri
        bucket, key = artifact_uri.removeprefix("s3://").split("/", 1)
        body = S3Settings.from_env().client().get_object(Bucket=bucket, Key=f"{key}/note.txt")["Body"].read()
        assert body == b"written by the client"
    finally:
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):  # the server and its workers
            try:
                os.killpg(server.pid, sig)
            except ProcessLookupError:
                break
            try:
                server.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
