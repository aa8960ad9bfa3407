"""`strata promote|rollback|rollout-status MODEL --kubeconfig K` on the local cluster.

The promotion runs `strata promote` as a process of its own, with the rollout
controller's ServiceAccount token and exactly its Role, through the same `Controller` as
local mode (`workloads.rollout.service.cluster_controller`: SeldonDeployment router,
ConfigMap state, Events, MLflow aliases, Prometheus analysis). Beside the cluster run a
real Prometheus (scraping every second) and a real MLflow registry (its SQL store through a
`sqlite:///` tracking URI: an MLflow server took over 5 minutes to start on this loaded
machine, and the client code is the same); the traffic and the pods' metrics are `SeldonPods`' (no Seldon operator or image runs here), which follow the live
SeldonDeployment, so every traffic move the test sees is the controller's own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from kubernetes import client
from typer.testing import CliRunner

from infra.cli import app
from tests.cluster.seldon_pods import SeldonPods
from tests.cluster.test_cluster_components import SELDON, prepare_namespace
from tests.cluster.test_control_plane import wait_until
from workloads.rollout import kube
from workloads.rollout.state import Phase
from workloads.traffic.split import CANDIDATE, STABLE

MODEL, TEAM, NAMESPACE = "fraud", "payments-risk", "team-promote-check"
WINDOW_S, SETTLE_S = 5, 2


@pytest.fixture(scope="module")
def promote_env(local_cluster, cluster_prometheus, tmp_path_factory):
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("promote")
    sa_api, admin = prepare_namespace(local_cluster, NAMESPACE, root / "controller.kubeconfig")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mlflow.create_registered_model(MODEL)
    for version in range(1, 5):
        mlflow.create_model_version(MODEL, f"s3://strata-artifacts/{MODEL}/v{version}")
    mlflow.set_registered_model_alias(MODEL, "champion", "1")
    spec = root / "model.yaml"
    spec.write_text(yaml.safe_dump({
        "name": MODEL, "team": TEAM, "owner": "risk@example.com", "pagerduty": {"routingKeyName": TEAM},
        "training": {"entrypoint": "workloads.examples.fraud.train:hooks", "data": "synthetic://fraud"},
        "serving": {"rollout": {"strategy": "canary", "steps": [25, 50, 100], "analysisWindow": f"{WINDOW_S}s",
                                "minRequestsPerStep": 30}},
        "slos": {"latencyP99Ms": 200}}))
    pods = SeldonPods(admin, NAMESPACE, MODEL, TEAM, tracking_uri,
                      cluster_prometheus.state_dir / "config" / "prometheus" / "targets")
    with pods:
        yield root, spec, admin, mlflow, pods, (cluster_prometheus.prometheus_url, tracking_uri)


def promote(env, *extra: str) -> subprocess.Popen:
    """`strata promote` in a process of its own, once Prometheus scrapes the challenger's
    pods; its output goes to `<tmp>/promote-<n>.log`."""
    root, spec, _, mlflow, pods, (prometheus, tracking_uri) = env
    challenger = str(mlflow.get_registered_model(MODEL).aliases["challenger"])
    wait_until(lambda: pods.scraped(prometheus, CANDIDATE, challenger), what=f"v{challenger}'s pod scraped", timeout_s=60)
    argv = [sys.executable, "-m", "infra.cli", "promote", MODEL, "--spec-file", str(spec),
            "--kubeconfig", str(root / "controller.kubeconfig"), "--namespace", NAMESPACE,
            "--prometheus", prometheus, "--mlflow", tracking_uri,
            "--settle", str(SETTLE_S), "--timeout", "240", *extra]
    log = root / f"promote-{len(list(root.glob('promote-*.log')))}.log"
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "COLUMNS": "250"}, start_new_session=True)
    process.log = log
    return process


def finish(process: subprocess.Popen, timeout_s: float = 300) -> str:
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"strata promote ran past {timeout_s} s:\n{process.log.read_text()[-4000:]}")
    return process.log.read_text()


def live(admin) -> dict:
    sdep = client.CustomObjectsApi(admin).get_namespaced_custom_object(*SELDON, NAMESPACE, kube.SELDON_PLURAL, MODEL)
    return {p["name"]: p for p in sdep["spec"]["predictors"]}


def stored(admin):
    return kube.ConfigMapStateStore(NAMESPACE, api=client.CoreV1Api(admin)).load(MODEL)


@pytest.fixture
def no_rollout_running(promote_env, local_cluster):
    """Each test starts with all traffic on stable and no active rollout, whatever ran before."""
    from workloads.rollout.cluster_ops import ClusterTarget, rollback

    rollback(MODEL, ClusterTarget(local_cluster.kubeconfig, NAMESPACE), actor="pytest set-up")
    return promote_env


def status(admin_kubeconfig) -> str:
    shown = CliRunner().invoke(app, ["rollout-status", MODEL, "--kubeconfig", str(admin_kubeconfig),
                                     "--namespace", NAMESPACE], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    return shown.output


def test_strata_promote_moves_the_traffic_through_the_canary_and_promotes(no_rollout_running, local_cluster):
    _, _, admin, mlflow, pods, _ = no_rollout_running
    mlflow.set_registered_model_alias(MODEL, "champion", "1")
    mlflow.set_registered_model_alias(MODEL, "challenger", "2")
    wait_until(lambda: pods.served(STABLE, "1") > 50, what="stable v1 serving", timeout_s=30)
    before = len(pods.weights)
    started = time.monotonic()
    output = finish(promote(no_rollout_running, "--force"))
    took = time.monotonic() - started
    pods.check()
    assert "promoted after" in output, output
    assert re.search(r"START .*canary rollout of v2 against v1", output), output
    assert len(re.findall(r"ADVANCE", output)) == 2 and "PROMOTE" in output, output

    routed = [weight for _, weight in pods.weights[before:]]
    # every canary step carried traffic; the candidate keeps 100% until every stable process
    # reports v2 loaded (no traffic is needed to confirm it), then all traffic returns at once
    assert {25, 50, 100} <= set(routed) <= {0, 25, 50, 100}, sorted(set(routed))
    from_full = routed[routed.index(100):]
    returned = from_full.index(0)
    assert set(from_full[:returned]) == {100} and set(from_full[returned:]) == {0}, routed
    predictors = live(admin)
    assert (predictors[STABLE]["traffic"], predictors[CANDIDATE]["traffic"]) == (100, 0)
    assert {"name": "version", "value": "2", "type": "STRING"} in predictors[STABLE]["graph"]["parameters"]
    assert str(mlflow.get_registered_model(MODEL).aliases["champion"]) == "2"
    assert pods.served(CANDIDATE, "2") >= 30
    wait_until(lambda: pods.served(STABLE, "2") > 0, what="the promoted stable v2 taking traffic", timeout_s=10)
    state = stored(admin)
    assert state.phase is Phase.PROMOTED and state.candidate_version == "2" and state.stable_version == "1"
    assert "strata promote" in state.actor

    shown = status(local_cluster.kubeconfig)
    assert "100% stable" in shown and "promoted" in shown, shown
    for reason in ("RolloutStarted", "RolloutAdvanced", "RolloutPromoted"):
        assert reason in shown, shown
    print(f"\nstrata promote --kubeconfig: canary 25 -> 50 -> 100 -> promoted in {took:.1f} s "
          f"({WINDOW_S} s windows + {SETTLE_S} s settle; the promotion waits until every stable process reports v2 loaded)")


def test_strata_rollback_ends_a_running_promote_and_returns_all_traffic_to_stable(no_rollout_running, local_cluster):
    _, _, admin, mlflow, pods, _ = no_rollout_running
    mlflow.set_registered_model_alias(MODEL, "challenger", "3")
    stable_before, champion = live(admin)[STABLE], mlflow.get_registered_model(MODEL).aliases["champion"]
    running = promote(no_rollout_running, "--force")
    try:
        # the process's start-up (imports) took up to 2 min on this loaded machine; a step lasts 7 s
        wait_until(lambda: running.poll() is not None or "START" in running.log.read_text(),
                   what="strata promote starting the rollout", timeout_s=300)
        wait_until(lambda: pods.candidate_weight() == 25 and pods.served(CANDIDATE, "3") > 0,
                   what="the canary's first step serving v3", timeout_s=30)
        result = CliRunner().invoke(app, ["rollback", MODEL, "--kubeconfig", str(local_cluster.kubeconfig),
                                          "--namespace", NAMESPACE], env={"COLUMNS": "250"})
        decided = time.time()
    finally:
        output = finish(running, 120)
    pods.check()
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    assert f"rolled back {NAMESPACE}/{MODEL}: 100% stable (was: {MODEL}: 75% stable / 25% candidate)" in shown, shown
    took_ms = float(re.search(r"in (\d+) ms", shown).group(1))
    assert "ended the canary rollout of version 3" in shown
    # the controller saw the rollout ended before its next step, stopped, and left the split alone
    assert running.returncode == 1 and "rolled_back after" in output and "rolled back by strata rollback" in output, output
    assert "ADVANCE" not in output, output
    predictors = live(admin)
    assert (predictors[STABLE]["traffic"], predictors[CANDIDATE]["traffic"]) == (100, 0)
    assert predictors[STABLE]["graph"] == stable_before["graph"]  # a traffic change only
    assert mlflow.get_registered_model(MODEL).aliases["champion"] == champion
    assert all(weight == 0 for at, weight in pods.weights if at > decided + 0.5)
    assert stored(admin).phase is Phase.ROLLED_BACK

    shown = status(local_cluster.kubeconfig)
    assert "100% stable" in shown and "rolled_back" in shown and "RolloutRolledBack" in shown, shown
    print(f"\nstrata rollback --kubeconfig during a running promote: decision -> 100% stable read back in "
          f"{took_ms:.0f} ms; the controller stopped on its own")


def test_strata_promote_rolls_a_failing_canary_back_by_itself(no_rollout_running, local_cluster):
    _, _, admin, mlflow, pods, _ = no_rollout_running
    mlflow.set_registered_model_alias(MODEL, "challenger", "4")
    champion = mlflow.get_registered_model(MODEL).aliases["champion"]
    pods.faults["4"] = 0.5
    output = finish(promote(no_rollout_running, "--force"))
    pods.check()
    assert "rolled_back after" in output and "error ratio" in output, output
    took_s = float(re.search(r"ROLLBACK .*\(([0-9.]+) s to 100% stable\)", output).group(1))
    predictors = live(admin)
    assert (predictors[STABLE]["traffic"], predictors[CANDIDATE]["traffic"]) == (100, 0)
    assert mlflow.get_registered_model(MODEL).aliases["champion"] == champion
    state = stored(admin)
    assert state.phase is Phase.ROLLED_BACK and state.step == 0 and state.candidate_version == "4"
    assert "RolloutRolledBack" in status(local_cluster.kubeconfig)
    print(f"\nstrata promote --kubeconfig, 50% errors on v4: rolled back at the first step; "
          f"decision -> 100% stable {took_s * 1000:.0f} ms")
