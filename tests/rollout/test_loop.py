"""The closed loop: a retrain that registers a challenger hands it to the rollout controller
(autoPromote) or records that it waits for `strata promote` — through the real retraining
trigger, with real commands."""

from __future__ import annotations

import sys
import time

import pytest

from tests.rollout.test_state_machine import spec
from workloads.monitoring.retrain import RetrainRequest, RetrainTrigger, RolloutHandoff
from workloads.rollout.record import JsonlSink
from workloads.serving import registry as reg


@pytest.fixture
def root(tmp_path):
    (tmp_path / "fraud" / "versions" / "1").mkdir(parents=True)
    reg.set_alias(tmp_path, "fraud", "champion", "1")
    return tmp_path


def register_challenger(root, version="2"):
    def action(request: RetrainRequest) -> int:  # what a local retrain that passed the gate leaves behind
        (root / request.model / "versions" / version).mkdir(parents=True, exist_ok=True)
        reg.set_alias(root, request.model, "challenger", version)
        return 0

    return action


def run_once(trigger: RetrainTrigger) -> dict:
    assert trigger.request(RetrainRequest("fraud", "payments-risk", "ModelFeatureDrift")) == "started"
    trigger.join(30)
    return trigger.status()["fraud"]


def test_auto_promote_starts_the_controller(root, tmp_path):
    marker = tmp_path / "controller-started"
    command = [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(marker), "{model}"]
    handoff = RolloutHandoff(root, spec_for=lambda m: spec(autoPromote=True), command=command)
    status = run_once(RetrainTrigger(register_challenger(root), cooldown_s=0, handoff=handoff))
    assert status["last_exit_code"] == 0 and status["last_rollout"] == "rollout_started"
    for process in handoff.started:
        process.wait(30)
    assert marker.read_text() == "fraud"
    decision = JsonlSink(root).history("fraud")[-1]
    assert decision["outcome"] == "rollout_started" and decision["candidate_version"] == "2"
    assert decision["actor"] == "retrain-trigger" and "ModelFeatureDrift" in decision["reason"]


def test_without_auto_promote_the_challenger_waits_for_strata_promote(root, tmp_path):
    handoff = RolloutHandoff(root, spec_for=lambda m: spec(autoPromote=False),
                             command=[sys.executable, "-c", "raise SystemExit('must not run')"])
    status = run_once(RetrainTrigger(register_challenger(root), cooldown_s=0, handoff=handoff))
    assert status["last_rollout"] == "waiting_for_promote" and handoff.started == []
    decision = JsonlSink(root).history("fraud")[-1]
    assert decision["outcome"] == "waiting_for_promote" and "strata promote fraud" in decision["reason"]


def test_a_retrain_without_a_new_challenger_rolls_nothing_out(root):
    handoff = RolloutHandoff(root, spec_for=lambda m: spec(autoPromote=True), command=["false"])
    status = run_once(RetrainTrigger(lambda request: 0, cooldown_s=0, handoff=handoff))  # gate said no
    assert status["last_rollout"] == "no_new_challenger" and handoff.started == []


def test_a_failed_retrain_hands_nothing_over(root):
    handoff = RolloutHandoff(root, spec_for=lambda m: spec(autoPromote=True), command=["false"])

    def failing(request):
        register_challenger(root)(request)
        return 1

    status = run_once(RetrainTrigger(failing, cooldown_s=0, handoff=handoff))
    assert status["last_exit_code"] == 1 and status["last_rollout"] == "" and handoff.started == []
    time.sleep(0.1)
    assert JsonlSink(root).history("fraud") == []
