"""Storage: the data KMS key, S3 buckets (lake, MLflow artifacts, Ray checkpoints), ECR, RDS.

Every bucket is a `SecureBucket`: SSE-KMS with the data key (bucket keys on), all four
public-access blocks, `BucketOwnerEnforced` (ACLs off), a TLS-only bucket policy, and
versioning + lifecycle rules as its args say. ECR repositories are immutable-tag,
scan-on-push, KMS-encrypted. The MLflow database (`MlflowPostgres`) is PostgreSQL on RDS in
the private subnets, reachable on 5432 from the cluster security group only.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_aws as aws

from infra.cloud.common import child_opts, with_name
from infra.cloud.iam import document, statement
from infra.contracts import MlflowDatabase
from infra.modes import LakeLayout

MEDALLION_LAYERS = ("bronze", "silver", "gold")
# One ECR repository each; CI builds them from infra.cloud.images.DOCKERFILES at the IMAGES tag.
DEFAULT_IMAGES = ("training", "serving", "stream-worker", "rollout-controller", "drift-monitor", "mlflow",
                  "kafka-connect")


def lake_bucket_keys(layout: LakeLayout) -> tuple[str, ...]:
    """`CloudStorage.lake_buckets` keys of a lake layout."""
    return ("lake",) if layout is LakeLayout.SINGLE_BUCKET else MEDALLION_LAYERS


@dataclass(frozen=True)
class LifecyclePolicy:
    """Lifecycle rules of a bucket; `None` fields add no rule. Defaults suit a versioned lake."""

    noncurrent_expiration_days: Optional[int] = 90
    abort_incomplete_multipart_days: int = 7
    transition_to_intelligent_tiering_days: Optional[int] = 30
    expiration_days: Optional[int] = None  # current objects (checkpoints age out; lakes do not)


@dataclass(frozen=True)
class SecureBucketArgs:
    """One S3 bucket with the platform's guardrails. Only versioning/lifecycle vary."""

    kms_key_arn: pulumi.Input[str]
    purpose: str  # "lake-bronze", "mlflow-artifacts", ... (a tag and the name's role)
    versioning: bool = True
    lifecycle: Optional[LifecyclePolicy] = None
    name_prefix: str = ""  # physical name prefix (at most 36 characters are kept)
    force_destroy: bool = False  # never empty a bucket on `pulumi destroy` unless asked
    tags: Mapping[str, str] = field(default_factory=dict)


class SecureBucket(pulumi.ComponentResource):
    """`strata:cloud:SecureBucket`: bucket + encryption + public-access block + ownership + policy."""

    def __init__(self, name: str, args: SecureBucketArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:cloud:SecureBucket", name, None, opts)
        self.bucket = aws.s3.Bucket(
            f"{name}-bucket",
            # S3 names are global: the provider appends a random suffix to the prefix.
            bucket_prefix=f"{args.name_prefix}-"[:37] if args.name_prefix else None,
            force_destroy=args.force_destroy,
            tags={**args.tags, "strata:purpose": args.purpose},
            opts=child_opts(self),
        )
        bucket_id = self.bucket.id
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-sse",
            bucket=bucket_id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms", kms_master_key_id=args.kms_key_arn
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=child_opts(self),
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket_id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child_opts(self),
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket_id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child_opts(self),
        )
        versioning = None
        if args.versioning:
            versioning = aws.s3.BucketVersioning(
                f"{name}-versioning",
                bucket=bucket_id,
                versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
                opts=child_opts(self),
            )
        if args.lifecycle is not None:
            aws.s3.BucketLifecycleConfiguration(
                f"{name}-lifecycle",
                bucket=bucket_id,
                rules=_lifecycle_rules(args.lifecycle, args.versioning),
                opts=child_opts(self, depends_on=[versioning] if versioning else None),
            )
        arns = [self.bucket.arn, self.bucket.arn.apply(lambda a: f"{a}/*")]
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket_id,
            policy=document(
                [
                    statement(
                        "DenyInsecureTransport",
                        ["s3:*"],
                        arns,
                        effect="Deny",
                        principal="*",
                        conditions={"Bool": {"aws:SecureTransport": "false"}},
                    ),
                    statement(
                        "DenyOutdatedTls",
                        ["s3:*"],
                        arns,
                        effect="Deny",
                        principal="*",
                        conditions={"NumericLessThan": {"s3:TlsVersion": "1.2"}},
                    ),
                ]
            ),
            opts=child_opts(self, depends_on=[public_access]),
        )
        self.bucket_name = bucket_id  # a bucket's id is its name
        self.arn = self.bucket.arn
        self.register_outputs({"bucket": self.bucket_name, "arn": self.arn})


def _lifecycle_rules(policy: LifecyclePolicy, versioned: bool) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    everything = aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix="")
    rules = [
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="abort-incomplete-multipart-uploads",
            status="Enabled",
            filter=everything,
            abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                days_after_initiation=policy.abort_incomplete_multipart_days
            ),
        )
    ]
    if versioned and policy.noncurrent_expiration_days is not None:
        rules.append(
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire-noncurrent-versions",
                status="Enabled",
                filter=everything,
                noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                    noncurrent_days=policy.noncurrent_expiration_days
                ),
            )
        )
    if policy.transition_to_intelligent_tiering_days is not None:
        rules.append(
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="intelligent-tiering",
                status="Enabled",
                filter=everything,
                transitions=[
                    aws.s3.BucketLifecycleConfigurationRuleTransitionArgs(
                        days=policy.transition_to_intelligent_tiering_days, storage_class="INTELLIGENT_TIERING"
                    )
                ],
            )
        )
    if policy.expiration_days is not None:
        rules.append(
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire-current-objects",
                status="Enabled",
                filter=everything,
                expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=policy.expiration_days),
            )
        )
    return rules


@dataclass(frozen=True)
class DataStorageArgs:
    """The data plane's storage. Defaults are the quick mode's.

    - lake: one bucket (`single-bucket`) or bronze/silver/gold (`bronze-silver-gold`);
      versioned with lifecycle rules when `lake_versioning_lifecycle`.
    - artifacts (MLflow) and checkpoints (Ray): always versioned; checkpoints' old versions
      expire after `checkpoint_noncurrent_days`.
    - ECR: one repository per image in `images`, under `<registry_prefix>/`.
    """

    registry_prefix: str  # e.g. "strata-enterprise-prod"
    lake_layout: LakeLayout = LakeLayout.SINGLE_BUCKET
    lake_versioning_lifecycle: bool = False
    images: tuple[str, ...] = DEFAULT_IMAGES
    checkpoint_noncurrent_days: int = 14
    untagged_image_days: int = 14
    tags: Mapping[str, str] = field(default_factory=dict)


class DataStorage(pulumi.ComponentResource):
    """`strata:cloud:DataStorage`: data KMS key, lake/artifact/checkpoint buckets, ECR repositories."""

    def __init__(self, name: str, args: DataStorageArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:cloud:DataStorage", name, None, opts)
        tags = dict(args.tags)
        self.key = aws.kms.Key(
            f"{name}-key",
            description=f"Data at rest of {args.registry_prefix}: lake, artifacts, checkpoints, images, MLflow DB",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=tags,
            opts=child_opts(self),
        )
        aws.kms.Alias(f"{name}-key-alias", name=f"alias/{args.registry_prefix}-data", target_key_id=self.key.key_id, opts=child_opts(self))
        self.kms_key_arn = self.key.arn

        def bucket(role: str, purpose: str, versioning: bool, lifecycle: Optional[LifecyclePolicy]) -> SecureBucket:
            return SecureBucket(
                f"{name}-{role}",
                SecureBucketArgs(kms_key_arn=self.key.arn, purpose=purpose, name_prefix=f"{args.registry_prefix}-{role}", versioning=versioning, lifecycle=lifecycle, tags=tags),
                opts=child_opts(self),
            )

        lake_lifecycle = LifecyclePolicy() if args.lake_versioning_lifecycle else None
        self.lake: dict[str, SecureBucket] = {
            key: bucket(key if key == "lake" else f"lake-{key}", "data-lake" if key == "lake" else f"data-lake-{key}",
                        args.lake_versioning_lifecycle, lake_lifecycle)
            for key in lake_bucket_keys(args.lake_layout)
        }
        self.artifacts = bucket(
            "artifacts", "mlflow-artifacts", True,
            LifecyclePolicy(noncurrent_expiration_days=None, transition_to_intelligent_tiering_days=None),
        )
        self.checkpoints = bucket(
            "checkpoints", "ray-checkpoints", True,
            LifecyclePolicy(noncurrent_expiration_days=args.checkpoint_noncurrent_days, transition_to_intelligent_tiering_days=None),
        )

        self.repositories: dict[str, aws.ecr.Repository] = {}
        for image in args.images:
            repository = aws.ecr.Repository(
                f"{name}-ecr-{image}",
                name=f"{args.registry_prefix}/{image}",
                image_tag_mutability="IMMUTABLE",
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
                encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS", kms_key=self.key.arn)],
                force_delete=False,
                tags=tags,
                opts=child_opts(self),
            )
            aws.ecr.LifecyclePolicy(
                f"{name}-ecr-{image}-lifecycle",
                repository=repository.name,
                policy=json.dumps(
                    {
                        "rules": [
                            {
                                "rulePriority": 1,
                                "description": f"expire untagged images after {args.untagged_image_days} days",
                                "selection": {
                                    "tagStatus": "untagged",
                                    "countType": "sinceImagePushed",
                                    "countUnit": "days",
                                    "countNumber": args.untagged_image_days,
                                },
                                "action": {"type": "expire"},
                            }
                        ]
                    }
                ),
                opts=child_opts(self),
            )
            self.repositories[image] = repository

        self.lake_buckets = {key: b.bucket_name for key, b in self.lake.items()}
        self.ecr_repositories = {image: r.repository_url for image, r in self.repositories.items()}
        self.register_outputs(
            {
                "kmsKeyArn": self.kms_key_arn,
                "lakeBuckets": self.lake_buckets,
                "artifactsBucket": self.artifacts.bucket_name,
                "checkpointsBucket": self.checkpoints.bucket_name,
                "ecrRepositories": self.ecr_repositories,
            }
        )


@dataclass(frozen=True)
class MlflowPostgresArgs:
    """PostgreSQL on RDS for the MLflow backend store. Defaults are the standard mode's."""

    identifier: str  # physical DB identifier, e.g. "strata-standard-staging-mlflow"
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]  # private subnets
    client_security_group_id: pulumi.Input[str]  # the EKS cluster security group (all nodes)
    kms_key_arn: pulumi.Input[str]
    multi_az: bool = False  # enterprise: True
    deletion_protection: bool = False  # enterprise: True
    backup_retention_days: int = 7  # enterprise: 14
    engine_version: str = "16"  # pinned major; RDS applies minor upgrades in the maintenance window
    instance_class: str = "db.t4g.medium"
    allocated_storage_gib: int = 50
    max_allocated_storage_gib: int = 200
    database: str = "mlflow"
    username: str = "mlflow"
    tags: Mapping[str, str] = field(default_factory=dict)


class MlflowPostgres(pulumi.ComponentResource):
    """`strata:cloud:MlflowPostgres`: subnet group, security group, master secret, RDS instance.

    The master password is generated once, on the first `pulumi up`, and kept in Secrets
    Manager (KMS-encrypted); `ignore_changes` on the secret's value keeps it stable across
    runs, and `self.database.password` is a secret Output read back from that resource, so
    the platform can hand it to MLflow. Rotate by writing a new value to the secret (see the
    runbook) and re-running `pulumi up` with `--refresh`.
    """

    def __init__(self, name: str, args: MlflowPostgresArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:cloud:MlflowPostgres", name, None, opts)
        tags = dict(args.tags)
        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            description=f"private subnets of {args.identifier}",
            subnet_ids=args.subnet_ids,
            tags=tags,
            opts=child_opts(self),
        )
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            description=f"PostgreSQL {args.identifier}: 5432 from cluster nodes only",
            vpc_id=args.vpc_id,
            tags=with_name(tags, f"{args.identifier}-db"),
            opts=child_opts(self),
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-sg-postgres-from-cluster",
            security_group_id=self.security_group.id,
            description="PostgreSQL from the EKS cluster security group",
            ip_protocol="tcp",
            from_port=5432,
            to_port=5432,
            referenced_security_group_id=args.client_security_group_id,
            tags=tags,
            opts=child_opts(self),
        )
        secret = aws.secretsmanager.Secret(
            f"{name}-master",
            name_prefix=f"{args.identifier}-master-",
            description=f"master password of {args.identifier}",
            kms_key_id=args.kms_key_arn,
            recovery_window_in_days=30,
            tags=tags,
            opts=child_opts(self),
        )
        version = aws.secretsmanager.SecretVersion(
            f"{name}-master-value",
            secret_id=secret.id,
            secret_string=pulumi.Output.secret(_generate_password()),
            opts=child_opts(self, ignore_changes=["secretString"]),
        )
        password = pulumi.Output.secret(version.secret_string)
        self.instance = aws.rds.Instance(
            f"{name}-db",
            identifier=args.identifier,
            engine="postgres",
            engine_version=args.engine_version,
            instance_class=args.instance_class,
            allocated_storage=args.allocated_storage_gib,
            max_allocated_storage=args.max_allocated_storage_gib,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=args.kms_key_arn,
            db_name=args.database,
            username=args.username,
            password=password,
            port=5432,
            multi_az=args.multi_az,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[self.security_group.id],
            publicly_accessible=False,
            deletion_protection=args.deletion_protection,
            backup_retention_period=args.backup_retention_days,
            copy_tags_to_snapshot=True,
            skip_final_snapshot=False,
            final_snapshot_identifier=f"{args.identifier}-final",
            auto_minor_version_upgrade=True,
            iam_database_authentication_enabled=True,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=args.kms_key_arn,
            enabled_cloudwatch_logs_exports=["postgresql", "upgrade"],
            tags=tags,
            opts=child_opts(self),
        )
        self.database = MlflowDatabase(
            host=self.instance.address,
            port=self.instance.port,
            database=args.database,
            username=args.username,
            password=password,
        )
        self.master_secret_arn = secret.arn
        self.register_outputs({"host": self.instance.address, "masterSecretArn": secret.arn})


def _generate_password() -> str:
    """32 URL-safe characters (no `/`, `@`, `"` or spaces, which RDS rejects)."""
    return secrets.token_urlsafe(24)
