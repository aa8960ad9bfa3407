"""The online feature store on the cluster, under Pulumi mocks, in every stack and mode:
the store the mode's `online_store` row chooses (in-cluster Redis / ElastiCache Valkey), its
token only ever a secret, the URL reaching the consumers through the team's Secret (the
SeldonDeployment's graph, the stream worker's argv, the materialization CronJob), and
NetworkPolicies that admit exactly the consumers."""

from __future__ import annotations

import base64
import functools
import json
from typing import Any, Mapping

import pytest

from infra.models.features import FEATURE_SPEC_KEY, schedule_for
from infra.modes import OnlineStore, capabilities
from infra.plan.cost import estimate
from infra.plan.harness import Plan, PlannedResource, run_program
from infra.platform.charts import IMAGES
from infra.platform.features import CONSUMER_COMPONENTS, REDIS_APP, SECRET_NAME, URL_ENV
from infra.config import read_stack_file
from tests.conftest import STACKS, plan_of, stack_config_with_models
from tests.features.specs import features_section
from workloads.catalogue.declarations import feature_plan
from workloads.spec import parse_model_spec

FEATURED = "model-00"  # team-0, online views (card_activity, TTL 2h)
PLAIN_SAME_TEAM = "model-04"  # team-0, no features
PLAIN_OTHER_TEAM = "model-01"  # team-1, no features
TEAM_NS = "team-team-0"
SDEP = "kubernetes:machinelearning.seldon.io/v1:SeldonDeployment"
REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"


def featured_config(stack: str) -> dict:
    """Five copies of fraud's spec: FEATURED with the test views, the others without features."""
    raw = stack_config_with_models(stack, 5)
    for key, entry in raw["strata:models"].items():
        entry["features"] = features_section() if key == FEATURED else None
    return raw


def without_features(stack: str) -> dict:
    """The committed stack with every example spec's `features` removed."""
    raw = read_stack_file(stack)
    for entry in raw["strata:models"].values():
        entry["features"] = None
    return raw


@functools.lru_cache(maxsize=None)
def featured_plan(stack: str) -> Plan:
    return run_program(stack, featured_config(stack))


@pytest.fixture(scope="module", params=STACKS)
def plan(request) -> Plan:
    return featured_plan(request.param)


def named(plan: Plan, kind: str, name: str, namespace: str | None = None) -> PlannedResource:
    found = [r for r in plan.of_kind(kind) if r.inputs["metadata"]["name"] == name
             and (namespace is None or r.inputs["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, f"expected one {kind} {name} in {namespace}, got {[r.name for r in found]}"
    return found[0]


def store_of(plan: Plan) -> OnlineStore:
    return capabilities(plan.stack).online_store


def token_of(plan: Plan) -> str:
    if store_of(plan) is OnlineStore.IN_CLUSTER_REDIS:
        data = named(plan, "Secret", REDIS_APP, "features").inputs["data"]
        return base64.b64decode(data["password"]).decode()
    return plan.by_type(REPLICATION_GROUP)[0].inputs["authToken"]


def plain_strings(value: Any, path: str, secret_paths: tuple[str, ...]):
    """Every string in `value` outside the secret property paths (a prefix match)."""
    if any(path == p or path.startswith(p + ".") or path.startswith(p + "[") for p in secret_paths):
        return
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from plain_strings(item, f"{path}.{key}" if path else key, secret_paths)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from plain_strings(item, f"{path}[{index}]", secret_paths)


# --- which store, per mode ----------------------------------------------------------------------------

def test_the_modes_table_chooses_the_store():
    assert [capabilities(m).online_store for m in STACKS] == [
        OnlineStore.IN_CLUSTER_REDIS, OnlineStore.ELASTICACHE, OnlineStore.ELASTICACHE_MULTI_AZ]


@pytest.mark.parametrize("stack", STACKS)
def test_no_feature_store_where_no_model_declares_online_views(stack):
    plan = run_program(stack, without_features(stack))
    assert [m.name for m in plan.spec.models] == ["digits", "fraud"] and not any(feature_plan(m) for m in plan.spec.models)
    assert not plan.by_type("strata:platform:OnlineFeatureStore")
    assert not plan.by_type("strata:cloud:FeatureCache")
    assert not plan.by_type("strata:models:FeatureMaterialization")
    assert not [r for r in plan.of_kind("Secret") if r.inputs["metadata"]["name"] == SECRET_NAME]
    assert "features" not in {r.inputs["metadata"]["name"] for r in plan.of_kind("Namespace")}


def test_the_committed_stacks_give_fraud_its_card_features(stack_plan):
    """The example specs: fraud declares the streaming view card_activity_stream, digits no features."""
    featured = {m.name: [v.name for v in feature_plan(m).views] for m in stack_plan.spec.models if feature_plan(m)}
    assert featured == {"fraud": ["card_activity_stream"]}
    [store] = stack_plan.by_type("strata:platform:OnlineFeatureStore")
    assert len(stack_plan.by_type("strata:cloud:FeatureCache")) == \
        (0 if store_of(stack_plan) is OnlineStore.IN_CLUSTER_REDIS else 1)
    fraud_ns = named(stack_plan, "SeldonDeployment", "fraud").inputs["metadata"]["namespace"]
    assert [r.inputs["metadata"]["namespace"] for r in stack_plan.of_kind("Secret")
            if r.inputs["metadata"]["name"] == SECRET_NAME] == [fraud_ns]
    for predictor in named(stack_plan, "SeldonDeployment", "fraud").inputs["spec"]["predictors"]:
        parameters = {p["name"]: p["value"] for p in predictor["graph"]["parameters"]}
        assert json.loads(parameters["features"])["views"][0]["name"] == "card_activity_stream"
        assert parameters["feature_store_url"] == f"$({URL_ENV})"
    for predictor in named(stack_plan, "SeldonDeployment", "digits").inputs["spec"]["predictors"]:
        assert "features" not in {p["name"] for p in predictor["graph"]["parameters"]}
    streamed = [r for r in stack_plan.resources if r.is_kubernetes and r.kind == "Deployment"
                and (r.inputs["metadata"].get("labels") or {}).get("strata.dev/feature-view") == "card_activity_stream"]
    jobs = [r for r in stack_plan.of_kind("CronJob") if r.inputs["metadata"]["name"] == "fraud-materialize"]
    if streamed:  # a CDC aggregator keeps the view current: nothing to materialize from gold
        assert not jobs, "the streamed view is materialized from a gold table nothing writes"
    else:  # the 2d TTL: materialized every 12 h
        assert [j.inputs["metadata"]["namespace"] for j in jobs] == [fraud_ns]
        assert jobs[0].inputs["spec"]["schedule"] == "0 */12 * * *"
    assert bool(streamed) == (stack_plan.spec.capabilities.kafka and bool(stack_plan.spec.cdc_pipelines))


def test_quick_runs_redis_in_the_cluster_with_auth_from_a_mounted_config(plan):
    if store_of(plan) is not OnlineStore.IN_CLUSTER_REDIS:
        assert not [r for r in plan.of_kind("StatefulSet") if r.inputs["metadata"]["name"] == REDIS_APP]
        return
    assert not [r for r in plan.resources if r.type.startswith("aws:elasticache")]
    namespace = named(plan, "Namespace", "features")
    assert namespace.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    redis = named(plan, "StatefulSet", REDIS_APP, "features").inputs["spec"]
    pod = redis["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "redis:8.2.2"
    assert container["command"] == ["redis-server", "/etc/redis/redis.conf"]  # no password in argv
    assert container["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert {"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": {"name": REDIS_APP, "key": "password"}}} \
        in container["env"]
    [config] = [v for v in pod["volumes"] if v["name"] == "config"]
    assert config["secret"]["secretName"] == REDIS_APP
    conf = base64.b64decode(named(plan, "Secret", REDIS_APP, "features").inputs["data"]["redis.conf"]).decode()
    assert f"requirepass {token_of(plan)}" in conf.splitlines() and "appendonly yes" in conf.splitlines()
    assert redis["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    service = named(plan, "Service", REDIS_APP, "features").inputs["spec"]
    assert service["ports"] == [{"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}]
    assert service["selector"] == redis["selector"]["matchLabels"]


def test_standard_and_enterprise_use_elasticache_valkey_encrypted_with_the_platform_key(plan):
    groups = plan.by_type(REPLICATION_GROUP)
    if store_of(plan) is OnlineStore.IN_CLUSTER_REDIS:
        assert not groups
        return
    [group] = groups
    inputs = group.inputs
    assert inputs["engine"] == "valkey"
    assert inputs["transitEncryptionEnabled"] is True and inputs["transitEncryptionMode"] == "required"
    assert inputs["atRestEncryptionEnabled"] is True
    [key] = [r for r in plan.by_type("aws:kms/key:Key") if r.name == f"{plan.stack}-storage-key"]  # the platform's key
    assert inputs["kmsKeyId"] == f"arn:aws:mock:::{key.name}"
    multi_az = store_of(plan) is OnlineStore.ELASTICACHE_MULTI_AZ
    assert inputs["numCacheClusters"] == (3 if multi_az else 1)
    assert inputs["automaticFailoverEnabled"] is multi_az and inputs["multiAzEnabled"] is multi_az
    # private subnets only, and only the cluster's nodes may connect
    [subnets] = plan.by_type("aws:elasticache/subnetGroup:SubnetGroup")
    private = {f"{r.name}-id" for r in plan.by_type("aws:ec2/subnet:Subnet") if "private" in r.name}
    assert private and set(subnets.inputs["subnetIds"]) == private
    [rule] = [r for r in plan.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
              if r.name.endswith("feature-cache-sg-valkey-from-cluster")]
    assert rule.inputs["fromPort"] == rule.inputs["toPort"] == 6379
    assert rule.inputs["referencedSecurityGroupId"].endswith("-cluster") and "cidrIpv4" not in rule.inputs
    [group_sg] = inputs["securityGroupIds"]
    assert group_sg == rule.inputs["securityGroupId"]
    assert not [r for r in plan.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
                if r.inputs.get("securityGroupId") == group_sg and r is not rule]


# --- the token is a secret, everywhere ---------------------------------------------------------------

def test_the_token_is_only_ever_a_secret(plan):
    token = token_of(plan)
    assert len(token) >= 32
    leaks = [(r.name, path) for r in plan.resources for path, text in plain_strings(r.inputs, "", r.secret_paths)
             if token in text]
    assert leaks == []
    assert token not in json.dumps(plan.outputs)
    if store_of(plan) is not OnlineStore.IN_CLUSTER_REDIS:
        assert "authToken" in plan.by_type(REPLICATION_GROUP)[0].secret_paths
        [version] = [r for r in plan.by_type("aws:secretsmanager/secretVersion:SecretVersion")
                     if r.name.endswith("feature-cache-auth-value")]
        assert version.inputs["secretString"] == token and "secretString" in version.secret_paths


def test_each_consumer_team_gets_the_url_in_a_secret(plan):
    secrets = [r for r in plan.of_kind("Secret") if r.inputs["metadata"]["name"] == SECRET_NAME]
    assert [s.inputs["metadata"]["namespace"] for s in secrets] == [TEAM_NS]  # team-1..3 have no feature models
    [secret] = secrets
    assert "stringData" in secret.secret_paths
    url = secret.inputs["stringData"]["url"]
    if store_of(plan) is OnlineStore.IN_CLUSTER_REDIS:
        assert url == f"redis://:{token_of(plan)}@{REDIS_APP}.features.svc.cluster.local:6379/0"
    else:
        host = plan.by_type(REPLICATION_GROUP)[0].inputs["replicationGroupId"]
        assert url == f"rediss://:{token_of(plan)}@master.{host}.cache.mock:6379/0"


# --- the consumers read it from the Secret ------------------------------------------------------------

URL_FROM_SECRET = {"name": URL_ENV, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "url"}}}


def test_the_seldon_deployment_reads_the_url_from_the_secret_and_gets_the_specs_plan(plan):
    sdep = named(plan, "SeldonDeployment", FEATURED, TEAM_NS).inputs["spec"]
    featured = next(m for m in plan.spec.models if m.name == FEATURED)
    for predictor in sdep["predictors"]:
        parameters = {p["name"]: p["value"] for p in predictor["graph"]["parameters"]}
        assert parameters["features"] == feature_plan(featured).to_json()
        assert parameters["feature_store_url"] == f"$({URL_ENV})"
        model = next(c for c in predictor["componentSpecs"][0]["spec"]["containers"] if c["name"] == "model")
        assert URL_FROM_SECRET in model["env"]
    plain = named(plan, "SeldonDeployment", PLAIN_SAME_TEAM, TEAM_NS).inputs["spec"]
    for predictor in plain["predictors"]:
        assert not {"features", "feature_store_url"} & {p["name"] for p in predictor["graph"]["parameters"]}
        model = next(c for c in predictor["componentSpecs"][0]["spec"]["containers"] if c["name"] == "model")
        assert URL_ENV not in {e["name"] for e in model["env"]}


def test_the_stream_worker_gets_the_plan_and_the_url_from_the_secret(plan):
    workers = [r for r in plan.of_kind("Deployment") if r.inputs["metadata"]["name"] == f"{FEATURED}-stream"]
    if not capabilities(plan.stack).kafka:
        assert not workers
        return
    [worker] = workers
    container = worker.inputs["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--feature-store-url") + 1] == f"$({URL_ENV})"
    featured = next(m for m in plan.spec.models if m.name == FEATURED)
    assert args[args.index("--features") + 1] == feature_plan(featured).to_json()
    assert URL_FROM_SECRET in container["env"]


def test_materialization_runs_the_entry_point_on_a_schedule_with_the_url_from_the_secret(plan):
    jobs = [r for r in plan.of_kind("CronJob") if r.inputs["metadata"]["name"].endswith("-materialize")]
    assert [j.inputs["metadata"]["name"] for j in jobs] == [f"{FEATURED}-materialize"]
    spec = jobs[0].inputs["spec"]
    assert spec["schedule"] == "*/30 * * * *"  # a quarter of the 2h TTL
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"].endswith(f"training:{IMAGES['training'].tag}")  # the training image, as pinned
    assert container["args"] == [f"python -m infra.cli features apply --spec /spec/{FEATURE_SPEC_KEY} && "
                                 f"python -m infra.cli features materialize card_activity --spec /spec/{FEATURE_SPEC_KEY}"]
    assert {"name": "STRATA_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "url"}}} \
        in container["env"]
    assert pod["serviceAccountName"] == f"{FEATURED}-training" and pod["automountServiceAccountToken"] is False
    # the spec the job loads is the model's own, as deployed
    config_map = named(plan, "ConfigMap", f"{FEATURED}-spec", TEAM_NS).inputs["data"]
    loaded = parse_model_spec(json.loads(config_map[FEATURE_SPEC_KEY]))
    assert loaded.name == FEATURED and feature_plan(loaded) is not None
    assert FEATURE_SPEC_KEY not in named(plan, "ConfigMap", f"{PLAIN_SAME_TEAM}-spec", TEAM_NS).inputs["data"]


@pytest.mark.parametrize("ttl_s, cron", [(60, "*/5 * * * *"), (7200, "*/30 * * * *"), (3 * 3600, "*/30 * * * *"),
                                         (4 * 3600, "0 * * * *"), (86400, "0 */6 * * *"),
                                         (2 * 86400, "0 */12 * * *"), (7 * 86400, "0 0 * * *")])
def test_the_schedule_is_a_quarter_of_the_ttl_on_an_even_step(ttl_s, cron):
    assert schedule_for(ttl_s) == cron


# --- NetworkPolicies admit exactly the consumers ------------------------------------------------------

def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels AND matchExpressions)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        value, op = labels.get(expression["key"]), expression["operator"]
        if op == "In" and value not in expression["values"]:
            return False
        if op == "NotIn" and value in expression["values"]:
            return False
        if op == "Exists" and value is None:
            return False
    return True


def admits(peer: Mapping[str, Any], policy_ns: str, namespace: str, labels: Mapping[str, str]) -> bool:
    """Whether a NetworkPolicy peer of a policy in `policy_ns` selects a pod (`namespace`, `labels`)."""
    if "ipBlock" in peer:
        return False  # pods are matched by selectors here
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
            return False
    elif namespace != policy_ns:  # a podSelector alone: the policy's own namespace
        return False
    return selects(peer.get("podSelector", {}), labels)


def pod_labels_of(plan: Plan) -> dict[str, tuple[str, dict[str, str]]]:
    """(namespace, pod labels) of the pods that matter here, as the plan renders them."""
    pods: dict[str, tuple[str, dict[str, str]]] = {}
    for model in (FEATURED, PLAIN_SAME_TEAM, PLAIN_OTHER_TEAM):
        ns = next(r.inputs["metadata"]["namespace"] for r in plan.of_kind("SeldonDeployment")
                  if r.inputs["metadata"]["name"] == model)
        sdep = named(plan, "SeldonDeployment", model, ns).inputs["spec"]
        pods[f"{model}/server"] = (ns, sdep["predictors"][0]["componentSpecs"][0]["metadata"]["labels"])
        for deployment in plan.of_kind("Deployment"):
            meta = deployment.inputs["metadata"]
            if meta["namespace"] == ns and meta["name"] in (f"{model}-stream", f"{model}-drift"):
                pods[f"{model}/{meta['name'].rsplit('-', 1)[1]}"] = (ns, deployment.inputs["spec"]["template"]["metadata"]["labels"])
    job = named(plan, "CronJob", f"{FEATURED}-materialize", TEAM_NS).inputs["spec"]["jobTemplate"]["spec"]["template"]
    pods[f"{FEATURED}/materialize"] = (TEAM_NS, job["metadata"]["labels"])
    # the same labels as the featured server, in a namespace that is not the team's
    server_ns, server = pods[f"{FEATURED}/server"]
    pods["impostor/server"] = ("team-team-1", server)
    return pods


def expected_consumers(plan: Plan) -> set[str]:
    wanted = {f"{FEATURED}/server", f"{FEATURED}/materialize"}
    if capabilities(plan.stack).kafka:
        wanted.add(f"{FEATURED}/stream")
    return wanted


def test_the_redis_pods_admit_exactly_the_consumers(plan):
    pods = pod_labels_of(plan)
    assert f"{FEATURED}/drift" in pods or not capabilities(plan.stack).drift_monitoring
    if store_of(plan) is not OnlineStore.IN_CLUSTER_REDIS:
        assert not [r for r in plan.of_kind("NetworkPolicy") if r.inputs["metadata"]["namespace"] == "features"]
        return
    in_features = [r for r in plan.of_kind("NetworkPolicy") if r.inputs["metadata"]["namespace"] == "features"]
    redis_labels = named(plan, "StatefulSet", REDIS_APP, "features").inputs["spec"]["template"]["metadata"]["labels"]
    admitted = set()
    for name, (ns, labels) in pods.items():
        for policy in in_features:
            spec = policy.inputs["spec"]
            if "Ingress" not in spec["policyTypes"] or not selects(spec["podSelector"], redis_labels):
                continue
            for rule in spec.get("ingress") or []:
                if any(admits(peer, "features", ns, labels) for peer in rule.get("from") or []) and \
                        {6379} <= {p["port"] for p in rule.get("ports") or [{"port": 6379}]}:
                    admitted.add(name)
    assert admitted == expected_consumers(plan)


def test_only_the_consumers_may_leave_the_team_namespace_for_the_store(plan):
    pods = pod_labels_of(plan)
    [egress] = [r for r in plan.of_kind("NetworkPolicy") if r.inputs["metadata"]["name"] == f"{SECRET_NAME}-egress"]
    spec = egress.inputs["spec"]
    assert egress.inputs["metadata"]["namespace"] == TEAM_NS and spec["policyTypes"] == ["Egress"]
    allowed = {name for name, (ns, labels) in pods.items() if ns == TEAM_NS and selects(spec["podSelector"], labels)}
    assert allowed == expected_consumers(plan)
    [rule] = spec["egress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    [to] = rule["to"]
    if store_of(plan) is OnlineStore.IN_CLUSTER_REDIS:
        redis_labels = named(plan, "StatefulSet", REDIS_APP, "features").inputs["spec"]["template"]["metadata"]["labels"]
        assert admits(to, TEAM_NS, "features", redis_labels) and not admits(to, TEAM_NS, TEAM_NS, redis_labels)
    else:
        assert to == {"ipBlock": {"cidr": plan.spec.config.network.vpc_cidr}}
    assert set(CONSUMER_COMPONENTS) == {"model-server", "stream-worker", "feature-materialization"}


# --- a kubeconfig target, cost, schemas, policies -----------------------------------------------------

def test_a_kubeconfig_target_in_standard_mode_runs_the_in_cluster_redis():
    raw = featured_config("standard")
    raw["strata:target"] = "kubeconfig"
    raw["strata:kubeconfig"] = {"secure": "v1:AAAA"}
    raw["strata:namespacePrefix"] = "pr-7-"
    plan = run_program("pr-7", raw)
    assert not [r for r in plan.resources if r.type.startswith("aws:")]
    named(plan, "StatefulSet", REDIS_APP, "pr-7-features")
    url = named(plan, "Secret", SECRET_NAME, "pr-7-team-team-0").inputs["stringData"]["url"]
    assert url.startswith("redis://:") and url.endswith(f"@{REDIS_APP}.pr-7-features.svc.cluster.local:6379/0")


def test_the_cost_model_prices_the_elasticache_nodes(plan):
    lines = [line for line in estimate(plan).lines if line.item == "ElastiCache (Valkey)"]
    if store_of(plan) is OnlineStore.IN_CLUSTER_REDIS:
        assert lines == []
        return
    [line] = lines
    # standard: one cache.t4g.small; enterprise: three cache.m7g.large (730 h)
    assert line.monthly_usd == {"standard": round(0.0288 * 730, 2), "enterprise": round(0.1408 * 3 * 730, 2)}[plan.stack]
    without = plan_of(plan.stack)
    assert estimate(plan).by_item().get("EKS control plane") == estimate(without).by_item()["EKS control plane"]


def test_every_feature_store_object_validates_against_its_schema(plan):
    from infra.plan.schemas import ensure_crd_schemas, validate_resource

    schemas = ensure_crd_schemas()
    kinds = {"StatefulSet", "Service", "Secret", "NetworkPolicy", "CronJob", "SeldonDeployment", "Deployment", "Namespace"}
    checked = [r for r in plan.resources if r.is_kubernetes and r.kind in kinds]
    findings = [f for f in (validate_resource(r, "1.35", schemas) for r in checked) if f is not None]
    failures = [f"{f.resource}: {f.errors}" for f in findings if f.errors]
    assert not failures, "\n".join(failures)
    assert {f.resource.split(" ")[0] for f in findings} >= {"kubernetes:batch/v1:CronJob", SDEP}


def test_no_policy_violations_with_the_feature_store(plan):
    from infra.policy import evaluate

    results = evaluate(plan.resources, capabilities(plan.stack).policy_enforcement)
    assert [r.format() for r in results] == []


def test_materialization_takes_a_subset_of_the_online_views_and_names_a_wrong_one():
    from infra.models.features import FeatureMaterializationArgs, cron_job_spec

    from workloads.spec import load_model_spec_file
    from infra.config import PROJECT_ROOT

    fraud = load_model_spec_file(PROJECT_ROOT / "workloads" / "examples" / "fraud" / "model.yaml", path="")
    base = dict(model=fraud, namespace="team-x", image="img:1.0.0", service_account="fraud-training",
                spec_config_map="fraud-spec", labels={}, registry_secret="feature-registry")
    every = cron_job_spec(FeatureMaterializationArgs(**base))
    assert "materialize card_activity_stream " in every["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    with pytest.raises(ValueError, match="no_such_view is not an online view of 'fraud'.*card_activity_stream"):
        FeatureMaterializationArgs(**base, views=("no_such_view",))
