"""A local Ray start that misses Ray's fixed raylet-registration or dashboard window is
tried again; any other start error is not."""

from __future__ import annotations

import os

import pytest
import ray

from workloads.training import ray_jobs

TIMED_OUT = Exception("The current node timed out during startup. This could happen because some of the raylet "
                      "failed to startup or the GCS has become overloaded.")


def fake_starts(monkeypatch, outcomes):
    calls = {"init": 0, "shutdown": 0}

    def init(**kwargs):
        outcome = outcomes[calls["init"]]
        calls["init"] += 1
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1))
    return calls


def test_a_start_that_timed_out_is_tried_again(monkeypatch):
    calls = fake_starts(monkeypatch, [TIMED_OUT, TIMED_OUT, None])
    ray_jobs.start_local_ray(1, {})
    assert calls == {"init": 3, "shutdown": 2}


DASHBOARD_LATE = Exception("\nThe last 20 lines of /tmp/ray/session_x/logs/dashboard.log (it contains the error message "
                           "from the dashboard): \n... Loading SubprocessModule: TrainHead.")


def test_a_start_whose_dashboard_came_up_late_is_tried_again(monkeypatch):
    calls = fake_starts(monkeypatch, [DASHBOARD_LATE, None])
    ray_jobs.start_local_ray(1, {})
    assert calls == {"init": 2, "shutdown": 1}


def test_the_last_timeout_is_raised_after_the_attempts(monkeypatch):
    calls = fake_starts(monkeypatch, [TIMED_OUT] * ray_jobs.LOCAL_START_ATTEMPTS)
    with pytest.raises(Exception, match="timed out during startup"):
        ray_jobs.start_local_ray(1, {})
    assert calls["init"] == ray_jobs.LOCAL_START_ATTEMPTS


def test_other_start_errors_are_not_retried(monkeypatch):
    calls = fake_starts(monkeypatch, [ValueError("bad num_cpus"), None])
    with pytest.raises(ValueError, match="bad num_cpus"):
        ray_jobs.start_local_ray(1, {})
    assert calls == {"init": 1, "shutdown": 0}


def test_a_local_runtime_runs_no_preemption_watcher_unless_asked(monkeypatch):
    """One node cannot be drained: Ray Train's preemption watcher (one more actor process per
    training attempt) is off on a local runtime; a value the user set is kept."""
    fake_starts(monkeypatch, [None, None])
    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", raising=False)
    ray_jobs.start_local_ray(1, {})
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")
    ray_jobs.start_local_ray(1, {})
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1"
