"""A real `pulumi up` of the preview stack (quick mode, kubeconfig target, shared
operators) on the local control plane, through `strata preview create|destroy|gc` and the
Automation API: the same `infra.program.build` as every stack, the built Pulumi CLI and
kubernetes provider, a local file backend, nothing downloaded.

Not covered here: Helm releases (charts cannot be fetched here). The preview stack has
none (its operators are shared), so every resource it declares is created."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from infra.cli import app
from infra.preview.automation import AutomationStacks
from infra.preview.stacks import namespace_prefix
from tests.cluster.test_control_plane import wait_until
from tests.processes import descendants
from workloads.local.process import proc_stat



@pytest.fixture(scope="module")
def preview_env(local_cluster, pulumi_env, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("pulumi-work")
    env = {"STRATA_PREVIEW_KUBECONFIG": str(local_cluster.kubeconfig), "STRATA_PULUMI_WORK_DIR": str(work_dir)}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def strata(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"strata {' '.join(args)} -> {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def _managed_objects(stacks: AutomationStacks, stack: str) -> list[dict]:
    deployment = stacks._stack(stack).export_stack().deployment
    objects = []
    for resource in deployment.get("resources", []):
        outputs = resource.get("outputs") or {}
        if resource["type"].startswith("kubernetes:") and "apiVersion" in outputs and "metadata" in outputs:
            objects.append(outputs)
    return objects


def _gone(api, namespaces: list[str]) -> bool:
    core = client.CoreV1Api(api)
    left = [n.metadata.name for n in core.list_namespace().items if n.metadata.name in namespaces]
    return not left


def test_preview_create_puts_every_object_on_the_cluster_then_destroy_removes_it(local_cluster, preview_env):
    api = local_cluster.api_client()
    created = strata("preview", "create", "--pr", "41", "--json")
    summary = json.loads(created.stdout.strip().splitlines()[-1])
    prefix = namespace_prefix("pr-41")
    assert summary["namespacePrefix"] == prefix
    teams = summary["outputs"]["teamNamespaces"]
    namespaces = [f"{prefix}mlflow", *teams.values()]

    stacks = AutomationStacks()
    objects = _managed_objects(stacks, "pr-41")
    assert len(objects) >= 40
    resources = dynamic.DynamicClient(api)
    for obj in objects:  # every object Pulumi recorded is on the API server, as recorded
        kind = resources.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        meta = obj["metadata"]
        live = kind.get(name=meta["name"], namespace=meta.get("namespace"))
        assert live.metadata.uid == meta["uid"], f"{obj['kind']} {meta.get('namespace')}/{meta['name']}"

    apps = client.AppsV1Api(api)
    deployments = apps.list_namespaced_deployment(f"{prefix}mlflow").items
    assert deployments and all(d.status.available_replicas == d.spec.replicas for d in deployments)
    statefulsets = apps.list_namespaced_stateful_set(f"{prefix}mlflow").items
    assert statefulsets and all(s.status.ready_replicas == s.spec.replicas for s in statefulsets)
    core = client.CoreV1Api(api)
    for pod in core.list_namespaced_pod(f"{prefix}mlflow").items:
        assert pod.spec.node_name.startswith("kwok-"), pod.metadata.name

    # The team namespaces enforce the restricted Pod Security Standard: the training
    # submitter (each CronJob's pod template) must be admitted there.
    batch = client.BatchV1Api(api)
    submitted = []
    for namespace in teams.values():
        assert core.read_namespace(namespace).metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
        for cron in batch.list_namespaced_cron_job(namespace).items:
            job = client.V1Job(metadata=client.V1ObjectMeta(name=f"{cron.metadata.name}-now"), spec=cron.spec.job_template.spec)
            batch.create_namespaced_job(namespace, job)
            submitted.append((namespace, job.metadata.name))
    assert submitted
    for namespace, name in submitted:
        pods = wait_until(lambda: core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items,
                          what=f"a pod of Job {namespace}/{name}")
        refused = [e.message for e in core.list_namespaced_event(namespace).items
                   if e.involved_object.name == name and e.reason == "FailedCreate"]
        assert pods and not refused, refused

    # `read`: the shared operators' CRDs, looked up (`.get`) on every run; never a change.
    preview = stacks.preview("pr-41")
    assert preview.get("same") and set(preview) <= {"same", "read"}, f"pulumi preview after up wants changes: {preview}"

    # A LoadBalancer Service the stack does not own: teardown deletes it before `destroy`.
    core.create_namespaced_service(f"{prefix}mlflow", {"metadata": {"name": "public"}, "spec": {
        "type": "LoadBalancer", "ports": [{"port": 80}], "selector": {"app": "none"}}})
    destroyed = strata("preview", "destroy", "--pr", "41")
    lines = [line.strip() for line in destroyed.output.splitlines()]
    order = [next(i for i, line in enumerate(lines) if line.startswith(step))
             for step in (f"delete Service {prefix}mlflow/public", "load balancers released", "pulumi destroy pr-41",
                          "pulumi stack rm pr-41")]
    assert order == sorted(order), destroyed.output
    wait_until(lambda: _gone(api, namespaces), timeout_s=60, what="the preview's namespaces deleted")
    assert not stacks.exists("pr-41")


def test_gc_destroys_a_half_created_preview(local_cluster, preview_env):
    """`up` killed mid-way (pending operations in the state, objects on the cluster):
    gc, seeing its pull request closed, destroys it and removes what no state tracks."""
    api = local_cluster.api_client()
    prefix = namespace_prefix("pr-42")
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())}
    proc = subprocess.Popen([sys.executable, "-m", "infra.cli", "preview", "create", "--pr", "42"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        core = client.CoreV1Api(api)

        def mlflow_namespace():
            try:
                return core.read_namespace(f"{prefix}mlflow")
            except ApiException:
                return None

        wait_until(mlflow_namespace, timeout_s=300, what="the first objects of pr-42")
        time.sleep(1)
    finally:
        plugins = descendants(proc.pid)  # the Pulumi CLI starts its provider plugins in groups of their own
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in plugins:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
    wait_until(lambda: not [p for p in plugins if proc_stat(p) and proc_stat(p)[0] != "Z"], timeout_s=30,
               what="the killed preview's provider plugins gone")
    stacks = AutomationStacks()
    assert stacks.exists("pr-42")

    collected = strata("preview", "gc", "--open-pr", "1")
    assert "destroyed pr-42: pull request #42 is closed" in collected.output, collected.output
    wait_until(lambda: not [n for n in client.CoreV1Api(api).list_namespace().items
                            if n.metadata.name.startswith(prefix)], timeout_s=60, what="pr-42's namespaces deleted")
    assert not stacks.exists("pr-42")
