"""The stream worker image: pinned base, non-root, pins equal to pyproject.toml's, and its
COPY list holds every module the worker imports (checked by importing with only those files)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "workloads" / "streaming" / "Dockerfile"


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
    pins = dict(re.findall(r'"([a-z-]+)==([0-9.]+)"', text))
    assert {"torch", "kafka-python", "orjson", "prometheus-client"} <= set(pins)
    declared = _pyproject_pins()
    for name, version in pins.items():
        if name in declared:
            assert declared[name] == version, f"{name}: Dockerfile {version}, pyproject.toml {declared[name]}"
    assert not re.search(r'pip install[^\n]*"[a-z-]+"', text)  # no unpinned requirement


def test_the_copied_files_are_enough_to_run_the_worker(tmp_path):
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
        "import sys\n"
        "from workloads.streaming.worker import main\n"
        "import importlib.util, workloads.serving.model, workloads.serving.registry\n"
        "assert importlib.util.find_spec('workloads.streaming.__main__').origin.startswith(sys.path[0])\n"
        "outside = [m for m, mod in sys.modules.items() if m.split('.')[0] in ('workloads', 'infra')\n"
        "           and not str(getattr(mod, '__file__', '') or '').startswith(sys.path[0])]\n"
        "assert not outside, f'imported from outside the image: {outside}'\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
    )
    result = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(image)!r})\n" + probe],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
