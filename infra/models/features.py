"""`FeatureMaterialization`: a model's online views, materialized from gold on a schedule.

One Kubernetes CronJob `<model>-materialize` per model with online views, in its team
namespace, running the same entry point as locally (`strata features materialize VIEW`,
`workloads.data.features.cli`) on the training image, once per online view that no CDC
feature aggregator keeps current (`PlatformOutputs.streamed_views`: those are written online from
the change stream, one writer per view; where the mode has no Kafka a streaming view is
materialized too, from its offline copy gold/<view>, which the lake step writes from bronze:
`workloads.data.lake.aggregates`), with:

- the spec as deployed: the key `feature-spec.json` of the model's `<model>-spec` ConfigMap
  (the plain spec, which `--spec` loads), mounted at `/spec`;
- `STRATA_REDIS_URL` from the team's Secret `feature-store` (`infra.platform.features`),
  never a literal; `STRATA_LAKE_GOLD_BUCKET` the stack's gold bucket where the cloud layer
  has one;
- `STRATA_FEATURE_REGISTRY` from the team's Secret `feature-registry`
  (`infra.platform.feature_registry`: the registry's database on MLflow's PostgreSQL), so each
  run's `strata features apply` (the model's views and their content hashes) and the gold
  version each materialization read outlive the pod;
- the model's training identity (`<model>-training`: reads the lake), no API token;
- the labels the online store's NetworkPolicies admit (`app.kubernetes.io/component:
  feature-materialization`, `strata.dev/model`); no Istio sidecar (a Job's pod would never
  complete with one, and neither Redis nor S3 is in the mesh).

Schedule: every quarter of the shortest online view's TTL (values are re-read well before
they expire), rounded down to an interval cron can keep evenly (a divisor of 60 minutes or
of 24 hours), at least every 5 minutes and at most daily. `concurrencyPolicy: Forbid`: a
slow run is never overlapped. The entry point exposes no metrics endpoint (a run lasts
seconds to minutes), so freshness is watched where values are served: the
`FeatureValuesStale` ticket on `strata_feature_age_seconds` of the servers and workers.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s import (check_image_pinned, empty_dir, resources, restricted_container_security_context,
                       restricted_pod_security_context)
from infra.platform.feature_registry import registry_env
from infra.platform.features import COMPONENT_LABEL, MATERIALIZATION_COMPONENT, MODEL_LABEL, SECRET_NAME, URL_KEY
from workloads.spec import ModelSpec

SPEC_DIR = "/spec"
FEATURE_SPEC_KEY = "feature-spec.json"  # in the model's `<model>-spec` ConfigMap
TRAINING_UID = 10001  # workloads/training/Dockerfile's USER
_MINUTE_STEPS = (5, 10, 15, 20, 30)
_HOUR_STEPS = (1, 2, 3, 4, 6, 8, 12)


def schedule_for(ttl_seconds: int) -> str:
    """Cron for a quarter of the TTL, rounded down to an even step (see the module docstring)."""
    minutes = max(5, ttl_seconds // 4 // 60)
    if minutes < 60:
        return f"*/{max(m for m in _MINUTE_STEPS if m <= minutes)} * * * *"
    hours = minutes // 60
    if hours < 24:
        step = max(h for h in _HOUR_STEPS if h <= hours)
        return "0 * * * *" if step == 1 else f"0 */{step} * * *"
    return "0 0 * * *"


def online_views(model: ModelSpec) -> list[str]:
    return [v.name for v in model.features.views if v.online] if model.features is not None else []


@dataclass(frozen=True)
class FeatureMaterializationArgs:
    """Defaults: 500m / 1 GiB per run, three attempts."""

    model: ModelSpec
    namespace: str
    image: pulumi.Input[str]
    service_account: str  # the model's training identity
    spec_config_map: str  # holds FEATURE_SPEC_KEY
    labels: Mapping[str, str]
    registry_secret: str  # PlatformOutputs.feature_registry_secret: the registry's URL (key `url`)
    gold_bucket: Optional[pulumi.Input[str]] = None
    views: tuple[str, ...] = ()  # the online views to materialize from gold; empty: all of them
    cpu: str = "500m"
    memory: str = "1Gi"
    backoff_limit: int = 2

    def __post_init__(self) -> None:
        if not self.registry_secret:
            raise ValueError(f"FeatureMaterializationArgs.registry_secret: {self.model.name!r} materializes feature "
                             "views but names no registry Secret (PlatformOutputs.feature_registry_secret is unset)")
        if not online_views(self.model):
            raise ValueError(f"FeatureMaterializationArgs.model: {self.model.name!r} declares no online feature views")
        unknown = sorted(set(self.views) - set(online_views(self.model)))
        if unknown:
            raise ValueError(f"FeatureMaterializationArgs.views: {', '.join(unknown)} is not an online view of "
                             f"{self.model.name!r} (its online views: {', '.join(online_views(self.model))})")

    @property
    def materialized_views(self) -> list[str]:
        return list(self.views) if self.views else online_views(self.model)


def cron_job_spec(args: FeatureMaterializationArgs) -> dict:
    model = args.model
    ttl = min(v.ttl_seconds for v in model.features.views if v.name in args.materialized_views)
    spec = f"--spec {SPEC_DIR}/{FEATURE_SPEC_KEY}"
    # the views' definitions first (content hashes; unchanged ones are left as they are), then each view
    runs = " && ".join([f"python -m infra.cli features apply {spec}",
                        *(f"python -m infra.cli features materialize {shlex.quote(view)} {spec}"
                          for view in args.materialized_views)])
    env = [{"name": "STRATA_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": URL_KEY}}},
           registry_env(args.registry_secret),
           {"name": "STRATA_STATE_DIR", "value": "/tmp/strata"}, {"name": "HOME", "value": "/tmp"}]
    if args.gold_bucket is not None:
        env.append({"name": "STRATA_LAKE_GOLD_BUCKET", "value": args.gold_bucket})
    check_image_pinned(args.image)
    # A run-to-completion container: no probes (`infra.k8s.container` is for servers).
    job = {"name": "materialize", "image": args.image, "imagePullPolicy": "IfNotPresent",
           "resources": resources(args.cpu, args.memory),
           "securityContext": restricted_container_security_context(TRAINING_UID),
           "command": ["/bin/sh", "-c"], "args": [runs], "env": env,
           "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True}]}
    pod_labels = {**args.labels, MODEL_LABEL: model.name, COMPONENT_LABEL: MATERIALIZATION_COMPONENT,
                  "app.kubernetes.io/name": f"{model.name}-materialize"}
    interval_s = max(300, ttl // 4)
    return {
        "schedule": schedule_for(ttl),
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 300,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {"metadata": {"labels": pod_labels}, "spec": {
            "backoffLimit": args.backoff_limit,
            "activeDeadlineSeconds": interval_s,  # never still running when the next one is due
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": args.service_account,
                    "automountServiceAccountToken": False,
                    "securityContext": restricted_pod_security_context(TRAINING_UID),
                    "containers": [job],
                    "volumes": [empty_dir("tmp", "2Gi"),
                                {"name": "spec", "configMap": {"name": args.spec_config_map, "items": [
                                    {"key": FEATURE_SPEC_KEY, "path": FEATURE_SPEC_KEY}]}}],
                },
            },
        }},
    }


class FeatureMaterialization(pulumi.ComponentResource):
    """`strata:models:FeatureMaterialization`; see the module docstring."""

    def __init__(self, name: str, args: FeatureMaterializationArgs, after: tuple[pulumi.Resource, ...] = (),
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:models:FeatureMaterialization", name, None, opts)
        self.cron_job = k8s.batch.v1.CronJob(
            f"{name}-cronjob",
            metadata={"name": f"{args.model.name}-materialize", "namespace": args.namespace,
                      "labels": {**args.labels, COMPONENT_LABEL: MATERIALIZATION_COMPONENT}},
            spec=cron_job_spec(args),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)))
        self.register_outputs({"cronJob": f"{args.model.name}-materialize", "views": args.materialized_views})
