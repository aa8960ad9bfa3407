"""pytest fixtures: real local services, started once per test session, stopped at its end.

The root conftest loads this plugin (``pytest_plugins = ["tests.local_services"]``)::

    def test_stream(local_services):
        svc = local_services("kafka", "prometheus")   # idempotent: later calls reuse them
        producer = KafkaProducer(bootstrap_servers=svc.kafka_bootstrap)
        requests.get(svc.url("prometheus") + "/-/ready")

The session gets its own state directory (``STRATA_TEST_STATE_DIR`` or a pytest temp dir)
and its own free ports in 20000-32000 (``STRATA_TEST_FIXED_PORTS=1``: the ports table's
defaults), so tests never collide with a developer's ``strata local up`` or with another
session. A missing dependency fails the test with the command that installs it.
Test code, so it lives in tests/ (issue 12 item 11), not in the product's workloads.local.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import pytest

from workloads.local.ports import HOST, free_port_map
from workloads.local.services import LocalOptions
from workloads.local.supervisor import Supervisor

__all__ = ["RunningServices", "free_port_map", "local_services", "local_supervisor"]


class RunningServices:
    """Addresses of the session's services."""

    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor

    def __call__(self, *names: str) -> "RunningServices":
        self.supervisor.up(list(names))
        if self.supervisor.service_status("s3").state == "running":
            # the test process is a client like any workload: its boto3/MLflow/delta-rs reach
            # the local S3 through the standard variables (as pods do with IRSA on AWS)
            from workloads.local import s3

            os.environ.update(s3.s3_env(self.supervisor.context("s3")))
        return self

    @property
    def state_dir(self) -> Path:
        return self.supervisor.state_dir

    def port(self, key: str) -> int:
        return self.supervisor.port(key)

    def url(self, name: str) -> str:
        return self.supervisor.url(name)

    @property
    def kafka_bootstrap(self) -> str:
        return self.supervisor.kafka_bootstrap

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"http://{HOST}:{self.port('mlflow')}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{HOST}:{self.port('prometheus')}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{HOST}:{self.port('alertmanager')}"

    @property
    def pagerduty_events_url(self) -> str:
        return self.url("pagerduty")

    def pages(self) -> list[dict]:
        """Events the local PagerDuty receiver recorded (``{"received_at", "event"}``)."""
        path = self.supervisor.pagerduty_events_file
        if not path.exists():
            return []
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


@pytest.fixture(scope="session")
def local_supervisor(tmp_path_factory) -> Iterator[Supervisor]:
    """The session's Supervisor; everything it started is stopped when the session ends."""
    state = os.environ.get("STRATA_TEST_STATE_DIR")
    state_dir = Path(state) if state else tmp_path_factory.mktemp("strata-local")
    ports = None if os.environ.get("STRATA_TEST_FIXED_PORTS") == "1" else free_port_map()
    sup = Supervisor(state_dir, ports=ports, options=LocalOptions())
    try:
        yield sup
    finally:
        sup.down()


@pytest.fixture(scope="session")
def local_services(local_supervisor: Supervisor) -> RunningServices:
    """Call it with service names to get them running (once per session)."""
    return RunningServices(local_supervisor)
