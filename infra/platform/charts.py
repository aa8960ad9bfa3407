"""The ONE table of pinned Helm charts (and the few images we run ourselves).

Upgrading an operator is one row here plus, when the served CRD API versions change,
the matching builder in `infra/crds/<operator>.py` (its models mirror the CRD schema of
the pinned version). Versions are exact: no ranges, no `latest`; a test enforces it.
The repository URL is configuration of the deployed platform (the Helm provider fetches
the chart at `pulumi up`); nothing is downloaded by this program's code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import pulumi
import pulumi_kubernetes as k8s

_EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class ChartPin:
    """One pinned chart: where it comes from and which CRD API versions it serves."""

    key: str  # our name for it; also the default Helm release name
    repo: str  # Helm repository URL
    chart: str
    version: str  # exact semver
    app_version: str  # the operator/app version the chart deploys
    serves: tuple[str, ...] = ()  # "<group>/<version>/<Kind>" of the CRDs it installs that we use

    @property
    def oci(self) -> bool:
        return self.repo.startswith("oci://")

    @property
    def reference(self) -> str:
        """What Helm installs: the chart name in `repo`, or the full URL of an OCI chart."""
        return f"{self.repo}/{self.chart}" if self.oci else self.chart

    def __post_init__(self) -> None:
        if not _EXACT_VERSION.match(self.version):
            raise ValueError(f"chart {self.key!r}: version {self.version!r} is not an exact x.y.z pin")


# fmt: off
_PINS = (
    ChartPin("istio-base",    "https://istio-release.storage.googleapis.com/charts", "base",    "1.30.3", "1.30.3",
             ("security.istio.io/v1/PeerAuthentication", "networking.istio.io/v1/Gateway",
              "networking.istio.io/v1/VirtualService", "networking.istio.io/v1/DestinationRule")),
    ChartPin("istio-cni",     "https://istio-release.storage.googleapis.com/charts", "cni",     "1.30.3", "1.30.3"),
    ChartPin("istiod",        "https://istio-release.storage.googleapis.com/charts", "istiod",  "1.30.3", "1.30.3"),
    ChartPin("istio-gateway", "https://istio-release.storage.googleapis.com/charts", "gateway", "1.30.3", "1.30.3"),
    ChartPin("keda",          "https://kedacore.github.io/charts", "keda", "2.20.2", "2.20.2",
             ("keda.sh/v1alpha1/ScaledObject", "keda.sh/v1alpha1/TriggerAuthentication")),
    # Strimzi 0.51 is the last line serving kafka.strimzi.io/v1beta2 (v1 served since 0.49,
    # v1beta2 removed in 1.0): moving to 1.x means switching infra/crds/strimzi.py to v1.
    ChartPin("strimzi",       "https://strimzi.io/charts/", "strimzi-kafka-operator", "0.51.0", "0.51.0",
             ("kafka.strimzi.io/v1beta2/Kafka", "kafka.strimzi.io/v1beta2/KafkaNodePool",
              "kafka.strimzi.io/v1beta2/KafkaTopic", "kafka.strimzi.io/v1beta2/KafkaUser")),
    ChartPin("kube-prometheus-stack", "https://prometheus-community.github.io/helm-charts",
             "kube-prometheus-stack", "88.5.3", "0.93.1",  # prometheus-operator v0.93.1
             ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule")),
    # 1.6.0: the newest KubeRay whose CRDs we can validate against (the schema tests fetch them).
    ChartPin("kuberay",       "https://ray-project.github.io/kuberay-helm/", "kuberay-operator", "1.6.0", "1.6.0",
             ("ray.io/v1/RayJob", "ray.io/v1/RayCluster", "ray.io/v1/RayService")),
    ChartPin("seldon",        "https://storage.googleapis.com/seldon-charts", "seldon-core-operator", "1.18.2", "1.18.2",
             ("machinelearning.seldon.io/v1/SeldonDeployment",)),
    # Mirrors the Kafka client credentials Strimzi writes in the Kafka namespace (each stream
    # worker's KafkaUser Secret, the cluster CA certificate) into the team namespaces that use them.
    ChartPin("reflector",     "oci://ghcr.io/emberstack/helm-charts", "reflector", "10.0.60", "10.0.60"),
    ChartPin("nvidia-device-plugin", "https://nvidia.github.io/k8s-device-plugin", "nvidia-device-plugin",
             "0.20.0", "0.20.0"),
)
# fmt: on

CHARTS: Mapping[str, ChartPin] = MappingProxyType({pin.key: pin for pin in _PINS})


@dataclass(frozen=True)
class ImagePin:
    """An image we run ourselves (not via a chart). Always a tag, never `latest`. A tag we
    build names one content: infra/platform/image-tags.json records each tag's digest
    (infra.platform.image_tags; change an image's files -> bump its tag)."""

    repository: str
    tag: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


IMAGES: Mapping[str, ImagePin] = MappingProxyType({
    # Built from this repository (mlflow + psycopg 3 + boto3; the upstream image has no DB
    # driver or S3 client) and pushed to the stack's ECR repository "mlflow" when the cloud
    # layer provides one; this name is what a kubeconfig target (preview, kind) loads.
    # The tag is MLflow's version plus our build number.
    "mlflow": ImagePin("strata/mlflow", "3.17.2-1"),
    # The official PostgreSQL image (runs as uid 999 with a writable PGDATA and /var/run).
    "postgres": ImagePin("postgres", "17.6"),
    # The official Redis image (Debian bookworm; runs as uid 999 with /data writable): the
    # in-cluster online feature store (`infra.platform.features`, quick mode). 8.2.2: the
    # CVE-2025-49844 fix.
    "redis": ImagePin("redis", "8.2.2"),
    # Built from this repository (workloads.monitoring + mlflow client + the RayJob submitter), pushed to the
    # stack's ECR repository "drift-monitor": the per-model drift exporters and the retraining
    # trigger run it. The tag is the project version.
    "drift-monitor": ImagePin("strata/drift-monitor", "0.1.10"),
    # Built from this repository (Ray + torch + workloads.training), ECR repository "training":
    # the RayJobs the retraining trigger creates run it.
    "training": ImagePin("strata/training", "0.1.17"),
    # Built from workloads/serving/Dockerfile (Seldon Core 1.19 wrapper, its own lock), ECR
    # repository "serving": both predictors of every SeldonDeployment run it.
    "serving": ImagePin("strata/serving", "0.2.8"),  # 0.2.0: redis (online enrichment)
    # The main environment's kafka-python + torch + workloads.streaming, ECR repository
    # "stream-worker": the per-model stream workers (`python -m workloads.streaming`).
    "stream-worker": ImagePin("strata/stream-worker", "0.2.8"),  # 0.2.0: redis, enrichment
    # workloads.rollout + its clients, ECR repository "rollout-controller": the per-model
    # rollout controllers (`python -m workloads.rollout --cluster`).
    "rollout-controller": ImagePin("strata/rollout-controller", "0.1.5"),
    # Strimzi's Kafka image + Debezium's PostgreSQL connector (workloads/data/ingest/connect/
    # Dockerfile, the local worker's pom.xml): the KafkaConnect of the CDC pipelines.
    "kafka-connect": ImagePin("strata/kafka-connect", "0.1.0"),
})


def helm_release(resource_name: str, key: str, *, namespace: pulumi.Input[str], values: dict,
                 opts: pulumi.ResourceOptions, release_name: str | None = None,
                 timeout_s: int = 600) -> k8s.helm.v3.Release:
    """A `helm.v3.Release` of the pinned chart `key`: atomic, waits, never reuses values."""
    pin = CHARTS[key]
    return k8s.helm.v3.Release(
        resource_name,
        name=release_name or pin.key,
        chart=pin.reference,
        version=pin.version,
        repository_opts=None if pin.oci else {"repo": pin.repo},
        namespace=namespace,
        create_namespace=False,  # namespaces are ours (PSA labels, quotas, NetworkPolicies)
        atomic=True,
        cleanup_on_fail=True,
        max_history=10,
        timeout=timeout_s,
        skip_crds=False,
        values=values,
        opts=opts,
    )
