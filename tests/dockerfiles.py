"""Checks shared by the image tests: copy what a Dockerfile's COPY lines copy, then import
the image's entry points with only those files on the path (an isolated interpreter)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def copy_image_files(dockerfile: Path, image: Path) -> Path:
    """Lay out under `image` what the Dockerfile's COPY lines put in its WORKDIR."""
    for line in dockerfile.read_text().splitlines():
        if not line.startswith("COPY "):
            continue
        *sources, target = line.split()[1:]
        for source in sources:
            src = REPO_ROOT / source
            assert src.exists(), f"{dockerfile.name}: COPY {source} does not exist"
            if src.is_dir():
                shutil.copytree(src, image / target, dirs_exist_ok=True)
            else:
                dest = image / target / src.name if target.endswith("/") else image / target
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
    return image


def run_in_image(image: Path, probe: str, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    """Run `probe` with `image` first on the path, failing if any repository module came from elsewhere."""
    guard = ("outside = [m for m, mod in sys.modules.items() if m.split('.')[0] in ('workloads', 'infra')\n"
             "           and not str(getattr(mod, '__file__', '') or '').startswith(sys.path[0])]\n"
             "assert not outside, f'imported from outside the image: {outside}'\n")
    code = f"import sys; sys.path.insert(0, {str(image)!r})\n" + probe + "\n" + guard
    return subprocess.run([python, "-I", "-c", code, *args], cwd=image.parent, capture_output=True, text=True,
                          timeout=120)


def pins(dockerfile: Path) -> dict[str, str]:
    """Every `"name==version"` requirement the Dockerfile installs."""
    return dict(re.findall(r'"([A-Za-z-]+)==([0-9.]+)"', dockerfile.read_text()))


_PIN = re.compile(r'"([A-Za-z0-9_.\[\],-]+==[0-9][0-9A-Za-z.+]*)"')


def install_requirements(dockerfile: Path) -> list[str]:
    """The quoted `name==version` requirements of the Dockerfile's `pip install` commands."""
    text = dockerfile.read_text().replace("\\\n", " ")
    found: list[str] = []
    for command in re.findall(r"pip install ([^;&\n]*)", text):
        if "--index-url" in command:
            continue  # an optional mirror of a pin already listed (torch's CPU wheels)
        found += _PIN.findall(command)
    assert found, f"{dockerfile}: no pinned `pip install` requirements found"
    return found


def fresh_environment(dockerfile: Path, directory: Path, python: str = sys.executable) -> str:
    """A new virtual environment holding exactly what the Dockerfile's pip lines install (and
    what those pull in), on the same Python minor version: nothing of the test environment.
    uv hard-links from the shared cache (warm: seconds). Returns its interpreter."""
    uv = subprocess.run([str(REPO_ROOT / ".ci" / "uv")], capture_output=True, text=True, check=True).stdout.strip()
    cache = Path(os.environ.get("STRATA_CACHE_HOME", Path.home() / ".cache" / "strata")) / "uv"
    env = {**os.environ, "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(cache)), "UV_PYTHON_DOWNLOADS": "never",
           "UV_LINK_MODE": "hardlink"}
    venv = directory / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", python, str(venv)], env=env, check=True, timeout=120)
    interpreter = str(venv / "bin" / "python")
    result = subprocess.run([uv, "pip", "install", "--quiet", "--python", interpreter, *install_requirements(dockerfile)],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{dockerfile}: its install lines do not install:\n{result.stderr[-3000:]}"
    return interpreter
