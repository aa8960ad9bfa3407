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


def wait_until(predicate, timeout: float, what: str, poll: float = 0.25):
    """Poll `predicate` until it returns something truthy (returned), for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


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


RETRAIN_TOKEN = "test-retrain-token-0123456789abcdef"  # the webhook's bearer token in these tests


def retrain_trigger_argv(port: int, action: str, catalog) -> tuple[list[str], dict[str, str]]:
    """The retraining trigger's command line and environment (its bearer token, its models)."""
    import os

    argv = [PYTHON, "-m", "workloads.monitoring.retrain", "--port", str(port), "--command", action,
            "--cooldown", "3600", "--models", ",".join(spec.name for spec in catalog)]
    return argv, {**os.environ, "STRATA_RETRAIN_TOKEN": RETRAIN_TOKEN}


def write_fast_alerting(directory: Path, catalog, *, key_prefix: str, pagerduty_url: str, retrain_url: str,
                        alertmanager_port: int, scrape_targets: dict[str, str]) -> tuple[Path, Path]:
    """The generated rules (`for:` 2s), routing-key files, Alertmanager config (1s grouping) and a
    Prometheus config (1s scrape/eval) for an end-to-end alerting test. Returns (alertmanager.yaml,
    prometheus.yaml). `scrape_targets`: job suffix -> host:port, scraped as job `strata-<suffix>`."""
    import yaml

    from workloads.monitoring import alertmanager as am
    from workloads.monitoring import rules
    from workloads.monitoring.generate import to_yaml

    rules_file = directory / "rules.yaml"
    rules_file.write_text(to_yaml(rules.rule_groups(catalog, rules.RuleOptions(for_override="2s"))))
    keys = directory / "keys"
    keys.mkdir()
    for spec in catalog:
        (keys / spec.pagerduty.routing_key_name).write_text(f"{key_prefix}{spec.pagerduty.routing_key_name}\n")
    (keys / am.PLATFORM_ROUTING_KEY).write_text(f"{key_prefix}platform\n")
    token_file = directory / "retrain-token"
    token_file.write_text(RETRAIN_TOKEN + "\n")
    am_file = directory / "alertmanager.yaml"
    am_file.write_text(to_yaml(am.alertmanager_config(catalog, am.AlertmanagerOptions(
        routing_key_dir=str(keys), pagerduty_url=pagerduty_url, retrain_webhook_url=retrain_url,
        retrain_token_file=str(token_file),
        group_wait="1s", group_interval="1s", repeat_interval="1h", page_repeat_interval="1h",
        retrain_repeat_interval="1h"))))
    prom_file = directory / "prometheus.yaml"
    prom_file.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": [{"job_name": f"strata-{job}", "static_configs": [{"targets": [target]}]}
                           for job, target in scrape_targets.items()],
    }))
    return am_file, prom_file
