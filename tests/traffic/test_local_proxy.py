"""The local traffic layer against a real nginx and real HTTP upstreams.

Every test gets a fresh model name routed by the session's proxy to its own stable and
candidate servers (tests/traffic/conftest.py), so the shares, copies and switches seen
here are nginx's doing, observed from the client and from the upstreams.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from scipy import stats

from tests.traffic.conftest import PREDICT_PATH, Load
from workloads.traffic.local_proxy import LocalProxyRouter, ProxyNotRunningError
from workloads.traffic.split import CANDIDATE, STABLE, TrafficSplit
from workloads.traffic.state import (
    NoCandidateError,
    TrafficError,
    UnknownModelError,
    read_splits,
    register_upstream,
)

ALPHA = 1e-6  # false-alarm rate of each share check


def arms(results) -> collections.Counter:
    return collections.Counter(r.predictor for r in results)


def assert_all_answered(results, *, ok: int = 200) -> None:
    bad = [r for r in results if r.status != ok or r.error]
    assert not bad, f"{len(bad)} of {len(results)} requests failed, e.g. {bad[:3]}"
    mislabelled = [r for r in results if r.body.get("predictor") != r.predictor]
    assert not mislabelled, f"X-Strata-Predictor disagrees with the answering server: {mislabelled[:3]}"


def cli(*args: str, state_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args, "--state-dir", str(state_dir)],
        capture_output=True, text=True, timeout=120,
    )


# --- shares ------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight", [20])
def test_weighted_split_matches_the_configured_share(routed_model, weight):
    model = routed_model()
    model.router.apply(TrafficSplit.weighted(model.name, weight))
    assert model.router.current(model.name) == TrafficSplit.weighted(model.name, weight)

    n = 2000
    results = model.fire(n)
    assert_all_answered(results)
    seen = arms(results)
    low, high = stats.binom.interval(1 - ALPHA, n, weight / 100)
    assert low <= seen[CANDIDATE] <= high, f"{seen} is not {weight}% candidate (accepted {low:.0f}-{high:.0f} of {n})"
    assert seen[STABLE] + seen[CANDIDATE] == n
    # the upstreams saw exactly what the header says
    assert (model.stable.count, model.candidate.count) == (seen[STABLE], seen[CANDIDATE])


def test_zero_and_hundred_percent_are_exact(routed_model):
    model = routed_model()
    assert arms(model.fire(200)) == {STABLE: 200}  # nothing applied yet: all stable
    model.router.apply(TrafficSplit.all_candidate(model.name))
    assert arms(model.fire(200)) == {CANDIDATE: 200}
    model.router.apply(TrafficSplit.all_stable(model.name))
    assert arms(model.fire(200)) == {STABLE: 200}


def test_a_subject_header_keeps_one_subject_in_one_arm(routed_model):
    model = routed_model()
    model.router.apply(TrafficSplit.weighted(model.name, 50))
    per_subject = {}
    for subject in range(40):
        got = {model.post({"s": subject}, {"X-Strata-Subject": f"user-{subject}"}).predictor for _ in range(5)}
        assert len(got) == 1, f"user-{subject} was sent to {got}"
        per_subject[subject] = got.pop()
    assert set(per_subject.values()) == {STABLE, CANDIDATE}  # 40 subjects at 50%: both arms (p = 2e-12)


# --- shadow -------------------------------------------------------------------------------------
def test_shadow_mirrors_every_request_and_discards_the_candidates_answers(routed_model):
    model = routed_model(status=500)  # a broken candidate: its answers must never reach a client
    model.router.apply(TrafficSplit.mirrored(model.name))
    results = [model.post({"n": n}) for n in range(100)]
    assert_all_answered(results)
    assert arms(results) == {STABLE: 100}
    assert [r.body["echo"] for r in results] == [json.dumps({"n": n}) for n in range(100)]

    deadline = time.monotonic() + 10
    while model.candidate.count < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    copies = sorted(json.loads(body)["n"] for path, body in model.candidate.requests)
    assert copies == list(range(100)), "the candidate must receive a copy of every request, body included"
    assert {path for path, _ in model.candidate.requests} == {PREDICT_PATH}
    assert model.stable.count == 100


def test_shadow_survives_a_candidate_that_is_down(routed_model):
    model = routed_model()
    model.router.apply(TrafficSplit.mirrored(model.name))
    model.candidate.close()
    results = [model.post({"n": n}) for n in range(20)]
    assert_all_answered(results)
    assert arms(results) == {STABLE: 20}


# --- switching without dropping ----------------------------------------------------------------------
def _switch_under_load(model, splits, clients=4, per_phase=150):
    """Apply each split while ``clients`` keep posting; check every answer and that the
    requests sent after ``apply`` returned follow the new split."""
    with Load(model.port, model.path, clients=clients) as load:
        load.wait_for(per_phase)
        checkpoints = []
        for split in splits:
            model.router.apply(split)
            start = len(load.results) + clients  # up to `clients` requests were in flight before
            load.wait_for(start + per_phase)
            checkpoints.append((split, start, len(load.results)))
    assert_all_answered(load.results)
    return load.results, checkpoints


def test_blue_green_switch_under_load_drops_no_request(routed_model):
    model = routed_model()
    flips = [TrafficSplit.all_candidate(model.name), TrafficSplit.all_stable(model.name)] * 3
    results, checkpoints = _switch_under_load(model, flips)
    for split, start, end in checkpoints:
        want = CANDIDATE if split.candidate_weight == 100 else STABLE
        after = arms(results[start:end])
        assert after == {want: end - start}, f"after switching to {split.describe()}: {after}"
    assert len(results) > 6 * 150


def test_reloading_weights_under_load_drops_no_request(routed_model):
    model = routed_model()
    steps = [TrafficSplit.weighted(model.name, w) for w in (5, 25, 50, 100)] + [TrafficSplit.all_stable(model.name)]
    results, _ = _switch_under_load(model, steps * 2, per_phase=100)
    assert set(arms(results)) == {STABLE, CANDIDATE}


# --- persistence --------------------------------------------------------------------------------------
def test_the_split_survives_a_proxy_restart(routed_model, local_supervisor):
    model = routed_model()
    model.router.apply(TrafficSplit.weighted(model.name, 30))
    assert read_splits(model.router.state_dir)[model.name].candidate_weight == 30
    local_supervisor.down(["proxy"])
    with pytest.raises(ProxyNotRunningError, match="strata local up proxy"):
        model.router.apply(TrafficSplit.all_stable(model.name))
    local_supervisor.up(["proxy"])
    assert model.router.current(model.name) == TrafficSplit.weighted(model.name, 30)
    seen = arms(model.fire(400))
    low, high = stats.binom.interval(1 - ALPHA, 400, 0.3)
    assert low <= seen[CANDIDATE] <= high, seen


# --- the CLI ------------------------------------------------------------------------------------------
def test_strata_rollout_then_rollback_restores_all_stable_and_prints_the_time(routed_model):
    model = routed_model()
    state = model.router.state_dir
    done = cli("rollout", model.name, "--strategy", "canary", "--weight", "40", state_dir=state)
    assert done.returncode == 0, done.stderr + done.stdout
    assert model.router.current(model.name).candidate_weight == 40
    assert CANDIDATE in arms(model.fire(200))

    for strategy in ("shadow", "blue-green"):
        done = cli("rollout", model.name, "--strategy", strategy, state_dir=state)
        assert done.returncode == 0, done.stderr + done.stdout
    assert arms(model.fire(100)) == {CANDIDATE: 100}

    with Load(model.port, model.path, clients=2) as load:
        load.wait_for(50)
        done = cli("rollback", model.name, state_dir=state)
        rolled_back_at = len(load.results) + 2
        load.wait_for(rolled_back_at + 100)
    assert done.returncode == 0, done.stderr + done.stdout
    took = re.search(r"rolled back .*100% stable .* in (\d+) ms", " ".join(done.stdout.split()))
    assert took, done.stdout
    print(f"strata rollback: {took.group(1)} ms (as printed)")
    assert int(took.group(1)) < 10_000
    assert_all_answered(load.results)
    assert arms(load.results[rolled_back_at:]) == {STABLE: len(load.results) - rolled_back_at}
    assert model.router.current(model.name) == TrafficSplit.all_stable(model.name)


def test_cli_weight_defaults_to_the_models_spec(routed_model):
    from workloads.training.cli import resolve_spec

    rollout = resolve_spec("fraud")[0].serving.rollout  # the example spec: steps [5, ...], abWeight 50
    model = routed_model(name="fraud")
    for strategy, want in (("canary", rollout.steps[0]), ("ab", rollout.ab_weight)):
        done = cli("rollout", "fraud", "--strategy", strategy, state_dir=model.router.state_dir)
        assert done.returncode == 0, done.stderr + done.stdout
        assert model.router.current("fraud") == TrafficSplit.weighted("fraud", want)
    model.router.apply(TrafficSplit.all_stable("fraud"))


def test_cli_says_when_the_proxy_is_not_running(tmp_path):
    register_upstream(tmp_path, "fraud", STABLE, 19999)
    register_upstream(tmp_path, "fraud", CANDIDATE, 19998)
    done = cli("rollback", "fraud", state_dir=tmp_path)
    assert done.returncode == 2
    assert "not running" in done.stderr and "strata local up proxy" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["rollout", "{model}", "--strategy", "canary", "--weight", "0"], "out of range for canary, expected 1-100"),
        (["rollout", "{model}", "--strategy", "canary", "--weight", "101"], "out of range for canary, expected 1-100"),
        (["rollout", "{model}", "--strategy", "ab", "--weight", "100"], "out of range for ab, expected 1-99"),
        (["rollout", "{model}", "--strategy", "shadow", "--weight", "10"], "--weight applies to canary and ab only"),
        (["rollout", "{model}", "--strategy", "blue-green", "--weight", "10"], "--weight applies to canary and ab only"),
        (["rollout", "nosuchmodel", "--strategy", "blue-green"], "unknown model 'nosuchmodel'"),
        (["rollback", "nosuchmodel"], "unknown model 'nosuchmodel'"),
        (["rollout", "Bad_Name", "--strategy", "blue-green"], "not a model spec name"),
        (["rollout", "{model}", "--strategy", "sideways"], "sideways"),
    ],
)
def test_cli_bad_input_is_a_clear_error_and_changes_nothing(routed_model, args, message):
    model = routed_model()
    model.router.apply(TrafficSplit.weighted(model.name, 10))
    done = cli(*[a.format(model=model.name) for a in args], state_dir=model.router.state_dir)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr
    assert model.router.current(model.name) == TrafficSplit.weighted(model.name, 10)


def test_no_candidate_server_is_a_clear_error(routed_model):
    model = routed_model(candidate=False)
    for split in (TrafficSplit.weighted(model.name, 10), TrafficSplit.mirrored(model.name),
                  TrafficSplit.all_candidate(model.name)):
        with pytest.raises(NoCandidateError, match="no 'candidate'"):
            model.router.apply(split)
    done = cli("rollout", model.name, "--strategy", "blue-green", state_dir=model.router.state_dir)
    assert done.returncode == 2 and "no 'candidate'" in " ".join(done.stderr.split()), done.stderr
    model.router.apply(TrafficSplit.all_stable(model.name))  # rolling back needs no candidate
    assert arms(model.fire(20)) == {STABLE: 20}


def test_router_errors_name_the_problem(proxy, tmp_path):
    with pytest.raises(UnknownModelError, match="unknown model 'ghost'"):
        proxy.apply(TrafficSplit.all_stable("ghost"))
    with pytest.raises(UnknownModelError, match="unknown model 'ghost'"):
        proxy.current("ghost")
    with pytest.raises(TrafficError, match="not a model spec name"):
        register_upstream(tmp_path, "Ghost!", STABLE, 20000)
    with pytest.raises(TrafficError, match="predictor 'canary'"):
        register_upstream(tmp_path, "ghost", "canary", 20000)
    register_upstream(tmp_path, "ghost", STABLE, 20000)
    with pytest.raises(ProxyNotRunningError, match="no proxy was started"):
        LocalProxyRouter(tmp_path).apply(TrafficSplit.all_stable("ghost"))
    (tmp_path / "config" / "proxy" / "upstreams.json").write_text("{not json")
    with pytest.raises(TrafficError, match="upstreams.json is not valid JSON"):
        LocalProxyRouter(tmp_path).current("ghost")


def test_an_unrouted_path_is_a_404_in_seldons_error_contract(proxy):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(proxy.url() + "/ghost" + PREDICT_PATH, data=b"{}"), timeout=5)
    assert info.value.code == 404
    status = json.loads(info.value.read())["status"]
    assert status["reason"] == "unknown_model" and status["status"] == "FAILURE"


def test_a_failing_arm_is_not_masked_and_its_errors_are_labelled(routed_model):
    # The controller's error-rate gate must see a bad candidate: no retry on the other arm.
    model = routed_model(status=503)
    model.router.apply(TrafficSplit.weighted(model.name, 50))
    results = model.fire(200)
    by_arm = {arm: {r.status for r in results if r.predictor == arm} for arm in (STABLE, CANDIDATE)}
    assert by_arm == {STABLE: {200}, CANDIDATE: {503}}
    model.candidate.close()  # connection refused: nginx answers 502, still labelled
    results = model.fire(100)
    assert {(r.status, r.predictor) for r in results} == {(200, STABLE), (502, CANDIDATE)}
    assert {r.body["status"]["reason"] for r in results if r.status == 502} == {"predictor_unreachable"}


def test_strata_upstream_registers_servers_and_reloads_the_proxy(proxy):
    from tests.traffic.conftest import Upstream
    from workloads.traffic.state import unregister_upstream

    stable, candidate = Upstream(STABLE), Upstream(CANDIDATE)
    name = f"cli-{stable.port}"
    try:
        done = cli("upstream", name, "--stable-port", str(stable.port), "--candidate-port", str(candidate.port),
                   state_dir=proxy.state_dir)
        assert done.returncode == 0 and "proxy reloaded" in done.stdout, done.stderr + done.stdout
        assert proxy.models()[name] == {STABLE: f"127.0.0.1:{stable.port}", CANDIDATE: f"127.0.0.1:{candidate.port}"}
        proxy.apply(TrafficSplit.all_candidate(name))
        with Load(proxy.running()[1], f"/{name}{PREDICT_PATH}", clients=2, max_requests=50) as load:
            load.wait_for(50)
        assert arms(load.results) == {CANDIDATE: 50}

        refused = cli("upstream", name, "--remove-candidate", state_dir=proxy.state_dir)
        assert refused.returncode == 2 and f"strata rollback {name}" in " ".join(refused.stderr.split())
        proxy.apply(TrafficSplit.all_stable(name))
        removed = cli("upstream", name, "--remove-candidate", state_dir=proxy.state_dir)
        assert removed.returncode == 0, removed.stderr
        assert CANDIDATE not in proxy.models()[name]
        bad = cli("upstream", name, "--stable-port", "80", state_dir=proxy.state_dir)
        assert bad.returncode == 2 and "outside 1024-65535" in bad.stderr
    finally:
        unregister_upstream(proxy.state_dir, name)
        proxy.refresh()
        stable.close()
        candidate.close()


def test_strata_rollback_ends_a_recorded_rollout_so_no_controller_resumes_it(routed_model, tmp_path):
    from workloads.rollout.service import status
    from workloads.rollout.state import FileStateStore, RolloutState
    from workloads.spec import RolloutStrategyName

    model = routed_model()
    registry = tmp_path / "registry"
    FileStateStore(registry).save(RolloutState(model=model.name, strategy=RolloutStrategyName.CANARY,
                                               candidate_version="2", stable_version="1", step=1))
    model.router.apply(TrafficSplit.weighted(model.name, 25))
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "rollback", model.name, "--state-dir", str(model.router.state_dir)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "STRATA_REGISTRY_DIR": str(registry)},
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "ended the canary rollout of version 2" in " ".join(done.stdout.split())
    state, history = status(registry, model.name)
    assert state is not None and not state.active and "strata rollback" in state.reason
    assert history[-1]["outcome"] == "rollback" and history[-1]["actor"] == "strata rollback"
    assert model.router.current(model.name) == TrafficSplit.all_stable(model.name)
