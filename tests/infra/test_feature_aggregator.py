"""The CDC pipeline's feature aggregator on the cluster, under Pulumi mocks, in every stack and
mode: a Deployment exactly where the mode has Kafka (the CDC stream) and the stack an online
store (a model declares online views), rendered from the catalogue's `feature_aggregator`
declaration; its Redis URL only from the team's feature-store Secret, Kafka over mutual TLS
with its own KafkaUser that may only read the topic, egress to Kafka and the store only, a
ServiceMonitor; where it is absent the plan's notes say why."""

from __future__ import annotations

import functools
import json

import pytest

from infra.modes import OnlineStore, capabilities
from infra.plan.harness import Plan, run_program
from infra.plan.report import mode_notes
from infra.platform.features import REDIS_APP, SECRET_NAME, URL_ENV, URL_KEY
from infra.platform.kafka import TLS_LISTENER_PORT
from tests.conftest import STACKS
from tests.features.streaming_spec import VIEW, stack_config_with_streaming_view, streaming_features_section
from tests.infra.test_feature_store import admits, named, selects
from workloads.catalogue.declarations import feature_aggregator
from workloads.spec import SpecError

TEAM_NS = "team-payments-risk"
AGGREGATOR = "fraud-transactions-aggregator"  # the enterprise stack's pipeline `fraud-transactions`


@functools.lru_cache(maxsize=None)
def streaming_plan(stack: str) -> Plan:
    return run_program(stack, stack_config_with_streaming_view(stack))


@pytest.fixture(scope="module", params=STACKS)
def plan(request) -> Plan:
    return streaming_plan(request.param)


def aggregator_objects(plan: Plan) -> list[str]:
    return sorted(f"{r.kind}/{r.inputs['metadata']['name']}" for r in plan.resources
                  if r.is_kubernetes and r.inputs.get("metadata", {}).get("name", "").startswith(AGGREGATOR))


def test_the_deployment_exists_exactly_where_kafka_and_an_online_store_exist(plan):
    caps = capabilities(plan.stack)
    assert plan.by_type("strata:platform:OnlineFeatureStore")  # fraud reads the streaming view online
    if not caps.kafka:
        assert aggregator_objects(plan) == []
        assert any("streaming features of view 'card_activity_stream' need the CDC stream (Kafka)" in note
                   for note in mode_notes(plan))
        return
    assert aggregator_objects(plan) == [
        f"Deployment/{AGGREGATOR}", f"KafkaUser/{AGGREGATOR}", f"NetworkPolicy/{AGGREGATOR}-egress",
        f"NetworkPolicy/{AGGREGATOR}-scrape", f"Service/{AGGREGATOR}", f"ServiceAccount/{AGGREGATOR}",
        f"ServiceMonitor/{AGGREGATOR}"]
    assert not any("aggregator" in note for note in mode_notes(plan))


def test_no_aggregator_without_an_online_store_and_the_plan_says_why():
    raw = stack_config_with_streaming_view("enterprise")
    raw["strata:models"]["fraud"]["features"]["views"][0]["online"] = False  # offline only: no store
    plan = run_program("enterprise", raw)
    assert not plan.by_type("strata:platform:OnlineFeatureStore")
    assert aggregator_objects(plan) == []
    assert any("need an online store" in note and "no aggregator" in note for note in mode_notes(plan))


def enterprise() -> Plan:
    return streaming_plan("enterprise")


def test_the_deployment_runs_the_declaration_with_the_url_from_the_team_secret():
    plan = enterprise()
    (pipeline,) = plan.spec.cdc_pipelines
    deployment = named(plan, "Deployment", AGGREGATOR, TEAM_NS).inputs
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "feature-aggregator"]
    argv = container["command"] + container["args"]
    assert argv[:3] == ["python", "-m", "workloads.data.features.streaming"]
    flags = dict(zip(argv[3::2], argv[4::2]))
    windows = [argv[i + 1] for i, a in enumerate(argv) if a == "--window"]
    assert flags["--topic"] == pipeline.topic == "strata.cdc.public.card_transactions"
    assert flags["--view"] == VIEW and flags["--record-key"] == "txn_id" and windows == ["1h", "24h"]
    assert flags["--ttl-seconds"] == "172800" and flags["--bootstrap"].endswith(f":{TLS_LISTENER_PORT}")
    assert "--redis-url" not in argv and not any("redis" in a for a in argv)  # the token stays out of argv
    env = {e["name"]: e for e in container["env"]}
    assert env[URL_ENV]["valueFrom"] == {"secretKeyRef": {"name": SECRET_NAME, "key": URL_KEY}}
    assert env["STRATA_KAFKA_SSL_CERTFILE"]["value"] == "/etc/strata/kafka/user.crt"
    assert container["image"].endswith("/training:" + container["image"].rsplit(":", 1)[1])  # the training image
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["serviceAccountName"] == AGGREGATOR and pod["automountServiceAccountToken"] is False
    tls = next(v for v in pod["volumes"] if v["name"] == "kafka-tls")
    assert {s["secret"]["name"] for s in tls["projected"]["sources"]} == {"strata-cluster-ca-cert", AGGREGATOR}
    # the team's Secret it reads exists in its namespace
    named(plan, "Secret", SECRET_NAME, TEAM_NS)


def test_its_kafka_user_may_only_read_the_topic():
    plan = enterprise()
    (pipeline,) = plan.spec.cdc_pipelines
    user = named(plan, "KafkaUser", AGGREGATOR, "kafka").inputs["spec"]
    assert user["authentication"] == {"type": "tls"}
    (rule,) = user["authorization"]["acls"]
    assert rule["resource"] == {"type": "topic", "name": pipeline.topic, "patternType": "literal"}
    assert sorted(rule["operations"]) == ["Describe", "Read"]


def test_its_egress_is_kafka_and_the_online_store_only():
    plan = enterprise()
    pod_labels = named(plan, "Deployment", AGGREGATOR, TEAM_NS).inputs["spec"]["template"]["metadata"]["labels"]
    spec = named(plan, "NetworkPolicy", f"{AGGREGATOR}-egress", TEAM_NS).inputs["spec"]
    assert spec["policyTypes"] == ["Egress"] and selects(spec["podSelector"], pod_labels)
    dns, kafka, store = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert kafka["ports"] == [{"port": TLS_LISTENER_PORT, "protocol": "TCP"}]
    (kafka_peer,) = kafka["to"]
    assert admits(kafka_peer, TEAM_NS, "kafka", {}) and not admits(kafka_peer, TEAM_NS, "mlflow", {})
    assert store["ports"] == [{"port": 6379, "protocol": "TCP"}]
    assert store["to"] == [{"ipBlock": {"cidr": plan.spec.config.network.vpc_cidr}}]  # ElastiCache in the VPC


def test_prometheus_scrapes_it_and_the_dashboard_keeps_its_panels():
    plan = enterprise()
    monitor = named(plan, "ServiceMonitor", AGGREGATOR, TEAM_NS).inputs["spec"]
    service = named(plan, "Service", AGGREGATOR, TEAM_NS).inputs
    assert selects(monitor["selector"], service["metadata"]["labels"])
    assert service["metadata"]["labels"]["strata.dev/job"] == "strata-feature-aggregator"
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= ports  # Istio's merged metrics in the mesh
    # the contract's feature-aggregates panels ship now that the emitter runs
    dashboard = named(plan, "ConfigMap", "strata-dashboard-features", "monitoring").inputs["data"]
    assert "strata_feature_freshness_seconds" in json.dumps(dashboard)
    without = run_program("enterprise", {**stack_config_with_streaming_view("enterprise"),
                                         "strata:cdc": {}})
    plain = [r for r in without.of_kind("ConfigMap") if r.inputs["metadata"]["name"] == "strata-dashboard-features"]
    assert plain and "strata_feature_freshness_seconds" not in json.dumps(plain[0].inputs["data"])


def test_a_kubeconfig_target_admits_it_to_the_in_cluster_redis():
    raw = stack_config_with_streaming_view("enterprise")
    raw["strata:target"] = "kubeconfig"
    raw["strata:kubeconfig"] = {"secure": "v1:AAAA"}
    plan = run_program("enterprise", raw)
    assert capabilities("enterprise").online_store is not OnlineStore.IN_CLUSTER_REDIS  # the target decides here
    redis_labels = named(plan, "StatefulSet", REDIS_APP, "features").inputs["spec"]["template"]["metadata"]["labels"]
    pod_labels = named(plan, "Deployment", AGGREGATOR, TEAM_NS).inputs["spec"]["template"]["metadata"]["labels"]
    clients = named(plan, "NetworkPolicy", f"{REDIS_APP}-clients", "features").inputs["spec"]
    assert selects(clients["podSelector"], redis_labels)
    assert any(admits(peer, "features", TEAM_NS, pod_labels) for rule in clients["ingress"] for peer in rule["from"])
    # the same labels in another namespace are not admitted
    assert not any(admits(peer, "features", "team-other", pod_labels) for rule in clients["ingress"]
                   for peer in rule["from"])
    store = named(plan, "NetworkPolicy", f"{AGGREGATOR}-egress", TEAM_NS).inputs["spec"]["egress"][2]
    assert admits(store["to"][0], TEAM_NS, "features", redis_labels)


def test_the_cluster_renders_the_one_declaration():
    plan = enterprise()
    (pipeline,) = plan.spec.cdc_pipelines
    workload = feature_aggregator(pipeline)
    assert workload.name == AGGREGATOR and workload.component == "feature-aggregator" and workload.singleton
    container = named(plan, "Deployment", AGGREGATOR, TEAM_NS).inputs["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0::2][: len(workload.args[0::2])] == list(workload.args[0::2])  # same flags, same order


@pytest.mark.parametrize("features, path, message", [
    (("txn_count_1h", "amount_max_1h"), "strata:cdc.fraud-transactions.features.view", "amount_max_1h"),
])
def test_a_view_the_pipeline_does_not_compute_is_an_error_naming_the_property(features, path, message):
    raw = stack_config_with_streaming_view("enterprise", features=features)
    with pytest.raises(SpecError) as error:
        run_program("enterprise", raw)
    assert any(p == path and message in m for p, m in error.value.problems)


def test_a_view_with_another_ttl_is_an_error_naming_the_property():
    raw = stack_config_with_streaming_view("enterprise", ttl="1d")
    with pytest.raises(SpecError) as error:
        run_program("enterprise", raw)
    assert any(p == "strata:cdc.fraud-transactions.features.ttl" and "1d" in m for p, m in error.value.problems)


def test_bad_streaming_features_name_the_property():
    raw = stack_config_with_streaming_view("enterprise")
    raw["strata:cdc"]["fraud-transactions"]["features"]["windows"] = ["1h", "60m"]
    with pytest.raises(SpecError) as error:
        run_program("enterprise", raw)
    assert any(p.startswith("strata:cdc.fraud-transactions.features.windows") and "repeat" in m
               for p, m in error.value.problems)
    assert streaming_features_section()["views"][0]["name"] == VIEW


AGGREGATOR_RULES = "strata-feature-aggregator-fraud-transactions"  # rules.aggregator_group of the pipeline


def aggregator_rules(plan: Plan) -> list[str]:
    return sorted(r.inputs["metadata"]["name"] for r in plan.of_kind("PrometheusRule")
                  if r.inputs["metadata"]["name"].startswith("strata-feature-aggregator"))


def test_its_alerts_ship_exactly_where_it_runs_for_its_pipelines_team(plan):
    """One PrometheusRule per running aggregator: FeatureAggregatorStalled pages, FeatureFreshnessHigh
    is a ticket, both for the pipeline's team and its view; none where the aggregator does not run."""
    caps = capabilities(plan.stack)
    if not (caps.kafka and caps.monitoring):
        assert aggregator_objects(plan) == [] and aggregator_rules(plan) == []
        return
    assert aggregator_rules(plan) == [AGGREGATOR_RULES]
    (group,) = named(plan, "PrometheusRule", AGGREGATOR_RULES, "monitoring").inputs["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {"FeatureFreshnessHigh", "FeatureAggregatorStalled"}
    for name, severity in (("FeatureFreshnessHigh", "ticket"), ("FeatureAggregatorStalled", "page")):
        assert alerts[name]["labels"] == {"severity": severity, "team": "payments-risk", "view": VIEW,
                                          "pipeline": "fraud-transactions", "pagerduty": "payments-risk"}
        assert alerts[name]["annotations"]["runbook_url"].endswith(f"/runbooks/{name}.md")
        assert f'view="{VIEW}"' in alerts[name]["expr"]


def test_no_aggregator_alerts_without_its_pipeline_or_an_online_store():
    without_pipeline = run_program("enterprise", {**stack_config_with_streaming_view("enterprise"), "strata:cdc": {}})
    assert aggregator_rules(without_pipeline) == []
    raw = stack_config_with_streaming_view("enterprise")
    raw["strata:models"]["fraud"]["features"]["views"][0]["online"] = False
    assert aggregator_rules(run_program("enterprise", raw)) == []


@pytest.mark.parametrize("field, value, message", [
    ("source", "gold/other", "source gold/other; its offline copy is gold/card_activity_stream"),
    ("timestampField", "seen_at", "timestampField seen_at; the offline copy's is event_ts"),
    ("createdTimestampField", "loaded_at", "createdTimestampField loaded_at; the offline copy's is created_ts"),
])
def test_a_view_that_does_not_read_the_offline_copy_is_an_error_naming_the_property(field, value, message):
    raw = stack_config_with_streaming_view("quick")  # every mode: materialization and training read the copy
    raw["strata:models"]["fraud"]["features"]["views"][0][field] = value
    with pytest.raises(SpecError) as error:
        run_program("quick", raw)
    assert any(p == "strata:cdc.fraud-transactions.features.view" and message in m for p, m in error.value.problems)


def test_the_plan_says_where_the_offline_copy_comes_from_and_who_serves_the_view_online(plan):
    notes = [n for n in mode_notes(plan) if "gold/card_activity_stream" in n]
    assert len(notes) == 1 and "`strata data run fraud`" in notes[0], notes
    if capabilities(plan.stack).kafka:  # the aggregator writes online; the copy is for training sets
        assert "not materialized from gold" in notes[0] and "for training sets" in notes[0]
    else:  # no change stream: the copy is what the materialization serves
        assert "the view's online values come from its materialization" in notes[0]


def test_the_committed_stacks_declare_the_copy_that_quick_and_standard_materialize(stack_plan):
    (pipeline,) = stack_plan.spec.cdc_pipelines
    assert pipeline.features.view == "card_activity_stream" and pipeline.lake_table == "fraud"
    jobs = [r for r in stack_plan.of_kind("CronJob") if r.inputs["metadata"]["name"] == "fraud-materialize"]
    assert bool(jobs) == (not stack_plan.spec.capabilities.kafka)  # enterprise: its aggregator serves the view
