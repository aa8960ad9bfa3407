"""The cluster-only code on a real API server, each component with its own ServiceAccount
token and exactly the Role infra grants it:

* the rollout controller (`workloads.rollout.kube`) moves a SeldonDeployment's traffic
  through a canary, keeps its state in its ConfigMap, emits Events, survives a restart
  mid-rollout, and is refused (403) whatever its Role does not grant. The analysis
  windows and the registry are the test's (no Seldon pods run here); every write to the
  cluster is the controller's own;
* the cost exporter reads the kwok nodes (the stack's pools) and the model pods on them.
"""

from __future__ import annotations

import pytest
from kubernetes import client, config
from typer.testing import CliRunner
from kubernetes.client.exceptions import ApiException

from infra.cli import app
from infra.models.rollout import RolloutControllerArgs, role_rules
from tests.cluster.test_control_plane import RESTRICTED_CONTAINER, wait_until
from tests.rollout.test_state_machine import Clock, Windows, spec
from workloads.local.cluster import service_account_kubeconfig
from workloads.monitoring.cost_exporter import CostExporter, KubernetesSource
from workloads.rollout import kube
from workloads.rollout.controller import Controller, RolloutError
from workloads.rollout.local import LocalRegistry
from workloads.rollout.record import RolloutMetrics
from workloads.rollout.state import Phase
from workloads.serving import registry as reg
from workloads.traffic.split import CANDIDATE, STABLE

NAMESPACE = "team-payments-risk"
SELDON = (kube.SELDON_GROUP, kube.SELDON_VERSION)


def seldon_deployment(name: str) -> dict:
    graph = {"name": "model", "type": "MODEL", "parameters": [{"name": "alias", "value": "champion", "type": "STRING"}]}
    return {"apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment", "metadata": {"name": name},
            "spec": {"predictors": [{"name": STABLE, "traffic": 100, "replicas": 2, "graph": graph},
                                    {"name": CANDIDATE, "traffic": 0, "replicas": 1, "graph": {**graph, "parameters": []}}]}}


def prepare_namespace(local_cluster, namespace: str, kubeconfig_path):
    """The namespace as infra leaves it: the SeldonDeployment, the empty state ConfigMap,
    the controller's ServiceAccount bound to `infra.models.rollout.role_rules`. Returns a
    client authenticated as that ServiceAccount, and the admin's."""
    admin = local_cluster.api_client()
    core, rbac, custom = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin), client.CustomObjectsApi(admin)
    core.create_namespace({"metadata": {"name": namespace}})
    args = RolloutControllerArgs(model=spec(), namespace=namespace, image="unused", spec_config_map="fraud-spec",
                                 spec_config_map_key="model.yaml", mlflow_tracking_uri="unused", labels={})
    wait_until(lambda: _exists(core.read_namespaced_service_account, "default", namespace), what="default SA")
    core.create_namespaced_service_account(namespace, {"metadata": {"name": args.name}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": args.name}, "rules": role_rules(args)})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": args.name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": args.name},
        "subjects": [{"kind": "ServiceAccount", "name": args.name, "namespace": namespace}]})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": args.state_config_map}})
    for name in ("fraud", "other"):
        custom.create_namespaced_custom_object(*SELDON, namespace, kube.SELDON_PLURAL, seldon_deployment(name))
    kubeconfig = service_account_kubeconfig(local_cluster, namespace, args.name, kubeconfig_path)
    return config.new_client_from_config(config_file=str(kubeconfig)), admin


@pytest.fixture(scope="module")
def rollout_namespace(local_cluster, tmp_path_factory):
    return prepare_namespace(local_cluster, NAMESPACE, tmp_path_factory.mktemp("rollout") / "controller.kubeconfig")


def registry_with_challenger(root):
    for version in ("1", "2"):
        (root / "fraud" / "versions" / version).mkdir(parents=True)
    reg.set_alias(root, "fraud", "champion", "1")
    reg.set_alias(root, "fraud", "challenger", "2")
    return root


def _exists(read, *args) -> bool:
    try:
        read(*args)
        return True
    except ApiException:
        return False


class SetsStableVersion:
    """The stable predictor follows the promotion: the controller's patch of the graph's
    `version` parameter is real; that Seldon then serves it is the test's to say."""

    def __init__(self, router: kube.KubernetesTrafficRouter):
        self.router = router

    def wait_serving(self, model: str, version: str, timeout_s: float) -> None:
        self.router.set_stable_version(model, version)


def controller(sa_api, root, clock, namespace: str = NAMESPACE) -> Controller:
    router = kube.KubernetesTrafficRouter(namespace, api=client.CustomObjectsApi(sa_api))
    return Controller(spec=spec(), router=router, store=kube.ConfigMapStateStore(namespace, api=client.CoreV1Api(sa_api)),
                      source=Windows(router), registry=LocalRegistry(root), stable=SetsStableVersion(router),
                      sinks=[kube.EventSink(namespace, api=client.CoreV1Api(sa_api))],
                      metrics=RolloutMetrics("payments-risk"), settle_s=1.0, clock=clock, sleep=clock.sleep)


def test_the_rollout_controller_runs_a_canary_on_the_seldon_deployment(rollout_namespace, tmp_path):
    sa_api, admin = rollout_namespace
    registry_with_challenger(tmp_path)
    clock = Clock()
    custom = client.CustomObjectsApi(admin)

    first = controller(sa_api, tmp_path, clock)
    state = first.start()
    weights = []
    while state.step < 2:  # two steps in, then the controller process "dies"
        first.sleep(first.tick(state) or 0.5)
        sdep = custom.get_namespaced_custom_object(*SELDON, NAMESPACE, kube.SELDON_PLURAL, "fraud")
        weights.append({p["name"]: p["traffic"] for p in sdep["spec"]["predictors"]}[CANDIDATE])
    stored = kube.ConfigMapStateStore(NAMESPACE, api=client.CoreV1Api(admin)).load("fraud")
    assert stored is not None and stored.step == 2 and stored.phase is Phase.RUNNING

    final = controller(sa_api, tmp_path, clock).run()  # a new process: resumes from the ConfigMap
    assert final.phase is Phase.PROMOTED
    sdep = custom.get_namespaced_custom_object(*SELDON, NAMESPACE, kube.SELDON_PLURAL, "fraud")
    traffic = {p["name"]: p["traffic"] for p in sdep["spec"]["predictors"]}
    assert traffic == {STABLE: 100, CANDIDATE: 0}
    stable = next(p for p in sdep["spec"]["predictors"] if p["name"] == STABLE)
    assert {"name": "version", "value": "2", "type": "STRING"} in stable["graph"]["parameters"]
    assert [p.get("replicas") for p in sdep["spec"]["predictors"]] == [2, 1]  # only traffic and version moved
    assert 5 in weights and 25 in weights
    assert reg.read_aliases(tmp_path, "fraud")["champion"] == "2"

    events = client.CoreV1Api(admin).list_namespaced_event(NAMESPACE, field_selector="involvedObject.name=fraud").items
    reasons = [e.reason for e in sorted(events, key=lambda e: e.metadata.creation_timestamp)]
    for reason in ("RolloutStarted", "RolloutAdvanced", "RolloutResumed", "RolloutPromoted"):
        assert reason in reasons, reasons
    assert all(e.source.component == "strata-rollout" for e in events)
    saved = client.CoreV1Api(admin).read_namespaced_config_map("fraud-rollout-state", NAMESPACE)
    assert '"promoted"' in saved.data[kube.STATE_KEY]


@pytest.mark.parametrize("what, call", [
    ("list SeldonDeployments", lambda c, core: c.list_namespaced_custom_object(*SELDON, NAMESPACE, kube.SELDON_PLURAL)),
    ("get another model's SeldonDeployment",
     lambda c, core: c.get_namespaced_custom_object(*SELDON, NAMESPACE, kube.SELDON_PLURAL, "other")),
    ("delete its SeldonDeployment",
     lambda c, core: c.delete_namespaced_custom_object(*SELDON, NAMESPACE, kube.SELDON_PLURAL, "fraud")),
    ("create a ConfigMap", lambda c, core: core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "x"}})),
    ("delete its state ConfigMap", lambda c, core: core.delete_namespaced_config_map("fraud-rollout-state", NAMESPACE)),
    ("read Secrets", lambda c, core: core.list_namespaced_secret(NAMESPACE)),
    ("create Pods", lambda c, core: core.create_namespaced_pod(NAMESPACE, {"metadata": {"name": "p"}, "spec": {
        "containers": [RESTRICTED_CONTAINER]}})),
])
def test_the_rollout_controller_is_refused_what_its_role_does_not_grant(rollout_namespace, what, call):
    sa_api, _ = rollout_namespace
    with pytest.raises(ApiException) as refused:
        call(client.CustomObjectsApi(sa_api), client.CoreV1Api(sa_api))
    assert refused.value.status == 403, what


def test_the_cost_exporter_reads_the_kwok_nodes_and_the_model_pods(local_cluster):
    admin = local_cluster.api_client()
    core = client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": "cost-check"}})
    wait_until(lambda: _exists(core.read_namespaced_service_account, "default", "cost-check"), what="default SA")
    labels = {"strata.dev/model": "fraud", "strata.dev/team": "payments-risk", "app.kubernetes.io/component": "serving"}
    core.create_namespaced_pod("cost-check", {"metadata": {"name": "fraud-serving", "labels": labels}, "spec": {
        "containers": [{**RESTRICTED_CONTAINER, "resources": {"requests": {"cpu": "2", "memory": "8Gi"}}}],
        "nodeSelector": {"strata.dev/pool": "cpu-spot"}}})
    wait_until(lambda: core.read_namespaced_pod("fraud-serving", "cost-check").spec.node_name, what="the pod scheduled")
    collected = CostExporter(KubernetesSource(str(local_cluster.kubeconfig))).collect()
    assert collected["pools"] == {"cpu-spot/spot": 2, "gpu-spot/spot": 1, "system/on-demand": 1}
    assert collected["nodes"] == 4 and collected["hourly_dollars"] > 0 and not collected["unpriced_instance_types"]
    assert collected["workloads"]["fraud/serving"] > 0


def test_strata_rollback_on_the_cluster_ends_the_rollout_and_restores_stable(local_cluster, tmp_path):
    namespace = "team-rollback-check"
    sa_api, admin = prepare_namespace(local_cluster, namespace, tmp_path / "controller.kubeconfig")
    running = controller(sa_api, registry_with_challenger(tmp_path / "registry"), Clock(), namespace)
    state = running.start()
    while state.step < 1:
        running.sleep(running.tick(state) or 0.5)
    custom = client.CustomObjectsApi(admin)
    before = custom.get_namespaced_custom_object(*SELDON, namespace, kube.SELDON_PLURAL, "fraud")
    assert {p["name"]: p["traffic"] for p in before["spec"]["predictors"]}[CANDIDATE] == 25

    kubeconfig = str(local_cluster.kubeconfig)
    result = CliRunner().invoke(app, ["rollback", "fraud", "--kubeconfig", kubeconfig, "--namespace", namespace])
    assert result.exit_code == 0, result.output
    assert f"rolled back {namespace}/fraud: 100% stable (was: fraud: 75% stable / 25% candidate)" in " ".join(result.output.split())
    assert "ended the canary rollout of version 2" in result.output
    after = custom.get_namespaced_custom_object(*SELDON, namespace, kube.SELDON_PLURAL, "fraud")
    assert {p["name"]: p["traffic"] for p in after["spec"]["predictors"]} == {STABLE: 100, CANDIDATE: 0}
    stored = kube.ConfigMapStateStore(namespace, api=client.CoreV1Api(admin)).load("fraud")
    assert stored.phase is Phase.ROLLED_BACK and "strata rollback" in stored.reason
    with pytest.raises(RolloutError, match="already finished a rollout"):  # no controller run resumes it
        running.run()
    assert custom.get_namespaced_custom_object(*SELDON, namespace, kube.SELDON_PLURAL, "fraud") == after

    shown = CliRunner().invoke(app, ["rollout-status", "fraud", "--kubeconfig", kubeconfig, "--namespace", namespace])
    assert shown.exit_code == 0, shown.output
    assert "rolled_back" in shown.output and "RolloutRolledBack" in shown.output and "RolloutStarted" in shown.output


def test_the_retraining_trigger_creates_a_rayjob_over_tls_with_its_own_token(local_cluster, tmp_path):
    """The trigger's submitter (`workloads.training.submit.InClusterApi`: the pod's mounted
    token and CA) creates the retrain RayJob the standard stack renders, in a team namespace
    where it holds exactly `RETRAIN_ROLE_RULES`; KubeRay's CRD (with its CEL rules) accepts it."""
    import json

    from infra.plan.harness import run_stack
    from infra.platform.observability import RETRAIN_APP, RETRAIN_ROLE_RULES
    from workloads.local.cluster import SA_ISSUER
    from workloads.training.submit import API_PATH, InClusterApi, SubmitError, submit

    plan = run_stack("standard")
    manifests = [json.loads(value) for r in plan.of_kind("ConfigMap")
                 if r.inputs["metadata"]["name"].startswith(f"{RETRAIN_APP}-") for value in r.inputs["data"].values()]
    assert manifests, "the standard stack renders no retrain RayJob manifest"
    template = manifests[0]

    admin = local_cluster.api_client()
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    monitoring, team = "monitoring-retrain", "team-retrain"
    for namespace in (monitoring, team):
        core.create_namespace({"metadata": {"name": namespace}})
    wait_until(lambda: _exists(core.read_namespaced_service_account, "default", monitoring), what="default SA")
    core.create_namespaced_service_account(monitoring, {"metadata": {"name": RETRAIN_APP}})
    rbac.create_namespaced_role(team, {"metadata": {"name": RETRAIN_APP}, "rules": RETRAIN_ROLE_RULES})
    rbac.create_namespaced_role_binding(team, {
        "metadata": {"name": RETRAIN_APP},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": RETRAIN_APP},
        "subjects": [{"kind": "ServiceAccount", "name": RETRAIN_APP, "namespace": monitoring}]})
    token = core.create_namespaced_service_account_token(
        RETRAIN_APP, monitoring, {"spec": {"expirationSeconds": 3600, "audiences": [SA_ISSUER]}}).status.token
    mounted = tmp_path / "serviceaccount"  # what the pod's projected token volume holds
    mounted.mkdir()
    (mounted / "token").write_text(token)
    (mounted / "ca.crt").write_bytes((local_cluster.pki / "ca.crt").read_bytes())
    (mounted / "namespace").write_text(monitoring)
    api = InClusterApi(mounted, base_url=local_cluster.info().server)

    created = submit(template, api, namespace=team, trigger="retrain")
    assert created["metadata"]["uid"] and created["metadata"]["labels"]["strata.dev/trigger"] == "retrain"
    live = client.CustomObjectsApi(admin).get_namespaced_custom_object(
        "ray.io", "v1", team, "rayjobs", created["metadata"]["name"])
    # the template's command, plus the run's trigger tag (what the training metrics count by)
    assert live["spec"]["entrypoint"] == template["spec"]["entrypoint"] + " --trigger retrain"

    # Nothing beyond its Role: no delete, no RayJob in another namespace.
    path = API_PATH.format(namespace=team)
    with pytest.raises(SubmitError, match="HTTP 403"):
        api.request("DELETE", f"{path}/{created['metadata']['name']}")
    with pytest.raises(SubmitError, match="HTTP 403"):
        submit(template, api, namespace=monitoring, trigger="retrain")
    # TLS is verified: without the cluster's CA the same call is refused before any request.
    (mounted / "ca.crt").unlink()
    with pytest.raises(SubmitError, match="CERTIFICATE_VERIFY_FAILED"):
        InClusterApi(mounted, base_url=local_cluster.info().server).request("GET", path)
