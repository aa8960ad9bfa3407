"""Rollouts end to end on real processes: two Seldon model servers behind the nginx proxy,
Prometheus scraping them every second, the controller deciding from Prometheus.
Windows are seconds (spec override), so the suite stays short; timings are printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.rollout.conftest import MODEL, Load, spec_file
from workloads.rollout.local import loaded_versions, served_version
from workloads.rollout.record import JsonlSink
from workloads.rollout.service import local_controller
from workloads.rollout.state import FileStateStore, Phase
from workloads.serving import registry
from workloads.training.cli import resolve_spec
from workloads.traffic.split import CANDIDATE, STABLE


def controller(live, tmp_path, strategy="canary", **rollout):
    spec, _ = resolve_spec(MODEL, None, spec_file(tmp_path, strategy, **rollout))
    decisions = []
    ctl = local_controller(spec, live.root, live.state_dir, live.prometheus, actor="pytest", on_decision=decisions.append)
    return ctl, decisions


def test_a_good_challenger_is_promoted_through_every_canary_step_without_dropping_a_request(live, tmp_path):
    ctl, decisions = controller(live, tmp_path)
    started = time.monotonic()
    with Load(live.proxy_port) as load:
        state = ctl.run(timeout_s=120)
        after = time.time()
        time.sleep(1.5)
    total = time.monotonic() - started
    assert state.phase is Phase.PROMOTED, state.reason
    assert [(d.outcome, d.weight) for d in decisions] == [
        ("start", 0), ("advance", 50), ("advance", 100), ("promote", 0)]  # weight in force after each move
    assert registry.read_aliases(live.root, MODEL)["champion"] == "2"
    assert served_version(live.servers[STABLE].url) == "2"  # the stable slot followed the alias: no restart
    stable = live.servers[STABLE]
    processes = loaded_versions(stable.url, MODEL)  # every REST worker and the gRPC process swapped
    assert len(processes) == stable.config.workers + 1 and set(processes.values()) == {"2"}, processes
    assert load.dropped() == [], load.dropped()[:5]
    statuses = {r[1] for r in load.results}
    assert statuses == {200}, statuses
    tail = load.since(after)
    assert tail and {r[2] for r in tail} == {STABLE} and {r[3] for r in tail} == {"2"}
    promote = decisions[-1]
    print(f"\ncanary 25->50->100 promoted in {total:.1f} s (3 windows of 6 s + settle); "
          f"promotion (alias move -> stable serves v2 -> 100% stable) {promote.duration_s:.2f} s; "
          f"{len(load.results)} requests, 0 dropped")


def test_injected_errors_roll_back_at_the_first_step_within_the_window(live, tmp_path):
    live.fault(CANDIDATE, error_ratio=0.5)
    ctl, decisions = controller(live, tmp_path)
    with Load(live.proxy_port) as load:
        started = time.time()
        state = ctl.run(timeout_s=60)
        rolled_back = time.time()
        time.sleep(1.5)
    assert state.phase is Phase.ROLLED_BACK and state.step == 0, state.reason
    assert "error ratio" in state.reason
    rollback = decisions[-1]
    assert rollback.outcome == "rollback" and rollback.duration_s < 10
    assert rolled_back - started < ctl.window_s + ctl.settle_s + 5  # decided at the end of the first window
    assert registry.read_aliases(live.root, MODEL)["champion"] == "1"
    tail = load.since(rolled_back)
    assert tail and {r[2] for r in tail} == {STABLE}
    assert load.dropped() == []
    print(f"\nrollback (errors): decided {rolled_back - started:.1f} s after the step started; "
          f"100% stable {rollback.duration_s:.3f} s after the decision")


def test_added_latency_rolls_back_at_the_first_step(live, tmp_path):
    live.fault(CANDIDATE, delay_s=0.3)
    ctl, decisions = controller(live, tmp_path)
    with Load(live.proxy_port, rps=30, clients=6):
        state = ctl.run(timeout_s=60)
    assert state.phase is Phase.ROLLED_BACK and state.step == 0 and "p99" in state.reason, state.reason
    assert decisions[-1].duration_s < 10
    print(f"\nrollback (latency): {state.reason}; 100% stable in {decisions[-1].duration_s:.3f} s")


def test_a_quiet_window_never_promotes(live, tmp_path):
    ctl, decisions = controller(live, tmp_path)
    state = ctl.run(timeout_s=2 * ctl.window_s + 2 * ctl.settle_s + 2)  # no traffic at all
    assert state.phase is Phase.RUNNING and state.step == 0
    assert [d.outcome for d in decisions[1:]] and {d.outcome for d in decisions[1:]} == {"hold"}
    assert registry.read_aliases(live.root, MODEL)["champion"] == "1"
    assert live.router.current(MODEL).candidate_weight == 25  # still held at the first step


def test_a_killed_controller_resumes_at_the_recorded_step(live, tmp_path):
    spec = spec_file(tmp_path)
    argv = [sys.executable, "-m", "workloads.rollout", "--model", MODEL, "--spec-file", str(spec), "--registry", str(live.root),
            "--state-dir", str(live.state_dir), "--prometheus", live.prometheus, "--actor", "pytest-controller"]
    decisions_file = JsonlSink(live.root).path(MODEL)
    log = open(tmp_path / "controller.log", "ab")
    with Load(live.proxy_port) as load:
        first = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not any(d["outcome"] == "advance" for d in JsonlSink(live.root).history(MODEL)):
                assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "controller.log").read_text()[-3000:]
                time.sleep(0.2)
            time.sleep(1.0)  # mid-step 1
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                os.kill(first.pid, signal.SIGKILL)
        saved = FileStateStore(live.root).load(MODEL)
        assert saved.phase is Phase.RUNNING and saved.step == 1
        assert live.router.current(MODEL).candidate_weight == 50  # the proxy kept the split in force
        second = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=120)
    log.close()
    assert second.returncode == 0, (tmp_path / "controller.log").read_text()[-3000:]
    history = [(d["outcome"], d["step"]) for d in JsonlSink(live.root).history(MODEL)]
    assert history == [("start", 0), ("advance", 1), ("resume", 1), ("advance", 2), ("promote", 2)], history
    assert registry.read_aliases(live.root, MODEL)["champion"] == "2"
    assert load.dropped() == []
    print(f"\ncrash mid-step 1 -> resumed at step 1 -> promoted; decisions in {decisions_file}")


def test_ab_promotes_a_significantly_better_arm(live, tmp_path):
    live.fault(STABLE, error_ratio=0.3)  # the champion got worse; the challenger did not
    ctl, decisions = controller(live, tmp_path, "ab")
    with Load(live.proxy_port, rps=50):
        state = ctl.run(timeout_s=60)
    assert state.phase is Phase.PROMOTED, state.reason
    ab = decisions[-1].metrics["ab"]
    assert ab["winner"] == "candidate" and ab["p_value"] < 0.05 and ab["difference_ci"][0] > 0
    print(f"\nA/B: {state.reason}")


def test_blue_green_smoke_checks_then_switches_at_once_and_promotes(live, tmp_path):
    ctl, decisions = controller(live, tmp_path, "blue-green")
    with Load(live.proxy_port) as load:
        time.sleep(ctl.window_s + 1)  # stable's window before the switch is the baseline
        state = ctl.run(timeout_s=60)
        after = time.time()
        time.sleep(1.5)
    assert state.phase is Phase.PROMOTED, state.reason
    assert [(d.outcome, d.weight) for d in decisions] == [("start", 0), ("advance", 0), ("promote", 0)]
    assert "smoke checks passed" in decisions[1].reason
    assert any(r[2] == CANDIDATE for r in load.results)  # it did carry 100% for the window
    assert load.dropped() == [] and {r[1] for r in load.results} == {200}
    assert {r[3] for r in load.since(after)} == {"2"}
    print(f"\nblue-green: {decisions[1].reason}; promoted in {decisions[-1].duration_s:.2f} s")
