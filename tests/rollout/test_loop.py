"""The closed loop on real processes: a drift alert reaches the real retraining trigger (the
process and argv the local catalogue renders), which runs the real retrain (`strata train`,
Ray + MLflow, the training gate, the registry export); a new challenger goes to the real
rollout controller (autoPromote: `python -m workloads.rollout`, which rolls it out through
the proxy in front of the two live model servers on Prometheus' numbers) or waits for
`strata promote`.

One MLflow store for the module: the local training harness's sqlite store in the session's
state dir (no tracking server: the controller's tag sink finds the same store through
$STRATA_STATE_DIR). It starts with versions 1 and 2 registered, as the registry export the
live servers read already holds them. Every wait has a deadline."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.rollout.conftest import MODEL, Load
from workloads.local.demo import TRAIN_ARGS
from workloads.local.services import LocalOptions, WorkloadOptions, default_registry
from workloads.rollout.local import HttpStablePredictor, LocalRegistry
from workloads.rollout.record import JsonlSink, MlflowTagSink
from workloads.rollout.state import FileStateStore, Phase
from workloads.serving import registry
from workloads.spec import SPEC_FILE_ENV
from workloads.traffic.split import CANDIDATE

REPO = Path(__file__).resolve().parents[2]
RETRAIN_DEADLINE_S = 420  # one smoke training (a fresh local Ray) on two shared cores
ROLLOUT_DEADLINE_S = 180  # three canary windows of 6 s, plus settling, plus the controller's start


def write_spec(path: Path, auto_promote: bool, data: str | None = None) -> None:
    """The example fraud spec with windows of seconds: what training and the controller both read."""
    body = yaml.safe_load((REPO / "workloads" / "examples" / MODEL / "model.yaml").read_text())
    body["serving"]["rollout"].update(steps=[25, 50, 100], analysisWindow="6s", minRequestsPerStep=30,
                                      autoPromote=auto_promote)
    if data is not None:
        body["training"]["data"] = data
    path.write_text(yaml.safe_dump(body))


class Trigger:
    """The retrain-trigger service as the supervisor renders it, in its own process group."""

    def __init__(self, live, spec_file: Path, tracking_uri: str, log: Path):
        service = default_registry().services["retrain-trigger"]
        options = LocalOptions(workloads=WorkloadOptions(retrain_args=TRAIN_ARGS, retrain_cooldown_s=0.0))
        ctx = dataclasses.replace(live.services.supervisor.context("retrain-trigger"), options=options)
        self.argv = service.command(ctx)
        # this harness has MLflow on sqlite and no local S3: the retrains checkpoint under its state dir
        env = {**os.environ, **service.env(ctx), "MLFLOW_TRACKING_URI": tracking_uri, SPEC_FILE_ENV: str(spec_file),
               "STRATA_CHECKPOINT_URI": str(ctx.state_dir / "checkpoints"),
               "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
        self.token = env["STRATA_RETRAIN_TOKEN"]
        self.url = f"http://127.0.0.1:{ctx.port(service.ports[0])}"
        self.log = log
        self.state_dir = ctx.state_dir
        with open(log, "ab") as out:
            self.process = subprocess.Popen(self.argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=REPO)
        self.wait(lambda: self._get("/healthz") is not None, 60, "the retrain trigger to answer /healthz")

    def _get(self, path: str):
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def wait(self, predicate, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            assert self.process.poll() is None, f"the trigger exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}"
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; trigger log:\n"
                             f"{self.log.read_text()[-3000:]}")

    def alert(self, alertname: str = "ModelFeatureDrift") -> dict:
        """What Alertmanager's retrain-webhook receiver posts for a firing drift alert."""
        body = {"version": "4", "status": "firing", "receiver": "retrain-webhook", "alerts": [{
            "status": "firing", "labels": {"alertname": alertname, "model": MODEL, "team": "payments-risk",
                                           "retrain": "true", "feature": "amount"}}]}
        request = urllib.request.Request(f"{self.url}/v1/alertmanager", json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    def retrain(self) -> dict:
        """One drift alert -> one retrain, run to its end; the model's status afterwards."""
        before = (self._get("/v1/retrains") or {}).get(MODEL, {}).get("started", 0)
        assert self.alert()["models"] == {MODEL: "started"}

        def finished():
            status = (self._get("/v1/retrains") or {}).get(MODEL, {})
            return status if status.get("started", 0) > before and not status.get("running") else None

        return self.wait(finished, RETRAIN_DEADLINE_S, f"the retrain of {MODEL} to finish")

    def last_retrain_log(self) -> str:
        logs = sorted((self.state_dir / "logs" / "retrains").glob("*.log"), key=lambda p: p.stat().st_mtime)
        return logs[-1].read_text()[-4000:] if logs else f"no retrain log; trigger log:\n{self.log.read_text()[-3000:]}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the trigger and what it started (training, controller)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(15)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # a controller or a Ray worker left in the group
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def store(live_env):
    """The sqlite MLflow store of the session's state dir, holding v1 and v2 like the export."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{live_env.state_dir / 'mlflow' / 'mlflow.db'}"
    (live_env.state_dir / "mlflow").mkdir(exist_ok=True)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    for version in ("1", "2"):
        client.create_model_version(MODEL, source=str(live_env.root / MODEL / "versions" / version))
    return uri


@pytest.fixture
def trigger(live, store, tmp_path):
    spec_file = tmp_path / "model.yaml"
    write_spec(spec_file, auto_promote=False)
    running = Trigger(live, spec_file, store, tmp_path / "retrain-trigger.log")
    try:
        yield running, spec_file
    finally:
        running.stop()


def mlflow_champion(store: str, version: str | None) -> None:
    """Point MLflow's champion alias at `version`, or remove it (None)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store, registry_uri=store)
    if version is not None:
        client.set_registered_model_alias(MODEL, "champion", version)
    elif "champion" in client.get_registered_model(MODEL).aliases:
        client.delete_registered_model_alias(MODEL, "champion")


def test_a_drift_retrain_waits_for_promote_then_a_second_one_is_rolled_out_by_the_controller(live, store, trigger):
    running, spec_file = trigger
    mlflow_champion(store, None)  # the first trained version is judged against the trivial baseline only

    # 1. autoPromote false: the retrain registers v3 as challenger; the decision waits for `strata promote`
    status = running.retrain()
    assert status["last_exit_code"] == 0, running.last_retrain_log()
    assert status["last_rollout"] == "waiting_for_promote", status
    first = registry.read_aliases(live.root, MODEL)["challenger"]
    assert first not in ("1", "2")
    waiting = JsonlSink(live.root).history(MODEL)[-1]
    assert waiting["outcome"] == "waiting_for_promote" and waiting["candidate_version"] == first
    assert waiting["actor"] == "retrain-trigger" and f"strata promote {MODEL}" in waiting["reason"]
    assert FileStateStore(live.root).load(MODEL) is None  # no controller ran

    # the first trained version becomes champion (in the export and in MLflow), as a first version does
    LocalRegistry(live.root, MlflowTagSink(store)).set_champion(MODEL, first)
    HttpStablePredictor(live.state_dir).wait_serving(MODEL, first, 60)

    # 2. autoPromote true: the next drift retrain's challenger goes to the real controller
    write_spec(spec_file, auto_promote=True)
    status = running.retrain()
    assert status["last_exit_code"] == 0 and status["last_rollout"] == "rollout_started", running.last_retrain_log()
    with Load(live.proxy_port) as load:  # the controller judges each step on this traffic
        second = registry.read_aliases(live.root, MODEL)["challenger"]
        assert int(second) > int(first)

        def finished():
            state = FileStateStore(live.root).load(MODEL)
            return state if state is not None and state.candidate_version == second and not state.active else None

        state = running.wait(finished, ROLLOUT_DEADLINE_S, f"the controller's rollout of v{second}")
    assert state.phase is Phase.PROMOTED, state.reason  # same data, same seed: a good challenger
    assert state.actor == "retrain-trigger"
    assert registry.read_aliases(live.root, MODEL)["champion"] == second
    decisions = [d for d in JsonlSink(live.root).history(MODEL) if d["candidate_version"] == second]
    assert [d["outcome"] for d in decisions][0] == "rollout_started" and "ModelFeatureDrift" in decisions[0]["reason"]
    assert [d["outcome"] for d in decisions][-1] == "promote"
    assert {d["actor"] for d in decisions} == {"retrain-trigger"}
    assert any(r[2] == CANDIDATE and r[3] == second for r in load.results)  # the candidate served real traffic
    assert load.dropped() == [], load.dropped()[:5]


def test_a_retrain_the_gate_refuses_rolls_nothing_out(live, store, trigger):
    running, spec_file = trigger
    write_spec(spec_file, auto_promote=True)
    # MLflow's champion is v1, whose registered source is the export's folder, not a serving
    # bundle: the gate cannot compare against it and refuses the candidate (nothing registered)
    mlflow_champion(store, "1")
    try:
        status = running.retrain()
    finally:
        mlflow_champion(store, None)
    assert status["last_exit_code"] == 0 and status["last_rollout"] == "no_new_challenger", status
    assert registry.read_aliases(live.root, MODEL) == {"champion": "1", "challenger": "2"}
    assert JsonlSink(live.root).history(MODEL) == [] and FileStateStore(live.root).load(MODEL) is None


def test_a_failed_retrain_hands_nothing_over(live, trigger):
    running, spec_file = trigger
    write_spec(spec_file, auto_promote=True, data=f"file://{live.state_dir / 'no-such-table.parquet'}")
    status = running.retrain()
    assert status["last_exit_code"] not in (0, None) and status["last_rollout"] == "", status
    assert registry.read_aliases(live.root, MODEL) == {"champion": "1", "challenger": "2"}
    assert JsonlSink(live.root).history(MODEL) == [] and FileStateStore(live.root).load(MODEL) is None
