"""The rollout controller image: pinned base, non-root, exact pins equal to the installed
ones, and a COPY list that holds every module the controller imports on the cluster path."""

from __future__ import annotations

import importlib.metadata
import re

from tests.dockerfiles import REPO_ROOT, assert_installs_exactly, copy_image_files, lock_pins, run_in_image

DOCKERFILE = REPO_ROOT / "workloads" / "rollout" / "Dockerfile"
LOCK = REPO_ROOT / "requirements" / "rollout.lock"


def test_base_pinned_user_not_root_and_pins_are_the_tested_versions():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-bookworm$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert_installs_exactly(DOCKERFILE, LOCK)
    pinned = lock_pins(LOCK)
    assert {"kubernetes", "scipy", "pydantic", "tenacity", "mlflow-skinny"} <= set(pinned)
    for name, version in pinned.items():
        assert importlib.metadata.version(name) == version, f"{name}: image {version}, tests run {importlib.metadata.version(name)}"


def test_the_copied_files_are_enough_for_the_cluster_controller(tmp_path):
    image = copy_image_files(DOCKERFILE, tmp_path / "app")
    probe = (
        "import sys, importlib.util\n"
        "import workloads.rollout.service, workloads.rollout.kube, workloads.rollout.controller\n"
        "import workloads.rollout.record, workloads.rollout.analysis, workloads.rollout.stats\n"
        "assert importlib.util.find_spec('workloads.rollout.__main__').origin.startswith(sys.path[0])\n"
        "from workloads.rollout.service import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
    )
    result = run_in_image(image, probe)
    assert result.returncode == 0, result.stderr[-3000:]
