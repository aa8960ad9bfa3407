"""`TrainingJob` (KubeRay RayJob + retraining CronJob) per mode, under Pulumi's mocks.

ModelDeployment wires the component in; here a tiny program builds it alone (a mocked
cluster provider, the pinned KubeRay release, the contracts' outputs), recording every
registration with `infra.plan.harness.make_mocks`, as `strata plan` does. The rendered
objects are validated against the real KubeRay 1.6.0 CRD / Kubernetes schemas and run
through the policy pack at the mode's enforcement level.
"""

from __future__ import annotations

from infra.platform.charts import IMAGES

import datetime as dt
import http.server
import json
import threading

import pytest

from infra.config import load_stack
from infra.modes import capabilities
from infra.plan.harness import Plan, PlannedResource, make_mocks
from infra.plan.schemas import SchemaFetchError, ensure_crd_schemas, to_manifest, validate_resource
from workloads.spec import load_model_spec_file
from workloads.training import submit

K8S = "1.35"
RAYJOB = "kubernetes:ray.io/v1:RayJob"
CHECKPOINTS_BUCKET = "strata-enterprise-checkpoints"
ECR_TRAINING = "000000000000.dkr.ecr.mock/strata-training"
TRACKING_URI = "http://mlflow.mlflow.svc.cluster.local:5000"
NAMESPACE = "strata-team-payments-risk"


def example(name: str, **training_overrides):
    from workloads.training.runner import apply_overrides

    spec = load_model_spec_file(f"workloads/examples/{name}/model.yaml")
    return apply_overrides(spec, {f"training.{k}": v for k, v in training_overrides.items()})


def enterprise_fraud():
    """fraud as the enterprise stack onboards it (its `training.workers: 2` override)."""
    return next(m for m in load_stack("enterprise").models if m.name == "fraud")


def build(model, mode: str, *, eks: bool = True, stack: str | None = None,
          monitoring_namespace: str | None = None) -> Plan:
    """Run a program that builds one TrainingJob under mocks; return the registrations."""
    import pulumi
    import pulumi_kubernetes as k8s

    from infra.contracts import CloudOutputs, CloudStorage, ClusterHandle, PlatformOutputs, WorkloadIdentities
    from infra.models.training import TrainingJob, TrainingJobArgs
    from infra.platform.charts import helm_release

    caps = capabilities(mode)
    records: list[PlannedResource] = []
    mocks, monitor = make_mocks("eu-west-1", records)
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project="strata", stack=mode, preview=False, monitor=monitor)

    def program():
        provider = k8s.Provider("cluster", kubeconfig="{}")
        release = helm_release("kuberay-release", "kuberay", namespace="strata-kuberay-system", values={},
                               opts=pulumi.ResourceOptions(provider=provider))
        cluster = ClusterHandle(name="strata", provider=provider, kubernetes_version=K8S, gpu_nodes=caps.gpu)
        platform = PlatformOutputs(team_namespaces={model.team: NAMESPACE},
                                   mlflow_tracking_uri=pulumi.Output.from_input(TRACKING_URI),
                                   operators={"kuberay": release}, monitoring_namespace=monitoring_namespace)
        cloud = None
        if eks:
            out = pulumi.Output.from_input
            cloud = CloudOutputs(
                cluster=cluster,
                storage=CloudStorage(kms_key_arn=out("arn:aws:kms:::key/mock"), lake_buckets={},
                                     artifacts_bucket=out("strata-artifacts"), checkpoints_bucket=out(CHECKPOINTS_BUCKET),
                                     ecr_repositories={"training": out(ECR_TRAINING)}),
                identities=WorkloadIdentities(), vpc_id=out("vpc-mock"))
        TrainingJob(f"{model.name}-training", TrainingJobArgs(model=model, capabilities=caps, namespace=NAMESPACE,
                                                              stack=stack),
                    cluster, platform, cloud)

    pulumi.runtime.mocks.test(program)()
    return Plan(stack=mode, resources=records, outputs={}, seconds=0.0)


def the(plan: Plan, type_token: str) -> PlannedResource:
    found = plan.by_type(type_token)
    assert len(found) == 1, [r.name for r in found]
    return found[0]


def rayjob_spec(plan: Plan) -> dict:
    return the(plan, RAYJOB).inputs["spec"]


def head_pod(spec: dict) -> dict:
    return spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]


def worker_group(spec: dict) -> dict:
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert len(groups) == 1
    return groups[0]


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["containers"][0]["env"]}


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    fraud, digits = example("fraud"), example("digits")
    gpu_fraud = enterprise_fraud().model_copy(update={"training": enterprise_fraud().training.model_copy(
        update={"resources": enterprise_fraud().training.resources.model_copy(update={"gpu": 1})})})
    return {
        "quick/fraud": build(fraud, "quick"),
        "quick/fraud-gpu": build(gpu_fraud, "quick"),
        "standard/fraud": build(fraud, "standard"),
        "standard/digits": build(digits, "standard"),
        "enterprise/fraud": build(enterprise_fraud(), "enterprise"),
        "enterprise/fraud-gpu": build(gpu_fraud, "enterprise"),
        "enterprise/digits": build(digits, "enterprise"),
        "kubeconfig/fraud": build(fraud, "standard", eks=False, stack="standard"),
    }


@pytest.fixture(scope="module")
def crd_schemas():
    try:
        return ensure_crd_schemas()
    except SchemaFetchError as error:  # as tests/infra/test_schemas.py: fail, never skip
        pytest.fail(f"could not fetch the CRD schemas: {error}")


# ------------------------------------------------------------------------------ the mode's shape


def test_quick_is_one_cpu_worker_without_hpo(plans):
    spec = rayjob_spec(plans["quick/fraud"])
    group = worker_group(spec)
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 1
    assert "nvidia.com/gpu" not in group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "tolerations" not in group["template"]["spec"]
    # fraud has a search space; quick has no HPO: the CLI is told to train one trial
    assert "--set training.hpo=null" in spec["entrypoint"]
    assert "STRATA_TRAINING_HPO: '0'" in spec["runtimeEnvYAML"]


def test_a_gpu_model_gets_no_gpu_in_quick(plans):
    spec = rayjob_spec(plans["quick/fraud-gpu"])
    pod = worker_group(spec)["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in pod
    assert "--set training.resources.gpu=0" in spec["entrypoint"]
    assert "--set training.workers=1" in spec["entrypoint"]  # the enterprise stack's 2, capped


def test_standard_runs_hpo_only_where_the_spec_has_a_search_space(plans):
    fraud, digits = rayjob_spec(plans["standard/fraud"]), rayjob_spec(plans["standard/digits"])
    assert "training.hpo" not in fraud["entrypoint"] and "STRATA_TRAINING_HPO: '1'" in fraud["runtimeEnvYAML"]
    assert "training.hpo" not in digits["entrypoint"] and "STRATA_TRAINING_HPO: '0'" in digits["runtimeEnvYAML"]
    assert worker_group(fraud)["replicas"] == 1


def test_enterprise_runs_multi_worker_ddp(plans):
    spec = rayjob_spec(plans["enterprise/fraud"])
    group = worker_group(spec)
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
    assert "--set training.workers=2" in spec["entrypoint"]
    assert "STRATA_TRAINING_HPO: '1'" in spec["runtimeEnvYAML"]
    # a CPU model: no GPU, no GPU toleration
    assert "nvidia.com/gpu" not in group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "tolerations" not in group["template"]["spec"]


def test_enterprise_gpu_model_gets_gpus_and_the_gpu_taint_toleration(plans):
    group = worker_group(rayjob_spec(plans["enterprise/fraud-gpu"]))
    pod = group["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1" and pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    affinity = pod["affinity"]["nodeAffinity"]
    required = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
    assert required == [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}]
    preferred = affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["preference"]["matchExpressions"]
    assert preferred == [{"key": "strata.dev/capacity-type", "operator": "In", "values": ["spot"]}]
    assert "tolerations" not in head_pod(rayjob_spec(plans["enterprise/fraud-gpu"]))


@pytest.mark.parametrize("case", ["quick/fraud", "standard/digits", "enterprise/fraud", "enterprise/fraud-gpu"])
def test_head_on_demand_workers_on_spot(plans, case):
    from infra.cloud.cluster import CAPACITY_LABEL

    spec = rayjob_spec(plans[case])
    assert head_pod(spec)["nodeSelector"] == {CAPACITY_LABEL: "on-demand"}
    assert spec["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    affinity = worker_group(spec)["template"]["spec"]["affinity"]["nodeAffinity"]
    wanted = {"key": CAPACITY_LABEL, "operator": "In", "values": ["spot"]}
    terms = [t["preference"] for t in affinity.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    terms += affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert any(wanted in term["matchExpressions"] for term in terms)


@pytest.mark.parametrize("case", ["quick/fraud", "standard/fraud", "enterprise/fraud"])
def test_job_lifecycle_submission_and_environment(plans, case):
    plan = plans[case]
    spec = rayjob_spec(plan)
    assert spec["submissionMode"] == "HTTPMode" and "submitterPodTemplate" not in spec
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] == example("fraud").training.active_deadline_seconds
    assert spec["backoffLimit"] >= 0
    assert spec["rayClusterSpec"]["rayVersion"] == "2.60.0"
    assert spec["entrypoint"].startswith("python -m workloads.training.cli fraud --cluster")
    for pod in (head_pod(spec), worker_group(spec)["template"]["spec"]):
        assert pod["serviceAccountName"] == "fraud-training"
        container = pod["containers"][0]
        assert container["image"] == f"{ECR_TRAINING}:{IMAGES['training'].tag}"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert set(container["resources"]) == {"requests", "limits"}
        env = env_of(pod)
        assert env["MLFLOW_TRACKING_URI"] == TRACKING_URI
        assert env["STRATA_CHECKPOINT_URI"] == f"s3://{CHECKPOINTS_BUCKET}/fraud/"
        assert env["RAY_USAGE_STATS_ENABLED"] == "0" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    worker = worker_group(spec)["template"]["spec"]["containers"][0]["resources"]
    assert worker["requests"] == worker["limits"] == {"cpu": "1000m", "memory": "2048Mi"}  # spec.training.resources


def test_rayjob_depends_on_the_kuberay_release(plans):
    plan = plans["standard/fraud"]
    release = the(plan, "kubernetes:helm.sh/v3:Release")
    assert release.urn in the(plan, RAYJOB).dependencies
    assert release.urn in the(plan, "kubernetes:batch/v1:CronJob").dependencies


def test_kubeconfig_target_checkpoints_on_a_volume(plans):
    plan = plans["kubeconfig/fraud"]
    spec = rayjob_spec(plan)
    claim = the(plan, "kubernetes:core/v1:PersistentVolumeClaim")
    assert claim.inputs["metadata"]["name"] == "fraud-checkpoints"
    for pod in (head_pod(spec), worker_group(spec)["template"]["spec"]):
        assert env_of(pod)["STRATA_CHECKPOINT_URI"] == "/checkpoints/fraud/"
        assert {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "fraud-checkpoints"}} in pod["volumes"]
        assert "nodeSelector" not in pod and "affinity" not in pod  # no Strata node pools there
        assert pod["containers"][0]["image"] == IMAGES["training"].ref
    # the deployed spec (ConfigMap) is the source, not the stack file baked into the image
    assert "--spec-file /etc/strata/spec/model.json" in spec["entrypoint"] and "--stack" not in spec["entrypoint"]


# ------------------------------------------------------------------------------ the spec as deployed


@pytest.mark.parametrize("case", ["quick/fraud", "quick/fraud-gpu", "standard/digits", "enterprise/fraud",
                                  "kubeconfig/fraud"])
def test_head_mounts_the_spec_config_map_and_the_cli_reads_it(plans, case):
    from infra.models.training import SPEC_FILE

    spec = rayjob_spec(plans[case])
    model = spec["metadata"]["model"]
    head = head_pod(spec)
    [volume] = [v for v in head["volumes"] if v["name"] == "model-spec"]
    assert volume == {"name": "model-spec", "configMap": {"name": f"{model}-spec",
                                                          "items": [{"key": "model.json", "path": "model.json"}]}}
    [mount] = [m for m in head["containers"][0]["volumeMounts"] if m["name"] == "model-spec"]
    assert mount["readOnly"] is True
    assert SPEC_FILE == f"{mount['mountPath']}/{volume['configMap']['items'][0]['path']}" == "/etc/strata/spec/model.json"
    argv = spec["entrypoint"].split()
    assert argv[:4] == ["python", "-m", "workloads.training.cli", model]
    assert argv[argv.index("--spec-file") + 1] == SPEC_FILE
    # the job driver runs on the head: the workers need no copy
    worker = worker_group(spec)["template"]["spec"]
    assert not [v for v in worker["volumes"] if v["name"] == "model-spec"]
    # what the mode turns off stays turned off on the command line
    assert f"training.workers={int(worker_group(spec)['replicas'])}" in argv  # (the mocks' numbers are floats)


def test_the_mode_overrides_stay_next_to_the_spec_file(plans):
    argv = rayjob_spec(plans["quick/fraud-gpu"])["entrypoint"].split()
    assert "--spec-file" in argv
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert overrides == ["training.workers=1", "training.hpo=null", "training.resources.gpu=0"]


def test_without_the_spec_config_map_the_cli_reads_the_stack():
    from infra.models.training import TrainingJobArgs, entrypoint, ray_job_spec, training_plan

    model, caps = example("fraud"), capabilities("standard")
    args = TrainingJobArgs(model=model, capabilities=caps, namespace=NAMESPACE, spec_from_config_map=False,
                           stack="standard")
    spec = ray_job_spec(args, on_eks=False, s3_checkpoints=False).render()
    assert "--stack standard" in spec["entrypoint"] and "--spec-file" not in spec["entrypoint"]
    assert not [v for v in head_pod(spec)["volumes"] if v["name"] == "model-spec"]
    with pytest.raises(ValueError, match="not both"):
        entrypoint(model, training_plan(model, caps), stack="standard", spec_file="/x.json")


# ------------------------------------------------------------------------------ schedule + RBAC


def test_schedule_creates_a_cronjob_only_when_the_spec_has_one(plans):
    assert not plans["standard/digits"].by_type("kubernetes:batch/v1:CronJob")
    assert not plans["standard/digits"].by_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
    cron = the(plans["standard/fraud"], "kubernetes:batch/v1:CronJob").inputs
    assert cron["spec"]["schedule"] == example("fraud").training.schedule
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["python", "-m", "workloads.training.submit"]
    assert pod["containers"][0]["image"] == f"{ECR_TRAINING}:{IMAGES['training'].tag}"
    assert pod["serviceAccountName"] == "fraud-training-submit"
    # in the mesh (standard has Istio) a sidecar would keep the Job running
    assert cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"


@pytest.mark.parametrize("case", ["quick/fraud", "enterprise/fraud"])
def test_cronjob_rbac_grants_only_rayjob_create_and_get_in_its_namespace(plans, case):
    plan = plans[case]
    assert not [r for r in plan.resources if r.kind in ("ClusterRole", "ClusterRoleBinding")]
    role = the(plan, "kubernetes:rbac.authorization.k8s.io/v1:Role").inputs
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get"]}]
    binding = the(plan, "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding").inputs
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    sa = the(plan, "kubernetes:core/v1:ServiceAccount").inputs
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}]
    cron = the(plan, "kubernetes:batch/v1:CronJob").inputs
    assert cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    # the training pods' identity (IRSA, S3) is not the submitter's
    assert sa["metadata"]["name"] != rayjob_spec(plan)["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["serviceAccountName"]


def test_retrain_manifest_is_the_rayjob_with_a_generated_name(crd_schemas):
    """With a monitoring namespace and drift monitoring, the trigger's manifest is written too."""
    plan = build(enterprise_fraud(), "enterprise", monitoring_namespace="strata-monitoring")
    maps = {r.inputs["metadata"]["name"]: r for r in plan.by_type("kubernetes:core/v1:ConfigMap")}
    retrain = maps["retrain-trigger-fraud"]
    assert retrain.inputs["metadata"]["namespace"] == "strata-monitoring"
    job = json.loads(retrain.inputs["data"]["fraud.json"])
    assert job["metadata"]["generateName"] == "fraud-retrain-" and job["metadata"]["namespace"] == NAMESPACE
    assert job["metadata"]["labels"]["strata.dev/trigger"] == "retrain"
    assert job["spec"] == rayjob_spec(plan)
    template = json.loads(maps["fraud-training-template"].inputs["data"]["rayjob.json"])
    assert template["spec"] == job["spec"]  # deploy, schedule, retrain: one spec
    resource = PlannedResource(urn="urn:retrain", type=RAYJOB, name="retrain", parent_urn=None, custom=True,
                               inputs={"metadata": {**job["metadata"], "name": "fraud-retrain-abcde"},
                                       "spec": job["spec"]})
    finding = validate_resource(resource, K8S, crd_schemas)
    assert finding is not None and finding.errors == []
    # no drift monitoring (quick), or no monitoring namespace: nothing to write
    assert "retrain-trigger-fraud" not in {
        r.inputs["metadata"]["name"] for r in build(example("fraud"), "quick", monitoring_namespace="m").by_type(
            "kubernetes:core/v1:ConfigMap")}
    assert not [r for r in build(example("fraud"), "standard").by_type("kubernetes:core/v1:ConfigMap")
                if r.inputs["metadata"]["name"].startswith("retrain-trigger")]


def test_template_is_the_rayjob_and_its_scheduled_copy_is_valid(plans, crd_schemas):
    plan = plans["enterprise/fraud"]
    template = json.loads(the(plan, "kubernetes:core/v1:ConfigMap").inputs["data"]["rayjob.json"])
    assert template["spec"] == rayjob_spec(plan)
    now = dt.datetime(2026, 3, 1, 3, 0, tzinfo=dt.timezone.utc)
    copy = submit.scheduled_copy(template, now, NAMESPACE)
    assert copy["metadata"]["name"] == "fraud-2603010300"
    assert copy["metadata"]["labels"]["strata.dev/trigger"] == "schedule"
    # the driver records who started it (the run's strata.trigger tag: the training metrics' label)
    assert copy["spec"]["entrypoint"] == template["spec"]["entrypoint"] + " --trigger schedule"
    assert submit.scheduled_copy(template, now, NAMESPACE, trigger="retrain")["spec"]["entrypoint"].endswith(
        " --trigger retrain")
    resource = PlannedResource(urn="urn:copy", type=RAYJOB, name="copy", parent_urn=None, custom=True,
                               inputs={"metadata": copy["metadata"], "spec": copy["spec"]})
    finding = validate_resource(resource, K8S, crd_schemas)
    assert finding is not None and finding.errors == []


# ------------------------------------------------------------------------------ schemas + policy


@pytest.mark.parametrize("case", ["quick/fraud", "standard/fraud", "standard/digits", "enterprise/fraud",
                                  "enterprise/fraud-gpu", "kubeconfig/fraud"])
def test_every_object_validates_against_its_schema(plans, crd_schemas, case):
    findings = [validate_resource(r, K8S, crd_schemas) for r in plans[case].resources]
    findings = [f for f in findings if f is not None]
    assert any(f.kind == "custom" and "RayJob" in f.resource for f in findings)
    failures = [f"{f.resource}: {f.errors}" for f in findings if f.errors]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case", ["quick/fraud", "standard/fraud", "enterprise/fraud", "enterprise/fraud-gpu",
                                  "kubeconfig/fraud"])
def test_no_policy_violations(plans, case):
    from infra.policy import evaluate

    mode = case.split("/")[0]
    enforcement = capabilities("standard" if mode == "kubeconfig" else mode).policy_enforcement
    results = evaluate(plans[case].resources, enforcement)
    assert [r.format() for r in results] == []


def test_the_rayjob_manifest_is_what_the_api_server_gets(plans):
    manifest = to_manifest(the(plans["quick/fraud"], RAYJOB))
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    assert manifest["metadata"]["name"] == "fraud-train" and manifest["metadata"]["namespace"] == NAMESPACE


# ------------------------------------------------------------------------------ the typed builder


def test_builder_refuses_what_kuberay_refuses():
    from pydantic import ValidationError

    from infra.crds import kuberay

    pod = {"spec": {"containers": [{"name": "ray", "image": "strata/training:0.1.0"}]}}
    head = kuberay.HeadGroupSpec(template=pod)
    cluster = kuberay.RayClusterSpec(head_group_spec=head)
    with pytest.raises(ValidationError, match="minReplicas <= replicas <= maxReplicas"):
        kuberay.WorkerGroupSpec(group_name="w", replicas=3, min_replicas=1, max_replicas=2, template=pod)
    with pytest.raises(ValidationError, match="shutdownAfterJobFinishes"):
        kuberay.RayJobSpec(entrypoint="x", ray_cluster_spec=cluster, ttl_seconds_after_finished=60)
    with pytest.raises(ValidationError, match="submissionMode"):
        kuberay.RayJobSpec.model_validate({"entrypoint": "x", "rayClusterSpec": cluster, "submissionMode": "HttpMode"})
    with pytest.raises(ValidationError, match="activeDeadlineSeconds|active_deadline_seconds"):
        kuberay.RayJobSpec(entrypoint="x", ray_cluster_spec=cluster, active_deadline_seconds=0)
    with pytest.raises(ValidationError, match="runtimeEnvYaml"):  # the wire name is runtimeEnvYAML
        kuberay.RayJobSpec.model_validate({"entrypoint": "x", "rayClusterSpec": cluster, "runtimeEnvYaml": "a: b"})
    job = kuberay.RayJobSpec(entrypoint="x", ray_cluster_spec=cluster)
    with pytest.raises(ValueError, match="47"):
        kuberay.manifest(name="x" * 48, namespace="n", spec=job)
    with pytest.raises(ValueError, match="47"):  # the API server adds 5 characters
        kuberay.manifest(generate_name="x" * 43, namespace="n", spec=job)
    with pytest.raises(ValueError, match="exactly one of name and generate_name"):
        kuberay.manifest(name="a", generate_name="a-", namespace="n", spec=job)
    with pytest.raises(ValueError, match="exactly one of name and generate_name"):
        kuberay.manifest(namespace="n", spec=job)
    generated = kuberay.manifest(generate_name="x" * 42, namespace="n", spec=job)["metadata"]
    assert generated == {"generateName": "x" * 42, "namespace": "n"}
    rendered = kuberay.RayJobSpec(entrypoint="x", ray_cluster_spec=cluster, runtime_env_yaml="a: b").render()
    assert rendered["runtimeEnvYAML"] == "a: b" and rendered["submissionMode"] == "K8sJobMode"


# ------------------------------------------------------------------------------ the submitter


def test_scheduled_names_fit_kuberays_limit():
    now = dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.timezone.utc)
    name = submit.job_name("m" * 32, now)
    assert len(name) <= 47 and name.endswith("-2612312359")
    with pytest.raises(submit.SubmitError):
        submit.scheduled_copy({"apiVersion": "v1", "kind": "Pod", "spec": {}}, now)


def test_submit_posts_the_copy_and_reads_it_back(tmp_path):
    """The in-cluster client against a local HTTP server standing in for the API server."""
    (tmp_path / "token").write_text("t0ken\n")
    (tmp_path / "namespace").write_text(NAMESPACE)
    seen: list[tuple[str, str, str | None, dict | None]] = []
    store: dict[str, dict] = {}

    class Api(http.server.BaseHTTPRequestHandler):
        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(("POST", self.path, self.headers.get("Authorization"), body))
            if body["metadata"]["name"] in store:
                return self._reply(409, {"message": "already exists"})
            store[body["metadata"]["name"]] = {**body, "metadata": {**body["metadata"], "uid": "u-1"}}
            self._reply(201, store[body["metadata"]["name"]])

        def do_GET(self):  # noqa: N802
            seen.append(("GET", self.path, self.headers.get("Authorization"), None))
            name = self.path.rsplit("/", 1)[-1]
            self._reply(200, store[name]) if name in store else self._reply(404, {"message": "not found"})

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = submit.InClusterApi(sa_dir=tmp_path, base_url=f"http://127.0.0.1:{server.server_port}")
        template = {"apiVersion": "ray.io/v1", "kind": "RayJob",
                    "metadata": {"name": "fraud-train", "namespace": NAMESPACE, "labels": {"strata.dev/model": "fraud"}},
                    "spec": {"entrypoint": "python -m workloads.training.cli fraud --cluster", "metadata": {"model": "fraud"}}}
        now = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.timezone.utc)
        created = submit.submit(template, api, now)
        assert created["metadata"]["uid"] == "u-1" and created["metadata"]["name"] == "fraud-2601020304"
        path = f"/apis/ray.io/v1/namespaces/{NAMESPACE}/rayjobs"
        assert [(m, p, a) for m, p, a, _ in seen] == [("POST", path, "Bearer t0ken"),
                                                      ("GET", f"{path}/fraud-2601020304", "Bearer t0ken")]
        assert seen[0][3]["spec"]["metadata"] == {"model": "fraud", "trigger": "schedule"}
        with pytest.raises(submit.SubmitError, match="409.*already exists"):
            submit.submit(template, api, now)
        # the retraining trigger (monitoring namespace) creates in the template's namespace, named apart
        retrain = submit.submit(template, api, now, namespace="team-ns", trigger="retrain")
        assert retrain["metadata"]["name"] == "fraud-retrain-2601020304"
        assert seen[-2][1] == "/apis/ray.io/v1/namespaces/team-ns/rayjobs"
        assert seen[-2][3]["metadata"]["labels"]["strata.dev/trigger"] == "retrain"
        with pytest.raises(submit.SubmitError, match="trigger 'cron'"):
            submit.scheduled_copy(template, now, trigger="cron")
    finally:
        server.shutdown()
