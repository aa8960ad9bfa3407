"""The local control plane, a real `pulumi up`, and a rollback on it, each against a
baseline measured in the same run:

* control plane start-to-ready (nodes Ready, default ServiceAccount made) vs etcd alone;
* `pulumi up` / `pulumi destroy` of the preview stack with 2 and 20 models (resources/s)
  vs the offline plan (Pulumi mocks) of the same stack;
* `strata rollback` on the cluster (decision -> the API server holds 100% stable) vs one
  read of the SeldonDeployment.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timezone

import pytest
from kubernetes import client

from infra.config import SECRET_MARKER
from infra.plan.harness import run_program
from infra.preview.automation import AutomationStacks
from infra.preview.stacks import derive_preview_config
from tests.cluster.conftest import local_cluster, new_cluster, pulumi_env  # noqa: F401 - fixtures
from tests.conftest import stack_config_with_models
from workloads.local.cluster import LocalCluster


def _etcd_alone(data_dir) -> float:
    """etcd from start to healthy, nothing else: the floor of any control plane here."""
    import subprocess
    import urllib.request

    from workloads.local.cluster import default_bin_dir, free_port

    client_port, peer_port = free_port(), free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([str(default_bin_dir() / "etcd"), f"--data-dir={data_dir}", "--unsafe-no-fsync",
                             f"--listen-client-urls=http://127.0.0.1:{client_port}",
                             f"--advertise-client-urls=http://127.0.0.1:{client_port}",
                             f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                             f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                             f"--initial-cluster=default=http://127.0.0.1:{peer_port}", "--log-level=error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{client_port}/health", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
        raise AssertionError("etcd not healthy within 30 s")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_control_plane_start_to_ready(benchmark, tmp_path):
    new_cluster(tmp_path / "probe")  # skips (or fails under make test) without the binaries
    etcd_alone = [_etcd_alone(tmp_path / f"etcd-{index}") for index in range(2)]
    counter = iter(range(100))

    def start_and_stop() -> float:
        cluster = LocalCluster(tmp_path / f"full-{next(counter)}")
        info = cluster.up()
        cluster.down()
        return info.started_s

    seconds = [start_and_stop() for _ in range(2)]
    benchmark.pedantic(start_and_stop, rounds=1, iterations=1)
    full, base = statistics.median(seconds), statistics.median(etcd_alone)
    print(f"\ncontrol plane start-to-ready: {full:.2f} s (median of 2); etcd alone {base:.2f} s; ratio {full / base:.1f}x")
    benchmark.extra_info.update({"start_to_ready_s": round(full, 3), "etcd_alone_s": round(base, 3),
                                 "x_etcd_alone": round(full / base, 2)})


@pytest.mark.parametrize("models", [2, 20])
def test_pulumi_up_and_destroy_of_the_preview_stack(benchmark, local_cluster, pulumi_env, tmp_path, models):
    base = stack_config_with_models("quick", models)
    preview = derive_preview_config(100 + models, datetime.now(timezone.utc), base=base)
    # One team namespace holds 5 of the 20 models' 20Gi checkpoint claims: more storage than a PR's default.
    preview.config["strata:teamQuota"] = {**preview.config["strata:teamQuota"], "storage": "200Gi"}
    offline = []
    for _ in range(2):
        started = time.perf_counter()
        plan = run_program(preview.stack, {**preview.config, "strata:kubeconfig": SECRET_MARKER})
        offline.append(time.perf_counter() - started)
    stacks = AutomationStacks(work_dir=tmp_path / "work")
    stacks.create_or_select(preview.stack)
    stacks.set_config(preview.stack, preview.config, {"strata:kubeconfig": local_cluster.kubeconfig.read_text()})

    timings = {}

    def up_then_destroy():
        started = time.perf_counter()
        stacks.up(preview.stack)
        timings["up"] = time.perf_counter() - started
        resources = len(stacks._stack(preview.stack).export_stack().deployment["resources"])
        print(f"\n{models} models: pulumi up {timings['up']:.1f} s for {resources} resources", flush=True)
        started = time.perf_counter()
        stacks.destroy(preview.stack)
        timings["destroy"] = time.perf_counter() - started
        timings["resources"] = resources

    benchmark.pedantic(up_then_destroy, rounds=1, iterations=1)
    stacks.remove(preview.stack)
    plan_s, resources = statistics.median(offline), timings["resources"]
    print(f"\npreview stack, {models} models, {resources} resources ({len(plan.resources)} in the offline plan):")
    print(f"  pulumi up      {timings['up']:7.1f} s  {resources / timings['up']:6.1f} res/s  {timings['up'] / plan_s:6.1f}x the offline plan")
    print(f"  pulumi destroy {timings['destroy']:7.1f} s  {resources / timings['destroy']:6.1f} res/s  "
          f"{timings['destroy'] / plan_s:6.1f}x the offline plan")
    print(f"  offline plan   {plan_s:7.2f} s  {len(plan.resources) / plan_s:6.1f} res/s")
    benchmark.extra_info.update({"up_s": round(timings["up"], 2), "destroy_s": round(timings["destroy"], 2),
                                 "resources": resources, "offline_plan_s": round(plan_s, 3),
                                 "up_resources_per_s": round(resources / timings["up"], 2),
                                 "x_offline_plan_up": round(timings["up"] / plan_s, 1)})


def test_rollback_decision_to_all_stable(benchmark, local_cluster, tmp_path):
    from tests.cluster.test_cluster_components import SELDON, prepare_namespace
    from workloads.rollout import cluster_ops, kube
    from workloads.traffic.split import TrafficSplit

    namespace = "team-rollback-bench"
    _, admin = prepare_namespace(local_cluster, namespace, tmp_path / "controller.kubeconfig")
    custom = client.CustomObjectsApi(admin)
    router = kube.KubernetesTrafficRouter(namespace, api=custom)
    target = cluster_ops.ClusterTarget(local_cluster.kubeconfig, namespace)

    reads = []
    for _ in range(20):
        started = time.perf_counter()
        custom.get_namespaced_custom_object(*SELDON, namespace, kube.SELDON_PLURAL, "fraud")
        reads.append(time.perf_counter() - started)

    def canary_then_rollback() -> float:
        router.apply(TrafficSplit.weighted("fraud", 25))
        return cluster_ops.rollback("fraud", target).seconds_to_stable

    seconds = [canary_then_rollback() for _ in range(5)]
    benchmark.pedantic(canary_then_rollback, rounds=3, iterations=1)
    took, read = statistics.median(seconds), statistics.median(reads)
    print(f"\nrollback decision -> 100% stable on the local cluster: {took * 1000:.0f} ms (median of 5; target: seconds, "
          f"runbook seed < 5 min); one SeldonDeployment read {read * 1000:.1f} ms; ratio {took / read:.0f}x")
    benchmark.extra_info.update({"rollback_ms": round(took * 1000, 1), "read_ms": round(read * 1000, 2),
                                 "x_one_read": round(took / read, 1)})
