"""The platform layer under Pulumi mocks: what each mode deploys, and the invariants
every stack must keep (hardened pods, closed namespaces, CRs after their operators,
secrets never in plain inputs, pinned charts)."""

from __future__ import annotations

import re
from typing import Any, Iterator

import pytest
from pydantic import ValidationError

from infra.crds import strimzi
from infra.plan import harness
from infra.plan.harness import Plan, PlannedResource, run_program, run_stack
from infra.platform.charts import CHARTS, ChartPin
from infra.platform.monitoring import ROUTING_KEYS_SECRET, required_routing_keys, routing_key_files
from workloads.monitoring.alertmanager import ROUTING_KEY_DIR

STACKS = ("quick", "standard", "enterprise")
RELEASE = "kubernetes:helm.sh/v3:Release"
OPTIONAL_CHARTS = {"base", "istiod", "gateway", "cni", "keda", "strimzi-kafka-operator",
                   "kube-prometheus-stack", "nvidia-device-plugin", "oci://ghcr.io/emberstack/helm-charts/reflector"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
# CR API group -> the chart whose release must precede it.
CR_OPERATOR_CHART = {
    "kafka.strimzi.io": "strimzi-kafka-operator",
    "security.istio.io": "istiod",
    "networking.istio.io": "istiod",
    "monitoring.coreos.com": "kube-prometheus-stack",
    "keda.sh": "keda",
    "ray.io": "kuberay-operator",
    "machinelearning.seldon.io": "seldon-core-operator",
}


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {stack: run_stack(stack) for stack in STACKS}


PLATFORM = "strata:platform:Platform"


def in_platform(plan: Plan, resource: PlannedResource) -> bool:
    by_urn = {r.urn: r for r in plan.resources}
    parent = by_urn.get(resource.parent_urn or "")
    while parent is not None:
        if parent.type == PLATFORM:
            return True
        parent = by_urn.get(parent.parent_urn or "")
    return False


def releases(plan: Plan) -> list[PlannedResource]:
    """The platform layer's Helm releases (the cloud layer has its own, e.g. Karpenter)."""
    return [r for r in plan.by_type(RELEASE) if in_platform(plan, r)]


def charts(plan: Plan) -> dict[str, PlannedResource]:
    return {r.inputs["chart"]: r for r in releases(plan)}


def one(resources: list[PlannedResource], what: str) -> PlannedResource:
    assert len(resources) == 1, f"expected one {what}, got {[r.name for r in resources]}"
    return resources[0]


def pod_templates(plan: Plan) -> Iterator[tuple[PlannedResource, dict[str, Any]]]:
    for kind in WORKLOAD_KINDS:
        for resource in plan.of_kind(kind):
            yield resource, resource.inputs["spec"]["template"]["spec"]


# --- what each mode deploys ---------------------------------------------------------------

def test_quick_has_only_the_always_on_operators(plans):
    deployed = set(charts(plans["quick"]))
    assert deployed == {"kuberay-operator", "seldon-core-operator"}
    assert not deployed & OPTIONAL_CHARTS
    assert not [r for r in plans["quick"].resources if r.type.startswith("kubernetes:kafka.strimzi.io")]
    assert not [r for r in plans["quick"].resources if "istio.io" in r.type]
    seldon = charts(plans["quick"])["seldon-core-operator"]
    assert seldon.inputs["values"]["istio"]["enabled"] is False


def test_quick_runs_mlflow_on_an_in_cluster_postgres(plans):
    plan = plans["quick"]
    # the other StatefulSet of quick is fraud's online feature store (tests/infra/test_feature_store.py)
    assert sorted((r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]) for r in plan.of_kind("StatefulSet")) \
        == [("features", "feature-store-redis"), ("mlflow", "mlflow-postgres")]
    postgres = one([r for r in plan.of_kind("StatefulSet") if r.inputs["metadata"]["namespace"] != "features"],
                   "postgres StatefulSet")
    assert postgres.inputs["metadata"]["name"] == "mlflow-postgres"
    env = {e["name"]: e for e in postgres.inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "password"}
    secret = one([r for r in plan.of_kind("Secret") if r.inputs["metadata"]["name"] == "mlflow-db"], "db secret")
    assert "stringData" in secret.secret_paths


def test_enterprise_deploys_every_optional_service(plans):
    deployed = charts(plans["enterprise"])
    assert OPTIONAL_CHARTS | {"kuberay-operator", "seldon-core-operator"} == set(deployed)
    seldon = deployed["seldon-core-operator"].inputs["values"]
    assert seldon["istio"] == {"enabled": True, "gateway": "istio-ingress/seldon-gateway"}
    plugin = deployed["nvidia-device-plugin"].inputs["values"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in plugin["tolerations"]
    monitoring = deployed["kube-prometheus-stack"].inputs["values"]
    assert monitoring["prometheus"]["prometheusSpec"]["replicas"] == 2
    assert monitoring["alertmanager"]["alertmanagerSpec"]["replicas"] == 3
    assert monitoring["grafana"]["sidecar"]["dashboards"]["enabled"] is True


def test_standard_has_mesh_and_monitoring_but_no_streaming(plans):
    deployed = set(charts(plans["standard"]))
    assert {"base", "cni", "istiod", "gateway", "kube-prometheus-stack"} <= deployed
    assert not deployed & {"keda", "strimzi-kafka-operator", "nvidia-device-plugin"}
    mode = one(plans["standard"].of_kind("PeerAuthentication"), "PeerAuthentication").inputs["spec"]["mtls"]["mode"]
    assert mode == "PERMISSIVE"
    values = charts(plans["standard"])["kube-prometheus-stack"].inputs["values"]
    assert values["prometheus"]["prometheusSpec"]["replicas"] == 1


def test_enterprise_mesh_mtls_is_strict_and_mesh_wide(plans):
    peer = one(plans["enterprise"].of_kind("PeerAuthentication"), "PeerAuthentication")
    assert peer.inputs["apiVersion"] == "security.istio.io/v1"
    assert peer.inputs["metadata"]["namespace"] == "istio-system"
    assert "selector" not in peer.inputs["spec"]
    assert peer.inputs["spec"]["mtls"] == {"mode": "STRICT"}


def test_enterprise_kafka_is_kraft_with_a_tls_authenticated_listener(plans):
    kafka = one(plans["enterprise"].of_kind("Kafka"), "Kafka")
    assert kafka.inputs["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert kafka.inputs["metadata"]["annotations"] == {"strimzi.io/kraft": "enabled", "strimzi.io/node-pools": "enabled"}
    listeners = kafka.inputs["spec"]["kafka"]["listeners"]
    tls = one([listener for listener in listeners if listener["port"] == 9093], "9093 listener")
    assert tls["tls"] is True and tls["authentication"]["type"] == "tls"
    assert all(listener["tls"] for listener in listeners), "no plaintext listener"
    pools = plans["enterprise"].of_kind("KafkaNodePool")
    roles = {tuple(p.inputs["spec"]["roles"]): p for p in pools}
    assert set(roles) == {("controller",), ("broker",)}
    assert roles[("broker",)].inputs["spec"]["replicas"] == 3
    for pool in pools:
        assert pool.inputs["metadata"]["labels"]["strimzi.io/cluster"] == kafka.inputs["metadata"]["name"]
        volume = pool.inputs["spec"]["storage"]["volumes"][0]
        assert volume["type"] == "persistent-claim" and volume["kraftMetadata"] == "shared"


def test_platform_outputs(plans):
    enterprise = plans["enterprise"].outputs
    assert enterprise["kafkaBootstrap"] == "strata-kafka-bootstrap.kafka.svc:9093"
    assert enterprise["mlflowTrackingUri"] == "http://mlflow.mlflow.svc.cluster.local:5000"
    assert enterprise["teamNamespaces"] == {"payments-risk": "team-payments-risk", "vision": "team-vision"}
    assert "kafkaBootstrap" not in plans["quick"].outputs


# --- invariants of every stack ------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_every_container_is_hardened_with_resources_and_probes(plans, stack):
    checked = 0
    for resource, pod in pod_templates(plans[stack]):
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, resource.name
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            where = f"{resource.name}/{c['name']}"
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert c["livenessProbe"] and c["readinessProbe"], where
            image = c["image"]
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), where
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("stack", STACKS)
def test_multi_replica_deployments_have_a_disruption_budget(plans, stack):
    plan = plans[stack]
    budgets = [(r.inputs["metadata"]["namespace"], r.inputs["spec"]["selector"]["matchLabels"])
               for r in plan.of_kind("PodDisruptionBudget")]
    for deployment in plan.of_kind("Deployment"):
        if deployment.inputs["spec"]["replicas"] > 1:
            labels = deployment.inputs["spec"]["template"]["metadata"]["labels"]
            ns = deployment.inputs["metadata"]["namespace"]
            assert any(n == ns and sel.items() <= labels.items() for n, sel in budgets), deployment.name


@pytest.mark.parametrize("stack", STACKS)
def test_every_namespace_is_default_deny(plans, stack):
    plan = plans[stack]
    namespaces = {r.inputs["metadata"]["name"] for r in plan.of_kind("Namespace")}
    denied = {
        r.inputs["metadata"]["namespace"]
        for r in plan.of_kind("NetworkPolicy")
        if r.inputs["spec"].get("podSelector") == {}
        and set(r.inputs["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not r.inputs["spec"].get("ingress") and not r.inputs["spec"].get("egress")
    }
    assert namespaces and namespaces == denied
    # ... and DNS still works from each of them.
    for policy in plan.of_kind("NetworkPolicy"):
        if policy.inputs["metadata"]["name"] == "allow-explicit":
            ports = [p for rule in policy.inputs["spec"]["egress"] for p in rule.get("ports", [])]
            assert {"port": 53, "protocol": "UDP"} in ports


@pytest.mark.parametrize("stack", STACKS)
def test_pod_security_levels(plans, stack):
    relaxed_allowed = {"monitoring", "istio-cni", "nvidia-device-plugin"}
    for ns in plans[stack].of_kind("Namespace"):
        labels, name = ns.inputs["metadata"]["labels"], ns.inputs["metadata"]["name"]
        assert labels["pod-security.kubernetes.io/warn"] == "restricted"
        if labels["strata.dev/tenant"] == "team":
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted", name
        elif labels["pod-security.kubernetes.io/enforce"] != "restricted":
            assert name in relaxed_allowed, name


@pytest.mark.parametrize("stack", STACKS)
def test_team_namespaces_have_quota_and_limits(plans, stack):
    plan = plans[stack]
    teams = set(plan.outputs["teamNamespaces"].values())
    assert {r.inputs["metadata"]["namespace"] for r in plan.of_kind("ResourceQuota")} == teams
    assert {r.inputs["metadata"]["namespace"] for r in plan.of_kind("LimitRange")} == teams
    for quota in plan.of_kind("ResourceQuota"):
        gpus = quota.inputs["spec"]["hard"]["requests.nvidia.com/gpu"]
        assert (gpus != "0") == (stack == "enterprise")


@pytest.mark.parametrize("stack", STACKS)
def test_every_custom_resource_depends_on_its_operator_release(plans, stack):
    plan = plans[stack]
    by_chart = {chart: r.urn for chart, r in charts(plan).items()}
    crs = [r for r in plan.resources if r.is_kubernetes and r.type.split(":")[1].split("/")[0] in CR_OPERATOR_CHART]
    for cr in crs:
        chart = CR_OPERATOR_CHART[cr.type.split(":")[1].split("/")[0]]
        assert by_chart[chart] in cr.dependencies, f"{cr.type} {cr.name} does not wait for {chart}"
    if stack == "enterprise":
        assert {r.kind for r in crs} >= {"Kafka", "KafkaNodePool", "PeerAuthentication", "Gateway", "ServiceMonitor"}


@pytest.mark.parametrize("stack", STACKS)
def test_kubernetes_resources_use_the_cluster_provider(plans, stack):
    for r in plans[stack].resources:
        if r.custom and r.is_kubernetes:
            assert r.provider and "pulumi:providers:kubernetes" in r.provider, r.name


@pytest.mark.parametrize("stack", STACKS)
def test_chart_versions_are_pinned(plans, stack):
    by_chart = {pin.reference: pin for pin in CHARTS.values()}
    for release in releases(plans[stack]):
        version = release.inputs["version"]
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{release.name}: {version!r} is not an exact pin"
        pin = by_chart[release.inputs["chart"]]
        assert version == pin.version
        if pin.oci:  # an OCI chart is addressed by its full URL, with no repository
            assert release.inputs["chart"].startswith("oci://") and "repositoryOpts" not in release.inputs
        else:
            assert release.inputs["repositoryOpts"]["repo"].startswith("https://")


def test_chart_pins_refuse_ranges():
    for bad in ("^1.2.0", "~1.2", ">=1.0.0", "latest", "1.x", ""):
        with pytest.raises(ValueError, match="exact"):
            ChartPin("x", "https://example.invalid/charts", "x", bad, "1")


# --- secrets ------------------------------------------------------------------------------

SENTINEL = "pd-routing-key-SENTINEL-1c0ffee"


def _occurrences(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _occurrences(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _occurrences(item, f"{path}[{index}]")
    elif isinstance(value, str) and SENTINEL in value:
        yield path


@pytest.mark.parametrize("stack", ("standard", "enterprise"))
def test_pagerduty_keys_only_in_secret_inputs(monkeypatch, stack):
    monkeypatch.setattr(harness, "SECRET_PLACEHOLDER", SENTINEL)
    plan = run_stack(stack)
    found = 0
    for r in plan.resources:
        for path in _occurrences(r.inputs):
            found += 1
            assert any(path == s or path.startswith(f"{s}.") or path.startswith(f"{s}[") for s in r.secret_paths), \
                f"{r.type} {r.name}: PagerDuty key in plain input {path}"
    assert found, "the routing keys should reach the routing-keys Secret"
    secret = one([r for r in plan.of_kind("Secret") if r.inputs["metadata"]["name"] == ROUTING_KEYS_SECRET],
                 "PagerDuty routing keys")
    assert secret.inputs["metadata"]["namespace"] == plan.outputs.get("monitoringNamespace", "monitoring")
    assert SENTINEL in secret.inputs["stringData"].values()
    values = charts(plan)["kube-prometheus-stack"].inputs["values"]["alertmanager"]
    assert values["alertmanagerSpec"]["secrets"] == [ROUTING_KEYS_SECRET, "retrain-trigger-token"]  # + the webhook token
    files = [pd["routing_key_file"] for receiver in values["config"]["receivers"]
             for pd in receiver.get("pagerduty_configs", [])]
    assert files and all(f.startswith(f"{ROUTING_KEY_DIR}/") for f in files)
    # Every model's routing key is a file in that Secret.
    assert {m.pagerduty.routing_key_name for m in plan.spec.models} <= set(secret.inputs["stringData"])


def test_routing_key_files_report_missing_names():
    config = {"receivers": [{"name": "pd-vision-page", "pagerduty_configs": [{"routing_key_file": f"{ROUTING_KEY_DIR}/vision"}]},
                            {"name": "hook", "webhook_configs": [{"url": "http://x"}]}]}
    assert required_routing_keys(config) == ("vision",)
    assert routing_key_files({"payments-risk": "k"}, ("vision",)) == ({"payments-risk": "k"}, ["vision"])
    with pytest.raises(ValueError, match="strata:pagerdutyRoutingKeys"):
        routing_key_files("not-a-map", ())


# --- MLflow -------------------------------------------------------------------------------

def test_aws_mlflow_uses_s3_irsa_and_rds(plans):
    plan = plans["enterprise"]
    server = one([d for d in plan.of_kind("Deployment") if d.inputs["metadata"]["name"] == "mlflow"], "mlflow")
    args = server.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    root = args[args.index("--default-artifact-root") + 1]
    assert root.startswith("s3://") and "--no-serve-artifacts" in args
    assert not plan.of_kind("StatefulSet"), "RDS backend: no in-cluster database"
    account = one([r for r in plan.of_kind("ServiceAccount") if r.inputs["metadata"]["name"] == "mlflow"], "mlflow SA")
    assert account.inputs["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    secret = one([r for r in plan.of_kind("Secret") if r.inputs["metadata"]["name"] == "mlflow-db"], "db secret")
    assert "stringData" in secret.secret_paths
    assert secret.inputs["stringData"]["backend-store-uri"].startswith("postgresql://")


def test_mlflow_verifies_the_databases_certificate(plans):
    """Issue 12 item 7: RDS with verify-full against the CA bundle the image carries, never `prefer`."""
    from pathlib import Path

    from infra.platform.mlflow import RDS_CA_BUNDLE

    for stack, expected in (("enterprise", f"sslmode=verify-full&sslrootcert={RDS_CA_BUNDLE}"),
                            ("quick", "sslmode=disable")):  # in-cluster: no TLS server, namespace-local clients
        secret = one([r for r in plans[stack].of_kind("Secret") if r.inputs["metadata"]["name"] == "mlflow-db"], "db")
        uri = secret.inputs["stringData"]["backend-store-uri"]
        assert uri.endswith("?" + expected) and "prefer" not in uri, (stack, uri.split("@")[-1])
    dockerfile = (Path(__file__).resolve().parents[2] / "workloads" / "tracking" / "Dockerfile").read_text()
    assert any(line.startswith("ADD ") and line.rstrip().endswith(" " + RDS_CA_BUNDLE) for line in dockerfile.splitlines())


@pytest.mark.parametrize("mode", ("quick", "enterprise"))
def test_kubeconfig_target_serves_artifacts_from_a_volume(mode):
    raw = {
        "aws:region": "eu-west-1",
        "strata:mode": mode,
        "strata:environment": "pr-42",
        "strata:target": "kubeconfig",
        "strata:kubeconfig": {"secure": "v1:abc"},
        "strata:namespacePrefix": "pr-42-",
        "strata:models": {"digits": {"specFile": "workloads/examples/digits/model.yaml"}},
    }
    plan = run_program("preview", raw)
    assert plan.outputs["teamNamespaces"] == {"vision": "pr-42-team-vision"}
    assert plan.outputs["mlflowTrackingUri"] == "http://mlflow.pr-42-mlflow.svc.cluster.local:5000"
    server = one([d for d in plan.of_kind("Deployment") if d.inputs["metadata"]["name"] == "mlflow"], "mlflow")
    assert server.inputs["spec"]["replicas"] == 1
    args = server.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--serve-artifacts" in args
    claims = [c for c in plan.of_kind("PersistentVolumeClaim") if c.inputs["metadata"]["namespace"] == "pr-42-mlflow"]
    assert one(claims, "artifacts PVC").inputs["metadata"]["name"] == "mlflow-artifacts"
    account = one([r for r in plan.of_kind("ServiceAccount") if r.inputs["metadata"]["name"] == "mlflow"], "mlflow SA")
    assert "annotations" not in account.inputs["metadata"]
    assert all(ns.startswith("pr-42-") for ns in (r.inputs["metadata"]["name"] for r in plan.of_kind("Namespace")))
    # No RDS without the AWS layer, whatever the mode: the in-cluster database instead.
    assert one(plan.of_kind("StatefulSet"), "postgres").inputs["metadata"]["namespace"] == "pr-42-mlflow"
    if mode == "enterprise":
        gateway = charts(plan)["gateway"].inputs["values"]["service"]
        assert gateway["annotations"] == {}, "no AWS load balancer annotations off AWS"
        peer = one(plan.of_kind("PeerAuthentication"), "PeerAuthentication")
        assert peer.inputs["metadata"]["namespace"] == "pr-42-istio-system"


# --- CRD mirrors --------------------------------------------------------------------------

def test_crd_models_reject_values_outside_the_schema():
    with pytest.raises(ValidationError, match="name"):
        strimzi.GenericKafkaListener(name="TLS-Listener", port=9093, type="internal", tls=True)
    with pytest.raises(ValidationError, match="port"):
        strimzi.GenericKafkaListener(name="tls", port=9000, type="internal", tls=True)
    with pytest.raises(ValidationError):
        strimzi.KafkaNodePoolSpec(replicas=3, roles=["zookeeper"], storage=strimzi.JbodStorage(
            volumes=[strimzi.PersistentClaimVolume(id=0, size="1Gi")]))


@pytest.mark.parametrize("stack", STACKS)
def test_rollout_controllers_can_reach_prometheus_and_nothing_wider(plans, stack):
    """Team egress to the monitoring namespace on 9090 only, admitted by monitoring's ingress."""
    plan = plans[stack]
    teams = set(plan.outputs["teamNamespaces"].values())
    monitoring = [ns.inputs["metadata"]["name"] for ns in plan.of_kind("Namespace")
                  if ns.inputs["metadata"]["name"].endswith("monitoring")]
    explicit = {p.inputs["metadata"]["namespace"]: p.inputs["spec"] for p in plan.of_kind("NetworkPolicy")
                if p.inputs["metadata"]["name"] == "allow-explicit"}

    def peers_on(rules, port):
        return [rule for rule in rules if {"port": port, "protocol": "TCP"} in rule.get("ports", [])]

    for team in teams:
        to_prometheus = peers_on(explicit[team]["egress"], 9090)
        if not monitoring:
            assert not to_prometheus
            continue
        [rule] = to_prometheus
        assert rule["ports"] == [{"port": 9090, "protocol": "TCP"}]
        assert [peer["namespaceSelector"]["matchExpressions"] for peer in rule["to"]] == [
            [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": [monitoring[0]]}]]
    if monitoring:
        from_teams = [rule for rule in peers_on(explicit[monitoring[0]]["ingress"], 9090)
                      if any("strata.dev/tenant" in peer.get("namespaceSelector", {}).get("matchLabels", {})
                             for peer in rule["from"])]
        assert len(from_teams) == 1 and from_teams[0]["ports"] == [{"port": 9090, "protocol": "TCP"}]


@pytest.mark.parametrize("stack", STACKS)
def test_kafka_client_credentials_are_mirrored_into_team_namespaces(plans, stack):
    """Where Kafka runs, the reflector runs beside it and the cluster CA certificate Secret is
    mirrored into every team namespace (the stream workers' KafkaUser Secrets: test_model_serving)."""
    plan = plans[stack]
    kafka_crs = plan.of_kind("Kafka")
    releases = {r.inputs["name"]: r.inputs for r in plan.of_kind("Release")}
    if not kafka_crs:
        assert "reflector" not in releases
        return
    [kafka] = kafka_crs
    reflector = releases["reflector"]
    assert reflector["namespace"] == kafka.inputs["metadata"]["namespace"]
    assert reflector["chart"] == "oci://ghcr.io/emberstack/helm-charts/reflector" and reflector["version"] == "10.0.60"
    annotations = kafka.inputs["spec"]["kafka"]["template"]["clusterCaCert"]["metadata"]["annotations"]
    teams = sorted(plan.outputs["teamNamespaces"].values())
    prefix = "reflector.v1.k8s.emberstack.com/"
    assert annotations[f"{prefix}reflection-auto-enabled"] == "true"
    assert sorted(annotations[f"{prefix}reflection-auto-namespaces"].split(",")) == teams
    assert sorted(annotations[f"{prefix}reflection-allowed-namespaces"].split(",")) == teams


@pytest.mark.parametrize("stack", STACKS)
def test_every_namespaced_object_waits_for_its_namespace(plans, stack):
    """Namespace names are plain strings, which carry no dependency: without an explicit
    one, `up` creates a model's objects before their team's namespace exists."""
    plan = plans[stack]
    namespaces = {r.inputs["metadata"]["name"]: r.urn for r in plan.of_kind("Namespace") if r.is_kubernetes}
    by_urn = {r.urn: r for r in plan.resources}

    def waits_for(resource: PlannedResource, target: str) -> bool:
        seen, todo = set(), list(resource.dependencies)
        while todo:
            urn = todo.pop()
            if urn == target:
                return True
            if urn not in seen and urn in by_urn:
                seen.add(urn)
                todo.extend(by_urn[urn].dependencies)
        return False

    checked = 0
    for r in plan.resources:
        namespace = (r.inputs.get("metadata") or {}).get("namespace") if r.custom and r.is_kubernetes else None
        if namespace in namespaces:
            checked += 1
            assert waits_for(r, namespaces[namespace]), f"{r.kind} {namespace}/{r.name} does not wait for its Namespace"
    assert checked > 20
