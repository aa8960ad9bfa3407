"""`TrainingJob`: one model's training on the cluster, as a KubeRay `RayJob`.

`ModelDeployment` creates one per model. What the mode allows decides the shape
(`training_plan()`): workers = min(spec workers, `training_max_workers`) (DDP across
Ray Train workers when > 1), Ray Tune HPO only where the mode has `training_hpo` AND the
spec has a search space, GPUs only where the mode has `training_gpu`. The container runs
the same CLI as a laptop, `python -m workloads.training.cli MODEL --cluster --json`: in
`HTTPMode` KubeRay posts the entrypoint to the head's dashboard once the cluster is up,
and the job driver (on the head) finds the cluster through `RAY_ADDRESS`.

The spec trained is the spec DEPLOYED: `ModelDeployment`'s ConfigMap `<model>-spec`
(key `model.json`: `{"spec": <ModelSpec>, ...}`) is mounted read-only into the head pod
at `SPEC_FILE` and passed as `--spec-file`, so a stack's overrides of an example spec,
and models defined only in a stack file, train as deployed. What the mode turns off is
turned off on the command line (`--set training.hpo=null`, `--set training.workers=N`,
`--set training.resources.gpu=0`), so the spec stays the single source.

Placement (EKS): the head (GCS, dashboard, the job driver) on on-demand nodes, the Ray
workers on spot capacity; GPU workers require a GPU node, prefer spot and fall back to
the on-demand GPU pool, and tolerate the `nvidia.com/gpu` taint. A spot preemption kills
a worker, not the job: Ray Train's `FailureConfig` resumes from the last checkpoint,
which lives at `s3://<checkpoints bucket>/<model>/` (written through the
`<model>-training` service account's IRSA role). On a kubeconfig target (no AWS layer)
checkpoints go to a `<model>-checkpoints` PersistentVolumeClaim and no node pools are
assumed.

Ray pods are batch pods (no probes; the policy pack exempts RayJob). They stay outside
the Istio mesh (`sidecar.istio.io/inject: "false"`): the operator (not in the mesh)
reaches the head's dashboard in plain HTTP, and Ray's worker-to-worker ports are not
Services a sidecar could route; the team namespace's NetworkPolicies still apply.

`spec.training.schedule` (cron) adds a `CronJob` that re-submits training: its pod runs
`python -m workloads.training.submit`, which creates a timestamped copy of the RayJob
from a template (ConfigMap) through the Kubernetes API, with a service account that may
only create/get `rayjobs.ray.io` in this namespace.

Where the mode has drift monitoring and the platform a monitoring namespace, the
retraining trigger's manifest too (`infra.platform.observability.retrain_rayjob`): the
SAME typed spec and deploy-time values, with `generateName`, in the ConfigMap
`retrain_job_config_map_name(<model>)` of the monitoring namespace, which the trigger
mounts. Deploy-time RayJob, scheduled template and retrain manifest are thus one spec
from one builder (`ray_job_spec`), differing only in metadata.

A change to the RayJob's spec (image, resources, spec file) replaces it: a deploy with
a new training definition trains once with it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra.cloud.cluster import CAPACITY_LABEL, GPU_TAINT_KEY
from infra.contracts import CloudOutputs, ClusterHandle, PlatformOutputs
from infra.crds import kuberay
from infra.crds.kuberay import HeadGroupSpec, RayClusterSpec, RayJobSpec, SubmissionMode, WorkerGroupSpec, marker
from infra.k8s import (
    check_image_pinned,
    empty_dir,
    resources,
    restricted_container_security_context,
    restricted_pod_security_context,
)
from infra.modes import Capabilities
from infra.platform.charts import IMAGES
from infra.platform.observability import retrain_job_config_map_name, retrain_job_file, retrain_rayjob
from workloads.spec import ModelSpec

IMAGE_KEY = "training"  # IMAGES / ECR repository
RAY_VERSION = "2.60.0"  # the Ray of the training image (pyproject's `workloads` extra)
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"  # on both GPU pools (infra.cloud.cluster)
ON_DEMAND, SPOT = "on-demand", "spot"  # values of CAPACITY_LABEL
ISTIO_INJECT_LABEL = "sidecar.istio.io/inject"
CHECKPOINT_MOUNT = "/checkpoints"  # kubeconfig target: the PVC
TEMPLATE_MOUNT = "/etc/strata/training"
TEMPLATE_KEY = "rayjob.json"
SPEC_CONFIG_MAP_KEY = "model.json"  # = infra.models.deployment.SPEC_CONFIGMAP_KEY (ModelDeployment's `<model>-spec`)
SPEC_MOUNT = "/etc/strata/spec"
SPEC_FILE = f"{SPEC_MOUNT}/{SPEC_CONFIG_MAP_KEY}"  # the CLI's --spec-file on the head
STATE_DIR = "/tmp/strata"  # the CLI's state (MLflow fallbacks, registry cache): the root FS is read-only
HEAD_MEMORY_GIB = 4.0  # GCS + dashboard + the job driver (data validation, evaluation, MLflow logging)
HEAD_PORTS = (("gcs-server", 6379), ("dashboard", 8265), ("client", 10001), ("metrics", 8080))

# Markers for values known only at deploy time (filled in by infra.crds.kuberay.fill).
IMAGE, TRACKING_URI, CHECKPOINTS_BUCKET = "image", "mlflowTrackingUri", "checkpointsBucket"


@dataclass(frozen=True)
class TrainingPlan:
    """What the mode makes of the spec's training section."""

    workers: int
    hpo: bool
    gpus_per_worker: int

    @property
    def distributed(self) -> bool:
        return self.workers > 1


def training_plan(model: ModelSpec, caps: Capabilities) -> TrainingPlan:
    training = model.training
    return TrainingPlan(
        workers=max(1, min(training.workers, caps.training_max_workers)),
        hpo=caps.training_hpo and training.hpo is not None,
        gpus_per_worker=training.resources.gpu if caps.training_gpu else 0,
    )


@dataclass(frozen=True)
class TrainingJobArgs:
    """One model's training. Defaults: the spec read from ModelDeployment's `<model>-spec`
    ConfigMap (mounted on the head, `--spec-file`), one retry (a new RayCluster), the
    cluster deleted 5 minutes after the job ends."""

    model: ModelSpec
    capabilities: Capabilities
    namespace: str  # the owning team's namespace
    # True: mount the `<model>-spec` ConfigMap (the spec as deployed) and train that.
    # False: the CLI reads `--stack` (below) or the example spec baked into the image.
    spec_from_config_map: bool = True
    stack: Optional[str] = None  # `--stack` (only without the spec ConfigMap): stacks/Pulumi.<stack>.yaml in the image
    backoff_limit: int = 1
    ttl_seconds_after_finished: int = 300

    @property
    def ray_job_name(self) -> str:
        return f"{self.model.name}-train"

    @property
    def service_account(self) -> str:
        return f"{self.model.name}-training"  # ModelDeployment's, IRSA role "training/<team>"

    @property
    def spec_config_map(self) -> str:
        return f"{self.model.name}-spec"  # ModelDeployment's spec as deployed


def _cpu(value: float) -> str:
    return f"{int(round(value * 1000))}m"


def _mib(gib: float) -> str:
    return f"{int(round(gib * 1024))}Mi"


def entrypoint(model: ModelSpec, plan: TrainingPlan, stack: Optional[str] = None,
               spec_file: Optional[str] = None) -> str:
    """The job driver's command: the CLI on the spec file (else the stack's or the
    example spec), with what the mode turns off turned off."""
    if spec_file and stack:
        raise ValueError("entrypoint: pass a spec file or a stack, not both (the CLI refuses both)")
    argv = ["python", "-m", "workloads.training.cli", model.name, "--cluster", "--json"]
    if spec_file:
        argv += ["--spec-file", spec_file]
    elif stack:
        argv += ["--stack", stack]
    argv += ["--set", f"training.workers={plan.workers}"]
    if model.training.hpo is not None and not plan.hpo:
        argv += ["--set", "training.hpo=null"]
    if model.training.resources.gpu and not plan.gpus_per_worker:
        argv += ["--set", "training.resources.gpu=0"]
    return shlex.join(argv)


def ray_job_spec(args: TrainingJobArgs, *, on_eks: bool, s3_checkpoints: bool) -> RayJobSpec:
    """The typed RayJob spec (deploy-time values as markers)."""
    model, caps = args.model, args.capabilities
    plan = training_plan(model, caps)
    labels = {
        "app.kubernetes.io/part-of": "strata",
        "app.kubernetes.io/managed-by": "pulumi",
        "app.kubernetes.io/component": "training",
        "strata.dev/model": model.name,
        "strata.dev/team": model.team,
    }
    if caps.istio:
        labels[ISTIO_INJECT_LABEL] = "false"
    checkpoint_uri = (f"s3://{marker(CHECKPOINTS_BUCKET)}/{model.name}/" if s3_checkpoints
                      else f"{CHECKPOINT_MOUNT}/{model.name}/")
    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": marker(TRACKING_URI)},
        {"name": "STRATA_CHECKPOINT_URI", "value": checkpoint_uri},
        {"name": "STRATA_STATE_DIR", "value": STATE_DIR},
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
        {"name": "RAY_AUTH_MODE", "value": "disabled"},  # as workloads.training.ray_jobs.RAY_ENV
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        {"name": "HOME", "value": "/tmp"},
    ]

    def pod(role: str, container_resources: dict[str, Any], memory_gib: float, scratch: str,
            ports: Sequence[tuple[str, int]] = (), placement: Optional[dict[str, Any]] = None,
            spec_file: bool = False) -> dict[str, Any]:
        mounts = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shm", "mountPath": "/dev/shm"}]
        # Ray's object store lives in /dev/shm (30% of memory by default); memory-backed,
        # so it counts against the container's memory limit.
        volumes = [empty_dir("tmp", scratch), empty_dir("shm", _mib(max(memory_gib * 0.3, 0.25)), medium="Memory")]
        if not s3_checkpoints:
            mounts.append({"name": "checkpoints", "mountPath": CHECKPOINT_MOUNT})
            volumes.append({"name": "checkpoints", "persistentVolumeClaim": {"claimName": f"{model.name}-checkpoints"}})
        if spec_file:  # the job driver's --spec-file: the spec as deployed, read-only
            mounts.append({"name": "model-spec", "mountPath": SPEC_MOUNT, "readOnly": True})
            volumes.append({"name": "model-spec", "configMap": {
                "name": args.spec_config_map,
                "items": [{"key": SPEC_CONFIG_MAP_KEY, "path": SPEC_CONFIG_MAP_KEY}]}})
        container: dict[str, Any] = {
            "name": f"ray-{role}",
            "image": marker(IMAGE),
            "imagePullPolicy": "IfNotPresent",
            "resources": container_resources,
            "securityContext": restricted_container_security_context(),
            "env": [dict(e) for e in env],
            "volumeMounts": mounts,
        }
        if ports:
            container["ports"] = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports]
        spec: dict[str, Any] = {
            "serviceAccountName": args.service_account,
            "automountServiceAccountToken": False,  # IRSA's projected token is mounted regardless
            "securityContext": restricted_pod_security_context(),
            "terminationGracePeriodSeconds": 60,
            "containers": [container],
            "volumes": volumes,
            **(placement or {}),
        }
        return {"metadata": {"labels": {**labels, "strata.dev/ray-role": role}}, "spec": spec}

    head_placement = {"nodeSelector": {CAPACITY_LABEL: ON_DEMAND}} if on_eks else None
    worker_placement: dict[str, Any] = {}
    if plan.gpus_per_worker:
        worker_placement["tolerations"] = [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
    if on_eks:
        if plan.gpus_per_worker:  # a GPU node; spot first, the on-demand GPU pool as fallback
            worker_placement["affinity"] = {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": GPU_NODE_LABEL, "operator": "In", "values": ["true"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": {"matchExpressions": [
                    {"key": CAPACITY_LABEL, "operator": "In", "values": [SPOT]}]}}],
            }}
        else:
            worker_placement["affinity"] = {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": CAPACITY_LABEL, "operator": "In", "values": [SPOT]}]}]},
            }}

    res = model.training.resources
    worker_limits = {"cpu": _cpu(res.cpu), "memory": _mib(res.memory_gib)}
    if plan.gpus_per_worker:
        worker_limits[GPU_RESOURCE] = str(plan.gpus_per_worker)
    head = HeadGroupSpec(
        # The head runs GCS, the dashboard and the job driver; training goes to the workers.
        ray_start_params={"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        template=pod("head", resources("1", _mib(HEAD_MEMORY_GIB), "2", _mib(HEAD_MEMORY_GIB)),
                     HEAD_MEMORY_GIB, "8Gi", HEAD_PORTS, head_placement, spec_file=args.spec_from_config_map),
    )
    workers = WorkerGroupSpec(
        group_name="gpu-workers" if plan.gpus_per_worker else "workers",
        replicas=plan.workers, min_replicas=plan.workers, max_replicas=plan.workers,
        ray_start_params={},
        template=pod("worker", {"requests": dict(worker_limits), "limits": dict(worker_limits)}, res.memory_gib,
                     "20Gi", (), worker_placement),
    )
    runtime_env = {"env_vars": {
        "RAY_TRAIN_V2_ENABLED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "STRATA_MODEL": model.name,
        "STRATA_TRAINING_HPO": "1" if plan.hpo else "0",
        "STRATA_TRAINING_WORKERS": str(plan.workers),
    }}
    return RayJobSpec(
        entrypoint=entrypoint(model, plan, None if args.spec_from_config_map else args.stack,
                              SPEC_FILE if args.spec_from_config_map else None),
        runtime_env_yaml=yaml.safe_dump(runtime_env, sort_keys=True),
        ray_cluster_spec=RayClusterSpec(ray_version=RAY_VERSION, head_group_spec=head, worker_group_specs=[workers]),
        submission_mode=SubmissionMode.HTTP,
        backoff_limit=args.backoff_limit,
        active_deadline_seconds=model.training.active_deadline_seconds,
        shutdown_after_job_finishes=True,
        ttl_seconds_after_finished=args.ttl_seconds_after_finished,
        metadata={"model": model.name, "team": model.team, "mode": caps.mode.value},
    )


def training_image(cloud: Optional[CloudOutputs]) -> pulumi.Input[str]:
    """The pinned training image, from the stack's ECR repository `training` where there is one."""
    pin = IMAGES[IMAGE_KEY]
    check_image_pinned(pin.ref)
    repositories = cloud.storage.ecr_repositories if cloud is not None else {}
    if IMAGE_KEY in repositories:
        return pulumi.Output.concat(repositories[IMAGE_KEY], ":", pin.tag)
    return pin.ref


class TrainingJob(pulumi.ComponentResource):
    """The model's RayJob (+ retraining CronJob, its RBAC and template where scheduled)."""

    def __init__(
        self,
        name: str,
        args: TrainingJobArgs,
        cluster: ClusterHandle,
        platform: PlatformOutputs,
        cloud: Optional[CloudOutputs] = None,
        after: Sequence[pulumi.Resource] = (),
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        super().__init__("strata:models:TrainingJob", name, None, opts)
        model, caps, ns = args.model, args.capabilities, args.namespace
        operator = platform.operators.get("kuberay")
        if operator is None:
            raise ValueError(f"model {model.name!r}: training needs the KubeRay operator (platform.operators['kuberay'])")
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        self.plan = training_plan(model, caps)
        s3_checkpoints = cloud is not None
        labels = {
            "app.kubernetes.io/part-of": "strata",
            "app.kubernetes.io/managed-by": "pulumi",
            "app.kubernetes.io/component": "training",
            "strata.dev/model": model.name,
            "strata.dev/team": model.team,
        }
        image = training_image(cloud)
        values: dict[str, pulumi.Input[str]] = {IMAGE: image, TRACKING_URI: platform.mlflow_tracking_uri}
        if s3_checkpoints:
            values[CHECKPOINTS_BUCKET] = cloud.storage.checkpoints_bucket

        self.checkpoints_claim: Optional[k8s.core.v1.PersistentVolumeClaim] = None
        needs: list[pulumi.Resource] = list(after)
        if not s3_checkpoints:
            self.checkpoints_claim = k8s.core.v1.PersistentVolumeClaim(
                f"{name}-checkpoints",
                metadata={"name": f"{model.name}-checkpoints", "namespace": ns, "labels": labels},
                # ReadWriteOnce: what a kubeconfig target's default class (kind, k3s) offers;
                # a multi-node preview cluster needs an RWX class for multi-worker runs.
                spec={"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
                opts=child,
            )
            needs.append(self.checkpoints_claim)

        self.spec = ray_job_spec(args, on_eks=s3_checkpoints, s3_checkpoints=s3_checkpoints)
        self.ray_job = kuberay.ray_job(
            f"{name}-rayjob", name=args.ray_job_name, namespace=ns, spec=self.spec, operator=operator,
            values=values, labels={**labels, "strata.dev/trigger": "deploy"},
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider, depends_on=needs,
                                        replace_on_changes=["spec"], delete_before_replace=True),
        )

        self.cron_job: Optional[k8s.batch.v1.CronJob] = None
        self.role: Optional[k8s.rbac.v1.Role] = None
        self.role_binding: Optional[k8s.rbac.v1.RoleBinding] = None
        if model.training.schedule:
            self._schedule(name, args, cluster, operator, image, values, labels, needs, child)

        # The retraining trigger's manifest: this spec, these values, a generated name.
        self.retrain_config_map: Optional[k8s.core.v1.ConfigMap] = None
        if caps.drift_monitoring and platform.monitoring_namespace:
            retrain = retrain_rayjob(self.spec, model=model, namespace=ns, values=values, labels=labels)  # JSON text
            self.retrain_config_map = k8s.core.v1.ConfigMap(
                f"{name}-retrain",
                metadata={"name": retrain_job_config_map_name(model.name), "namespace": platform.monitoring_namespace,
                          "labels": {**labels, "strata.dev/role": "retrain-job"}},
                data={retrain_job_file(model.name): retrain},
                opts=child,
            )

        self.register_outputs({
            "rayJob": args.ray_job_name,
            "workers": self.plan.workers,
            "hpo": self.plan.hpo,
            "gpusPerWorker": self.plan.gpus_per_worker,
            "schedule": model.training.schedule,
            "cronJob": self.cron_job.metadata["name"] if self.cron_job else None,
            "retrainConfigMap": self.retrain_config_map.metadata["name"] if self.retrain_config_map else None,
        })

    def _schedule(self, name: str, args: TrainingJobArgs, cluster: ClusterHandle, operator: pulumi.Resource,
                  image: pulumi.Input[str], values: dict[str, pulumi.Input[str]], labels: dict[str, str],
                  needs: list[pulumi.Resource], child: pulumi.ResourceOptions) -> None:
        model, caps, ns = args.model, args.capabilities, args.namespace
        submitter = f"{model.name}-training-submit"
        submit_labels = {**labels, "app.kubernetes.io/name": submitter, "strata.dev/role": "training-submit"}
        template = kuberay.manifest_json(name=args.ray_job_name, namespace=ns, spec=self.spec, values=values,
                                         labels={**labels, "strata.dev/trigger": "schedule"})
        self.template_config_map = k8s.core.v1.ConfigMap(
            f"{name}-template",
            metadata={"name": f"{model.name}-training-template", "namespace": ns, "labels": labels},
            data={TEMPLATE_KEY: template},
            opts=child,
        )
        self.submit_service_account = k8s.core.v1.ServiceAccount(
            f"{name}-submit-sa",
            metadata={"name": submitter, "namespace": ns, "labels": submit_labels},
            automount_service_account_token=False,  # the CronJob's pod opts in
            opts=child,
        )
        # Create and read back RayJobs in this namespace: nothing else.
        self.role = k8s.rbac.v1.Role(
            f"{name}-submit-role",
            metadata={"name": submitter, "namespace": ns, "labels": submit_labels},
            rules=[{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get"]}],
            opts=child,
        )
        self.role_binding = k8s.rbac.v1.RoleBinding(
            f"{name}-submit-rolebinding",
            metadata={"name": submitter, "namespace": ns, "labels": submit_labels},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": submitter},
            subjects=[{"kind": "ServiceAccount", "name": submitter, "namespace": ns}],
            opts=child,
        )
        pod_labels = dict(submit_labels)
        if caps.istio:
            pod_labels[ISTIO_INJECT_LABEL] = "false"  # a sidecar would keep the Job from completing
        # The API server: 443 on EKS (the team egress allows it), 6443 behind most
        # self-managed clusters' kubernetes Service (policies see the endpoint's port).
        self.submit_network_policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-submit-egress",
            metadata={"name": f"{submitter}-api-server", "namespace": ns, "labels": submit_labels},
            spec={"podSelector": {"matchLabels": {"strata.dev/role": "training-submit", "strata.dev/model": model.name}},
                  "policyTypes": ["Egress"],
                  "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                              "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}]},
            opts=child,
        )
        container = {
            "name": "submit",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-m", "workloads.training.submit"],
            "args": ["--template", f"{TEMPLATE_MOUNT}/{TEMPLATE_KEY}"],
            "resources": resources("50m", "128Mi", "200m", "256Mi"),
            "securityContext": restricted_container_security_context(),
            "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
            "volumeMounts": [{"name": "template", "mountPath": TEMPLATE_MOUNT, "readOnly": True},
                             {"name": "tmp", "mountPath": "/tmp"}],
        }
        self.cron_job = k8s.batch.v1.CronJob(
            f"{name}-schedule",
            metadata={"name": f"{model.name}-train-schedule", "namespace": ns, "labels": submit_labels},
            spec={
                "schedule": model.training.schedule,
                "timeZone": "Etc/UTC",
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": 3600,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {
                    "metadata": {"labels": submit_labels},
                    "spec": {
                        "backoffLimit": 3,
                        "activeDeadlineSeconds": 600,
                        "ttlSecondsAfterFinished": 86400,
                        "template": {
                            "metadata": {"labels": pod_labels},
                            "spec": {
                                "serviceAccountName": submitter,
                                "automountServiceAccountToken": True,  # it talks to the API server
                                "restartPolicy": "Never",
                                "securityContext": restricted_pod_security_context(),
                                "containers": [container],
                                "volumes": [{"name": "template", "configMap": {"name": f"{model.name}-training-template"}},
                                            empty_dir("tmp", "64Mi")],
                            },
                        },
                    },
                },
            },
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider,
                                        depends_on=[operator, self.role_binding, self.template_config_map, *needs]),
        )
