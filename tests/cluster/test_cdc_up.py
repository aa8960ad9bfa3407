"""The CDC component (`infra.platform.cdc.ChangeDataCapture`, the enterprise stack's pipeline)
through a real `pulumi up` on the local control plane, whose API server serves the Strimzi
0.51 CRDs the offline plan validates against (`workloads.local.cluster.operator_crds`):

* the API server admits every object — KafkaConnect, KafkaConnector, KafkaTopic, the three
  KafkaUsers (Connect's, the sink's, the feature aggregator's), the credentials Secret and its
  Role/RoleBinding, the sink's and the aggregator's ServiceAccounts, Deployments (in a
  namespace enforcing the restricted Pod Security Standard), Services, ServiceMonitors and
  the aggregator's egress NetworkPolicy — and keeps every field Pulumi sent (nothing pruned
  by a CRD schema);
* the connector on the server holds the config-provider reference, never the password;
* RBAC, asked of the real API server with each ServiceAccount's own token: Connect's
  account (Strimzi's `<connect>-connect`) may get exactly the credentials Secret and no
  other Secret, nor list them; the sink's and the aggregator's accounts may read no Secret at
  all (the aggregator's Redis URL reaches its pod from a `secretKeyRef`, not through the API).

No operator runs here (Strimzi's, Prometheus'): the custom resources are stored, not
reconciled, so Connect's pods do not exist; the account Strimzi would create is created by
the test. The `up` of the component is timed against an `up` of one Namespace in the same
run (printed; no timed assertion)."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client, config, dynamic

from infra.config import load_stack
from infra.platform.cdc import CONNECT_NAME, ChangeDataCapture, ChangeDataCaptureArgs
from infra.platform.features import REDIS_APP, SECRET_NAME, FeatureStoreAccess
from infra.preview.automation import AutomationStacks
from workloads.catalogue.declarations import cdc_sink, feature_aggregator
from workloads.local.cluster import service_account_kubeconfig

KAFKA_NS, TEAM_NS, MONITORING_NS = "cdc-kafka", "cdc-team-payments-risk", "cdc-monitoring"
# the in-cluster online store as `OnlineFeatureStore.access` describes it (the store itself: test_feature_store_up)
STORE = FeatureStoreAccess(secret=SECRET_NAME, port=6379, peer={
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cdc-features"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": REDIS_APP}}})
PASSWORD = "not-in-any-custom-resource"
STRIMZI_KINDS = ("KafkaConnect", "KafkaConnector", "KafkaTopic", "KafkaUser")


def _pipeline():
    (pipeline,) = load_stack("enterprise").cdc_pipelines
    return pipeline


def _provider(kubeconfig: str):
    import pulumi_kubernetes as k8s

    return k8s.Provider("local-cluster", kubeconfig=kubeconfig, enable_server_side_apply=True)


def namespace_program(kubeconfig: str):
    def program() -> None:
        import pulumi
        import pulumi_kubernetes as k8s

        k8s.core.v1.Namespace("baseline", metadata={"name": "cdc-baseline"},
                              opts=pulumi.ResourceOptions(provider=_provider(kubeconfig)))
    return program


def _bounded(args):
    """A refused pod fails the `up` in minutes, not after the provider's 10-minute await."""
    import pulumi

    timeouts = pulumi.CustomTimeouts(create="4m", update="4m", delete="2m")
    return pulumi.ResourceTransformationResult(args.props, pulumi.ResourceOptions.merge(
        args.opts, pulumi.ResourceOptions(custom_timeouts=timeouts)))


def cdc_program(kubeconfig: str):
    """The component as the platform layer builds it for the enterprise stack, on namespaces
    of its own; the operators' CRDs are read (they are installed, their operators are not)."""
    def program() -> None:
        import pulumi
        import pulumi_kubernetes as k8s

        pulumi.runtime.register_stack_transformation(_bounded)
        provider = _provider(kubeconfig)
        on_cluster = pulumi.ResourceOptions(provider=provider)
        restricted = {"pod-security.kubernetes.io/enforce": "restricted"}
        namespaces = [k8s.core.v1.Namespace(f"ns-{ns}", metadata={"name": ns, "labels": labels}, opts=on_cluster)
                      for ns, labels in ((KAFKA_NS, {}), (TEAM_NS, restricted), (MONITORING_NS, {}))]
        strimzi = k8s.apiextensions.v1.CustomResourceDefinition.get(
            "strimzi-crd", "kafkaconnects.kafka.strimzi.io", opts=on_cluster)
        prometheus = k8s.apiextensions.v1.CustomResourceDefinition.get(
            "prometheus-crd", "servicemonitors.monitoring.coreos.com", opts=on_cluster)
        pipeline = _pipeline()
        ChangeDataCapture(
            "cdc",
            ChangeDataCaptureArgs(pipelines=(pipeline,), kafka_namespace=KAFKA_NS, kafka_cluster="strata-kafka",
                                  team_namespaces={pipeline.team: TEAM_NS}, connect_image="kafka-connect:test",
                                  sink_image="training:test", monitoring_namespace=MONITORING_NS, prometheus=True,
                                  feature_store=STORE),
            strimzi_operator=strimzi, prometheus_operator=prometheus, after=namespaces,
            credentials=pulumi.Output.secret({pipeline.name: {"username": "debezium", "password": PASSWORD}}),
            opts=pulumi.ResourceOptions(providers=[provider]))
    return program


def _missing_paths(sent, live, path: str = "") -> list[str]:
    """Every field of `sent` that `live` lacks (what a CRD schema would have pruned)."""
    if isinstance(sent, dict):
        if not isinstance(live, dict):
            return [path or "."]
        return [p for key, value in sent.items()
                for p in (_missing_paths(value, live[key], f"{path}.{key}") if key in live else [f"{path}.{key}"])]
    if isinstance(sent, list):
        if not isinstance(live, list) or len(live) != len(sent):
            return [path]
        return [p for i, (s, l) in enumerate(zip(sent, live)) for p in _missing_paths(s, l, f"{path}[{i}]")]
    return []


def _can(api_client, verb: str, namespace: str, name: str = "") -> bool:
    review = client.AuthorizationV1Api(api_client).create_self_subject_access_review({"spec": {
        "resourceAttributes": {"verb": verb, "resource": "secrets", "namespace": namespace, "name": name}}})
    return bool(review.status.allowed)


@pytest.fixture(scope="module")
def cdc_stack(local_cluster, pulumi_env, tmp_path_factory):
    kubeconfig = local_cluster.kubeconfig.read_text()
    work = tmp_path_factory.mktemp("cdc-pulumi")
    timings = {}
    baseline = AutomationStacks(work / "baseline", program=namespace_program(kubeconfig))
    cdc = AutomationStacks(work / "cdc", program=cdc_program(kubeconfig))
    baseline.create_or_select("namespace")
    baseline.up("namespace")  # once first, destroyed: both timed runs start with the CLI and provider warm
    baseline.destroy("namespace")
    cdc.create_or_select("cdc")
    for label, stacks in (("namespace", baseline), ("cdc", cdc)):
        started = time.monotonic()
        stacks.up(label)
        timings[label] = time.monotonic() - started
    state = cdc._stack("cdc").export_stack().deployment
    count = len([r for r in state["resources"] if r["type"].startswith("kubernetes:") and not r.get("external")
                 and not r["type"].startswith("pulumi:")])
    print(f"\npulumi up: one Namespace {timings['namespace']:.1f}s; the CDC component ({count} objects) "
          f"{timings['cdc']:.1f}s = {timings['cdc'] / timings['namespace']:.2f}x")
    try:
        yield cdc, work
    finally:
        for label, stacks in (("cdc", cdc), ("namespace", baseline)):
            started = time.monotonic()
            stacks.destroy(label)
            stacks.remove(label)
            print(f"pulumi destroy {label}: {time.monotonic() - started:.1f}s")


def test_the_api_server_admits_every_cdc_object_as_sent(local_cluster, cdc_stack):
    stacks, _ = cdc_stack
    state = stacks._stack("cdc").export_stack().deployment
    # what the stack created (not the CRDs it read, not the provider)
    created = [r for r in state["resources"] if r["type"].startswith("kubernetes:") and not r.get("external")
               and "metadata" in (r.get("outputs") or {})]
    kinds = sorted(r["outputs"]["kind"] for r in created)
    for kind in (*STRIMZI_KINDS, "Secret", "Role", "RoleBinding", "ServiceAccount", "Deployment", "Service",
                 "ServiceMonitor", "NetworkPolicy"):
        assert kind in kinds, f"{kind} not created: {kinds}"
    assert kinds.count("KafkaUser") == 3  # Connect's, the sink's and the aggregator's
    assert kinds.count("Deployment") == kinds.count("ServiceMonitor") == 2  # the sink and the aggregator

    api = local_cluster.api_client()
    resources = dynamic.DynamicClient(api)
    for resource in created:
        obj = resource["outputs"]
        meta = obj["metadata"]
        live = resources.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).get(
            name=meta["name"], namespace=meta.get("namespace")).to_dict()
        assert live["metadata"]["uid"] == meta["uid"], f"{obj['kind']} {meta.get('namespace')}/{meta['name']}"
        if obj["kind"] in STRIMZI_KINDS:
            pruned = _missing_paths(resource["inputs"]["spec"], live["spec"])
            assert not pruned, f"{obj['kind']} {meta['name']}: the API server dropped {pruned}"

    custom = client.CustomObjectsApi(api)
    connector = custom.get_namespaced_custom_object("kafka.strimzi.io", "v1beta2", KAFKA_NS, "kafkaconnectors",
                                                    _pipeline().name)
    assert connector["spec"]["config"]["database.password"] == f"${{secrets:{KAFKA_NS}/{_pipeline().credentials_secret}:password}}"
    for kind, plural in (("KafkaConnector", "kafkaconnectors"), ("KafkaConnect", "kafkaconnects")):
        for item in custom.list_namespaced_custom_object("kafka.strimzi.io", "v1beta2", KAFKA_NS, plural)["items"]:
            assert PASSWORD not in json.dumps(item), f"{kind} {item['metadata']['name']} holds the password"

    # the sink's pod was admitted under `restricted` and scheduled on a (kwok) node
    sink = cdc_sink(_pipeline()).name
    pods = client.CoreV1Api(api).list_namespaced_pod(TEAM_NS, label_selector=f"app.kubernetes.io/name={sink}").items
    assert pods and all(p.spec.node_name for p in pods), [p.metadata.name for p in pods]
    assert pods[0].spec.service_account_name == sink
    # no API token mounted (the ServiceAccount says automount: false; IRSA's token is its own volume)
    assert not [v.name for v in pods[0].spec.volumes or [] if v.name.startswith("kube-api-access")]
    # so was the aggregator's, its Redis URL from the team's Secret
    aggregator = feature_aggregator(_pipeline()).name
    pods = client.CoreV1Api(api).list_namespaced_pod(TEAM_NS, label_selector=f"app.kubernetes.io/name={aggregator}").items
    assert pods and all(p.spec.node_name for p in pods), [p.metadata.name for p in pods]
    assert pods[0].spec.service_account_name == aggregator
    (env,) = [e for e in pods[0].spec.containers[0].env if e.name == "STRATA_FEATURE_STORE_URL"]
    assert env.value_from.secret_key_ref.name == SECRET_NAME and env.value is None
    egress = client.NetworkingV1Api(api).read_namespaced_network_policy(f"{aggregator}-egress", TEAM_NS)
    assert [sorted(p.port for p in rule.ports) for rule in egress.spec.egress] == [[53, 53], [9093], [6379]]


def test_connect_reads_exactly_the_credentials_secret_and_the_sink_no_secret(local_cluster, cdc_stack, tmp_path):
    pipeline = _pipeline()
    admin = local_cluster.api_client()
    core = client.CoreV1Api(admin)
    connect_account = f"{CONNECT_NAME}-connect"  # Strimzi creates it with the Connect pods
    core.create_namespaced_service_account(KAFKA_NS, {"metadata": {"name": connect_account}})
    core.create_namespaced_secret(KAFKA_NS, {"metadata": {"name": "another-login"}, "stringData": {"password": "x"}})

    connect = config.new_client_from_config(config_file=str(service_account_kubeconfig(
        local_cluster, KAFKA_NS, connect_account, tmp_path / "connect.kubeconfig")))
    assert _can(connect, "get", KAFKA_NS, pipeline.credentials_secret)
    for verb, namespace, name in (("get", KAFKA_NS, "another-login"), ("get", KAFKA_NS, CONNECT_NAME),
                                  ("list", KAFKA_NS, ""), ("watch", KAFKA_NS, ""), ("update", KAFKA_NS,
                                  pipeline.credentials_secret), ("get", TEAM_NS, pipeline.credentials_secret)):
        assert not _can(connect, verb, namespace, name), f"Connect may {verb} secrets {namespace}/{name or '*'}"
    # what Strimzi's KubernetesSecretConfigProvider does at task start, and what it may not
    login = client.CoreV1Api(connect).read_namespaced_secret(pipeline.credentials_secret, KAFKA_NS)
    assert set(login.data) == {"username", "password"}
    with pytest.raises(client.exceptions.ApiException) as refused:
        client.CoreV1Api(connect).read_namespaced_secret("another-login", KAFKA_NS)
    assert refused.value.status == 403

    sink = cdc_sink(pipeline).name
    sink_client = config.new_client_from_config(config_file=str(service_account_kubeconfig(
        local_cluster, TEAM_NS, sink, tmp_path / "sink.kubeconfig")))
    for namespace, name in ((TEAM_NS, sink), (TEAM_NS, ""), (KAFKA_NS, pipeline.credentials_secret), (KAFKA_NS, sink)):
        assert not _can(sink_client, "get", namespace, name), f"the sink may get secrets {namespace}/{name or '*'}"
    aggregator = feature_aggregator(pipeline).name
    aggregator_client = config.new_client_from_config(config_file=str(service_account_kubeconfig(
        local_cluster, TEAM_NS, aggregator, tmp_path / "aggregator.kubeconfig")))
    for namespace, name in ((TEAM_NS, SECRET_NAME), (TEAM_NS, aggregator), (TEAM_NS, ""), (KAFKA_NS, aggregator)):
        assert not _can(aggregator_client, "get", namespace, name), \
            f"the aggregator may get secrets {namespace}/{name or '*'}"
