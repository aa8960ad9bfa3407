"""A real `pulumi up` of quick mode's online feature store (`OnlineFeatureStore`: the in-cluster
Redis, its Secret, Service, NetworkPolicies, a team's URL Secret and egress policy) on the
local control plane, through the Automation API with an inline program: the API server
accepts every object, the Redis pod is admitted by the restricted Pod Security Standard and
becomes ready, the team's URL carries the Redis Secret's password, a second run changes
nothing (the generated token is kept), and the materialization CronJob's pod template is
admitted in the team namespace. Then `destroy` removes it all."""

from __future__ import annotations

import base64

import pytest
from kubernetes import client

from infra.models.features import FeatureMaterializationArgs, cron_job_spec
from infra.platform.features import REDIS_APP, SECRET_NAME, OnlineFeatureStore, OnlineFeatureStoreArgs
from tests.cluster.inline_stack import inline_stack, restricted_namespaces
from tests.cluster.test_control_plane import wait_until
from tests.features.specs import model_spec

STACK = "feature-store-up"
TEAM_NS, FEATURES_NS = "fs-team-risk", "fs-features"
MODEL = "fraud-features"


def _program(kubeconfig: str):
    def program() -> None:
        import pulumi

        opts, namespaces = restricted_namespaces(kubeconfig, {"team": (TEAM_NS, "team"),
                                                              "features": (FEATURES_NS, "platform")})
        store = OnlineFeatureStore("fs", OnlineFeatureStoreArgs(consumers={TEAM_NS: (MODEL,)}, namespace=FEATURES_NS,
                                                                storage_gib=1),
                                   after=namespaces, opts=opts)
        pulumi.export("secret", store.secret_name)
    return program


@pytest.fixture(scope="module")
def stacks(local_cluster, pulumi_env, tmp_path_factory):
    with inline_stack(STACK, _program(local_cluster.kubeconfig.read_text()),
                      tmp_path_factory.mktemp("feature-store-work")) as stacks:
        yield stacks


def test_pulumi_up_of_the_in_cluster_online_store(local_cluster, stacks):
    outputs = stacks.up(STACK)
    assert outputs["secret"] == SECRET_NAME
    api = local_cluster.api_client()
    core, apps, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
    networking = client.NetworkingV1Api(api)

    redis = wait_until(lambda: (s := apps.read_namespaced_stateful_set(REDIS_APP, FEATURES_NS)).status.ready_replicas == 1
                       and s, timeout_s=120, what="the Redis StatefulSet ready")
    assert redis.spec.template.spec.containers[0].image == "redis:8.2.2"
    refused = [e.message for e in core.list_namespaced_event(FEATURES_NS).items if e.reason == "FailedCreate"]
    assert not refused, refused
    [pod] = core.list_namespaced_pod(FEATURES_NS, label_selector=f"app.kubernetes.io/name={REDIS_APP}").items
    assert pod.spec.security_context.run_as_non_root and pod.spec.containers[0].command == [
        "redis-server", "/etc/redis/redis.conf"]

    password = base64.b64decode(core.read_namespaced_secret(REDIS_APP, FEATURES_NS).data["password"]).decode()
    url = base64.b64decode(core.read_namespaced_secret(SECRET_NAME, TEAM_NS).data["url"]).decode()
    assert url == f"redis://:{password}@{REDIS_APP}.{FEATURES_NS}.svc.cluster.local:6379/0"
    assert core.read_namespaced_service(REDIS_APP, FEATURES_NS).spec.ports[0].port == 6379
    assert {p.metadata.name for p in networking.list_namespaced_network_policy(FEATURES_NS).items} >= {
        f"{REDIS_APP}-clients"}
    assert f"{SECRET_NAME}-egress" in {p.metadata.name for p in networking.list_namespaced_network_policy(TEAM_NS).items}

    # a second run generates a new token in the program, but the kept one wins: nothing changes
    preview = stacks.preview(STACK)
    assert set(preview) <= {"same"}, f"pulumi preview after up wants changes: {preview}"

    # the materialization CronJob's pod, as a Job now, is admitted under `restricted` in the team namespace
    spec = cron_job_spec(FeatureMaterializationArgs(
        model=model_spec(MODEL), namespace=TEAM_NS, image="strata/training:0.1.0", service_account="default",
        spec_config_map=f"{MODEL}-spec", labels={}, registry_secret="feature-registry"))
    job = client.V1Job(metadata=client.V1ObjectMeta(name=f"{MODEL}-materialize-now"), spec=spec["jobTemplate"]["spec"])
    batch.create_namespaced_job(TEAM_NS, job)
    pods = wait_until(lambda: core.list_namespaced_pod(TEAM_NS, label_selector=f"job-name={MODEL}-materialize-now").items,
                      what="a pod of the materialization Job")
    refused = [e.message for e in core.list_namespaced_event(TEAM_NS).items
               if e.involved_object.name == f"{MODEL}-materialize-now" and e.reason == "FailedCreate"]
    assert pods and not refused, refused
    batch.delete_namespaced_job(f"{MODEL}-materialize-now", TEAM_NS, propagation_policy="Background")
