"""`FeatureCache`: the online feature store on AWS, an ElastiCache (Valkey) replication group.

Created by `build_cloud` only where the mode's `online_store` is ElastiCache and some model
declares online feature views. What it is made of:

| child                         | what for                                                          |
|-------------------------------|-------------------------------------------------------------------|
| `elasticache.SubnetGroup`     | the VPC's private subnets: no route from the internet              |
| `ec2.SecurityGroup` + 1 rule  | 6379 from the EKS cluster security group (every node) and nothing else |
| `secretsmanager.Secret` (+ version) | the AUTH token, generated once, KMS-encrypted, kept by `ignore_changes` |
| `elasticache.ReplicationGroup`| Valkey, TLS in transit (`required`), at rest with the platform's KMS key |

The token follows `MlflowPostgres`'s master password: generated on the first `pulumi up`
(`secrets.token_urlsafe`, no `@`, `"` or `/`, which ElastiCache refuses), kept in Secrets
Manager, read back as a secret Output, and never written to a plain input or output. The
platform layer builds the consumers' `rediss://` URL from it, inside a Kubernetes Secret.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_aws as aws

from infra.cloud.common import child_opts, with_name
from infra.contracts import FeatureCacheEndpoint

VALKEY_PORT = 6379
REPLICATION_GROUP_ID = r"^[a-z][a-z0-9-]{0,39}$"  # ElastiCache: 1-40 characters, starts with a letter


@dataclass(frozen=True)
class FeatureCacheArgs:
    """Valkey for the online features. Defaults are the standard mode's (one node)."""

    replication_group_id: str  # physical id, e.g. "strata-standard-staging-features"
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]  # private subnets
    client_security_group_id: pulumi.Input[str]  # the EKS cluster security group (all nodes)
    kms_key_arn: pulumi.Input[str]  # the platform's key (storage): at-rest encryption and the token's secret
    node_type: str = "cache.t4g.small"
    nodes: int = 1  # primary + replicas; > 1: replicas in other AZs with automatic failover
    engine_version: str = "8.1"  # pinned major.minor; ElastiCache applies patches in the maintenance window
    snapshot_retention_days: int = 1  # online values are rebuilt by materialization: a short window suffices
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import re

        if not re.match(REPLICATION_GROUP_ID, self.replication_group_id) or self.replication_group_id.endswith("-"):
            raise ValueError(f"FeatureCacheArgs.replication_group_id: {self.replication_group_id!r} must be 1-40 "
                             "lowercase letters, digits or '-', start with a letter and not end with '-'")
        if not 1 <= self.nodes <= 6:
            raise ValueError(f"FeatureCacheArgs.nodes: {self.nodes} is not between 1 and 6 (primary + up to 5 replicas)")


class FeatureCache(pulumi.ComponentResource):
    """`strata:cloud:FeatureCache`; see the module docstring."""

    def __init__(self, name: str, args: FeatureCacheArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:cloud:FeatureCache", name, None, opts)
        tags = dict(args.tags)
        subnet_group = aws.elasticache.SubnetGroup(
            f"{name}-subnets",
            name=f"{args.replication_group_id}-subnets",
            description=f"private subnets of {args.replication_group_id}",
            subnet_ids=args.subnet_ids,
            tags=tags,
            opts=child_opts(self),
        )
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            description=f"Valkey {args.replication_group_id}: {VALKEY_PORT} from cluster nodes only",
            vpc_id=args.vpc_id,
            tags=with_name(tags, f"{args.replication_group_id}-cache"),
            opts=child_opts(self),
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-sg-valkey-from-cluster",
            security_group_id=self.security_group.id,
            description="Valkey (TLS) from the EKS cluster security group",
            ip_protocol="tcp",
            from_port=VALKEY_PORT,
            to_port=VALKEY_PORT,
            referenced_security_group_id=args.client_security_group_id,
            tags=tags,
            opts=child_opts(self),
        )
        secret = aws.secretsmanager.Secret(
            f"{name}-auth",
            name_prefix=f"{args.replication_group_id}-auth-",
            description=f"AUTH token of {args.replication_group_id}",
            kms_key_id=args.kms_key_arn,
            recovery_window_in_days=30,
            tags=tags,
            opts=child_opts(self),
        )
        version = aws.secretsmanager.SecretVersion(
            f"{name}-auth-value",
            secret_id=secret.id,
            secret_string=pulumi.Output.secret(generate_auth_token()),
            opts=child_opts(self, ignore_changes=["secretString"]),
        )
        token = pulumi.Output.secret(version.secret_string)
        multi_az = args.nodes > 1
        self.replication_group = aws.elasticache.ReplicationGroup(
            f"{name}-valkey",
            replication_group_id=args.replication_group_id,
            description=f"online feature store of {args.replication_group_id}",
            engine="valkey",
            engine_version=args.engine_version,
            node_type=args.node_type,
            num_cache_clusters=args.nodes,
            automatic_failover_enabled=multi_az,
            multi_az_enabled=multi_az,
            port=VALKEY_PORT,
            subnet_group_name=subnet_group.name,
            security_group_ids=[self.security_group.id],
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            at_rest_encryption_enabled=True,
            kms_key_id=args.kms_key_arn,
            auth_token=token,
            auth_token_update_strategy="ROTATE",
            auto_minor_version_upgrade=True,
            snapshot_retention_limit=args.snapshot_retention_days,
            apply_immediately=False,
            tags=tags,
            opts=child_opts(self),
        )
        self.endpoint = FeatureCacheEndpoint(host=self.replication_group.primary_endpoint_address,
                                             port=VALKEY_PORT, auth_token=token, tls=True)
        self.auth_secret_arn = secret.arn
        self.register_outputs({"primaryEndpoint": self.replication_group.primary_endpoint_address,
                               "authSecretArn": secret.arn})


def generate_auth_token() -> str:
    """43 URL-safe characters: ElastiCache takes 16-128 printable characters without `@`, `"`, `/`."""
    return secrets.token_urlsafe(32)
