"""The rollout controller image: pinned base, non-root, exact pins equal to the installed
ones, and a COPY list that holds every module the controller imports on the cluster path."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "workloads" / "rollout" / "Dockerfile"


def test_base_pinned_user_not_root_and_pins_are_the_tested_versions():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-bookworm$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    pins = dict(re.findall(r'"([A-Za-z-]+)==([0-9.]+)"', text))
    assert {"kubernetes", "scipy", "pydantic", "tenacity", "mlflow-skinny"} <= set(pins)
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, f"{name}: image {version}, tests run {importlib.metadata.version(name)}"


def test_the_copied_files_are_enough_for_the_cluster_controller(tmp_path):
    image = tmp_path / "app"
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("COPY "):
            continue
        *sources, target = line.split()[1:]
        for source in sources:
            src = REPO_ROOT / source
            assert src.exists(), source
            if src.is_dir():
                shutil.copytree(src, image / target, dirs_exist_ok=True)
            else:
                dest = image / target / src.name if target.endswith("/") else image / target
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
    probe = (
        "import sys, importlib.util\n"
        "import workloads.rollout.service, workloads.rollout.kube, workloads.rollout.controller\n"
        "import workloads.rollout.record, workloads.rollout.analysis, workloads.rollout.stats\n"
        "assert importlib.util.find_spec('workloads.rollout.__main__').origin.startswith(sys.path[0])\n"
        "outside = [m for m, mod in sys.modules.items() if m.split('.')[0] in ('workloads', 'infra')\n"
        "           and not str(getattr(mod, '__file__', '') or '').startswith(sys.path[0])]\n"
        "assert not outside, f'imported from outside the image: {outside}'\n"
        "from workloads.rollout.service import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
    )
    result = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(image)!r})\n" + probe],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
