"""The training image (KubeRay head/workers, the RayJob driver, the retraining CronJob):
pinned base, non-root, exactly requirements/training.lock (the `workloads` extra under the
main lock), and a fresh environment built from exactly its install lines (same Python) runs
its entry points: the CLI and the submitter answer `--help`, and a smoke training runs end to
end against the real local MLflow (artifacts written by the client to S3) with its Ray
checkpoints on the real local S3 (issue 12 Build 3, Why 4)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest

from tests.dockerfiles import (HELP_PROBE, REPO_ROOT, assert_installs_exactly, copy_image_files, fresh_environment,
                               lock_pins, run_in_image)

DOCKERFILE = REPO_ROOT / "workloads" / "training" / "Dockerfile"
LOCK = REPO_ROOT / "requirements" / "training.lock"
# + what the catalogue runs on this image: the CDC sink and the feature aggregator
ENTRYPOINTS = ("workloads.training.cli", "workloads.training.submit", "workloads.data.ingest.cdc",
               "workloads.data.features.streaming")


def test_base_is_pinned_the_user_is_not_root_and_it_installs_exactly_its_lock():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-bookworm$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert_installs_exactly(DOCKERFILE, LOCK)


def test_the_lock_holds_the_workloads_extra_at_its_pins():
    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["workloads"]
    locked = lock_pins(LOCK)
    for requirement in extra:
        name = re.match(r"^([A-Za-z0-9_.-]+)", requirement).group(1).lower().replace("_", "-")
        assert name in locked, f"{requirement}: not in {LOCK.name} (run .ci/lock)"
        if "==" in requirement:
            assert locked[name] == requirement.split("==")[1].split()[0], (requirement, locked[name])


@pytest.fixture(scope="module")
def image_python() -> str:
    return fresh_environment(DOCKERFILE, python=f"{sys.version_info.major}.{sys.version_info.minor}")


def test_the_entry_points_start_in_the_images_own_environment(tmp_path, image_python):
    image = copy_image_files(DOCKERFILE, tmp_path / "app")
    result = run_in_image(image, HELP_PROBE, *ENTRYPOINTS, python=image_python)
    assert result.returncode == 0, result.stderr[-3000:]
    ray = subprocess.run([str(Path(image_python).with_name("ray")), "--version"],
                         capture_output=True, text=True, timeout=120)
    assert ray.returncode == 0 and "2.60.0" in ray.stdout, ray.stderr[-2000:]  # KubeRay runs `ray start` from it


def test_a_smoke_training_in_the_images_environment_writes_mlflow_artifacts_and_checkpoints_to_s3(
        tmp_path, image_python, local_services):
    """What a RayJob driver does on AWS: MLflow with an `s3://` artifact root and
    `--no-serve-artifacts` (the client uploads), Ray Train checkpoints on S3."""
    from workloads.data.storage import S3Settings
    from workloads.local import s3 as local_s3

    svc = local_services("s3", "mlflow")  # also puts the local S3's endpoint and keys in the environment
    image = copy_image_files(DOCKERFILE, tmp_path / "app")
    prefix = f"image-test/{uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": str(image), "MLFLOW_TRACKING_URI": svc.mlflow_tracking_uri,
           "STRATA_CHECKPOINT_URI": f"s3://{local_s3.CHECKPOINTS_BUCKET}/{prefix}",
           "STRATA_STATE_DIR": str(tmp_path / "state"), "STRATA_REGISTRY_DIR": str(tmp_path / "state" / "registry"),
           "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    argv = [image_python, "-m", "workloads.training.cli", "fraud", "--local", "--smoke", "--set", "training.hpo=null",
            "--json"]
    process = subprocess.Popen(argv, cwd=image, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its own group: Ray's processes go with it
    try:
        stdout, stderr = process.communicate(timeout=600)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever Ray left (the CLI shuts Ray down at exit)
        except ProcessLookupError:
            pass
        process.wait(30)
    assert process.returncode == 0, (stdout[-2000:], stderr[-4000:])
    summary = json.loads(stdout.strip().splitlines()[-1])  # --json: the summary is the last line
    assert summary["runId"], summary
    client = S3Settings.from_env().client()
    checkpoints = client.list_objects_v2(Bucket=local_s3.CHECKPOINTS_BUCKET, Prefix=prefix).get("KeyCount", 0)
    assert checkpoints > 0, f"no Ray checkpoint under s3://{local_s3.CHECKPOINTS_BUCKET}/{prefix}"
    import mlflow

    run = mlflow.MlflowClient(svc.mlflow_tracking_uri).get_run(summary["runId"])
    assert run.info.artifact_uri.startswith("s3://"), run.info.artifact_uri
    bucket, key = run.info.artifact_uri.removeprefix("s3://").split("/", 1)
    artifacts = client.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0)
    assert artifacts > 0, f"the run logged no artifact under {run.info.artifact_uri}"
