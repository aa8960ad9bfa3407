"""Checks shared by the image tests: copy what a Dockerfile's COPY lines copy, then import
the image's entry points with only those files on the path (an isolated interpreter)."""

from __future__ import annotations

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
