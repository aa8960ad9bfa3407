"""The monitoring image: pinned base, non-root, and its COPY list holds every module the
services import (checked by importing them with only those files on the path), and its own
install lines (a fresh environment built from exactly them, same Python) run every service,
the S3 artifact path included, against the real local S3 (issue 12 item 4)."""

from __future__ import annotations

import re
import sys
import uuid

import pytest

from tests.dockerfiles import HELP_PROBE, copy_image_files, fresh_environment, install_requirements, run_in_image
from tests.monitoring.conftest import PYTHON
from workloads.monitoring.generate import REPO_ROOT

DOCKERFILE = REPO_ROOT / "workloads" / "monitoring" / "Dockerfile"
SERVICES = ("workloads.monitoring.drift_service", "workloads.monitoring.quality",
            "workloads.monitoring.cost_exporter", "workloads.monitoring.retrain", "workloads.training.submit",
            "workloads.serving.sync",  # the registry-sync sidecar of serving and stream pods
            "workloads.monitoring.training_metrics")


def test_base_is_pinned_and_the_user_is_not_root():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-bookworm$", text, re.M)
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] not in ("root", "0")
    for pin in re.findall(r'"([a-z-]+)==[0-9.]+"', text):
        assert pin  # every pip requirement is an exact pin
    assert not re.search(r'pip install[^\n]*"[a-z-]+"', text)


def test_the_copied_files_are_enough_to_run_every_service(tmp_path):
    image = copy_image_files(DOCKERFILE, tmp_path / "app")
    probe = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n" \
            "from workloads.monitoring.cost_exporter import default_price\ndefault_price('m6i.large', True)\n" \
            "from workloads.streaming.topics import labels_topic_for\nfrom workloads.serving import registry\n"
    result = run_in_image(image, probe, *SERVICES, python=PYTHON)
    assert result.returncode == 0, result.stderr[-3000:]


def _lock() -> dict[str, str]:
    text = (REPO_ROOT / "requirements" / "main.lock").read_text()
    return {name.lower().replace("_", "-"): version for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def test_the_image_installs_the_versions_the_tests_run():
    """Every pin of the image is the main lock's: what the tests exercise is what the image runs."""
    lock = _lock()
    for requirement in install_requirements(DOCKERFILE):
        name, version = requirement.split("==")
        assert lock.get(name.lower().split("[")[0]) == version, f"{requirement}: the lock has {lock.get(name.lower())}"


@pytest.fixture(scope="module")
def image_python(tmp_path_factory) -> str:
    return fresh_environment(DOCKERFILE, tmp_path_factory.mktemp("monitoring-image"),
                             python=f"{sys.version_info.major}.{sys.version_info.minor}")


def test_every_service_starts_in_the_images_own_environment(tmp_path, image_python):
    image = copy_image_files(DOCKERFILE, tmp_path / "app")
    result = run_in_image(image, HELP_PROBE, *SERVICES, python=image_python)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_images_environment_reads_mlflow_artifacts_from_s3(tmp_path, image_python, local_services):
    """The drift pod and registry-sync download `s3://` artifacts (MLflow on AWS runs with
    `--no-serve-artifacts`): MLflow's S3 client must be in the image (boto3)."""
    from workloads.data.storage import S3Settings
    from workloads.local import s3 as local_s3

    svc = local_services("s3")  # also puts the local S3's endpoint and keys in the environment
    settings = S3Settings(endpoint_url=svc.url("s3"), access_key_id=local_s3.ACCESS_KEY,
                          secret_access_key=local_s3.SECRET_KEY)
    key = f"image-test/{uuid.uuid4().hex}/reference_profile.json"
    settings.client().put_object(Bucket=local_s3.ARTIFACTS_BUCKET, Key=key, Body=b'{"features": {}}')
    image = copy_image_files(DOCKERFILE, tmp_path / "app")
    probe = ("import sys, mlflow.artifacts\n"
             "path = mlflow.artifacts.download_artifacts(artifact_uri=sys.argv[1], dst_path=sys.argv[2])\n"
             "assert open(path).read() == '{\"features\": {}}', open(path).read()\n")
    result = run_in_image(image, probe, f"s3://{local_s3.ARTIFACTS_BUCKET}/{key}", str(tmp_path / "out"),
                          python=image_python)
    assert result.returncode == 0, result.stderr[-3000:]
