"""The main environment belongs to this checkout and is exactly the lock.

Two clones on one machine must each run their own code: an environment shared between
checkouts imports whichever checkout installed itself last.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "main.lock"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_environment_lives_in_this_checkout():
    venv = REPO / ".venv"
    assert not venv.is_symlink(), ".venv is a link to an environment other checkouts may share: re-run .ci/setup"
    assert Path(sys.prefix).resolve() == venv.resolve(), f"tests run in {sys.prefix}, not this checkout's {venv}"


def test_the_environment_imports_this_checkout_from_anywhere():
    """Without PYTHONPATH and from another directory, .venv's python imports this checkout's code."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    probe = "import infra, workloads; print(infra.__file__); print(workloads.__file__)"
    out = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", probe], cwd="/", env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert [Path(path).resolve() for path in out] == [REPO / "infra" / "__init__.py", REPO / "workloads" / "__init__.py"]


def test_the_environment_is_exactly_the_lock():
    pinned = dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", LOCK.read_text(), flags=re.M))
    assert len(pinned) > 100, f"{LOCK} pins only {len(pinned)} packages"
    # What is installed in .venv's site-packages; not sys.path, which Ray extends with its own
    # vendored copies (ray/thirdparty_files: psutil, colorama) once any test imported it.
    site = sysconfig.get_paths()["purelib"]
    installed = {_canonical(dist.metadata["Name"]): dist.version for dist in md.distributions(path=[site])}
    wrong = {name: (installed.get(_canonical(name)), version) for name, version in pinned.items()
             if installed.get(_canonical(name)) != version}
    assert not wrong, f"installed vs locked versions differ (installed, locked): {wrong}"
    extra = set(installed) - {_canonical(name) for name in pinned} - {"strata"}
    assert not extra, f"installed but not in the lock: {sorted(extra)}"


def test_the_lock_covers_what_pyproject_asks_for():
    """Every direct requirement of pyproject's extras is pinned in the lock (else: run .ci/lock)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("infra", "workloads", "test"):
        wanted += project["optional-dependencies"][extra]
    pinned = {_canonical(name): version for name, version in
              re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", LOCK.read_text(), flags=re.M)}
    names = {_canonical(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)) for requirement in wanted}
    assert names <= set(pinned), f"in pyproject.toml but not locked (run .ci/lock): {sorted(names - set(pinned))}"
    exact = {_canonical(name): version for name, version in
             (re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^]]*\])?==([^\s;,]+)", r).groups() for r in wanted if "==" in r)}
    stale = {name: (pinned[name], version) for name, version in exact.items() if pinned[name] != version}
    assert not stale, f"pyproject pins differ from the lock (locked, pyproject), run .ci/lock: {stale}"
