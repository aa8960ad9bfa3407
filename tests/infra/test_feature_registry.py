"""The feature store's SQL registry on the cluster, under Pulumi mocks, in every stack and mode:
its own database and role on MLflow's PostgreSQL (in-cluster in quick, RDS in standard and
enterprise), the URL only ever a secret and read by the materialization CronJob from a
`secretKeyRef`, the init Job that provisions it as the server's admin, and NetworkPolicies that
let exactly the materialization pods reach the database."""

from __future__ import annotations

import base64
import json

import pytest

from infra.config import PROJECT_ROOT
from infra.modes import MlflowBackend, capabilities
from infra.plan.harness import Plan, run_program
from infra.platform.charts import IMAGES
from infra.platform.feature_registry import (CREDENTIALS_SECRET, DB_NAME, DB_USER, INIT_COMPONENT, REGISTRY_ENV,
                                             REGISTRY_SECRET)
from infra.platform.mlflow import ADMIN_URL_KEY, DB_SECRET, POSTGRES_APP, RDS_CA_BUNDLE
from tests.conftest import STACKS
from tests.infra.test_feature_store import (FEATURED, TEAM_NS, admits, featured_config, featured_plan, named,
                                            plain_strings, pod_labels_of, selects, without_features)

MLFLOW_NS = "mlflow"
REGISTRY_FROM_SECRET = {"name": REGISTRY_ENV, "valueFrom": {"secretKeyRef": {"name": REGISTRY_SECRET, "key": "url"}}}


@pytest.fixture(scope="module", params=STACKS)
def plan(request) -> Plan:
    return featured_plan(request.param)


def in_cluster(plan: Plan) -> bool:
    return capabilities(plan.stack).mlflow_backend is MlflowBackend.IN_CLUSTER_DB


def password_of(plan: Plan, namespace: str = MLFLOW_NS) -> str:
    data = named(plan, "Secret", CREDENTIALS_SECRET, namespace).inputs["data"]
    return base64.b64decode(data["password"]).decode()


def test_the_registry_is_its_own_database_on_mlflows_server_with_its_own_role(plan):
    assert len(plan.by_type("strata:platform:FeatureRegistry")) == 1
    secrets = [r for r in plan.of_kind("Secret") if r.inputs["metadata"]["name"] == REGISTRY_SECRET]
    assert sorted(s.inputs["metadata"]["namespace"] for s in secrets) == sorted([MLFLOW_NS, TEAM_NS])
    mlflow_uri = named(plan, "Secret", DB_SECRET, MLFLOW_NS).inputs["stringData"][ADMIN_URL_KEY]
    server, tls = mlflow_uri.split("@", 1)[1].split("/", 1)[0], mlflow_uri.split("?", 1)[1]
    password = password_of(plan)
    assert len(password) >= 32 and f":{password}@" not in mlflow_uri  # not MLflow's credentials
    for secret in secrets:
        assert "stringData" in secret.secret_paths
        url = secret.inputs["stringData"]["url"]
        assert url == f"postgresql+psycopg://{DB_USER}:{password}@{server}/{DB_NAME}?{tls}"
    if in_cluster(plan):
        assert server == f"{POSTGRES_APP}.{MLFLOW_NS}.svc.cluster.local:5432" and tls == "sslmode=disable"
    else:  # the RDS instance, its certificate verified against the bundle the training image carries
        [rds] = plan.by_type("aws:rds/instance:Instance")
        assert server.startswith(rds.name) and tls == f"sslmode=verify-full&sslrootcert={RDS_CA_BUNDLE}"
    dockerfile = (PROJECT_ROOT / "workloads" / "training" / "Dockerfile").read_text()
    assert any(line.startswith("ADD ") and line.rstrip().endswith(" " + RDS_CA_BUNDLE) for line in dockerfile.splitlines())


def test_the_password_is_only_ever_a_secret(plan):
    password = password_of(plan)
    credentials = named(plan, "Secret", CREDENTIALS_SECRET, MLFLOW_NS)
    assert "data" in credentials.secret_paths
    leaks = [(r.name, path) for r in plan.resources for path, text in plain_strings(r.inputs, "", r.secret_paths)
             if password in text or base64.b64encode(password.encode()).decode() in text]
    assert leaks == []
    assert password not in json.dumps(plan.outputs)


def test_the_materialization_cronjob_reads_the_registry_from_the_secret(plan):
    job = named(plan, "CronJob", f"{FEATURED}-materialize", TEAM_NS).inputs["spec"]["jobTemplate"]["spec"]
    [container] = job["template"]["spec"]["containers"]
    assert REGISTRY_FROM_SECRET in container["env"]
    assert not [e for e in container["env"] if "postgresql" in json.dumps(e)]
    assert container["args"][0].startswith("python -m infra.cli features apply --spec ")


def test_the_init_job_provisions_it_as_the_servers_admin(plan):
    job = named(plan, "Job", INIT_COMPONENT, MLFLOW_NS)
    pod = job.inputs["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["python", "-m", "infra.cli", "features", "init-registry"]
    assert container["image"].endswith(f"training:{IMAGES['training'].tag}")
    env = {e["name"]: e for e in container["env"]}
    assert env[REGISTRY_ENV] == REGISTRY_FROM_SECRET
    assert env["STRATA_FEATURE_REGISTRY_ADMIN"]["valueFrom"] == {"secretKeyRef": {"name": DB_SECRET, "key": ADMIN_URL_KEY}}
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    # it waits for the database server (and MLflow's Secret) and for its own URL Secret
    deps = {r.urn: r for r in plan.resources}
    waited = {(deps[u].kind, deps[u].inputs.get("metadata", {}).get("name")) for u in job.dependencies if u in deps}
    assert ("Secret", DB_SECRET) in waited and ("Secret", REGISTRY_SECRET) in waited
    assert (("StatefulSet", POSTGRES_APP) in waited) == in_cluster(plan)


def test_only_the_materialization_pods_may_reach_the_database(plan):
    pods = pod_labels_of(plan)
    [egress] = [r for r in plan.of_kind("NetworkPolicy") if r.inputs["metadata"]["name"] == f"{REGISTRY_SECRET}-egress"]
    spec = egress.inputs["spec"]
    assert egress.inputs["metadata"]["namespace"] == TEAM_NS and spec["policyTypes"] == ["Egress"]
    allowed = {name for name, (ns, labels) in pods.items() if ns == TEAM_NS and selects(spec["podSelector"], labels)}
    assert allowed == {f"{FEATURED}/materialize"}
    [rule] = spec["egress"]
    assert rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    [to] = rule["to"]
    clients = [r for r in plan.of_kind("NetworkPolicy") if r.inputs["metadata"]["name"] == f"{REGISTRY_SECRET}-clients"]
    if in_cluster(plan):
        db = named(plan, "StatefulSet", POSTGRES_APP, MLFLOW_NS).inputs["spec"]["template"]["metadata"]["labels"]
        assert admits(to, TEAM_NS, MLFLOW_NS, db) and not admits(to, TEAM_NS, TEAM_NS, db)
        [ingress] = clients
        assert ingress.inputs["metadata"]["namespace"] == MLFLOW_NS
        assert selects(ingress.inputs["spec"]["podSelector"], db)
        [rule] = ingress.inputs["spec"]["ingress"]
        admitted = {name for name, (ns, labels) in pods.items()
                    if any(admits(peer, MLFLOW_NS, ns, labels) for peer in rule["from"])}
        assert admitted == {f"{FEATURED}/materialize"} and rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    else:  # RDS: its security group admits the cluster's nodes; the pods' policy narrows it to the VPC
        assert to == {"ipBlock": {"cidr": plan.spec.config.network.vpc_cidr}} and clients == []


def test_the_init_job_validates_against_its_schema(plan):
    from infra.plan.schemas import ensure_crd_schemas, validate_resource

    job = named(plan, "Job", INIT_COMPONENT, MLFLOW_NS)
    finding = validate_resource(job, "1.35", ensure_crd_schemas())
    assert finding is not None and not finding.errors, finding


@pytest.mark.parametrize("stack", STACKS)
def test_no_registry_where_nothing_materializes_from_gold(stack):
    plan = run_program(stack, without_features(stack))
    assert not plan.by_type("strata:platform:FeatureRegistry")
    assert not [r for r in plan.of_kind("Secret") if r.inputs["metadata"]["name"] == REGISTRY_SECRET]
    assert not [r for r in plan.of_kind("Job") if r.inputs["metadata"]["name"] == INIT_COMPONENT]


def test_the_committed_stacks_provision_it_exactly_where_fraud_materializes(stack_plan):
    jobs = [r for r in stack_plan.of_kind("CronJob") if r.inputs["metadata"]["name"] == "fraud-materialize"]
    registries = stack_plan.by_type("strata:platform:FeatureRegistry")
    assert len(registries) == len(jobs)  # enterprise: the CDC aggregator fills fraud's view, nothing materializes
    for job in jobs:
        [container] = job.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert REGISTRY_FROM_SECRET in container["env"]


def test_a_kubeconfig_target_keeps_it_on_the_in_cluster_database():
    raw = featured_config("standard")
    raw["strata:target"] = "kubeconfig"
    raw["strata:kubeconfig"] = {"secure": "v1:AAAA"}
    raw["strata:namespacePrefix"] = "pr-7-"
    plan = run_program("pr-7", raw)
    url = named(plan, "Secret", REGISTRY_SECRET, "pr-7-team-team-0").inputs["stringData"]["url"]
    assert url.endswith(f"@{POSTGRES_APP}.pr-7-mlflow.svc.cluster.local:5432/{DB_NAME}?sslmode=disable")
    named(plan, "Job", INIT_COMPONENT, "pr-7-mlflow")


def test_materialization_without_a_registry_is_refused_by_name():
    from infra.models.features import FeatureMaterializationArgs
    from workloads.spec import load_model_spec_file

    fraud = load_model_spec_file(PROJECT_ROOT / "workloads" / "examples" / "fraud" / "model.yaml", path="")
    with pytest.raises(ValueError, match="FeatureMaterializationArgs.registry_secret: 'fraud'"):
        FeatureMaterializationArgs(model=fraud, namespace="team-x", image="img:1.0.0", service_account="fraud-training",
                                   spec_config_map="fraud-spec", labels={}, registry_secret="")


def test_the_plan_notes_say_where_the_registry_is(plan, stack_plan):
    from infra.plan.report import mode_notes

    [note] = [n for n in mode_notes(plan) if n.startswith("feature registry:")]
    server = "MLflow's in-cluster PostgreSQL" if in_cluster(plan) else "MLflow's RDS instance"
    assert server in note and f"materialization of {FEATURED}" in note
    committed = [n for n in mode_notes(stack_plan) if n.startswith("feature registry:")]
    if stack_plan.by_type("strata:platform:FeatureRegistry"):
        assert len(committed) == 1 and "materialization of fraud" in committed[0]
    else:
        assert committed == ["feature registry: none; every online view is filled from the change stream (CDC), "
                             "nothing materializes from gold"]
