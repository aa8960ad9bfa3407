"""The stream worker image: pinned base, non-root, exactly its lock (pins equal to pyproject.toml's), and its
COPY list holds every module the worker imports (checked by importing with only those files)."""

from __future__ import annotations

import re
import tomllib

from tests.dockerfiles import REPO_ROOT, assert_installs_exactly, copy_image_files, lock_pins, run_in_image

DOCKERFILE = REPO_ROOT / "workloads" / "streaming" / "Dockerfile"
LOCK = REPO_ROOT / "requirements" / "streaming.lock"


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return dict(re.match(r"^([A-Za-z0-9_.\[\],-]+?)(?:\[[^\]]*\])?==([^\s;]+)", r).groups()
                for r in requirements if "==" in r)


def test_base_pinned_user_not_root_and_pins_match_pyproject():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-bookworm$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert_installs_exactly(DOCKERFILE, LOCK)  # and every version in it is the main lock's
    pinned = lock_pins(LOCK)
    assert {"torch", "kafka-python", "orjson", "prometheus-client"} <= set(pinned)
    declared = _pyproject_pins()
    for name, version in pinned.items():
        if name in declared:
            assert declared[name] == version, f"{name}: Dockerfile {version}, pyproject.toml {declared[name]}"
    assert not re.search(r'pip install[^\n]*"[a-z-]+"', text)  # no unpinned requirement


def test_the_copied_files_are_enough_to_run_the_worker(tmp_path):
    image = copy_image_files(DOCKERFILE, tmp_path / "app")
    probe = (
        "import sys\n"
        "from workloads.streaming.worker import main\n"
        "import importlib.util, workloads.serving.model, workloads.serving.registry\n"
        "import workloads.serving.enrichment, workloads.data.features.lookup  # online features (--features)\n"
        "assert importlib.util.find_spec('workloads.streaming.__main__').origin.startswith(sys.path[0])\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
    )
    result = run_in_image(image, probe)
    assert result.returncode == 0, result.stderr[-3000:]
