"""The monitoring image: pinned base, non-root, and its COPY list holds every module the
four services import (checked by importing them with only those files on the path)."""

from __future__ import annotations

import re

from tests.dockerfiles import copy_image_files, run_in_image
from tests.monitoring.conftest import PYTHON
from workloads.monitoring.generate import REPO_ROOT

DOCKERFILE = REPO_ROOT / "workloads" / "monitoring" / "Dockerfile"
SERVICES = ("workloads.monitoring.drift_service", "workloads.monitoring.quality",
            "workloads.monitoring.cost_exporter", "workloads.monitoring.retrain", "workloads.training.submit",
            "workloads.serving.sync")  # the registry-sync sidecar of serving and stream pods


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
