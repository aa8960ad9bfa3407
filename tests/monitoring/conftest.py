"""Shared helpers for the monitoring tests: the example catalog, binaries, ports, processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from workloads.monitoring.generate import REPO_ROOT, load_catalog

BINARIES = ("promtool", "amtool", "prometheus", "prometheus-alertmanager")
DEBIAN_HINT = ("apt-get install -y --no-install-recommends prometheus prometheus-alertmanager "
               "(Debian packages; binaries: prometheus, promtool, prometheus-alertmanager, amtool)")


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("STRATA_REQUIRE_MONITORING_BINARIES"):
            pytest.fail(f"{binary} not found: {DEBIAN_HINT}")
        pytest.skip(f"{binary} not found: {DEBIAN_HINT}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as error:
            last = error
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


class Processes:
    """Background processes started by one test; each is stopped by its own pid."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], **kwargs) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=kwargs.pop("cwd", REPO_ROOT), **kwargs)
        self.started.append((name, process))
        return process

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """Stop the processes started under `name` (by their own pid)."""
        for started_name, process in self.started:
            if started_name == name and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)

    def stop_all(self) -> None:
        for _, process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
        for _, process in reversed(self.started):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture
def processes(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    yield procs
    procs.stop_all()


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


PYTHON = sys.executable
