"""The rollout state machine on an in-memory router and scripted windows (the analysis
inputs are the test's; the controller, the registry export, the state file and the
decision log are the real ones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workloads.rollout.controller import Controller, RolloutError, plan
from workloads.rollout.local import LocalRegistry
from workloads.rollout.record import JsonlSink, RolloutMetrics
from workloads.rollout.state import FileStateStore, Phase
from workloads.rollout.stats import Arm
from workloads.serving import registry as reg
from workloads.spec import parse_model_spec
from workloads.traffic.split import CANDIDATE, STABLE, TrafficSplit

EDGES = tuple(round(0.05 * i, 2) for i in range(1, 21))


def spec(strategy="canary", **rollout):
    return parse_model_spec({
        "name": "fraud", "team": "payments-risk", "owner": "a@b.io", "pagerduty": {"routingKeyName": "pay"},
        "training": {"entrypoint": "m:f", "data": "synthetic://fraud"},
        "serving": {"rollout": {"strategy": strategy, "steps": [5, 25, 50, 100], "analysisWindow": "10s",
                                "minRequestsPerStep": 100, **rollout}},
    })


class MemoryRouter:
    def __init__(self):
        self.splits: dict[str, TrafficSplit] = {}
        self.applied: list[TrafficSplit] = []

    def current(self, model):
        return self.splits.get(model, TrafficSplit.all_stable(model))

    def apply(self, split):
        self.splits[split.model] = split
        self.applied.append(split)


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class Windows:
    """Arms proportional to the split in force: `rps` requests/s in total."""

    def __init__(self, router, rps=300.0, candidate_errors=0.0, candidate_p99=0.02, bad_from_weight=0,
                 stable_errors=0.0):
        self.router, self.rps = router, rps
        self.candidate_errors, self.candidate_p99, self.bad_from_weight = candidate_errors, candidate_p99, bad_from_weight
        self.stable_errors = stable_errors
        self.calls = []

    def arms(self, model, window_s):
        split = self.router.current(model)
        self.calls.append((split, window_s))
        total = self.rps * window_s
        c_share = 1.0 if split.shadow else split.candidate_weight / 100
        s_share = split.stable_weight / 100
        scores = tuple((e, 10.0 * i) for i, e in enumerate(EDGES, 1))
        bad = split.candidate_weight >= self.bad_from_weight or split.shadow
        c_err = self.candidate_errors if bad else 0.0
        out = {STABLE: Arm(total * s_share, total * s_share * self.stable_errors, 0.02, tuple((e, c * s_share) for e, c in scores))}
        out[CANDIDATE] = Arm(total * c_share, total * c_share * c_err, self.candidate_p99 if bad else 0.02,
                             tuple((e, c * c_share) for e, c in scores))
        return out


class Follows:
    def __init__(self):
        self.waited = []

    def wait_serving(self, model, version, timeout_s):
        self.waited.append(version)


@pytest.fixture
def root(tmp_path) -> Path:
    for version in ("1", "2"):
        (tmp_path / "fraud" / "versions" / version).mkdir(parents=True)
    reg.set_alias(tmp_path, "fraud", "champion", "1")
    reg.set_alias(tmp_path, "fraud", "challenger", "2")
    return tmp_path


def make(root, model_spec, router, windows, clock, smoke=None):
    return Controller(spec=model_spec, router=router, store=FileStateStore(root), source=windows,
                      registry=LocalRegistry(root), stable=Follows(), sinks=[JsonlSink(root)],
                      metrics=RolloutMetrics("payments-risk"), smoke=smoke, settle_s=1.0, clock=clock, sleep=clock.sleep)


def outcomes(root):
    return [d["outcome"] for d in JsonlSink(root).history("fraud")]


def test_plan_follows_the_spec():
    assert [s.split.candidate_weight for s in plan(spec())] == [5, 25, 50, 100]
    assert plan(spec("shadow"))[0].split.shadow
    assert plan(spec("ab", abWeight=30))[0].split.candidate_weight == 30
    assert plan(spec("blue-green"))[0].split.candidate_weight == 100
    with pytest.raises(RolloutError, match="strategy is 'none'"):
        plan(spec("none"))


def test_a_good_challenger_goes_through_every_step_and_is_promoted(root):
    router, clock = MemoryRouter(), Clock()
    controller = make(root, spec(), router, Windows(router), clock)
    state = controller.run()
    assert state.phase is Phase.PROMOTED
    assert [s.candidate_weight for s in router.applied] == [5, 25, 50, 100, 0]
    assert reg.read_aliases(root, "fraud")["champion"] == "2"
    assert controller.stable.waited == ["2"]
    assert outcomes(root) == ["start", "advance", "advance", "advance", "promote"]
    # each step held its window before it was judged
    assert all(window >= 10 for _, window in controller.source.calls)


def test_injected_errors_roll_back_at_the_first_failing_step(root):
    router, clock = MemoryRouter(), Clock()
    state = make(root, spec(), router, Windows(router, candidate_errors=0.3, bad_from_weight=25), clock).run()
    assert state.phase is Phase.ROLLED_BACK and state.step == 1
    assert router.current("fraud") == TrafficSplit.all_stable("fraud")
    assert reg.read_aliases(root, "fraud")["champion"] == "1"
    history = JsonlSink(root).history("fraud")
    assert [d["outcome"] for d in history] == ["start", "advance", "rollback"]
    assert "error ratio" in history[-1]["reason"] and history[-1]["duration_s"] < 1


def test_added_latency_rolls_back_at_the_first_step(root):
    router, clock = MemoryRouter(), Clock()
    state = make(root, spec(), router, Windows(router, candidate_p99=0.35), clock).run()
    assert state.phase is Phase.ROLLED_BACK and state.step == 0 and "p99" in state.reason


def test_a_quiet_window_never_promotes(root):
    router, clock = MemoryRouter(), Clock()
    controller = make(root, spec(), router, Windows(router, rps=1.0), clock)
    state = controller.start()
    for _ in range(200):
        controller.tick(state)
        clock.sleep(1.0)
    assert state.phase is Phase.RUNNING and state.step == 0 and state.quiet_windows >= 10
    assert set(outcomes(root)[1:]) == {"hold"}
    assert reg.read_aliases(root, "fraud")["champion"] == "1"


def test_a_new_controller_resumes_at_the_recorded_step(root):
    router, clock = MemoryRouter(), Clock()
    first = make(root, spec(), router, Windows(router), clock)
    state = first.start()
    for _ in range(1000):  # simulated seconds; a controller that never advances fails, never hangs
        if state.step >= 2:
            break
        first.tick(state)
        clock.sleep(1.0)
    assert state.step == 2, f"no second step within 1000 simulated seconds ({state.phase}, {state.reason})"
    saved = json.loads((root / "fraud" / "rollout.json").read_text())
    assert saved["step"] == 2 and saved["phase"] == "running"
    router.splits.clear()  # e.g. the proxy restarted with nothing in force
    applied_before = len(router.applied)
    second = make(root, spec(), router, Windows(router), clock)
    resumed = second.run()
    assert resumed.phase is Phase.PROMOTED
    assert [s.candidate_weight for s in router.applied[applied_before:]] == [50, 100, 0]
    assert outcomes(root) == ["start", "advance", "advance", "resume", "advance", "promote"]


def test_a_rolled_back_version_needs_force(root):
    router, clock = MemoryRouter(), Clock()
    make(root, spec(), router, Windows(router, candidate_errors=0.5), clock).run()
    with pytest.raises(RolloutError, match="--force"):
        make(root, spec(), router, Windows(router), clock).start()
    assert make(root, spec(), router, Windows(router), clock).run(force=True).phase is Phase.PROMOTED


def test_no_challenger_is_a_clear_error(root):
    reg.set_alias(root, "fraud", "challenger", "1")
    router, clock = MemoryRouter(), Clock()
    with pytest.raises(RolloutError, match="already the champion"):
        make(root, spec(), router, Windows(router), clock).start()


def test_ab_promotes_a_significantly_better_candidate(root):
    router, clock = MemoryRouter(), Clock()
    state = make(root, spec("ab", abWeight=50), router, Windows(router, stable_errors=0.2), clock).run()
    assert state.phase is Phase.PROMOTED and "candidate wins" in state.reason
    assert [s.candidate_weight for s in router.applied] == [50, 0]


def test_ab_equal_arms_have_no_winner(root):
    router, clock = MemoryRouter(), Clock()
    state = make(root, spec("ab"), router, Windows(router), clock).run()
    assert state.phase is Phase.NO_WINNER and router.current("fraud").candidate_weight == 0
    assert reg.read_aliases(root, "fraud")["champion"] == "1"


def test_ab_a_worse_candidate_is_rolled_back(root):
    router, clock = MemoryRouter(), Clock()
    state = make(root, spec("ab"), router, Windows(router, candidate_errors=0.2), clock).run()
    assert state.phase is Phase.ROLLED_BACK and "stable wins" in state.reason


def test_shadow_promotes_or_discards(root):
    router, clock = MemoryRouter(), Clock()
    state = make(root, spec("shadow"), router, Windows(router), clock).run()
    assert state.phase is Phase.PROMOTED and router.applied[0].shadow
    reg.set_alias(root, "fraud", "champion", "1")
    state = make(root, spec("shadow"), router, Windows(router, candidate_errors=0.4), clock).run(force=True)
    assert state.phase is Phase.DISCARDED and not router.current("fraud").candidate_active


def test_blue_green_smoke_failure_never_switches(root):
    router, clock = MemoryRouter(), Clock()
    state = make(root, spec("blue-green"), router, Windows(router), clock, smoke=lambda m, v: (False, "HTTP 500")).run()
    assert state.phase is Phase.DISCARDED and router.applied == []


def test_blue_green_switches_at_once_and_promotes(root):
    router, clock = MemoryRouter(), Clock()
    state = make(root, spec("blue-green"), router, Windows(router), clock, smoke=lambda m, v: (True, "ok")).run()
    assert state.phase is Phase.PROMOTED
    assert [s.candidate_weight for s in router.applied] == [100, 0]


def test_blue_green_failure_goes_back_to_stable(root):
    router, clock = MemoryRouter(), Clock()
    state = make(root, spec("blue-green"), router, Windows(router, candidate_p99=0.5), clock,
                 smoke=lambda m, v: (True, "ok")).run()
    assert state.phase is Phase.ROLLED_BACK and [s.candidate_weight for s in router.applied] == [100, 0]


def test_metrics_follow_the_decisions(root):
    router, clock = MemoryRouter(), Clock()
    controller = make(root, spec(), router, Windows(router, candidate_errors=0.5), clock)
    controller.run()
    text = controller.metrics.exposition().decode()
    assert 'strata_rollout_decisions_total{model="fraud",outcome="rollback",strategy="canary",team="payments-risk"} 1.0' in text
    assert 'strata_rollout_active{candidate_version="2",model="fraud",strategy="canary",team="payments-risk"} 0.0' in text
    assert "strata_rollout_rollback_duration_seconds" in text


def test_a_manual_rollback_ends_the_recorded_rollout_and_the_controller_stops(root):
    import threading
    import time as real_time

    from workloads.rollout.service import record_manual_rollback

    router, clock = MemoryRouter(), Clock()
    controller = make(root, spec(), router, Windows(router, rps=1.0), clock)  # quiet: it would hold forever
    controller.sleep = lambda s: (clock.sleep(s), real_time.sleep(0.002))
    result = {}
    worker = threading.Thread(target=lambda: result.update(state=controller.run()), daemon=True)
    worker.start()
    deadline = real_time.monotonic() + 10
    while "hold" not in outcomes(root):
        assert real_time.monotonic() < deadline
        real_time.sleep(0.01)
    ended = record_manual_rollback(root, "fraud", actor="strata rollback (alice)")  # first end the record ...
    assert ended.phase is Phase.ROLLED_BACK
    worker.join(10)
    router.apply(TrafficSplit.all_stable("fraud"))  # ... then move the traffic (what `strata rollback` does)
    assert result["state"].phase is Phase.ROLLED_BACK
    assert not worker.is_alive()
    assert router.current("fraud").candidate_weight == 0
    last = JsonlSink(root).history("fraud")[-1]
    assert last["outcome"] == "rollback" and last["actor"] == "strata rollback (alice)"
    assert record_manual_rollback(root, "fraud") is None  # nothing active any more


def test_a_short_step_is_held_until_it_has_enough_requests_then_advances(root):
    router, clock = MemoryRouter(), Clock()
    state = make(root, spec(), router, Windows(router, rps=100.0), clock).run()  # 5% of 100 rps: 55 < 100 per window
    assert state.phase is Phase.PROMOTED
    assert outcomes(root)[:3] == ["start", "hold", "advance"]
