"""The rollout state machine (one model, one candidate), resumable at every step.

    plan(spec)                     the strategy as steps: (split, how the step is judged)
    RolloutController.run()        start (or resume) -> tick until promoted / rolled back / ...

Each `tick` is idempotent: it re-applies the split the recorded step wants (a no-op when
it is in force), and acts only when the step's analysis is due (window elapsed + a
settle time for the last scrape). Before any traffic change the new state is saved, so a
controller killed anywhere resumes where it stopped:

- canary: for each weight in `serving.rollout.steps`, hold `analysisWindow`, compare the
  candidate with stable (`stats.compare`); fail -> 0% candidate at once; pass -> next
  step; after the 100% step (judged against stable's last measured window) -> promote;
- shadow: mirror for the window, compare; pass -> promote, fail -> discard;
- A/B: `abWeight`% for the window; `stats.ab_test`; candidate significantly better ->
  promote, stable significantly better -> roll back, no significant difference -> no
  winner (all stable);
- blue-green: smoke checks on the candidate, then 100% at once; hold the window judged
  against stable's window before the switch; pass -> promote, fail -> back to stable
  (still running the old version: a traffic change only).

Too few requests in a window (`minRequestsPerStep`, per arm) holds the step for another
window: a quiet window never promotes (`RolloutStuck` fires if it lasts).

Promotion: champion alias -> candidate version (registry export + MLflow), wait until
the stable predictor serves it (alias-following server / patched predictor), then all
traffic to stable. Nothing restarts, no request is dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from workloads.rollout import stats
from workloads.rollout.record import Decision, DecisionSink, RolloutMetrics
from workloads.rollout.state import Phase, RolloutState, StateStore
from workloads.spec import ModelSpec, RolloutStrategyName
from workloads.traffic.split import CANDIDATE, STABLE, TrafficRouter, TrafficSplit

log = logging.getLogger("workloads.rollout")


class RolloutError(RuntimeError):
    """A rollout that cannot start or continue; the message says why and what to do."""


def duration_seconds(text: str) -> int:
    return int(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]


@dataclass(frozen=True)
class Step:
    split: TrafficSplit
    judge: str  # compare | shadow | ab | bluegreen


def plan(spec: ModelSpec) -> tuple[Step, ...]:
    rollout, name = spec.serving.rollout, spec.name
    strategy = rollout.strategy
    if strategy is RolloutStrategyName.CANARY:
        return tuple(Step(TrafficSplit.weighted(name, w), "compare") for w in rollout.steps)
    if strategy is RolloutStrategyName.SHADOW:
        return (Step(TrafficSplit.mirrored(name), "shadow"),)
    if strategy is RolloutStrategyName.AB:
        return (Step(TrafficSplit.weighted(name, rollout.ab_weight), "ab"),)
    if strategy is RolloutStrategyName.BLUE_GREEN:
        return (Step(TrafficSplit.all_candidate(name), "bluegreen"),)
    raise RolloutError(f"{name}: serving.rollout.strategy is 'none': there is nothing to roll out "
                       "(set canary, shadow, ab or blue-green in the model spec)")


def criteria_for(spec: ModelSpec) -> stats.Criteria:
    return stats.Criteria(min_requests=spec.serving.rollout.min_requests_per_step,
                          latency_slo_s=spec.slos.latency_p99_ms / 1000, psi_threshold=spec.drift.psi_threshold)


class ArmSource(Protocol):
    def arms(self, model: str, window_s: float) -> dict[str, stats.Arm]:
        """Each slot's (stable, candidate) arm over the last `window_s` seconds."""


class VersionRegistry(Protocol):
    def aliases(self, model: str) -> dict[str, str]: ...

    def set_champion(self, model: str, version: str) -> None:
        """Move `champion` to `version` (idempotent)."""


class StablePredictor(Protocol):
    def wait_serving(self, model: str, version: str, timeout_s: float) -> None:
        """Return once the stable slot answers with `version`; raise RolloutError on timeout."""


SmokeCheck = Callable[[str, str], tuple[bool, str]]  # (model, version) -> (ok, detail)


@dataclass
class Controller:
    spec: ModelSpec
    router: TrafficRouter
    store: StateStore
    source: ArmSource
    registry: VersionRegistry
    stable: StablePredictor
    sinks: list[DecisionSink] = field(default_factory=list)
    metrics: RolloutMetrics | None = None
    smoke: SmokeCheck | None = None
    settle_s: float = 2.0  # after a window: one scrape + one evaluation of lag
    poll_s: float = 0.5
    promote_timeout_s: float = 120.0
    actor: str = "controller"
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    on_decision: Callable[[Decision], None] | None = None

    def __post_init__(self) -> None:
        self.model = self.spec.name
        self.steps = plan(self.spec)
        self.window_s = float(duration_seconds(self.spec.serving.rollout.analysis_window))
        self.criteria = criteria_for(self.spec)

    # ------------------------------------------------------------------ lifecycle

    def start(self, force: bool = False) -> RolloutState:
        """Resume the recorded rollout, or start one for the waiting challenger."""
        existing = self.store.load(self.model)
        if existing is not None and existing.active:
            if existing.strategy is not self.spec.serving.rollout.strategy:
                raise RolloutError(f"{self.model}: a {existing.strategy.value} rollout of v{existing.candidate_version} "
                                   f"is in progress but the spec says {self.spec.serving.rollout.strategy.value}: "
                                   f"finish or roll it back first (`strata rollback {self.model}`)")
            self._decide(existing, "resume", f"resuming at step {existing.step} ({existing.phase.value})")
            return existing
        aliases = self.registry.aliases(self.model)
        candidate, stable = aliases.get("challenger"), aliases.get("champion")
        if not candidate:
            raise RolloutError(f"{self.model} has no `challenger` version to roll out "
                               f"(aliases: {aliases or 'none'}); train one: `strata train {self.model}`")
        if candidate == stable:
            raise RolloutError(f"{self.model} v{candidate} is already the champion: nothing to roll out")
        if (existing is not None and existing.candidate_version == candidate and not force):
            raise RolloutError(f"{self.model} v{candidate} already finished a rollout ({existing.phase.value}: "
                               f"{existing.reason}); pass --force to roll it out again")
        state = RolloutState(model=self.model, strategy=self.spec.serving.rollout.strategy,
                             candidate_version=candidate, stable_version=stable, actor=self.actor,
                             step_started_at=self.clock(), started_at=self.clock(),
                             decisions=existing.decisions if existing else 0)
        self.store.save(state)
        self._decide(state, "start", f"{state.strategy.value} rollout of v{candidate} against v{stable}: "
                                     + " -> ".join(s.split.describe().split(": ", 1)[1] for s in self.steps))
        return state

    def run(self, force: bool = False, timeout_s: float | None = None) -> RolloutState:
        state = self.start(force)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while state.active:
            stored = self.store.load(self.model)
            if stored is not None and not stored.active and stored.candidate_version == state.candidate_version:
                log.info("%s: the rollout was ended outside the controller (%s: %s); stopping",
                         self.model, stored.phase.value, stored.reason)
                return stored  # e.g. `strata rollback` by a person: never fight it
            wait = self.tick(state)
            if deadline is not None and time.monotonic() > deadline:
                log.info("%s: stopping the controller after %.0fs; the rollout stays recorded at step %d",
                         self.model, timeout_s, state.step)
                break
            if wait > 0:
                self.sleep(min(wait, self.poll_s))
        return state

    # ------------------------------------------------------------------ one step of the machine

    def tick(self, state: RolloutState) -> float:
        """Advance the machine if something is due; returns seconds until it is."""
        if state.phase is Phase.PROMOTING:
            self._promote(state, state.reason)
            return 0.0
        if state.phase is Phase.ROLLING_BACK:
            self._rollback(state, state.reason, self.clock())
            return 0.0
        if not state.active:
            return 0.0
        step = self.steps[state.step]
        if step.judge == "bluegreen" and state.baseline.get("smoke") != "passed":
            if not self._smoke_and_baseline(state):
                return 0.0
        self._ensure(step.split)
        now = self.clock()
        due = state.step_started_at + self.window_s * (1 + state.quiet_windows) + self.settle_s
        if now < due:
            return due - now
        arms = self.source.arms(self.model, now - state.step_started_at)
        candidate = arms.get(CANDIDATE, stats.Arm(0, 0))
        stable = arms.get(STABLE) if step.split.stable_weight > 0 else None
        if stable is None and state.baseline.get("stable"):
            stable = stats.Arm.from_dict(state.baseline["stable"])
        if step.judge == "ab":
            return self._judge_ab(state, arms.get(STABLE, stats.Arm(0, 0)), candidate)
        verdict = stats.compare(stable, candidate, self.criteria)
        metrics = {"window_s": round(now - state.step_started_at, 1), **verdict.checks}
        if verdict.outcome is stats.Outcome.INSUFFICIENT:
            state.quiet_windows += 1
            self._decide(state, "hold", "quiet window, holding: " + verdict.summary, metrics)
            return 0.0
        if verdict.outcome is stats.Outcome.FAIL:
            if step.judge == "shadow":
                self._finish(state, Phase.DISCARDED, "discard", verdict.summary, metrics)
            else:
                self._rollback(state, verdict.summary, now, metrics)
            return 0.0
        if step.split.stable_weight > 0 and arms.get(STABLE) is not None:
            state.baseline["stable"] = arms[STABLE].to_dict()
        if state.step + 1 < len(self.steps):
            state.step += 1
            state.step_started_at = self.clock()
            state.quiet_windows = 0
            self.store.save(state)  # before the split changes: a crash re-applies this step
            self._ensure(self.steps[state.step].split)
            state.step_started_at = self.clock()
            self._decide(state, "advance", f"step passed ({verdict.summary}); now "
                         f"{self.steps[state.step].split.describe()}", metrics)
            return 0.0
        self._promote(state, "all steps passed: " + verdict.summary, metrics)
        return 0.0

    def _judge_ab(self, state: RolloutState, stable: stats.Arm, candidate: stats.Arm) -> float:
        result = stats.ab_test(stable, candidate, self.criteria)
        metrics = {"ab": result.to_dict(), "stable": stable.to_dict(), "candidate": candidate.to_dict()}
        if not result.sufficient:
            state.quiet_windows += 1
            self._decide(state, "hold", f"quiet window, holding (need {self.criteria.min_requests} requests per arm): "
                         + result.describe(), metrics)
        elif result.winner is stats.AbWinner.CANDIDATE:
            self._promote(state, "candidate wins: " + result.describe(), metrics)
        elif result.winner is stats.AbWinner.STABLE:
            self._rollback(state, "stable wins: " + result.describe(), self.clock(), metrics)
        else:
            self._finish(state, Phase.NO_WINNER, "no_winner", "no significant difference: " + result.describe(), metrics)
        return 0.0

    def _smoke_and_baseline(self, state: RolloutState) -> bool:
        ok, detail = (True, "no smoke check configured") if self.smoke is None else self.smoke(self.model, state.candidate_version)
        if not ok:
            self._finish(state, Phase.DISCARDED, "discard", f"smoke check failed before the switch: {detail}")
            return False
        before = self.source.arms(self.model, self.window_s).get(STABLE)
        if before is not None and before.requests >= self.criteria.min_requests:
            state.baseline["stable"] = before.to_dict()
        state.baseline["smoke"] = "passed"
        state.step_started_at = self.clock()
        self.store.save(state)
        self._decide(state, "advance", f"smoke checks passed ({detail}); switching 100% to the candidate",
                     {"baseline": state.baseline.get("stable")})
        return True

    # ------------------------------------------------------------------ terminal moves

    def _ensure(self, split: TrafficSplit) -> None:
        if self.router.current(self.model) != split:
            self.router.apply(split)

    def _rollback(self, state: RolloutState, reason: str, decided_at: float, metrics: dict[str, Any] | None = None) -> None:
        t0 = time.perf_counter()
        state.phase, state.reason = Phase.ROLLING_BACK, reason
        self.store.save(state)
        self.router.apply(TrafficSplit.all_stable(self.model))
        took = time.perf_counter() - t0  # decision -> 100% stable (the router returns once it is in force)
        self._finish(state, Phase.ROLLED_BACK, "rollback", reason, metrics, duration_s=took)

    def _promote(self, state: RolloutState, reason: str, metrics: dict[str, Any] | None = None) -> None:
        t0 = time.perf_counter()
        if state.phase is not Phase.PROMOTING:
            state.phase, state.reason = Phase.PROMOTING, reason
            self.store.save(state)
        self.registry.set_champion(self.model, state.candidate_version)
        self.stable.wait_serving(self.model, state.candidate_version, self.promote_timeout_s)
        self.router.apply(TrafficSplit.all_stable(self.model))
        self._finish(state, Phase.PROMOTED, "promote", reason, metrics, duration_s=time.perf_counter() - t0)

    def _finish(self, state: RolloutState, phase: Phase, outcome: str, reason: str,
                metrics: dict[str, Any] | None = None, duration_s: float | None = None) -> None:
        if phase is not Phase.PROMOTED and self.router.current(self.model).candidate_active:
            self.router.apply(TrafficSplit.all_stable(self.model))
        state.phase, state.reason = phase, reason
        self._decide(state, outcome, reason, metrics, duration_s)

    def _decide(self, state: RolloutState, outcome: str, reason: str, metrics: dict[str, Any] | None = None,
                duration_s: float | None = None) -> Decision:
        try:
            weight = self.router.current(self.model).candidate_weight
        except Exception:  # the record must not fail because the router is down
            weight = -1
        decision = record_decision(state, self.store, self.sinks, outcome, reason, self.actor, weight,
                                   metrics, duration_s, at=self.clock())
        if self.metrics is not None:
            self.metrics.update(state, max(weight, 0), outcome, duration_s if outcome == "rollback" else None)
        if self.on_decision is not None:
            self.on_decision(decision)
        return decision


def record_decision(state: RolloutState, store: StateStore, sinks: list[DecisionSink], outcome: str, reason: str,
                    actor: str, weight: int, metrics: dict[str, Any] | None = None, duration_s: float | None = None,
                    at: float | None = None) -> Decision:
    """Save the state with the next decision number, then log the decision and send it to every sink."""
    state.decisions += 1
    store.save(state)
    decision = Decision(model=state.model, strategy=state.strategy.value, candidate_version=state.candidate_version,
                        stable_version=state.stable_version, step=state.step, weight=weight, outcome=outcome,
                        reason=reason, actor=actor, at=time.time() if at is None else at, seq=state.decisions,
                        metrics=metrics or {}, duration_s=duration_s)
    log.info(decision.line())
    for sink in sinks:
        try:
            sink.record(decision)
        except Exception as error:  # a record is not a gate: never block a rollback on it
            log.warning("decision sink %s failed: %s", type(sink).__name__, error)
    return decision
