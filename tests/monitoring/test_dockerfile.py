"""The monitoring image: pinned base, non-root, and its COPY list holds every module the
four services import (checked by importing them with only those files on the path)."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.monitoring.conftest import PYTHON
from workloads.monitoring.generate import REPO_ROOT

DOCKERFILE = REPO_ROOT / "workloads" / "monitoring" / "Dockerfile"
SERVICES = ("workloads.monitoring.drift_service", "workloads.monitoring.quality",
            "workloads.monitoring.cost_exporter", "workloads.monitoring.retrain", "workloads.training.submit",
            "workloads.serving.sync")  # the registry-sync sidecar of serving and stream pods


def _copies() -> list[tuple[list[str], str]]:
    copies = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, target = line.split()[1:]
            copies.append((sources, target))
    return copies


def test_base_is_pinned_and_the_user_is_not_root():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-bookworm$", text, re.M)
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] not in ("root", "0")
    for pin in re.findall(r'"([a-z-]+)==[0-9.]+"', text):
        assert pin  # every pip requirement is an exact pin
    assert not re.search(r'pip install[^\n]*"[a-z-]+"', text)


def test_the_copied_files_are_enough_to_run_every_service(tmp_path):
    image = tmp_path / "app"
    for sources, target in _copies():
        for source in sources:
            src = REPO_ROOT / source
            assert src.exists(), source
            dest = image / target if target.endswith("/") or len(sources) > 1 else image / target
            if src.is_dir():
                shutil.copytree(src, image / target, dirs_exist_ok=True)
            else:
                dest = dest / src.name if target.endswith("/") else dest
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
    probe = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n" \
            "from workloads.monitoring.cost_exporter import default_price\ndefault_price('m6i.large', True)\n" \
            "from workloads.streaming.topics import labels_topic_for\nfrom workloads.serving import registry\n" \
            "outside = [m for m, mod in sys.modules.items() if m.split('.')[0] in ('workloads', 'infra')\n" \
            "           and not str(getattr(mod, '__file__', '') or '').startswith(sys.path[0])]\n" \
            "assert not outside, f'imported from outside the image: {outside}'\n"
    result = subprocess.run([PYTHON, "-I", "-c", f"import sys; sys.path.insert(0, {str(image)!r})\n" + probe, *SERVICES],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
