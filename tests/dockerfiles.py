"""Checks shared by the image tests: copy what a Dockerfile's COPY lines copy, then import
the image's entry points with only those files on the path (an isolated interpreter)."""

from __future__ import annotations

import fcntl
import hashlib
import json
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
_REQUIREMENT_FILE = re.compile(r"(?:^|\s)-r\s+(\S+)")


def copied_source(dockerfile: Path, target: str) -> Path:
    """The repository file a COPY line puts at `target` (relative to the WORKDIR)."""
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            for source in sources:
                if dest == target or (dest.endswith("/") and dest + Path(source).name == target):
                    return REPO_ROOT / source
    raise AssertionError(f"{dockerfile}: `-r {target}` is not a file a COPY line puts in the image")


def install_commands(dockerfile: Path) -> list[list[str]]:
    """The Dockerfile's `pip install` commands as uv arguments: quoted `name==version` pins,
    `-r <copied lock>` (the repository's file), `--no-deps`. A command with `--index-url` is
    an optional mirror of a pin already listed (torch's CPU wheels) and is left out."""
    text = dockerfile.read_text().replace("\\\n", " ")
    commands: list[list[str]] = []
    for command in re.findall(r"pip install ([^;&\n]*)", text):
        if "--index-url" in command:
            continue
        args = ["--no-deps"] if "--no-deps" in command.split() else []
        args += _PIN.findall(command)
        for target in _REQUIREMENT_FILE.findall(command):
            args += ["-r", str(copied_source(dockerfile, target))]
        assert len(args) > args.count("--no-deps"), f"{dockerfile}: `pip install {command.strip()}` installs nothing we can read"
        commands.append(args)
    assert commands, f"{dockerfile}: no `pip install` command found"
    return commands


def install_requirements(dockerfile: Path) -> list[str]:
    """Every `name==version` the Dockerfile's `pip install` commands name, the copied lock files' included."""
    found: list[str] = []
    for args in install_commands(dockerfile):
        for i, arg in enumerate(args):
            if arg == "-r":
                text = Path(args[i + 1]).read_text()
                found += re.findall(r"^([A-Za-z0-9_.\[\],-]+==\S+)", text, re.M)
            elif "==" in arg and (i == 0 or args[i - 1] != "-r"):
                found.append(arg)
    assert found, f"{dockerfile}: no pinned `pip install` requirements found"
    return found


def fresh_environment(dockerfile: Path, directory: Path | None = None, python: str = sys.executable) -> str:
    """A virtual environment holding exactly what the Dockerfile's pip lines install (and, without
    `--no-deps`, what those pull in), on the same Python minor version: nothing of the test
    environment. uv hard-links from the shared cache. Kept under the cache, keyed by a digest
    of the Python and the install commands with their lock files' contents: a second run
    reuses it (seconds), a changed line builds a new one. Returns its interpreter.
    (`directory` is accepted for callers that passed a temp dir; the cache is used instead.)"""
    commands = install_commands(dockerfile)
    uv = subprocess.run([str(REPO_ROOT / ".ci" / "uv")], capture_output=True, text=True, check=True).stdout.strip()
    home = Path(os.environ.get("STRATA_CACHE_HOME", Path.home() / ".cache" / "strata"))
    env = {**os.environ, "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(home / "uv")), "UV_PYTHON_DOWNLOADS": "never",
           "UV_LINK_MODE": "hardlink"}
    digest = hashlib.sha256(python.encode())
    for args in commands:
        for arg in args:
            digest.update(arg.encode() + b"\0")
            if Path(arg).is_file():
                digest.update(Path(arg).read_bytes())
    venv = home / "image-envs" / f"{dockerfile.parent.name}-{digest.hexdigest()[:16]}"
    interpreter = str(venv / "bin" / "python")
    done = venv / ".strata-complete"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session building the same environment: wait for it
        if done.is_file():
            return interpreter
        shutil.rmtree(venv, ignore_errors=True)  # a build that was interrupted
        subprocess.run([uv, "venv", "--quiet", "--python", python, str(venv)], env=env, check=True, timeout=120)
        for args in commands:
            result = subprocess.run([uv, "pip", "install", "--quiet", "--python", interpreter, *args],
                                    env=env, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, f"{dockerfile}: its install lines do not install:\n{result.stderr[-3000:]}"
        done.write_text(json.dumps(commands) + "\n")
    return interpreter


MAIN_LOCK = REPO_ROOT / "requirements" / "main.lock"

# Runs each module named on the command line as `python -m M --help`; each must exit 0.
HELP_PROBE = ("import runpy, sys\n"
              "for name in sys.argv[1:]:\n"
              "    sys.argv = [name, '--help']\n"
              "    try:\n"
              "        runpy.run_module(name, run_name='__main__', alter_sys=True)\n"
              "    except SystemExit as exit_:\n"
              "        assert exit_.code in (0, None), (name, exit_.code)\n")


def lock_pins(lock: Path) -> dict[str, str]:
    """name (normalised) -> version of every `name==version` line of a lock file."""
    return {name.lower().replace("_", "-"): version
            for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(), re.M)}


def assert_installs_exactly(dockerfile: Path, lock: Path, own: tuple[str, ...] = ()) -> None:
    """The image installs `lock` and nothing else, without resolving (`--no-deps`), and every
    version in it is the main lock's (the tests' environment); `own`: packages only the image has."""
    commands = install_commands(dockerfile)
    assert commands == [["--no-deps", "-r", str(lock)]], f"{dockerfile}: installs {commands}, not exactly {lock.name}"
    main = lock_pins(MAIN_LOCK)
    for name, version in lock_pins(lock).items():
        if name in main:
            assert main[name] == version, f"{lock.name}: {name}=={version}, main.lock has {main[name]} (run .ci/lock)"
        else:
            assert name in own, f"{lock.name}: {name} is in no other lock and not one of the image's own {own}"
