"""Cloud layer (AWS): network, EKS + node pools, Karpenter, storage, workload identities.

`build_cloud` is the only function the program calls: it turns the `StackSpec` (the mode's
capabilities + the stack's overrides) into each component's `...Args` once, and returns the
`CloudOutputs` contract. Components never read config or look at the mode name.

| component                          | type token                        | exists when            |
|------------------------------------|-----------------------------------|------------------------|
| `Network`                          | `strata:cloud:Network`            | always                 |
| `EksCluster`                       | `strata:cloud:EksCluster`         | always                 |
| `ManagedNodeGroups`                | `strata:cloud:ManagedNodeGroups`  | always                 |
| `Karpenter`                        | `strata:cloud:Karpenter`          | `capabilities.karpenter` |
| `DataStorage` (+ `SecureBucket`s)  | `strata:cloud:DataStorage`        | always                 |
| `MlflowPostgres`                   | `strata:cloud:MlflowPostgres`     | MLflow backend is RDS  |
| `WorkloadRoles` (+ `IrsaRole`s)    | `strata:cloud:WorkloadRoles`      | always                 |
| `FeatureCache` (ElastiCache Valkey) | `strata:cloud:FeatureCache`      | `online_store` is ElastiCache and a model declares online views |
"""

from __future__ import annotations

from infra.cloud.cluster import (
    EksCluster,
    EksClusterArgs,
    ManagedNodeGroups,
    ManagedNodeGroupsArgs,
    node_group_specs,
)
from infra.cloud.common import physical_prefix
from infra.cloud.features import FeatureCache, FeatureCacheArgs
from infra.cloud.iam import BronzeWriter, IrsaRole, IrsaRoleArgs, WorkloadRoles, WorkloadRolesArgs, team_namespace
from infra.cloud.karpenter import Karpenter, KarpenterArgs
from infra.cloud.network import Network, NetworkArgs
from infra.cloud.storage import (
    DataStorage,
    DataStorageArgs,
    MlflowPostgres,
    MlflowPostgresArgs,
    SecureBucket,
    SecureBucketArgs,
)
from infra.config import StackSpec
from infra.contracts import CloudOutputs, CloudStorage, ClusterHandle, WorkloadIdentities
from infra.modes import MlflowBackend, Mode, OnlineStore
from workloads.catalogue.declarations import cdc_sink, feature_plan

__all__ = [
    "build_cloud",
    "DataStorage", "DataStorageArgs", "EksCluster", "FeatureCache", "FeatureCacheArgs", "EksClusterArgs", "IrsaRole", "IrsaRoleArgs",
    "Karpenter", "KarpenterArgs", "ManagedNodeGroups", "ManagedNodeGroupsArgs", "MlflowPostgres",
    "MlflowPostgresArgs", "Network", "NetworkArgs", "SecureBucket", "SecureBucketArgs",
    "WorkloadRoles", "WorkloadRolesArgs",
]


def build_cloud(spec: StackSpec) -> CloudOutputs:
    """Create the AWS layer of a stack and hand the platform layer what it needs."""
    caps, config, tags = spec.capabilities, spec.config, spec.tags
    prefix = physical_prefix(spec.project, spec.stack, config.environment)
    cluster_name = prefix
    enterprise = caps.mode is Mode.ENTERPRISE

    network = Network(
        f"{spec.stack}-network",
        NetworkArgs(
            cluster_name=cluster_name,
            region=spec.region,
            vpc_cidr=config.network.vpc_cidr,
            az_count=caps.az_count,
            nat_strategy=caps.nat_strategy,
            flow_log_retention_days=config.network.flow_log_retention_days,
            tags=tags,
        ),
    )

    eks = EksCluster(
        f"{spec.stack}-cluster",
        EksClusterArgs(
            cluster_name=cluster_name,
            region=spec.region,
            kubernetes_version=config.cluster.kubernetes_version,
            vpc_id=network.vpc_id,
            private_subnet_ids=network.private_subnet_ids,
            public_subnet_ids=network.public_subnet_ids,
            endpoint_access=caps.endpoint_access,
            endpoint_allowlist=config.cluster.endpoint_allowlist,
            nat_public_ips=network.nat_public_ips,
            deletion_protection=enterprise,
            tags=tags,
        ),
    )

    node_groups = ManagedNodeGroups(
        f"{spec.stack}-nodes",
        ManagedNodeGroupsArgs(
            cluster_name=eks.cluster.name,
            region=spec.region,
            subnet_ids=network.private_subnet_ids,
            groups=node_group_specs(
                system_instance_types=config.cluster.system_instance_types,
                system_size=caps.system_pool_size,
                cpu_spot=caps.cpu_spot_pool,
                cpu_spot_instance_types=config.cluster.cpu_spot_instance_types,
                cpu_spot_size=caps.cpu_spot_pool_size,
                gpu_spot=caps.gpu_spot_pool,
                gpu_spot_instance_types=config.cluster.gpu_spot_instance_types,
                gpu_spot_max=caps.gpu_spot_max,
                gpu_on_demand_type=config.cluster.gpu_on_demand_fallback_type,
            ),
            kubernetes_version=config.cluster.kubernetes_version,
            tags=tags,
        ),
    )
    eks.install_addons(f"{spec.stack}-cluster", after=node_groups.ready)

    storage = DataStorage(
        f"{spec.stack}-storage",
        DataStorageArgs(
            registry_prefix=prefix,
            lake_layout=caps.lake_layout,
            lake_versioning_lifecycle=caps.lake_versioning_lifecycle,
            tags=tags,
        ),
    )

    database = None
    if caps.mlflow_backend in (MlflowBackend.RDS, MlflowBackend.RDS_MULTI_AZ):
        database = MlflowPostgres(
            f"{spec.stack}-mlflow-db",
            MlflowPostgresArgs(
                identifier=f"{prefix}-mlflow",
                vpc_id=network.vpc_id,
                subnet_ids=network.private_subnet_ids,
                client_security_group_id=eks.cluster_security_group_id,
                kms_key_arn=storage.kms_key_arn,
                multi_az=caps.mlflow_backend is MlflowBackend.RDS_MULTI_AZ,
                deletion_protection=enterprise,
                backup_retention_days=14 if enterprise else 7,
                instance_class="db.m7g.large" if enterprise else "db.t4g.medium",
                tags=tags,
            ),
        ).database

    feature_cache = None
    if caps.online_store is not OnlineStore.IN_CLUSTER_REDIS and any(feature_plan(m) for m in spec.models):
        feature_cache = FeatureCache(
            f"{spec.stack}-feature-cache",
            FeatureCacheArgs(
                replication_group_id=f"{prefix}-features",
                vpc_id=network.vpc_id,
                subnet_ids=network.private_subnet_ids,
                client_security_group_id=eks.cluster_security_group_id,
                kms_key_arn=storage.kms_key_arn,
                # multi-AZ: a replica in each further zone, automatic failover
                nodes=caps.az_count if caps.online_store is OnlineStore.ELASTICACHE_MULTI_AZ else 1,
                node_type="cache.m7g.large" if enterprise else "cache.t4g.small",
                snapshot_retention_days=7 if enterprise else 1,
                tags=tags,
            ),
        ).endpoint

    team_models: dict[str, tuple[str, ...]] = {}
    for model in spec.models:
        team_models[model.team] = tuple(sorted((*team_models.get(model.team, ()), model.name)))
    # The CDC sinks run where the mode has Kafka (infra.platform.cdc), each in its team's namespace.
    cdc_sinks = {p.name: BronzeWriter(namespace=team_namespace(config.namespace_prefix, p.team),
                                      service_account=cdc_sink(p).name, table=p.lake_table)
                 for p in spec.cdc_pipelines} if caps.kafka else {}
    bronze = storage.lake.get("bronze", storage.lake.get("lake"))
    roles = WorkloadRoles(
        f"{spec.stack}-workload-roles",
        WorkloadRolesArgs(
            oidc_provider_arn=eks.oidc_provider_arn,
            oidc_issuer=eks.oidc_issuer,
            kms_key_arn=storage.kms_key_arn,
            artifacts_bucket_arn=storage.artifacts.arn,
            checkpoints_bucket_arn=storage.checkpoints.arn,
            lake_bucket_arns=tuple(b.arn for b in storage.lake.values()),
            team_models=team_models,
            namespace_prefix=config.namespace_prefix,
            bronze_bucket_arn=bronze.arn if bronze is not None else None,
            cdc_sinks=cdc_sinks,
            tags=tags,
        ),
    )
    identity_roles = dict(roles.arns)

    ready = list(node_groups.ready)
    if caps.karpenter:
        karpenter = Karpenter(
            f"{spec.stack}-karpenter",
            KarpenterArgs(
                cluster_name=cluster_name,
                region=spec.region,
                cluster_arn=eks.cluster.arn,
                cluster_endpoint=eks.cluster.endpoint,
                oidc_provider_arn=eks.oidc_provider_arn,
                oidc_issuer=eks.oidc_issuer,
                provider=eks.provider,
                depends_on=tuple(node_groups.ready),
                tags=tags,
            ),
        )
        identity_roles["karpenter"] = karpenter.controller_role_arn

    cluster = ClusterHandle(
        name=eks.cluster.name,
        provider=eks.provider,
        kubernetes_version=config.cluster.kubernetes_version,
        gpu_nodes=caps.gpu_spot_pool,
        oidc_provider_arn=eks.oidc_provider_arn,
        oidc_issuer=eks.oidc_issuer,
        ready=tuple(ready),
    )
    cloud_storage = CloudStorage(
        kms_key_arn=storage.kms_key_arn,
        lake_buckets=storage.lake_buckets,
        artifacts_bucket=storage.artifacts.bucket_name,
        checkpoints_bucket=storage.checkpoints.bucket_name,
        ecr_repositories=storage.ecr_repositories,
        mlflow_database=database,
    )
    return CloudOutputs(
        cluster=cluster,
        storage=cloud_storage,
        identities=WorkloadIdentities(roles=identity_roles),
        vpc_id=network.vpc_id,
        feature_cache=feature_cache,
    )
