"""IAM: policy documents built as data, IRSA roles, and the per-workload roles.

Policy documents are plain dicts rendered with `pulumi.Output.json_dumps` (no
`getPolicyDocument` invokes): resource ARNs can be Outputs, and the document is checked
when it is built -- an `Allow` with a wildcard action (`*`, `s3:*`, `s3:Get*`) raises.
`Deny` statements may use a service wildcard (`s3:*` in a TLS-only bucket policy denies
more, never grants).

IRSA (IAM Roles for Service Accounts): each role trusts the cluster's OIDC provider and
only the service accounts it names (`sub` = `system:serviceaccount:<ns>:<sa>`, `aud` =
`sts.amazonaws.com`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

import pulumi
import pulumi_aws as aws

from infra.cloud.common import child_opts, managed_policy_arn, service_principal

POLICY_VERSION = "2012-10-17"
IRSA_AUDIENCE = "sts.amazonaws.com"

# S3 object/bucket actions, grouped by what a workload may do.
S3_READ_OBJECT = ("s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging")
S3_WRITE_OBJECT = (
    "s3:PutObject",
    "s3:PutObjectTagging",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
)
S3_LIST_BUCKET = ("s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads")
KMS_DECRYPT = ("kms:Decrypt", "kms:DescribeKey")
KMS_ENCRYPT = ("kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo")


class PolicyError(ValueError):
    """A policy statement that would break the least-privilege rules."""


def statement(
    sid: str,
    actions: Sequence[str],
    resources: Sequence[pulumi.Input[str]] | pulumi.Input[str],
    *,
    effect: str = "Allow",
    conditions: Optional[Mapping[str, Mapping[str, Any]]] = None,
    principal: Optional[Mapping[str, Any] | str] = None,
) -> dict[str, Any]:
    """One IAM statement as data. Rejects wildcard actions in `Allow` statements."""
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"statement {sid!r}: effect must be Allow or Deny, got {effect!r}")
    if not actions:
        raise PolicyError(f"statement {sid!r}: needs at least one action")
    for action in actions:
        if action == "*" or (effect == "Allow" and "*" in action):
            raise PolicyError(f"statement {sid!r}: wildcard action {action!r} is not allowed")
    rendered: dict[str, Any] = {"Sid": sid, "Effect": effect, "Action": sorted(set(actions))}
    if principal is not None:
        rendered["Principal"] = principal
    rendered["Resource"] = resources if isinstance(resources, (str, pulumi.Output)) else list(resources)
    if conditions:
        rendered["Condition"] = {test: dict(values) for test, values in conditions.items()}
    return rendered


def document(statements: Iterable[Mapping[str, Any]]) -> pulumi.Output[str]:
    """A policy document (JSON string Output); statement values may hold Outputs."""
    return pulumi.Output.json_dumps({"Version": POLICY_VERSION, "Statement": list(statements)})


def service_trust_policy(*services: str, conditions: Optional[Mapping[str, Mapping[str, Any]]] = None) -> str:
    """Trust policy letting AWS services (e.g. `eks.amazonaws.com`) assume a role."""
    body: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": list(services) if len(services) > 1 else services[0]},
        "Action": "sts:AssumeRole",
    }
    if conditions:
        body["Condition"] = {k: dict(v) for k, v in conditions.items()}
    return json.dumps({"Version": POLICY_VERSION, "Statement": [body]})


def service_account_subject(namespace: str, service_account: str) -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"


def irsa_trust_policy(
    oidc_provider_arn: pulumi.Input[str], oidc_issuer: pulumi.Input[str], subjects: Sequence[str]
) -> pulumi.Output[str]:
    """Trust policy for IRSA: only the named service accounts, only the STS audience.

    `oidc_issuer` is the issuer URL without `https://` (the condition keys are built from it).
    """
    if not subjects:
        raise PolicyError("an IRSA role needs at least one service account subject")
    for subject in subjects:
        if "*" in subject or not subject.startswith("system:serviceaccount:"):
            raise PolicyError(f"IRSA subject must name one service account exactly, got {subject!r}")

    def render(args: list[str]) -> str:
        arn, issuer = args
        issuer = issuer.removeprefix("https://")
        sub: Any = sorted(subjects) if len(subjects) > 1 else subjects[0]
        return json.dumps(
            {
                "Version": POLICY_VERSION,
                "Statement": [
                    {
                        "Sid": "AssumeFromServiceAccount",
                        "Effect": "Allow",
                        "Principal": {"Federated": arn},
                        "Action": "sts:AssumeRoleWithWebIdentity",
                        "Condition": {"StringEquals": {f"{issuer}:sub": sub, f"{issuer}:aud": IRSA_AUDIENCE}},
                    }
                ],
            }
        )

    return pulumi.Output.all(oidc_provider_arn, oidc_issuer).apply(render)


def bucket_arns(bucket_arn: pulumi.Input[str]) -> list[pulumi.Output[str]]:
    """A bucket's ARN and the ARN of every object in it."""
    arn = pulumi.Output.from_input(bucket_arn)
    return [arn, arn.apply(lambda a: f"{a}/*")]


# --- components ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IrsaRoleArgs:
    """One IAM role assumable by the named Kubernetes service accounts through IRSA.

    `statements` is the role's whole inline policy (least privilege, no wildcard actions);
    `managed_policy_arns` attaches AWS-managed policies (default: none).
    """

    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer: pulumi.Input[str]  # without https://
    subjects: tuple[str, ...]  # system:serviceaccount:<namespace>:<name>
    statements: tuple[Mapping[str, Any], ...] = ()
    managed_policy_arns: tuple[str, ...] = ()
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    max_session_seconds: int = 3600  # the STS default


class IrsaRole(pulumi.ComponentResource):
    """`strata:cloud:IrsaRole`: role + inline policy + managed policy attachments."""

    def __init__(self, name: str, args: IrsaRoleArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:cloud:IrsaRole", name, None, opts)
        self.role = aws.iam.Role(
            f"{name}-role",
            description=args.description or None,
            assume_role_policy=irsa_trust_policy(args.oidc_provider_arn, args.oidc_issuer, args.subjects),
            max_session_duration=args.max_session_seconds,
            tags=dict(args.tags),
            opts=child_opts(self),
        )
        if args.statements:
            aws.iam.RolePolicy(
                f"{name}-policy",
                role=self.role.name,
                policy=document(args.statements),
                opts=child_opts(self),
            )
        for index, policy_arn in enumerate(args.managed_policy_arns):
            aws.iam.RolePolicyAttachment(
                f"{name}-managed-{index}", role=self.role.name, policy_arn=policy_arn, opts=child_opts(self)
            )
        self.arn = self.role.arn
        self.register_outputs({"arn": self.arn})


@dataclass(frozen=True)
class BronzeWriter:
    """A CDC sink's identity: its service account appends to one bronze table, the objects
    under `<bronze bucket>/<table>/` (the `workloads.data.lake.tables.Lake` layout)."""

    namespace: str
    service_account: str
    table: str

    def __post_init__(self) -> None:
        if not self.table or "/" in self.table or "*" in self.table:
            raise PolicyError(f"BronzeWriter.table: one table name (no '/' or '*'), got {self.table!r}")


@dataclass(frozen=True)
class WorkloadRolesArgs:
    """The IRSA roles of the platform's workloads, by `WorkloadIdentities` key.

    - `mlflow`: the tracking server (namespace `mlflow_namespace`, SA `mlflow_service_account`)
      reads and writes the artifacts bucket.
    - `training/<team>`: the `<model>-training` service accounts of the team's models, in the
      team namespace: checkpoints read/write, lake read, artifacts read/write.
    - `serving/<team>`: the `<model>-serving` service accounts: artifacts read only.
    - `cdc-sink/<pipeline>`: one CDC sink (`cdc_sinks`, by pipeline name): read and write the
      objects of its own bronze table only (`<bronze>/<table>/*`, list only under that
      prefix), nothing in silver, gold or the other buckets. Needs `bronze_bucket_arn`.
    `team_models` maps each team to its models' names (a team with no models gets no roles).
    """

    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    artifacts_bucket_arn: pulumi.Input[str]
    checkpoints_bucket_arn: pulumi.Input[str]
    lake_bucket_arns: tuple[pulumi.Input[str], ...]
    team_models: Mapping[str, tuple[str, ...]]
    namespace_prefix: str = ""
    mlflow_namespace: str = "mlflow"
    mlflow_service_account: str = "mlflow"
    bronze_bucket_arn: Optional[pulumi.Input[str]] = None  # the lake bucket bronze lives in
    cdc_sinks: Mapping[str, BronzeWriter] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cdc_sinks and self.bronze_bucket_arn is None:
            raise PolicyError(f"WorkloadRolesArgs.bronze_bucket_arn: the CDC sinks {sorted(self.cdc_sinks)} "
                              "write bronze, which needs its bucket")


def bronze_writer_statements(bucket_arn: pulumi.Input[str], table: str) -> list[dict[str, Any]]:
    """List the bucket under `<table>/` only; read and write that table's objects only."""
    bucket = pulumi.Output.from_input(bucket_arn)
    return [
        statement("BronzeLocation", ("s3:GetBucketLocation",), [bucket]),
        statement("BronzeListTable", ("s3:ListBucket",), [bucket],
                  conditions={"StringLike": {"s3:prefix": [table, f"{table}/*"]}}),
        statement("BronzeTableReadWrite", S3_READ_OBJECT + S3_WRITE_OBJECT,
                  [bucket.apply(lambda arn: f"{arn}/{table}/*")]),
    ]


def team_namespace(namespace_prefix: str, team: str) -> str:
    """The namespace of a team (the platform layer creates it with this name)."""
    return f"{namespace_prefix}team-{team}"


class WorkloadRoles(pulumi.ComponentResource):
    """`strata:cloud:WorkloadRoles`: one `IrsaRole` per workload key."""

    def __init__(self, name: str, args: WorkloadRolesArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:cloud:WorkloadRoles", name, None, opts)
        artifacts = bucket_arns(args.artifacts_bucket_arn)
        checkpoints = bucket_arns(args.checkpoints_bucket_arn)
        lake = [arn for bucket in args.lake_bucket_arns for arn in bucket_arns(bucket)]
        key = [args.kms_key_arn]

        def objects(arns: list[pulumi.Output[str]]) -> list[pulumi.Output[str]]:
            return arns[1::2]

        def buckets(arns: list[pulumi.Output[str]]) -> list[pulumi.Output[str]]:
            return arns[0::2]

        def read_write(sid: str, arns: list[pulumi.Output[str]]) -> list[dict[str, Any]]:
            return [
                statement(f"{sid}List", S3_LIST_BUCKET, buckets(arns)),
                statement(f"{sid}ReadWrite", S3_READ_OBJECT + S3_WRITE_OBJECT, objects(arns)),
            ]

        def read_only(sid: str, arns: list[pulumi.Output[str]]) -> list[dict[str, Any]]:
            return [
                statement(f"{sid}List", S3_LIST_BUCKET, buckets(arns)),
                statement(f"{sid}Read", S3_READ_OBJECT, objects(arns)),
            ]

        def role(key_name: str, suffix: str, subjects: list[str], statements: list[dict[str, Any]]) -> IrsaRole:
            return IrsaRole(
                f"{name}-{suffix}",
                IrsaRoleArgs(
                    oidc_provider_arn=args.oidc_provider_arn,
                    oidc_issuer=args.oidc_issuer,
                    subjects=tuple(subjects),
                    statements=tuple(statements),
                    description=f"Strata workload role {key_name}",
                    tags={**args.tags, "strata:workload": key_name},
                ),
                opts=child_opts(self),
            )

        roles: dict[str, IrsaRole] = {}
        roles["mlflow"] = role(
            "mlflow",
            "mlflow",
            [service_account_subject(args.mlflow_namespace, args.mlflow_service_account)],
            read_write("Artifacts", artifacts) + [statement("DataKey", KMS_ENCRYPT, key)],
        )
        for team in sorted(args.team_models):
            models = sorted(args.team_models[team])
            if not models:
                continue
            namespace = team_namespace(args.namespace_prefix, team)
            roles[f"training/{team}"] = role(
                f"training/{team}",
                f"training-{team}",
                [service_account_subject(namespace, f"{m}-training") for m in models],
                read_write("Checkpoints", checkpoints)
                + read_write("Artifacts", artifacts)
                + (read_only("Lake", lake) if lake else [])
                + [statement("DataKey", KMS_ENCRYPT, key)],
            )
            roles[f"serving/{team}"] = role(
                f"serving/{team}",
                f"serving-{team}",
                [service_account_subject(namespace, f"{m}-serving") for m in models],
                read_only("Artifacts", artifacts) + [statement("DataKey", KMS_DECRYPT, key)],
            )
        for pipeline in sorted(args.cdc_sinks):
            sink = args.cdc_sinks[pipeline]
            roles[f"cdc-sink/{pipeline}"] = role(
                f"cdc-sink/{pipeline}",
                f"cdc-sink-{pipeline}",
                [service_account_subject(sink.namespace, sink.service_account)],
                bronze_writer_statements(args.bronze_bucket_arn, sink.table) + [statement("DataKey", KMS_ENCRYPT, key)],
            )
        self.roles = roles
        self.arns: dict[str, pulumi.Output[str]] = {k: r.arn for k, r in roles.items()}
        self.register_outputs({"roles": self.arns})


# The managed policies every EKS worker node needs (managed node groups and Karpenter's).
NODE_ROLE_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",  # Session Manager instead of SSH keys
)


def node_role(
    parent: pulumi.Resource, name: str, description: str, region: str, tags: Mapping[str, str]
) -> tuple[aws.iam.Role, list[aws.iam.RolePolicyAttachment]]:
    """An EC2 node role with the worker-node managed policies attached (children of `parent`)."""
    role = aws.iam.Role(
        f"{name}-node-role",
        description=description,
        assume_role_policy=service_trust_policy(service_principal("ec2", region)),
        tags=dict(tags),
        opts=child_opts(parent),
    )
    attachments = [
        aws.iam.RolePolicyAttachment(
            f"{name}-node-role-{policy.lower()}",
            role=role.name,
            policy_arn=managed_policy_arn(policy, region),
            opts=child_opts(parent),
        )
        for policy in NODE_ROLE_POLICIES
    ]
    return role, attachments

