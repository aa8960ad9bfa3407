"""The local control plane is a real one: authentication, RBAC, admission (PodSecurity),
CRD validation with CEL rules, scheduling onto the stack's pools, kwok running pods to
Ready, and a teardown that leaves no process or port."""

from __future__ import annotations

import os
import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.conftest import new_cluster
from workloads.local.cluster import CAPACITY_LABEL, GPU_TAINT_KEY, POOL_LABEL, POOLS, service_account_kubeconfig
from workloads.local.process import group_members

RESTRICTED_CONTAINER = {
    "name": "app", "image": "registry.invalid/app:1",
    "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000,
                        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
}


def wait_until(predicate, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout_s:.0f}s")


@pytest.fixture(scope="module")
def api(local_cluster):
    return local_cluster.api_client()


@pytest.fixture()
def namespace(api, request):
    name = f"t-{request.node.name.replace('_', '-')[:40].strip('-')}".lower()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    wait_until(lambda: _has_default_sa(core, name), what=f"default ServiceAccount in {name}")
    yield name
    core.delete_namespace(name)


def _has_default_sa(core, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
        return True
    except ApiException:
        return False


def test_nodes_carry_the_stack_pools_labels_and_the_gpu_taint(api):
    nodes = client.CoreV1Api(api).list_node().items
    by_pool = {}
    for node in nodes:
        by_pool.setdefault(node.metadata.labels[POOL_LABEL], []).append(node)
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions), node.metadata.name
    assert {pool.name: pool.count for pool in POOLS} == {pool: len(found) for pool, found in by_pool.items()}
    assert all(n.metadata.labels[CAPACITY_LABEL] == "on-demand" for n in by_pool["system"])
    assert all(n.metadata.labels[CAPACITY_LABEL] == "spot" for n in by_pool["cpu-spot"] + by_pool["gpu-spot"])
    gpu = by_pool["gpu-spot"][0]
    assert [(t.key, t.effect) for t in gpu.spec.taints] == [(GPU_TAINT_KEY, "NoSchedule")]
    assert gpu.status.allocatable[GPU_TAINT_KEY] == "1"


def test_unauthenticated_requests_are_refused(local_cluster):
    context = ssl.create_default_context(cafile=str(local_cluster.pki / "ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{local_cluster.info().server}/api/v1/namespaces", context=context, timeout=5)
    assert refused.value.code == 401


def test_a_service_account_without_a_role_gets_403_and_with_one_gets_in(local_cluster, api, namespace, tmp_path):
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    kubeconfig = service_account_kubeconfig(local_cluster, namespace, "reader", tmp_path / "reader.kubeconfig")
    from kubernetes import config

    reader = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    with pytest.raises(ApiException) as forbidden:
        reader.list_namespaced_pod(namespace)
    assert forbidden.value.status == 403 and f"system:serviceaccount:{namespace}:reader" in forbidden.value.body
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "pods-reader"},
                                            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "pods-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pods-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
    wait_until(lambda: _can_list(reader, namespace), what="RBAC grant taking effect")
    with pytest.raises(ApiException) as still_forbidden:
        reader.list_namespaced_secret(namespace)
    assert still_forbidden.value.status == 403


def _can_list(reader, namespace: str) -> bool:
    try:
        reader.list_namespaced_pod(namespace)
        return True
    except ApiException as error:
        assert error.status == 403
        return False


def test_restricted_pod_security_rejects_a_privileged_pod_and_admits_a_compliant_one(api, namespace):
    core = client.CoreV1Api(api)
    privileged = {"metadata": {"name": "privileged"},
                  "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1",
                                           "securityContext": {"privileged": True}}]}}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(namespace, privileged)
    assert refused.value.status == 403 and "violates PodSecurity" in refused.value.body
    core.create_namespaced_pod(namespace, {"metadata": {"name": "compliant"}, "spec": {"containers": [RESTRICTED_CONTAINER]}})
    pod = wait_until(lambda: _ready_pod(core, namespace, "compliant"), what="the compliant pod Ready on a kwok node")
    assert pod.spec.node_name.startswith("kwok-") and "gpu" not in pod.spec.node_name  # untolerated taint kept it off


def _ready_pod(core, namespace: str, name: str):
    pod = core.read_namespaced_pod(name, namespace)
    ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
    return pod if ready else None


def test_a_gpu_pod_lands_on_the_gpu_spot_pool(api, namespace):
    core = client.CoreV1Api(api)
    container = {**RESTRICTED_CONTAINER, "resources": {"limits": {GPU_TAINT_KEY: "1"}}}
    core.create_namespaced_pod(namespace, {"metadata": {"name": "gpu"}, "spec": {
        "containers": [container],
        "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]}})
    pod = wait_until(lambda: _ready_pod(core, namespace, "gpu"), what="the GPU pod Ready")
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels[POOL_LABEL] == "gpu-spot"


def test_upstream_crds_run_their_cel_rules(api, namespace):
    custom = client.CustomObjectsApi(api)
    body = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "bad"},
            "spec": {"entrypoint": "python -c 1", "managedBy": "someone-else"}}
    with pytest.raises(ApiException) as invalid:
        custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", body)
    assert invalid.value.status == 422 and "managedBy field value must be either" in invalid.value.body


def test_down_stops_every_process_and_frees_every_port(tmp_path):
    cluster = new_cluster(tmp_path / "short-lived")
    info = cluster.up()
    records = cluster.records()
    assert set(records) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    assert all(os.getpgid(r.pid) == r.pgid == r.pid for r in records.values())  # each leads its own group
    cluster.down()
    assert not any(group_members(r.pgid) for r in records.values())
    for port in info.ports.values():
        with socket.socket() as s:
            s.settimeout(0.5)
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    assert not cluster.records()
