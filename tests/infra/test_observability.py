"""The observability objects on the cluster, per mode (Pulumi mocks):

- the PrometheusRules ARE the generator's rule groups for the stack's own models
  (`workloads.monitoring.rules.rule_groups`, the source of the committed file);
- one dashboard ConfigMap per generated dashboard, labelled for the Grafana sidecar;
- the retraining trigger that the generated Alertmanager config calls, with RBAC limited
  to create/get/list on RayJobs in the team namespaces that own models; the RayJob it
  creates per model IS the model's training RayJob (one typed builder), with a generated
  name, and trains the spec as deployed (`--spec-file` on the `<model>-spec` ConfigMap);
- one drift exporter per model (Deployment + Service + ServiceMonitor) in its team
  namespace, scrapeable from the monitoring namespace;
- all of it valid against the real schemas and clean under the policy pack.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.plan.harness import Plan, PlannedResource
from infra.plan.schemas import ensure_crd_schemas, validate_custom, validate_resource
from infra.platform.charts import IMAGES
from infra.platform.monitoring import MonitoringArgs
from workloads.monitoring.shipping import ship_dashboard, ship_rules
from infra.platform.observability import cluster_emitters
from infra.platform.observability import (GRAFANA_DASHBOARD_LABEL, RETRAIN_APP, RETRAIN_JOBS_DIR, RETRAIN_PORT,
                                          ObservabilityArgs, dashboard_config_map_name, retrain_job_config_map_name,
                                          retrain_job_file, retrain_webhook_url)
from infra.policy import evaluate
from workloads.monitoring import dashboards as dash
from workloads.monitoring.alertmanager import alertmanager_config
from workloads.monitoring.generate import to_json
from workloads.monitoring.metrics import Emitter
from workloads.monitoring.rules import RuleOptions, rule_groups

OBSERVABILITY = "strata:platform:Observability"
MODEL_DEPLOYMENT = "strata:models:ModelDeployment"
MONITORED = ("standard", "enterprise")
RAYJOB_SCHEMA = ("ray.io", "v1", "RayJob")


def by_urn(plan: Plan) -> dict[str, PlannedResource]:
    return {r.urn: r for r in plan.resources}


def descendants(plan: Plan, root: PlannedResource) -> list[PlannedResource]:
    index = by_urn(plan)

    def under(resource: PlannedResource) -> bool:
        parent = index.get(resource.parent_urn or "")
        while parent is not None:
            if parent.urn == root.urn:
                return True
            parent = index.get(parent.parent_urn or "")
        return False

    return [r for r in plan.resources if under(r)]


def observability(plan: Plan) -> PlannedResource:
    found = plan.by_type(OBSERVABILITY)
    assert len(found) == 1, f"{plan.stack}: expected one {OBSERVABILITY}, got {[r.name for r in found]}"
    return found[0]


def monitoring_namespace(plan: Plan) -> str:
    return f"{plan.spec.config.namespace_prefix}monitoring"


def team_namespace(plan: Plan, team: str) -> str:
    return f"{plan.spec.config.namespace_prefix}team-{team}"


def named(resources: list[PlannedResource], kind: str, name: str, namespace: str) -> PlannedResource:
    found = [r for r in resources if r.is_kubernetes and r.kind == kind
             and r.inputs["metadata"]["name"] == name and r.inputs["metadata"].get("namespace") == namespace]
    assert len(found) == 1, f"expected one {kind} {namespace}/{name}, got {[r.name for r in found]}"
    return found[0]


def helm_values(plan: Plan) -> dict[str, Any]:
    [release] = [r for r in plan.by_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "kube-prometheus-stack"]
    return release.inputs["values"]


def pod_spec(deployment: PlannedResource) -> dict[str, Any]:
    return deployment.inputs["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def crd_schemas():
    return ensure_crd_schemas()


# ------------------------------------------------------------------------------ quick


def test_quick_deploys_no_observability(plans):
    plan = plans["quick"]
    assert not plan.by_type(OBSERVABILITY)
    assert not plan.of_kind("PrometheusRule")
    assert not [r for r in plan.of_kind("ConfigMap") if GRAFANA_DASHBOARD_LABEL in (r.inputs["metadata"].get("labels") or {})]
    names = [r.inputs["metadata"]["name"] for kind in ("Deployment", "Service", "ServiceMonitor", "Role")
             for r in plan.of_kind(kind)]
    assert not [n for n in names if n.endswith("-drift") or n == RETRAIN_APP]


def running_emitters(plan) -> frozenset:
    """What the plan runs: the mode's emitters, the feature aggregators where it deployed one."""
    aggregators = any(r.kind == "Deployment" and (r.inputs["metadata"].get("labels") or {}).get(
        "app.kubernetes.io/component") == "feature-aggregator" for r in plan.resources if r.is_kubernetes)
    return cluster_emitters(plan.spec.capabilities, plan.spec.models, aggregators=aggregators)


# ------------------------------------------------------------------------------ rules


@pytest.mark.parametrize("stack", MONITORED)
def test_prometheus_rules_are_the_generated_groups(plans, stack):
    plan = plans[stack]
    # the generator's groups, less what reads an emitter this mode does not run (issue 12 item 2)
    emitters = running_emitters(plan)
    # and the feature aggregators' groups where they run (one per CDC pipeline with features)
    pipelines = plan.spec.cdc_pipelines if Emitter.FEATURE_AGGREGATES in emitters else ()
    expected = ship_rules(rule_groups(plan.spec.models, RuleOptions(), pipelines), emitters)["groups"]
    rules = [r for r in descendants(plan, observability(plan)) if r.kind == "PrometheusRule"]
    deployed = {r.inputs["metadata"]["name"]: r for r in rules}
    assert list(deployed) and sorted(deployed) == sorted(g["name"] for g in expected)
    release = [r for r in plan.by_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "kube-prometheus-stack"][0]
    for group in expected:
        rule = deployed[group["name"]]
        assert rule.inputs["apiVersion"] == "monitoring.coreos.com/v1"
        assert rule.inputs["metadata"]["namespace"] == monitoring_namespace(plan)
        assert rule.inputs["spec"] == {"groups": [group]}, f"{group['name']} differs from the generator"
        assert release.urn in rule.dependencies, "a PrometheusRule waits for the release serving its CRD"
    # Every model has its group, and no alert lost its runbook or routing labels on the way.
    assert {f"strata-model-{m.name}" for m in plan.spec.models} <= set(deployed)
    for rule in rules:
        for entry in rule.inputs["spec"]["groups"][0]["rules"]:
            if "alert" in entry:
                assert {"severity", "team", "pagerduty"} <= set(entry["labels"])
                assert entry["annotations"]["runbook_url"].endswith(f"{entry['alert']}.md")


@pytest.mark.parametrize("stack", MONITORED)
def test_prometheus_selects_the_rules_without_release_labels(plans, stack):
    spec = helm_values(plans[stack])["prometheus"]["prometheusSpec"]
    assert spec["ruleSelectorNilUsesHelmValues"] is False  # every PrometheusRule in the cluster
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False  # and every ServiceMonitor


# ------------------------------------------------------------------------------ dashboards


@pytest.mark.parametrize("stack", MONITORED)
def test_one_dashboard_config_map_per_generated_dashboard(plans, stack):
    plan = plans[stack]
    emitters = running_emitters(plan)
    shipped = {f: ship_dashboard(d, emitters) for f, d in dash.dashboards(plan.spec.models).items()}
    generated = {f: d for f, d in shipped.items() if d is not None}
    sidecar = helm_values(plan)["grafana"]["sidecar"]["dashboards"]
    maps = [r for r in descendants(plan, observability(plan))
            if r.kind == "ConfigMap" and (r.inputs["metadata"].get("labels") or {}).get(sidecar["label"]) == sidecar["labelValue"]]
    assert len(maps) == len(generated)
    by_file = {next(iter(m.inputs["data"])): m for m in maps}
    assert set(by_file) == set(generated)
    uids = set()
    for file_name, dashboard in generated.items():
        config_map = by_file[file_name]
        assert config_map.inputs["metadata"]["name"] == dashboard_config_map_name(file_name)
        assert config_map.inputs["metadata"]["namespace"] == monitoring_namespace(plan)
        assert config_map.inputs["metadata"]["annotations"][sidecar["folderAnnotation"]] == "Strata"
        assert config_map.inputs["data"] == {file_name: to_json(dashboard)}  # the generator's exact bytes
        uids.add(json.loads(config_map.inputs["data"][file_name])["uid"])
    assert len(uids) == len(generated), "explicit, distinct UIDs"


def test_dashboard_config_map_names_are_dns_names():
    assert dashboard_config_map_name("strata-platform-overview.json") == "strata-dashboard-platform-overview"
    assert dashboard_config_map_name("Weird_Name.json") == "strata-dashboard-weird-name"


# ------------------------------------------------------------------------------ retrain trigger


@pytest.mark.parametrize("stack", MONITORED)
def test_alertmanager_calls_the_in_cluster_retrain_trigger(plans, stack):
    plan = plans[stack]
    namespace = monitoring_namespace(plan)
    config = helm_values(plan)["alertmanager"]["config"]
    [receiver] = [r for r in config["receivers"] if r["name"] == "retrain-webhook"]
    assert [hook["url"] for hook in receiver["webhook_configs"]] == [retrain_webhook_url(namespace)]
    assert retrain_webhook_url(namespace) == f"http://{RETRAIN_APP}.{namespace}.svc:{RETRAIN_PORT}/v1/alertmanager"

    resources = descendants(plan, observability(plan))
    service = named(resources, "Service", RETRAIN_APP, namespace)
    deployment = named(resources, "Deployment", RETRAIN_APP, namespace)
    [port] = service.inputs["spec"]["ports"]
    assert port["port"] == RETRAIN_PORT
    pod_labels = deployment.inputs["spec"]["template"]["metadata"]["labels"]
    assert service.inputs["spec"]["selector"].items() <= pod_labels.items()
    [container] = pod_spec(deployment)["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert {p["containerPort"] for p in container["ports"]} == {RETRAIN_PORT}


@pytest.mark.parametrize("stack", MONITORED)
def test_retrain_trigger_runs_the_workload_hardened_from_a_pinned_image(plans, stack):
    plan = plans[stack]
    deployment = named(descendants(plan, observability(plan)), "Deployment", RETRAIN_APP, monitoring_namespace(plan))
    spec = deployment.inputs["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}  # one process holds "one per model"
    pod = pod_spec(deployment)
    [container] = pod["containers"]
    args = container["command"] + container["args"]
    assert args[:3] == ["python", "-m", "workloads.monitoring.retrain"]
    # the pod's own address (downward API), not every interface
    assert args[args.index("--port") + 1] == str(RETRAIN_PORT) and args[args.index("--host") + 1] == "$(POD_IP)"
    command = args[args.index("--command") + 1]
    # the stdlib submitter (in the monitoring image; no kubectl) creates it in the template's namespace
    assert command.split()[:3] == ["python", "-m", "workloads.training.submit"]
    assert f"--template {RETRAIN_JOBS_DIR}/{{model}}.json" in command and "--template-namespace" in command
    assert "--trigger retrain" in command
    assert container["image"].endswith(f":{IMAGES['drift-monitor'].tag}") and not container["image"].endswith(":latest")
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["serviceAccountName"] == RETRAIN_APP


@pytest.mark.parametrize("stack", MONITORED)
def test_retrain_trigger_rbac_is_least_privilege(plans, stack):
    plan = plans[stack]
    namespace = monitoring_namespace(plan)
    resources = [r for r in descendants(plan, observability(plan))
                 if (r.inputs.get("metadata") or {}).get("labels", {}).get("app.kubernetes.io/name") != "cost-exporter"]
    teams = sorted({m.team for m in plan.spec.models})
    roles = [r for r in resources if r.kind == "Role"]
    assert sorted(r.inputs["metadata"]["namespace"] for r in roles) == sorted(team_namespace(plan, t) for t in teams)
    for role in roles:
        assert role.inputs["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"],
                                         "verbs": ["create", "get", "list"]}]
    bindings = [r for r in resources if r.kind == "RoleBinding"]
    assert len(bindings) == len(roles)
    for binding in bindings:
        assert binding.inputs["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": RETRAIN_APP}
        assert binding.inputs["subjects"] == [{"kind": "ServiceAccount", "name": RETRAIN_APP, "namespace": namespace}]
    # Nothing cluster-wide, anywhere in the stack, grants RayJobs or wildcards to the trigger.
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        assert not [r for r in resources if r.kind == kind]
    # Each Role is created after its team namespace exists.
    team_namespaces = {r.inputs["metadata"]["name"]: r for r in plan.of_kind("Namespace")}
    index = by_urn(plan)
    for role in roles:
        namespace_urn = team_namespaces[role.inputs["metadata"]["namespace"]].urn
        component = index[namespace_urn].parent_urn
        assert component in role.dependencies or namespace_urn in role.dependencies


def deployed_rayjob(plan: Plan, model) -> PlannedResource:
    """The model's deploy-time RayJob (TrainingJob under its ModelDeployment)."""
    [deployment] = [r for r in plan.by_type(MODEL_DEPLOYMENT) if r.name == model.name]
    [job] = [r for r in descendants(plan, deployment) if r.kind == "RayJob"]
    return job


def retrain_manifest(plan: Plan, model) -> tuple[PlannedResource, dict[str, Any]]:
    config_map = named(plan.of_kind("ConfigMap"), "ConfigMap", retrain_job_config_map_name(model.name),
                       monitoring_namespace(plan))
    assert set(config_map.inputs["data"]) == {retrain_job_file(model.name)} == {f"{model.name}.json"}
    return config_map, json.loads(config_map.inputs["data"][retrain_job_file(model.name)])


@pytest.mark.parametrize("stack", MONITORED)
def test_retrain_trigger_mounts_every_models_manifest(plans, stack):
    plan = plans[stack]
    deployment = named(descendants(plan, observability(plan)), "Deployment", RETRAIN_APP, monitoring_namespace(plan))
    pod = pod_spec(deployment)
    [jobs] = [v for v in pod["volumes"] if v["name"] == "jobs"]
    sources = {s["configMap"]["name"]: s["configMap"] for s in jobs["projected"]["sources"]}
    assert set(sources) == {retrain_job_config_map_name(m.name) for m in plan.spec.models}
    for model in plan.spec.models:
        source = sources[retrain_job_config_map_name(model.name)]
        assert source["items"] == [{"key": f"{model.name}.json", "path": f"{model.name}.json"}]
        assert source["optional"] is True  # written by the model's TrainingJob, possibly after the trigger starts
        config_map, _ = retrain_manifest(plan, model)
        [owner] = [r for r in plan.by_type(MODEL_DEPLOYMENT) if r.name == model.name]
        assert config_map in descendants(plan, owner)
    [container] = pod["containers"]
    assert {"name": "jobs", "mountPath": RETRAIN_JOBS_DIR, "readOnly": True} in container["volumeMounts"]


@pytest.mark.parametrize("stack", MONITORED)
def test_retrain_rayjobs_validate_and_pass_the_policies(plans, stack, crd_schemas):
    from infra.cloud.cluster import CAPACITY_LABEL
    from infra.models.training import SPEC_FILE, SPEC_MOUNT

    plan = plans[stack]
    version = plan.spec.config.cluster.kubernetes_version
    for model in plan.spec.models:
        _, job = retrain_manifest(plan, model)
        assert job["kind"] == "RayJob" and job["metadata"]["namespace"] == team_namespace(plan, model.team)
        assert job["metadata"]["generateName"] == f"{model.name}-retrain-"  # a new RayJob per retrain
        assert "name" not in job["metadata"]
        assert job["metadata"]["labels"]["strata.dev/trigger"] == "retrain"
        assert job["metadata"]["labels"]["strata.dev/model"] == model.name
        # ONE builder: the retrain RayJob's spec is the deploy-time RayJob's, value for value
        # (plan, placement, image, checkpoint URI, service account, security context).
        deployed = deployed_rayjob(plan, model)
        assert job["spec"] == deployed.inputs["spec"]
        spec = job["spec"]
        entrypoint = spec["entrypoint"].split()
        assert f"workloads.training.cli {model.name}" in spec["entrypoint"]
        assert entrypoint[entrypoint.index("--spec-file") + 1] == SPEC_FILE and "--stack" not in entrypoint
        assert spec["submissionMode"] == "HTTPMode" and "submitterPodTemplate" not in spec  # no submitter pod
        head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        assert head["nodeSelector"] == {CAPACITY_LABEL: "on-demand"}  # AWS stacks
        assert {"name": "model-spec", "mountPath": SPEC_MOUNT, "readOnly": True} in head["containers"][0]["volumeMounts"]
        for pod in [head] + [g["template"]["spec"] for g in spec["rayClusterSpec"]["workerGroupSpecs"]]:
            assert pod["serviceAccountName"] == f"{model.name}-training"
            assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False
            [container] = pod["containers"]
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert container["image"].endswith(f":{IMAGES['training'].tag}")
            env = {e["name"]: e["value"] for e in container["env"]}
            assert env["STRATA_CHECKPOINT_URI"].startswith("s3://") and env["STRATA_CHECKPOINT_URI"].endswith(f"/{model.name}/")
            assert "{{" not in json.dumps(pod)  # every deploy-time marker filled
        errors = validate_custom(job, crd_schemas[RAYJOB_SCHEMA], version)
        assert not errors, f"{model.name}: {errors}"
        as_planned = PlannedResource(urn=f"urn:pulumi:{stack}::strata::kubernetes:ray.io/v1:RayJob::{model.name}-retrain",
                                     type="kubernetes:ray.io/v1:RayJob", name=f"{model.name}-retrain", parent_urn=None,
                                     custom=True, inputs=job)
        violations = evaluate([as_planned], plan.spec.capabilities.policy_enforcement)
        assert [v.format() for v in violations] == []


@pytest.mark.parametrize("stack", ("quick", *MONITORED))
def test_training_reads_the_spec_as_deployed(plans, stack, tmp_path):
    """The head mounts `<model>-spec`; what the CLI reads from it is the stack's spec."""
    from infra.models.deployment import SPEC_CONFIGMAP_KEY
    from infra.models.training import SPEC_CONFIG_MAP_KEY
    from workloads.training.cli import load_spec_file

    assert SPEC_CONFIG_MAP_KEY == SPEC_CONFIGMAP_KEY
    plan = plans[stack]
    for model in plan.spec.models:
        head = deployed_rayjob(plan, model).inputs["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        [volume] = [v for v in head["volumes"] if v["name"] == "model-spec"]
        config_map = named(plan.of_kind("ConfigMap"), "ConfigMap", volume["configMap"]["name"],
                           team_namespace(plan, model.team))
        file = tmp_path / f"{model.name}.json"
        file.write_text(config_map.inputs["data"][SPEC_CONFIGMAP_KEY])
        spec, _ = load_spec_file(file, model.name)
        assert spec == model  # stack overrides included


def test_monitoring_refuses_an_alertmanager_config_that_misses_the_trigger(plans):
    models = plans["standard"].spec.models
    teams = {m.team: f"team-{m.team}" for m in models}
    obs = ObservabilityArgs(namespace="monitoring", models=tuple(models), team_namespaces=teams, retrain=True)
    with pytest.raises(ValueError, match="retrain-webhook.*retrain_webhook_url"):
        # The generator's default URL names another namespace.
        MonitoringArgs(namespace="monitoring", alertmanager_config=alertmanager_config(models), observability=obs)
    with pytest.raises(ValueError, match="team_namespaces"):
        ObservabilityArgs(namespace="monitoring", models=tuple(models), retrain=True)


@pytest.mark.parametrize("stack", MONITORED)
def test_cost_exporter_is_deployed_read_only(plans, stack):
    """Issue 12 item 3: its alerts ship, so the program runs it; it only reads the API."""
    plan = plans[stack]
    resources = descendants(plan, observability(plan))
    deployment = named(resources, "Deployment", "cost-exporter", monitoring_namespace(plan))
    [container] = pod_spec(deployment)["containers"]
    assert container["command"] == ["python", "-m", "workloads.monitoring.cost_exporter"]
    [role] = [r for r in resources if r.kind == "ClusterRole"]
    assert role.inputs["rules"] == [{"apiGroups": [""], "resources": ["nodes", "pods", "events"],
                                     "verbs": ["get", "list", "watch"]}]
    named(resources, "ServiceMonitor", "cost-exporter", monitoring_namespace(plan))


# ------------------------------------------------------------------------------ drift exporters


@pytest.mark.parametrize("stack", MONITORED)
def test_one_drift_exporter_per_model_in_its_team_namespace(plans, stack):
    plan = plans[stack]
    assert plan.spec.capabilities.drift_monitoring
    istio = plan.spec.capabilities.istio
    deployments = {r.name: r for r in plan.by_type(MODEL_DEPLOYMENT)}
    release = [r for r in plan.by_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "kube-prometheus-stack"][0]
    for model in plan.spec.models:
        namespace = team_namespace(plan, model.team)
        children = descendants(plan, deployments[model.name])
        app = f"{model.name}-drift"
        deployment = named(children, "Deployment", app, namespace)
        service = named(children, "Service", app, namespace)
        monitor = named(children, "ServiceMonitor", app, namespace)

        pod = pod_spec(deployment)
        [container] = pod["containers"]
        assert container["command"] == ["/bin/sh", "-c"]
        fetch, serve = container["args"][0].split(" && exec ")
        assert fetch.startswith("mlflow artifacts download") and f"models:/{model.name}@champion" in fetch
        serve = serve.split()
        assert serve[:3] == ["python", "-m", "workloads.monitoring.drift_service"]
        assert serve[serve.index("--model") + 1] == model.name and serve[serve.index("--team") + 1] == model.team
        # the pod's own address, not every interface (Kubernetes expands $(POD_IP) from the env)
        assert serve[serve.index("--host") + 1] == "$(POD_IP)"
        assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
        assert container["image"].endswith(f":{IMAGES['drift-monitor'].tag}")
        assert container["livenessProbe"] and container["readinessProbe"] and container["resources"]["limits"]
        assert "initContainers" not in pod
        assert pod["serviceAccountName"] == app and pod["automountServiceAccountToken"] is False

        pod_labels = deployment.inputs["spec"]["template"]["metadata"]["labels"]
        assert service.inputs["spec"]["selector"].items() <= pod_labels.items()
        service_labels = service.inputs["metadata"]["labels"]
        spec = monitor.inputs["spec"]
        assert spec["selector"]["matchLabels"].items() <= service_labels.items()
        assert service_labels[spec["jobLabel"]] == "strata-drift"  # watched by ScrapeTargetDown (strata-.+)
        [endpoint] = spec["endpoints"]
        ports = {p["name"]: p for p in service.inputs["spec"]["ports"]}
        assert endpoint["port"] in ports
        if istio:  # Prometheus has no sidecar: it scrapes Istio's merged metrics, outside mTLS
            assert ports[endpoint["port"]]["port"] == 15020 and endpoint["path"] == "/stats/prometheus"
            annotations = deployment.inputs["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == str(int(ports["http-metrics"]["port"]))
        else:
            assert endpoint["port"] == "http-metrics" and endpoint["path"] == "/metrics"
        assert release.urn in monitor.dependencies


@pytest.mark.parametrize("stack", MONITORED)
def test_team_namespaces_admit_scrapes_from_monitoring(plans, stack):
    plan = plans[stack]
    monitoring = monitoring_namespace(plan)
    for team in {m.team for m in plan.spec.models}:
        allow = named(plan.of_kind("NetworkPolicy"), "NetworkPolicy", "allow-explicit", team_namespace(plan, team))
        sources = [peer for rule in allow.inputs["spec"]["ingress"] for peer in rule["from"]
                   if "ports" not in rule]  # every port
        assert any(monitoring in expr.get("values", [])
                   for peer in sources for expr in (peer.get("namespaceSelector") or {}).get("matchExpressions", []))


# ------------------------------------------------------------------------------ schemas + policies


@pytest.mark.parametrize("stack", MONITORED)
def test_observability_objects_validate_and_pass_the_policy_pack(plans, stack, crd_schemas):
    plan = plans[stack]
    ours = descendants(plan, observability(plan))
    for deployment in plan.by_type(MODEL_DEPLOYMENT):
        ours += [r for r in descendants(plan, deployment) if "drift" in r.name]
    assert ours
    version = plan.spec.config.cluster.kubernetes_version
    for resource in ours:
        if not resource.custom:
            continue
        finding = validate_resource(resource, version, crd_schemas)
        assert finding is not None and finding.ok, f"{resource.name}: {finding.errors if finding else 'not validated'}"
    urns = {r.urn for r in ours}
    violations = [v for v in evaluate(plan.resources, plan.spec.capabilities.policy_enforcement) if v.urn in urns]
    assert [v.format() for v in violations] == []


@pytest.mark.parametrize("stack", MONITORED)
def test_retrain_trigger_is_authenticated_and_keeps_its_cooldown(plans, stack):
    """Issue 12 item 5: a bearer token from a Secret (Alertmanager mounts it), only the stack's
    models, the cooldown on a PersistentVolumeClaim (survives a rescheduled pod)."""
    from workloads.monitoring.alertmanager import RETRAIN_TOKEN_FILE, RETRAIN_TOKEN_SECRET

    plan = plans[stack]
    namespace = monitoring_namespace(plan)
    resources = descendants(plan, observability(plan))
    deployment = named(resources, "Deployment", RETRAIN_APP, namespace)
    pod = pod_spec(deployment)
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["STRATA_RETRAIN_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": RETRAIN_TOKEN_SECRET, "key": "token"}}
    secret = named(resources, "Secret", RETRAIN_TOKEN_SECRET, namespace)
    assert "stringData" in secret.secret_paths
    args = container["command"] + container["args"]
    assert args[args.index("--models") + 1].split(",") == sorted(m.name for m in plan.spec.models)
    [state] = [v for v in pod["volumes"] if v["name"] == "state"]
    claim = named(resources, "PersistentVolumeClaim", state["persistentVolumeClaim"]["claimName"], namespace)
    assert claim.inputs["spec"]["accessModes"] == ["ReadWriteOnce"]
    webhook = [r for r in plan.by_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "kube-prometheus-stack"]
    config = webhook[0].inputs["values"]["alertmanager"]["config"]
    [hook] = [h for r in config["receivers"] if r["name"] == "retrain-webhook" for h in r["webhook_configs"]]
    assert hook["http_config"]["authorization"] == {"type": "Bearer", "credentials_file": RETRAIN_TOKEN_FILE}
    assert RETRAIN_TOKEN_SECRET in webhook[0].inputs["values"]["alertmanager"]["alertmanagerSpec"]["secrets"]
