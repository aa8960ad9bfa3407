"""What one layer hands to the next (config -> cloud -> platform -> models).

Plain frozen dataclasses of Pulumi outputs: the only coupling between layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s


@dataclass(frozen=True)
class ClusterHandle:
    """A Kubernetes cluster to deploy onto: EKS from the cloud layer, or a kubeconfig."""

    name: pulumi.Input[str]
    provider: k8s.Provider
    kubernetes_version: str
    gpu_nodes: bool
    # IRSA: set on EKS, None on a kubeconfig target (workloads then use their own credentials).
    oidc_provider_arn: Optional[pulumi.Output[str]] = None
    oidc_issuer: Optional[pulumi.Output[str]] = None  # issuer URL without https://
    # Node groups etc. that must exist before any workload is scheduled.
    ready: tuple[pulumi.Resource, ...] = ()


@dataclass(frozen=True)
class MlflowDatabase:
    host: pulumi.Output[str]
    port: pulumi.Output[int]
    database: str
    username: str
    password: pulumi.Output[str]  # secret


@dataclass(frozen=True)
class FeatureCacheEndpoint:
    """Where the online feature store listens (ElastiCache, or the in-cluster Redis)."""

    host: pulumi.Input[str]
    port: int
    auth_token: pulumi.Output[str]  # secret
    tls: bool


@dataclass(frozen=True)
class CloudStorage:
    """Buckets (names), KMS key, ECR repositories, and the MLflow database where the mode has RDS."""

    kms_key_arn: pulumi.Output[str]
    lake_buckets: dict[str, pulumi.Output[str]]  # "lake" or "bronze"/"silver"/"gold" -> bucket name
    artifacts_bucket: pulumi.Output[str]  # MLflow artifacts + model registry payloads
    checkpoints_bucket: pulumi.Output[str]  # Ray Train checkpoints
    ecr_repositories: dict[str, pulumi.Output[str]]  # image name -> repository URL
    mlflow_database: Optional[MlflowDatabase] = None


@dataclass(frozen=True)
class WorkloadIdentities:
    """IRSA role ARNs by workload key: "mlflow", "karpenter", "training/<team>", "serving/<team>",
    "cdc-sink/<pipeline>"."""

    roles: dict[str, pulumi.Output[str]] = field(default_factory=dict)

    def role_for(self, key: str) -> Optional[pulumi.Output[str]]:
        return self.roles.get(key)


@dataclass(frozen=True)
class CloudOutputs:
    cluster: ClusterHandle
    storage: CloudStorage
    identities: WorkloadIdentities
    vpc_id: pulumi.Output[str]
    feature_cache: Optional[FeatureCacheEndpoint] = None  # where the mode's online store is ElastiCache


@dataclass(frozen=True)
class PlatformOutputs:
    """What per-model resources need from the platform layer."""

    team_namespaces: dict[str, str]  # team -> namespace name
    mlflow_tracking_uri: pulumi.Output[str]
    # namespace name -> the resource that creates it (PlatformNamespace: namespace, quota,
    # policies); names are plain strings, so a model's objects wait on these explicitly.
    namespace_resources: dict[str, pulumi.Resource] = field(default_factory=dict)
    # Operators whose CRDs a custom resource needs: a CR depends on its operator's release.
    operators: dict[str, pulumi.Resource] = field(default_factory=dict)  # "kuberay", "seldon", "keda", "strimzi", "istio", "prometheus"
    kafka_bootstrap: Optional[pulumi.Output[str]] = None
    kafka_cluster_name: Optional[str] = None
    kafka_namespace: Optional[str] = None
    monitoring_namespace: Optional[str] = None
    mlflow_namespace: str = "mlflow"  # where the tracking server's pods are (NetworkPolicy peers)
    # The online feature store's connection URL, as a Secret of this name (key `url`) in every
    # team namespace whose models declare online views; None where no model does.
    feature_store_secret: Optional[str] = None
    # The feature registry's URL (PostgreSQL), as a Secret of this name (key `url`) in every team
    # namespace whose models materialize views from gold; None where none does.
    feature_registry_secret: Optional[str] = None
    # Online views the CDC pipelines' feature aggregators keep current from the change stream:
    # a model's materialization from gold leaves them out (one online writer per view). Their
    # offline copy gold/<view> (the lake step `workloads.data.lake.aggregates`) still exists for
    # training sets; where no aggregator runs, materialization serves that copy.
    streamed_views: frozenset = frozenset()
