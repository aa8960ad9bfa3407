"""One local Ray runtime and one MLflow store (sqlite in a temp dir) for the session.

Ray starts many processes (GCS, raylet, dashboard, workers); teardown shuts Ray down
and then kills, by pid, any descendant of this pytest process that is still alive.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import descendants
from tests.training.fixture_hooks import FAULT_MARKER_ENV


@dataclass(frozen=True)
class Platform:
    state_dir: Path
    tracking_uri: str


def _kill_descendants() -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = descendants(os.getpid())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(1.0)


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("strata-state")
    os.environ[FAULT_MARKER_ENV] = str(state / "fault.marker")  # before Ray starts: workers inherit it
    from workloads.training import ray_jobs

    ray_jobs.ensure_ray(num_cpus=2)
    try:
        yield Platform(state_dir=state, tracking_uri=f"sqlite:///{state / 'mlflow' / 'mlflow.db'}")
    finally:
        import ray

        ray.shutdown()
        _kill_descendants()
