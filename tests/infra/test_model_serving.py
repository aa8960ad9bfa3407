"""Model serving on the cluster, per mode, under Pulumi's mocks: SeldonDeployment predictors
per rollout strategy, streaming (KafkaTopics, KafkaUser, worker, KEDA) and the rollout
controller's RBAC.

The committed stacks (`stack_plan` / `plans` of tests/conftest.py) show what each mode
gives the example models (fraud: canary + streaming; digits: blue-green); a small program
building one `ModelDeployment` per case covers the other strategies. Registrations are
recorded with `infra.plan.harness.make_mocks`, plus each resource's `ignoreChanges`
(read from the registration request, which the plan does not keep).
"""

from __future__ import annotations

from infra.platform.charts import IMAGES
from infra.platform.features import SECRET_NAME
from workloads.catalogue.declarations import feature_plan

import pytest

from infra.modes import capabilities
from infra.plan.harness import Plan, PlannedResource, make_mocks
from infra.plan.schemas import SchemaFetchError, ensure_crd_schemas, validate_resource
from workloads.spec import load_model_spec_file
from workloads.streaming.topics import labels_topic_for, topics_for

SDEP = "kubernetes:machinelearning.seldon.io/v1:SeldonDeployment"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
TOPIC = "kubernetes:kafka.strimzi.io/v1beta2:KafkaTopic"
USER = "kubernetes:kafka.strimzi.io/v1beta2:KafkaUser"
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
TRIGGER_AUTH = "kubernetes:keda.sh/v1alpha1:TriggerAuthentication"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
NAMESPACE = "strata-team-payments-risk"
KAFKA_NAMESPACE = "strata-kafka"
RUNTIME_PATHS = ["spec.predictors[*].traffic", "spec.predictors[*].shadow", "spec.predictors[*].replicas"]


def example(name: str, **serving):
    """An example spec with `serving.<section>` fields replaced (python names), validated again."""
    from workloads.spec import ModelSpec

    spec = load_model_spec_file(f"workloads/examples/{name}/model.yaml")
    sections = {key: getattr(spec.serving, key).model_copy(update=value) for key, value in serving.items()}
    copy = spec.model_copy(update={"serving": spec.serving.model_copy(update=sections)})
    return ModelSpec.model_validate(copy.model_dump(by_alias=True))


def with_strategy(name: str, strategy: str):
    from workloads.spec import RolloutStrategyName

    return example(name, rollout={"strategy": RolloutStrategyName(strategy)})


class Built:
    def __init__(self, plan: Plan, ignore_changes: dict[str, list[str]]):
        self.plan, self.ignore_changes = plan, ignore_changes

    def of(self, type_token: str) -> list[PlannedResource]:
        return self.plan.by_type(type_token)

    def the(self, type_token: str) -> PlannedResource:
        found = self.of(type_token)
        assert len(found) == 1, [r.name for r in found]
        return found[0]

    def named(self, type_token: str, name: str) -> PlannedResource:
        [found] = [r for r in self.of(type_token) if r.inputs["metadata"]["name"] == name]
        return found


def build(model, mode: str, online_store: bool = True) -> Built:
    """One ModelDeployment under mocks, with every operator the mode deploys (and, where
    `online_store`, the feature store's team Secret)."""
    import pulumi
    import pulumi_kubernetes as k8s

    from infra.contracts import ClusterHandle, PlatformOutputs
    from infra.models import ModelDeployment, ModelDeploymentArgs
    from infra.platform.charts import helm_release

    caps = capabilities(mode)
    records: list[PlannedResource] = []
    ignore_changes: dict[str, list[str]] = {}
    mocks, monitor = make_mocks("eu-west-1", records)
    register = monitor.RegisterResource

    def recording(request):
        ignore_changes[request.name] = list(request.ignoreChanges)
        return register(request)

    monitor.RegisterResource = recording
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project="strata", stack=mode, preview=False, monitor=monitor)

    def program():
        provider = k8s.Provider("cluster", kubeconfig="{}")
        keys = ["kuberay", "seldon", *(["strimzi"] if caps.kafka else []), *(["keda"] if caps.keda else []),
                *(["prometheus"] if caps.monitoring else [])]
        chart = {"prometheus": "kube-prometheus-stack"}
        operators = {key: helm_release(f"{key}-release", chart.get(key, key), namespace=f"strata-{key}", values={},
                                       opts=pulumi.ResourceOptions(provider=provider)) for key in keys}
        cluster = ClusterHandle(name="strata", provider=provider, kubernetes_version="1.35", gpu_nodes=caps.gpu)
        platform = PlatformOutputs(
            team_namespaces={model.team: NAMESPACE},
            mlflow_tracking_uri=pulumi.Output.from_input("http://mlflow.strata-mlflow.svc.cluster.local:5000"),
            operators=operators,
            kafka_bootstrap=pulumi.Output.from_input(f"strata-kafka-bootstrap.{KAFKA_NAMESPACE}.svc:9093")
            if caps.kafka else None,
            kafka_cluster_name="strata" if caps.kafka else None,
            kafka_namespace=KAFKA_NAMESPACE if caps.kafka else None,
            monitoring_namespace="strata-monitoring" if caps.monitoring else None,
            # as build_platform does: an online store (and its team Secret) where the model declares online views
            feature_store_secret=SECRET_NAME if online_store and feature_plan(model) is not None else None,
            feature_registry_secret="feature-registry" if online_store and feature_plan(model) is not None else None)
        ModelDeployment(model.name, ModelDeploymentArgs(model=model, capabilities=caps, namespace=NAMESPACE,
                                                        environment="test"),
                        cluster=cluster, platform=platform)

    pulumi.runtime.mocks.test(program)()
    return Built(Plan(stack=mode, resources=records, outputs={}, seconds=0.0), ignore_changes)


def predictors(sdep: PlannedResource) -> dict[str, dict]:
    return {p["name"]: p for p in sdep.inputs["spec"]["predictors"]}


def pod_of(predictor: dict) -> dict:
    [component] = predictor["componentSpecs"]
    return component["spec"]


def params(predictor: dict) -> dict[str, str]:
    return {p["name"]: p["value"] for p in predictor["graph"]["parameters"]}


@pytest.fixture(scope="module")
def built() -> dict[str, Built]:
    cases = {f"{mode}/{strategy}": (with_strategy("fraud", strategy), mode)
             for mode in ("quick", "standard", "enterprise")
             for strategy in ("none", "canary", "shadow", "ab", "blue-green")}
    cases["enterprise/fraud-grpc-wide"] = (example("fraud", realtime={"protocol": "grpc"},
                                                   streaming={"partitions": 12, "max_replicas": 8,
                                                              "replication_factor": 5, "lag_threshold": 50,
                                                              "activation_lag_threshold": 0}), "enterprise")
    cases["enterprise/realtime-off"] = (example("fraud", realtime={"enabled": False}), "enterprise")
    return {key: build(model, mode) for key, (model, mode) in cases.items()}


@pytest.fixture(scope="module")
def crd_schemas():
    try:
        return ensure_crd_schemas()
    except SchemaFetchError as error:  # as tests/infra/test_schemas.py: fail, never skip
        pytest.fail(f"could not fetch the CRD schemas: {error}")


# ------------------------------------------------------------------------------ predictors per mode and strategy

# mode -> strategy -> (stable traffic, candidate traffic or None, candidate shadow); None: one predictor
EXPECTED = {
    "quick": {s: None for s in ("none", "canary", "shadow", "ab", "blue-green")},
    "standard": {"none": None, "canary": (100, 0, False), "shadow": None, "ab": None, "blue-green": None},
    "enterprise": {"none": None, "canary": (100, 0, False), "shadow": (100, None, True), "ab": (100, 0, False),
                   "blue-green": (100, 0, False)},
}


@pytest.mark.parametrize("mode", ["quick", "standard", "enterprise"])
@pytest.mark.parametrize("strategy", ["none", "canary", "shadow", "ab", "blue-green"])
def test_predictors_per_mode_and_strategy(built, mode, strategy):
    case = built[f"{mode}/{strategy}"]
    sdep = case.the(SDEP)
    slots = predictors(sdep)
    expected = EXPECTED[mode][strategy]
    if expected is None:
        assert list(slots) == ["stable"]
        assert slots["stable"]["traffic"] == 100 and "shadow" not in slots["stable"]
        assert not case.of(ROLE) or all("rollout" not in r.name for r in case.of(ROLE))
        return
    stable_traffic, candidate_traffic, shadow = expected
    assert [p["name"] for p in sdep.inputs["spec"]["predictors"]] == ["stable", "candidate"]  # index paths fixed
    assert slots["stable"]["traffic"] == stable_traffic and "shadow" not in slots["stable"]
    assert slots["candidate"].get("traffic") == candidate_traffic
    assert slots["candidate"].get("shadow", False) is shadow
    # no challenger exists at creation: the candidate runs no pods until the controller scales it
    assert slots["candidate"]["replicas"] == 0 and "hpaSpec" not in slots["candidate"]["componentSpecs"][0]
    annotations = sdep.inputs["metadata"]["annotations"]
    assert annotations["strata.dev/candidate-replicas"] == "2"  # fraud's autoscaling.minReplicas
    assert annotations["strata.dev/rollout-strategy"] == strategy


def test_the_committed_stacks_follow_the_example_specs(plans):
    fraud = {mode: predictors(next(r for r in plans[mode].by_type(SDEP) if r.inputs["metadata"]["name"] == "fraud"))
             for mode in plans}
    digits = {mode: predictors(next(r for r in plans[mode].by_type(SDEP) if r.inputs["metadata"]["name"] == "digits"))
              for mode in plans}
    assert list(fraud["quick"]) == ["stable"] and list(digits["quick"]) == ["stable"]
    assert list(fraud["standard"]) == ["stable", "candidate"]  # canary
    assert list(digits["standard"]) == ["stable"]  # blue-green is enterprise-only
    assert {k: p["traffic"] for k, p in digits["enterprise"].items()} == {"stable": 100, "candidate": 0}


@pytest.mark.parametrize("case", ["quick/none", "standard/canary", "enterprise/shadow", "enterprise/blue-green"])
def test_every_predictor_serves_its_slot_alias_with_the_hardened_pod(built, case):
    from workloads.traffic.split import ALIAS_OF_PREDICTOR

    sdep = built[case].the(SDEP)
    assert sdep.inputs["metadata"]["annotations"]["seldon.io/no-engine"] == "true"
    assert sdep.inputs["apiVersion"] == "machinelearning.seldon.io/v1"
    for slot, predictor in predictors(sdep).items():
        label = "shadow" if (slot, case.split("/")[1]) == ("candidate", "shadow") else slot  # SLOs skip shadow
        assert params(predictor) == {
            "model": "fraud", "alias": ALIAS_OF_PREDICTOR[slot], "predictor": label, "team": "payments-risk",
            "max_batch_rows": "1024", "max_payload_bytes": "1048576", "latency_target_ms": "200.0",
            "torch_threads": "1",
            # fraud's card features: looked up by the server, the URL read from the team's Secret
            "features": feature_plan(example("fraud")).to_json(), "feature_store_url": "$(STRATA_FEATURE_STORE_URL)"}
        assert {p["name"]: p["type"] for p in predictor["graph"]["parameters"]}["max_batch_rows"] == "INT"
        pod = pod_of(predictor)
        [server, sync] = pod["containers"]
        assert server["name"] == predictor["graph"]["name"]  # Seldon binds the graph node to this container
        # the registry-sync sidecar exports this slot's alias from MLflow into the shared volume
        assert sync["name"] == "registry-sync" and sync["image"] == IMAGES["drift-monitor"].ref
        assert sync["command"] + sync["args"] == ["python", "-m", "workloads.serving.sync", "--model", "fraud",
                                                  "--alias", ALIAS_OF_PREDICTOR[slot], "--root", "/mnt/models",
                                                  "--interval", "30"]
        assert {"name": "registry", "mountPath": "/mnt/models"} in sync["volumeMounts"]
        assert {"name": "registry", "mountPath": "/mnt/models"} in server["volumeMounts"]
        assert next(e["value"] for e in sync["env"] if e["name"] == "MLFLOW_TRACKING_URI").startswith("http")
        assert sync["securityContext"]["readOnlyRootFilesystem"] is True
        assert server["image"] == IMAGES["serving"].ref
        assert server["securityContext"]["runAsNonRoot"] is True
        assert server["securityContext"]["readOnlyRootFilesystem"] is True
        assert server["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert server["resources"] == {"requests": {"cpu": "1000m", "memory": "1024Mi"},
                                       "limits": {"cpu": "1000m", "memory": "1024Mi"}}
        # the server settings of the spec (serving.realtime.server defaults), bound to the pod IP
        assert {"name": "STRATA_FEATURE_STORE_URL",
                "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "url"}}} in server["env"]
        env = {e["name"]: e["value"] for e in server["env"] if "value" in e}
        assert {k: env[k] for k in env if k.startswith("STRATA_SERVING_")} == {
            "STRATA_SERVING_HOST": "0.0.0.0", "STRATA_SERVING_WORKERS": "2", "STRATA_SERVING_THREADS": "2",
            "STRATA_SERVING_GRPC_THREADS": "2", "STRATA_SERVING_QUEUE_BUDGET_MS": "100"}
        assert not [k for k in env if k.startswith("GUNICORN_")]
        assert server["livenessProbe"]["httpGet"]["path"] == "/health/ping"
        assert server["readinessProbe"]["httpGet"]["path"] == "/health/status"
        assert pod["serviceAccountName"] == "fraud-serving" and pod["automountServiceAccountToken"] is False
        selector = {"seldon-deployment-id": "fraud", "strata.dev/predictor": slot}
        [term] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"] == {"topologyKey": "kubernetes.io/hostname",
                                           "labelSelector": {"matchLabels": selector}}
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"]["podAntiAffinity"]
        [spread] = pod["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone"
        assert spread["labelSelector"] == {"matchLabels": selector}
        labels = predictor["componentSpecs"][0]["metadata"]["labels"]
        assert labels["strata.dev/predictor"] == slot and labels["strata.dev/model"] == "fraud"


def test_stable_autoscales_on_cpu_with_seldons_hpa_where_there_is_no_keda(built):
    for mode in ("quick", "standard"):
        stable = predictors(built[f"{mode}/canary"].the(SDEP))["stable"]
        component = stable["componentSpecs"][0]
        assert component["hpaSpec"] == {"minReplicas": 2, "maxReplicas": 6, "metricsv2": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}, mode
        assert "kedaSpec" not in component and stable["replicas"] == 2


def test_with_keda_stable_scales_on_requests_per_pod_at_the_measured_capacity_or_cpu(built):
    from workloads.spec import SERVER_CAPACITY_RPS_PER_CPU

    stable = predictors(built["enterprise/canary"].the(SDEP))["stable"]
    component = stable["componentSpecs"][0]
    assert "hpaSpec" not in component and stable["replicas"] == 2
    keda_spec = component["kedaSpec"]
    requests, cpu = keda_spec.pop("triggers")
    assert keda_spec == {"minReplicaCount": 2, "maxReplicaCount": 6, "pollingInterval": 15, "cooldownPeriod": 300}
    # fraud: 1 CPU per pod, targetCpuPercent 70 -> 70% of one CPU's measured requests/s
    assert requests == {"type": "prometheus", "name": "requests-per-pod", "metadata": {
        "serverAddress": "http://prometheus-operated.strata-monitoring.svc:9090",
        "query": 'sum(rate(strata_serving_requests_total{model="fraud",predictor="stable"}[1m]))',
        "threshold": f"{SERVER_CAPACITY_RPS_PER_CPU * 0.7:g}"}}
    assert cpu == {"type": "cpu", "name": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}
    # the candidate never autoscales: the rollout controller sizes it
    assert "kedaSpec" not in predictors(built["enterprise/canary"].the(SDEP))["candidate"]["componentSpecs"][0]


def test_the_requests_per_pod_target_follows_the_spec():
    import yaml

    from workloads.spec import SERVER_CAPACITY_RPS_PER_CPU, SpecError, parse_model_spec

    wide = example("fraud", realtime={"cpu": 2.0})
    assert wide.serving.realtime.requests_per_pod_target == round(SERVER_CAPACITY_RPS_PER_CPU * 2 * 0.7, 1)
    explicit = example("fraud", realtime={"autoscaling": wide.serving.realtime.autoscaling.model_copy(
        update={"target_requests_per_second": 150.0})})
    assert explicit.serving.realtime.requests_per_pod_target == 150.0
    raw = yaml.safe_load(open("workloads/examples/fraud/model.yaml"))
    raw["serving"]["realtime"]["autoscaling"]["targetRequestsPerSecond"] = 0
    with pytest.raises(SpecError, match="serving.realtime.autoscaling.targetRequestsPerSecond"):
        parse_model_spec(raw)


def test_grpc_models_get_a_grpc_endpoint(built):
    for predictor in predictors(built["enterprise/fraud-grpc-wide"].the(SDEP)).values():
        assert predictor["graph"]["endpoint"] == {"type": "GRPC", "httpPort": 9000, "grpcPort": 5000}
    for predictor in predictors(built["enterprise/canary"].the(SDEP)).values():
        assert predictor["graph"]["endpoint"]["type"] == "REST"


def test_no_realtime_no_seldon_deployment_and_no_controller(built):
    case = built["enterprise/realtime-off"]
    assert not case.of(SDEP) and not [r for r in case.of(DEPLOYMENT) if r.name.endswith("-rollout-deployment")]
    assert case.of(SCALED_OBJECT)  # the stream still runs


@pytest.mark.parametrize("case", ["quick/none", "standard/canary", "enterprise/shadow", "enterprise/ab"])
def test_runtime_weights_survive_pulumi_up(built, case):
    sdep = built[case].the(SDEP)
    assert built[case].ignore_changes[sdep.name] == RUNTIME_PATHS


def test_a_split_without_istio_is_refused():
    from infra.models.serving import ModelServingArgs
    from infra.modes import RolloutStrategy

    def args(mode: str, strategy: RolloutStrategy) -> ModelServingArgs:
        return ModelServingArgs(model=example("fraud"), capabilities=capabilities(mode), namespace=NAMESPACE,
                                strategy=strategy, image="strata/serving:0.1.0", service_account="fraud-serving",
                                labels={}, feature_store_secret=SECRET_NAME)

    with pytest.raises(ValueError, match="'canary' .* needs Istio, which mode 'quick' does not deploy"):
        args("quick", RolloutStrategy.CANARY)
    assert args("quick", RolloutStrategy.NONE).strategy is RolloutStrategy.NONE
    assert args("standard", RolloutStrategy.CANARY).capabilities.istio


@pytest.mark.parametrize("case", ["quick/none", "standard/canary", "enterprise/blue-green"])
def test_one_pdb_per_predictor_selecting_its_pods(built, case):
    sdep = built[case].the(SDEP)
    pdbs = {r.inputs["metadata"]["name"]: r.inputs for r in built[case].of(PDB) if r.name.startswith("fraud-serving")}
    assert set(pdbs) == {f"fraud-{slot}" for slot in predictors(sdep)}
    for slot in predictors(sdep):
        spec = pdbs[f"fraud-{slot}"]["spec"]
        assert spec["maxUnavailable"] == 1
        assert spec["selector"] == {"matchLabels": {"seldon-deployment-id": "fraud", "strata.dev/predictor": slot}}


def test_the_sdep_waits_for_the_seldon_operator(built):
    case = built["standard/canary"]
    release = next(r for r in case.of("kubernetes:helm.sh/v3:Release") if r.name == "seldon-release")
    assert release.urn in case.the(SDEP).dependencies


# ------------------------------------------------------------------------------ streaming


def test_streaming_only_where_the_mode_has_kafka_and_keda(built):
    for mode in ("quick", "standard"):
        case = built[f"{mode}/canary"]
        assert not case.of(TOPIC) and not case.of(USER) and not case.of(SCALED_OBJECT)
        assert not [r for r in case.of(DEPLOYMENT) if r.inputs["metadata"]["name"] == "fraud-stream"]
    assert built["enterprise/canary"].of(SCALED_OBJECT)


@pytest.mark.parametrize("case, partitions, replicas, max_replicas, lag, activation", [
    ("enterprise/canary", 6, 3, 6, 200, 20),
    ("enterprise/fraud-grpc-wide", 12, 3, 8, 50, 0),  # replicationFactor 5 capped by the 3 brokers
])
def test_topics_and_scaled_object_follow_the_spec(built, case, partitions, replicas, max_replicas, lag, activation):
    built_case = built[case]
    topics = topics_for("fraud")
    by_topic = {r.inputs["spec"]["topicName"]: r.inputs for r in built_case.of(TOPIC)}
    # + the labels topic of the quality service (enterprise has drift monitoring)
    assert set(by_topic) == {topics.input, topics.output, topics.dead_letter, labels_topic_for("fraud")}
    for topic in by_topic.values():
        assert topic["metadata"]["namespace"] == KAFKA_NAMESPACE
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "strata"
        assert topic["spec"]["replicas"] == replicas
        assert topic["spec"]["config"]["min.insync.replicas"] == 2
    assert by_topic[topics.input]["spec"]["partitions"] == partitions
    assert by_topic[topics.output]["spec"]["partitions"] == partitions
    assert by_topic[topics.dead_letter]["spec"]["partitions"] == 3
    assert by_topic[topics.input]["spec"]["config"]["retention.ms"] == 72 * 3_600_000  # retentionHours default
    assert by_topic[topics.dead_letter]["spec"]["config"]["retention.ms"] == 7 * 24 * 3_600_000

    spec = built_case.the(SCALED_OBJECT).inputs["spec"]
    assert spec["scaleTargetRef"] == {"name": "fraud-stream", "apiVersion": "apps/v1", "kind": "Deployment"}
    assert spec["minReplicaCount"] == 1 and spec["maxReplicaCount"] == max_replicas <= partitions
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"] == {
        "bootstrapServers": f"strata-kafka-bootstrap.{KAFKA_NAMESPACE}.svc:9093",
        "consumerGroup": "strata-fraud-stream", "topic": topics.input,
        "lagThreshold": str(lag), "activationLagThreshold": str(activation),
        "offsetResetPolicy": "earliest", "allowIdleConsumers": "false", "scaleToZeroOnInvalidOffset": "false",
        "excludePersistentLag": "false", "tls": "enable", "sasl": "none"}
    assert trigger["authenticationRef"] == {"name": "fraud-stream-kafka-tls", "kind": "TriggerAuthentication"}
    auth = built_case.the(TRIGGER_AUTH).inputs
    assert auth["metadata"]["namespace"] == NAMESPACE
    assert auth["spec"] == {"secretTargetRef": [  # the mirrored cluster CA and KafkaUser Secrets
        {"parameter": "ca", "name": "strata-cluster-ca-cert", "key": "ca.crt"},
        {"parameter": "cert", "name": "fraud-stream", "key": "user.crt"},
        {"parameter": "key", "name": "fraud-stream", "key": "user.key"}]}


def test_the_consumer_group_is_the_workers_default():
    from workloads.streaming.worker import WorkerConfig

    assert WorkerConfig(bootstrap="b", model="fraud").resolved_group() == "strata-fraud-stream"


def test_kafka_user_has_least_acls(built):
    user = built["enterprise/canary"].named(USER, "fraud-stream").inputs
    topics = topics_for("fraud")
    assert user["metadata"]["namespace"] == KAFKA_NAMESPACE
    assert user["spec"]["authentication"] == {"type": "tls"}
    # the reflector copies the user's Secret into the worker's namespace, and nowhere else
    reflector = "reflector.v1.k8s.emberstack.com/"
    assert user["spec"]["template"]["secret"]["metadata"]["annotations"] == {
        f"{reflector}reflection-allowed": "true", f"{reflector}reflection-allowed-namespaces": NAMESPACE,
        f"{reflector}reflection-auto-enabled": "true", f"{reflector}reflection-auto-namespaces": NAMESPACE}
    acls = user["spec"]["authorization"]["acls"]
    assert user["spec"]["authorization"]["type"] == "simple"
    assert sorted((a["resource"]["type"], a["resource"]["name"], a["resource"]["patternType"],
                   tuple(a["operations"]), a["type"]) for a in acls) == sorted([
        ("topic", topics.input, "literal", ("Read",), "allow"),
        ("group", "strata-fraud-stream", "literal", ("Read",), "allow"),
        ("topic", topics.output, "literal", ("Write",), "allow"),
        ("topic", topics.dead_letter, "literal", ("Write",), "allow"),
    ])


def test_quality_service_reads_scored_and_labels_with_its_own_identity(built):
    """Issue 12 item 3: the quality service is deployed (its alerts ship), with read-only ACLs."""
    case = built["enterprise/canary"]
    user = case.named(USER, "fraud-quality").inputs
    topics = topics_for("fraud")
    acls = {(a["resource"]["type"], a["resource"]["name"], tuple(a["operations"])) for a in user["spec"]["authorization"]["acls"]}
    assert acls == {("topic", topics.output, ("Read",)), ("topic", labels_topic_for("fraud"), ("Read",)),
                    ("group", "strata-fraud-quality", ("Read",))}
    pod = case.named(DEPLOYMENT, "fraud-quality").inputs["spec"]["template"]["spec"]
    service, _sync = pod["containers"]
    argv = service["command"] + service["args"]
    assert argv[:3] == ["python", "-m", "workloads.monitoring.quality"]
    env = {e["name"]: e.get("value") for e in service["env"]}
    assert env["STRATA_KAFKA_SSL_CERTFILE"].endswith("/user.crt")
    sources = {s["secret"]["name"] for v in pod["volumes"] if v["name"] == "kafka-tls" for s in v["projected"]["sources"]}
    assert sources == {"strata-cluster-ca-cert", "fraud-quality"}


def test_stream_worker_deployment(built):
    case = built["enterprise/canary"]
    deployment = case.named(DEPLOYMENT, "fraud-stream")
    spec = deployment.inputs["spec"]
    pod = spec["template"]["spec"]
    [worker, sync] = pod["containers"]
    assert sync["name"] == "registry-sync" and sync["args"][sync["args"].index("--alias") + 1] == "champion"
    assert next(e["value"] for e in sync["env"] if e["name"] == "MLFLOW_TRACKING_URI").startswith("http")
    argv = worker["command"] + worker["args"]
    assert argv[:3] == ["python", "-m", "workloads.streaming"]
    assert argv[argv.index("--bootstrap") + 1] == f"strata-kafka-bootstrap.{KAFKA_NAMESPACE}.svc:9093"
    assert argv[argv.index("--model") + 1] == "fraud" and argv[argv.index("--group") + 1] == "strata-fraud-stream"
    assert argv[argv.index("--metrics-host") + 1] == "$(POD_IP)"  # the pod's address, not 0.0.0.0
    tls_dir = next(m["mountPath"] for m in worker["volumeMounts"] if m["name"] == "kafka-tls")
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert [env[name] for name in ("STRATA_KAFKA_SSL_CAFILE", "STRATA_KAFKA_SSL_CERTFILE", "STRATA_KAFKA_SSL_KEYFILE")] == [
        f"{tls_dir}/ca.crt", f"{tls_dir}/user.crt", f"{tls_dir}/user.key"]  # the Secret's keys
    assert pod["terminationGracePeriodSeconds"] >= 30  # SIGTERM finishes the batch, commits
    assert {"name": "kafka-tls", "projected": {"defaultMode": 0o440, "sources": [
        {"secret": {"name": "strata-cluster-ca-cert", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"secret": {"name": "fraud-stream", "items": [{"key": "user.crt", "path": "user.crt"}]}},
        {"secret": {"name": "fraud-stream", "items": [{"key": "user.key", "path": "user.key"}]}},
    ]}} in pod["volumes"]
    assert worker["image"] == IMAGES["stream-worker"].ref
    assert case.ignore_changes[deployment.name] == ["spec.replicas"]  # KEDA's HPA owns it
    pdb = case.named(PDB, "fraud-stream").inputs["spec"]
    assert pdb["selector"] == spec["selector"] and pdb["maxUnavailable"] == 1
    match = spec["selector"]["matchLabels"]
    [term] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["labelSelector"] == {"matchLabels": match}


def test_worker_argv_is_accepted_by_the_worker():
    """The worker's own parser takes the command line the Deployment runs."""
    import argparse
    from unittest import mock

    from infra.models.streaming import ModelStreamingArgs, worker_deployment_spec
    from workloads.streaming import worker as worker_module

    args = ModelStreamingArgs(model=example("fraud"), namespace=NAMESPACE, kafka_namespace=KAFKA_NAMESPACE,
                              kafka_cluster="strata", image="strata/stream-worker:0.1.0",
                              service_account="fraud-serving", labels={}, feature_store_secret=SECRET_NAME)
    container, _sync = worker_deployment_spec(args)["template"]["spec"]["containers"]
    parsed: dict = {}

    class Stop(Exception):
        pass

    def capture(self, argv=None, namespace=None):
        parsed.update(vars(original(self, argv, namespace)))
        raise Stop

    original = argparse.ArgumentParser.parse_args
    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture), pytest.raises(Stop):
        worker_module.main(container["args"])
    assert parsed["model"] == "fraud" and parsed["batch_size"] == example("fraud").serving.streaming.batch_size
    assert parsed["metrics_port"] == 9109 and parsed["registry"] == "/mnt/models"
    # fraud looks its card features up: the plan as the spec says, the URL from the team's Secret
    assert parsed["features"] == feature_plan(example("fraud")).to_json()
    assert parsed["feature_store_url"] == "$(STRATA_FEATURE_STORE_URL)"


def test_a_model_with_online_views_is_refused_without_an_online_store():
    """No serving, stream worker or CronJob that would look features up nowhere: the error names the model and view."""
    from infra.models.serving import ModelServingArgs
    from infra.models.streaming import ModelStreamingArgs
    from infra.modes import RolloutStrategy

    fraud = example("fraud")
    with pytest.raises(ValueError, match="model 'fraud' declares online feature view\\(s\\) card_activity_stream"):
        ModelServingArgs(model=fraud, capabilities=capabilities("quick"), namespace=NAMESPACE,
                         strategy=RolloutStrategy.NONE, image="strata/serving:0.1.0", service_account="fraud-serving",
                         labels={})
    with pytest.raises(ValueError, match="ModelStreamingArgs.feature_store_secret: model 'fraud' .* card_activity_stream"):
        ModelStreamingArgs(model=fraud, namespace=NAMESPACE, kafka_namespace=KAFKA_NAMESPACE, kafka_cluster="strata",
                           image="strata/stream-worker:0.1.0", service_account="fraud-serving", labels={})
    with pytest.raises(ValueError, match="model 'fraud' declares online feature view\\(s\\) card_activity_stream but "
                                         "the platform has no online store"):
        build(fraud, "quick", online_store=False)


# ------------------------------------------------------------------------------ rollout controller


@pytest.mark.parametrize("case", ["standard/canary", "enterprise/shadow", "enterprise/blue-green"])
def test_controller_rbac_grants_exactly_what_it_needs(built, case):
    built_case = built[case]
    assert not [r for r in built_case.plan.resources if r.kind in ("ClusterRole", "ClusterRoleBinding")]
    role = built_case.named(ROLE, "fraud-rollout").inputs
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["machinelearning.seldon.io"], "resources": ["seldondeployments"], "resourceNames": ["fraud"],
         "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["fraud-rollout-state"],
         "verbs": ["get", "update", "patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"] + rule.get("resourceNames", [])
    binding = built_case.named(ROLE_BINDING, "fraud-rollout").inputs
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fraud-rollout"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fraud-rollout", "namespace": NAMESPACE}]
    # the SeldonDeployment it may patch is this model's
    assert built_case.the(SDEP).inputs["metadata"]["name"] == role["rules"][0]["resourceNames"][0]


def test_controller_deployment_and_its_state(built):
    case = built["enterprise/canary"]
    deployment = case.named(DEPLOYMENT, "fraud-rollout").inputs
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["serviceAccountName"] == "fraud-rollout" and pod["automountServiceAccountToken"] is True
    [controller] = pod["containers"]
    argv = controller["command"] + controller["args"]
    assert argv == ["python", "-m", "workloads.rollout", "--model", "fraud", "--cluster",
                    "--spec-file", "/etc/strata/spec/model.json", "--health-host", "$(POD_IP)", "--health-port", "8080"]
    assert {"name": "model-spec", "configMap": {"name": "fraud-spec",
                                                "items": [{"key": "model.json", "path": "model.json"}]}} in pod["volumes"]
    env = {e["name"]: e.get("value") for e in controller["env"]}
    assert env["STRATA_PROMETHEUS_URL"] == "http://prometheus-operated.strata-monitoring.svc:9090"
    assert env["STRATA_ROLLOUT_STATE_CONFIGMAP"] == "fraud-rollout-state"
    state = [r for r in case.of("kubernetes:core/v1:ConfigMap") if r.inputs["metadata"]["name"] == "fraud-rollout-state"]
    assert len(state) == 1 and case.ignore_changes[state[0].name] == ["data"]


def test_no_controller_without_a_candidate(built):
    for case in ("quick/canary", "standard/blue-green", "enterprise/none"):
        assert not [r for r in built[case].of(ROLE) if r.inputs["metadata"]["name"] == "fraud-rollout"]
        assert not [r for r in built[case].of(DEPLOYMENT) if r.inputs["metadata"]["name"] == "fraud-rollout"]


# ------------------------------------------------------------------------------ schemas, policy, builders


@pytest.mark.parametrize("case", ["quick/none", "standard/canary", "enterprise/shadow", "enterprise/fraud-grpc-wide"])
def test_every_object_validates_against_its_schema(built, crd_schemas, case):
    findings = [validate_resource(r, "1.35", crd_schemas) for r in built[case].plan.resources]
    findings = [f for f in findings if f is not None]
    failures = [f"{f.resource}: {f.errors}" for f in findings if f.errors]
    assert not failures, "\n".join(failures)
    checked = {f.resource.split(" ")[0] for f in findings}
    assert SDEP in checked
    if case.startswith("enterprise"):
        assert {SCALED_OBJECT, TRIGGER_AUTH, TOPIC, USER} <= checked


@pytest.mark.parametrize("case", ["quick/none", "standard/canary", "enterprise/shadow", "enterprise/blue-green"])
def test_no_policy_violations(built, case):
    from infra.policy import evaluate

    results = evaluate(built[case].plan.resources, capabilities(case.split("/")[0]).policy_enforcement)
    assert [r.format() for r in results] == []


@pytest.mark.parametrize("replication, brokers, replicas, min_isr", [(3, 3, 3, 2), (5, 3, 3, 2), (2, 3, 2, 1),
                                                                     (1, 3, 1, 1), (3, 4, 3, 2)])
def test_topic_replication_is_capped_by_the_brokers(replication, brokers, replicas, min_isr):
    from infra.models.streaming import ModelStreamingArgs, topic_specs

    model = example("fraud", streaming={"replication_factor": replication})
    args = ModelStreamingArgs(model=model, namespace=NAMESPACE, kafka_namespace=KAFKA_NAMESPACE, kafka_cluster="strata",
                              image="strata/stream-worker:0.1.0", service_account="fraud-serving", labels={},
                              kafka_brokers=brokers, feature_store_secret=SECRET_NAME)
    for _, spec in topic_specs(args).values():
        assert spec.replicas == replicas and spec.config["min.insync.replicas"] == min_isr


def test_seldon_builder_refuses_what_breaks_the_contract():
    from pydantic import ValidationError

    from infra.crds import seldon

    graph = seldon.PredictiveUnit(name="model")
    pod = [seldon.SeldonPodSpec(spec={"containers": [{"name": "model", "image": "x:1"}]})]
    with pytest.raises(ValidationError, match="traffic-split slots"):
        seldon.PredictorSpec(name="canary", graph=graph, component_specs=pod)
    with pytest.raises(ValidationError, match="no container of that name"):
        seldon.PredictorSpec(name="stable", graph=seldon.PredictiveUnit(name="other"), component_specs=pod)
    stable = seldon.PredictorSpec(name="stable", graph=graph, component_specs=pod, traffic=90)
    with pytest.raises(ValidationError, match="sum to 100, got 90"):
        seldon.SeldonDeploymentSpec(predictors=[stable, seldon.PredictorSpec(
            name="candidate", graph=graph, component_specs=pod, shadow=True)])
    with pytest.raises(ValidationError, match="unique"):
        seldon.SeldonDeploymentSpec(predictors=[stable.model_copy(update={"traffic": 50})] * 2)
    with pytest.raises(ValidationError, match="minReplicas"):
        seldon.SeldonHpaSpec(min_replicas=3, max_replicas=2)
    with pytest.raises(ValidationError, match="trafic|extra"):
        seldon.PredictorSpec.model_validate({"name": "stable", "graph": {"name": "model"}, "trafic": 100})


def test_keda_builder_refuses_bad_bounds():
    from pydantic import ValidationError

    from infra.crds import keda

    trigger = keda.KafkaTrigger(bootstrap_servers="b:9093", consumer_group="g", topic="t", lag_threshold=10,
                                activation_lag_threshold=1).trigger("lag", None)
    target = keda.ScaleTargetRef(name="w")
    with pytest.raises(ValidationError, match=r"minReplicaCount \(3\) > maxReplicaCount \(2\)"):
        keda.ScaledObjectSpec(scale_target_ref=target, triggers=[trigger], min_replica_count=3, max_replica_count=2)
    with pytest.raises(ValidationError, match="idleReplicaCount"):
        keda.ScaledObjectSpec(scale_target_ref=target, triggers=[trigger], min_replica_count=1, idle_replica_count=1)
    with pytest.raises(ValidationError):
        keda.KafkaTrigger(bootstrap_servers="b", consumer_group="g", topic="t", lag_threshold=0,
                          activation_lag_threshold=0)
    assert trigger.metadata["lagThreshold"] == "10" and trigger.metadata["allowIdleConsumers"] == "false"
