"""A real `pulumi up` of the feature registry's cluster objects (`FeatureRegistry` on an
in-cluster MLflow database server, as in quick) on the local control plane, through the
Automation API with an inline program: the API server accepts every object, the init Job is
admitted under the restricted Pod Security Standard in MLflow's namespace and `pulumi up` waits
for it to complete (kwok completes a Job's pods; the provisioning itself runs against a real
PostgreSQL in tests/features/test_registry_postgres.py), both URL Secrets carry the kept
password, a second run changes nothing, and `destroy` removes it all."""

from __future__ import annotations

import base64

import pytest
from kubernetes import client

from infra.k8s import selector_labels
from infra.platform.charts import IMAGES
from infra.platform.feature_registry import (CREDENTIALS_SECRET, INIT_COMPONENT, REGISTRY_SECRET, FeatureRegistry,
                                             FeatureRegistryArgs)
from tests.cluster.inline_stack import inline_stack, restricted_namespaces
from tests.cluster.test_control_plane import wait_until

STACK = "feature-registry-up"
TEAM_NS, MLFLOW_NS = "fr-team-risk", "fr-mlflow"
MODEL = "fraud-features"


def _program(kubeconfig: str):
    def program() -> None:
        import pulumi
        import pulumi_kubernetes as k8s

        from infra.platform.mlflow import DatabaseServer

        opts, namespaces = restricted_namespaces(kubeconfig, {"team": (TEAM_NS, "team"), "mlflow": (MLFLOW_NS, "platform")})
        admin = k8s.core.v1.Secret(  # MLflow's Secret, as MlflowTracking writes it
            "mlflow-db", metadata={"name": "mlflow-db", "namespace": MLFLOW_NS}, type="Opaque",
            string_data={"backend-store-uri": pulumi.Output.secret(
                f"postgresql://mlflow:pw@mlflow-postgres.{MLFLOW_NS}.svc.cluster.local:5432/mlflow?sslmode=disable")},
            opts=pulumi.ResourceOptions(provider=opts.provider, depends_on=namespaces))
        server = DatabaseServer(namespace=MLFLOW_NS, host=f"mlflow-postgres.{MLFLOW_NS}.svc.cluster.local", port=5432,
                                tls="sslmode=disable", admin_secret="mlflow-db", admin_url_key="backend-store-uri",
                                pod_labels=selector_labels("mlflow-postgres"), ready=(admin,))
        registry = FeatureRegistry("fr", FeatureRegistryArgs(server=server, clients={TEAM_NS: (MODEL,)},
                                                             image=IMAGES["training"].ref),
                                   after=namespaces, opts=opts)
        pulumi.export("secret", registry.secret_name)
    return program


@pytest.fixture(scope="module")
def stacks(local_cluster, pulumi_env, tmp_path_factory):
    with inline_stack(STACK, _program(local_cluster.kubeconfig.read_text()),
                      tmp_path_factory.mktemp("feature-registry-work")) as stacks:
        yield stacks


def test_pulumi_up_of_the_feature_registry(local_cluster, stacks):
    outputs = stacks.up(STACK)
    assert outputs["secret"] == REGISTRY_SECRET
    api = local_cluster.api_client()
    core, batch, networking = client.CoreV1Api(api), client.BatchV1Api(api), client.NetworkingV1Api(api)

    job = wait_until(lambda: (j := batch.read_namespaced_job(INIT_COMPONENT, MLFLOW_NS)).status.succeeded and j,
                     timeout_s=60, what="the init Job completed")
    assert job.spec.template.spec.containers[0].command == ["python", "-m", "infra.cli", "features", "init-registry"]
    refused = [e.message for e in core.list_namespaced_event(MLFLOW_NS).items if e.reason == "FailedCreate"]
    assert not refused, refused

    password = base64.b64decode(core.read_namespaced_secret(CREDENTIALS_SECRET, MLFLOW_NS).data["password"]).decode()
    urls = {ns: base64.b64decode(core.read_namespaced_secret(REGISTRY_SECRET, ns).data["url"]).decode()
            for ns in (MLFLOW_NS, TEAM_NS)}
    assert set(urls.values()) == {f"postgresql+psycopg://feature_registry:{password}@mlflow-postgres.{MLFLOW_NS}"
                                  f".svc.cluster.local:5432/feature_registry?sslmode=disable"}
    assert f"{REGISTRY_SECRET}-egress" in {p.metadata.name for p in networking.list_namespaced_network_policy(TEAM_NS).items}
    assert f"{REGISTRY_SECRET}-clients" in {
        p.metadata.name for p in networking.list_namespaced_network_policy(MLFLOW_NS).items}

    # a second run generates a new password in the program, but the kept one wins: nothing changes
    preview = stacks.preview(STACK)
    assert set(preview) <= {"same"}, f"pulumi preview after up wants changes: {preview}"
