"""`Karpenter`: node autoscaling with spot-interruption handling.

AWS side: the controller's IRSA role (least privilege, scoped to this cluster's tags), the
node role with its instance profile and EKS access entry, an SSE-encrypted SQS queue fed
by EventBridge rules (spot interruption warning, rebalance recommendation, instance state
change, AWS Health scheduled change). Cluster side: the Helm release (pinned; its chart
installs the CRDs) and the `EC2NodeClass` + CPU spot `NodePool` from the typed builders in
`infra.crds.karpenter`; both depend on the release so the CRDs exist first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.cloud.common import child_opts, partition_of, service_principal
from infra.cloud.iam import IrsaRole, IrsaRoleArgs, document, node_role, service_account_subject, statement
from infra.crds import ObjectMeta as CrObjectMeta
from infra.crds import custom_resource
from infra.crds.karpenter import KARPENTER_VERSION, EC2NodeClass, NodePool, cpu_spot_node_pool, ec2_node_class, to_manifest

KARPENTER_CHART = "oci://public.ecr.aws/karpenter/karpenter"

# EventBridge rules whose events Karpenter acts on (source, detail-type).
INTERRUPTION_EVENTS: Mapping[str, tuple[str, str]] = {
    "spot-interruption": ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
    "rebalance": ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
    "instance-state-change": ("aws.ec2", "EC2 Instance State-change Notification"),
    "scheduled-change": ("aws.health", "AWS Health Event"),
}

# EC2 read calls that have no resource-level permissions (IAM requires Resource "*");
# restricted to the cluster's region by condition instead.
EC2_DESCRIBE_ACTIONS = (
    "ec2:DescribeAvailabilityZones",
    "ec2:DescribeCapacityReservations",
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeInstanceTypeOfferings",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribePlacementGroups",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSpotPriceHistory",
    "ec2:DescribeSubnets",
)
@dataclass(frozen=True)
class KarpenterArgs:
    """Karpenter for one EKS cluster. Defaults stated; the chart version is the CRD contract."""

    cluster_name: str  # physical EKS name; also the subnets' `karpenter.sh/discovery` value
    region: str
    cluster_arn: pulumi.Input[str]
    cluster_endpoint: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer: pulumi.Input[str]  # without https://
    provider: k8s.Provider
    chart_version: str = KARPENTER_VERSION
    namespace: str = "kube-system"
    service_account: str = "karpenter"
    replicas: int = 2
    node_class_name: str = "default"
    cpu_spot_pool_name: str = "cpu-spot"
    cpu_limit: int = 256  # vCPUs the CPU spot NodePool may launch in total
    memory_limit_gib: int = 1024
    node_root_volume_gib: int = 100
    ami_alias: str = "al2023@latest"
    queue_retention_seconds: int = 300  # interruption events are stale after minutes
    depends_on: tuple[pulumi.Resource, ...] = ()  # node groups the controller runs on
    tags: Mapping[str, str] = field(default_factory=dict)


def controller_statements(
    cluster_name: str,
    region: str,
    cluster_arn: pulumi.Input[str],
    queue_arn: pulumi.Input[str],
    node_role_arn: pulumi.Input[str],
    instance_profile_arn: pulumi.Input[str],
) -> list[dict[str, Any]]:
    """The controller's permissions: launch/terminate only what it tagged for this cluster."""
    p = partition_of(region)
    ec2 = f"arn:{p}:ec2:{region}"
    owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    request_owned = {f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}": "owned", "aws:RequestTag/eks:eks-cluster-name": cluster_name}
    created = [f"{ec2}:*:{kind}/*" for kind in ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")]
    return [
        statement(
            "LaunchFromSharedResources",
            ["ec2:RunInstances", "ec2:CreateFleet"],
            [
                f"{ec2}::image/*",
                f"{ec2}::snapshot/*",
                f"{ec2}:*:security-group/*",
                f"{ec2}:*:subnet/*",
                f"{ec2}:*:capacity-reservation/*",
                f"{ec2}:*:placement-group/*",
            ],
        ),
        statement(
            "LaunchFromOwnLaunchTemplates",
            ["ec2:RunInstances", "ec2:CreateFleet"],
            [f"{ec2}:*:launch-template/*"],
            conditions={"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
        ),
        statement(
            "CreateTaggedForCluster",
            ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            created,
            conditions={"StringEquals": request_owned, "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}},
        ),
        statement(
            "TagOnCreate",
            ["ec2:CreateTags"],
            created,
            conditions={
                "StringEquals": {**request_owned, "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]},
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        ),
        statement(
            "TagOwnInstances",
            ["ec2:CreateTags"],
            [f"{ec2}:*:instance/*"],
            conditions={
                "StringEquals": owned,
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                "ForAllValues:StringEquals": {"aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]},
            },
        ),
        statement(
            "DeleteOwn",
            ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
            [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
            conditions={"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
        ),
        statement(
            "RegionalReads",
            EC2_DESCRIBE_ACTIONS,
            "*",
            conditions={"StringEquals": {"aws:RequestedRegion": region}},
        ),
        statement("PublicAmiParameters", ["ssm:GetParameter"], [f"arn:{p}:ssm:{region}::parameter/aws/service/*"]),
        # The Price List API has no resource-level permissions.
        statement("SpotAndOnDemandPrices", ["pricing:GetProducts"], "*"),
        statement("InterruptionQueue", ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"], [queue_arn]),
        statement(
            "PassNodeRole",
            ["iam:PassRole"],
            [node_role_arn],
            conditions={"StringEquals": {"iam:PassedToService": service_principal("ec2", region)}},
        ),
        statement("ReadNodeInstanceProfile", ["iam:GetInstanceProfile"], [instance_profile_arn]),
        statement("DiscoverClusterEndpoint", ["eks:DescribeCluster"], [cluster_arn]),
    ]


class Karpenter(pulumi.ComponentResource):
    """`strata:cloud:Karpenter`: IAM, interruption queue + rules, Helm release, NodePool/EC2NodeClass."""

    def __init__(self, name: str, args: KarpenterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:cloud:Karpenter", name, None, opts)
        tags = dict(args.tags)

        # --- nodes: role, instance profile, access entry ---------------------------------
        self.node_role, node_attachments = node_role(
            self, name, f"Nodes launched by Karpenter in {args.cluster_name}", args.region, tags)
        self.instance_profile_name = f"{args.cluster_name}-karpenter-node"
        self.instance_profile = aws.iam.InstanceProfile(
            f"{name}-node-profile",
            name=self.instance_profile_name,
            role=self.node_role.name,
            tags=tags,
            opts=child_opts(self, depends_on=node_attachments),
        )
        access_entry = aws.eks.AccessEntry(
            f"{name}-node-access",
            cluster_name=args.cluster_name,
            principal_arn=self.node_role.arn,
            type="EC2_LINUX",
            tags=tags,
            opts=child_opts(self),
        )

        # --- interruption queue + EventBridge rules ---------------------------------------
        self.queue = aws.sqs.Queue(
            f"{name}-interruption",
            name=f"{args.cluster_name}-karpenter",
            message_retention_seconds=args.queue_retention_seconds,
            sqs_managed_sse_enabled=True,
            tags=tags,
            opts=child_opts(self),
        )
        self.rules: dict[str, aws.cloudwatch.EventRule] = {}
        for key, (source, detail_type) in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{key}",
                description=f"Karpenter interruption handling for {args.cluster_name}: {detail_type}",
                event_pattern=json.dumps({"source": [source], "detail-type": [detail_type]}),
                tags=tags,
                opts=child_opts(self),
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{key}-target",
                rule=rule.name,
                target_id="KarpenterInterruptionQueue",
                arn=self.queue.arn,
                opts=child_opts(self),
            )
            self.rules[key] = rule
        queue_policy = aws.sqs.QueuePolicy(
            f"{name}-interruption-policy",
            queue_url=self.queue.url,
            policy=document(
                [
                    statement(
                        "EventBridgeToQueue",
                        ["sqs:SendMessage"],
                        [self.queue.arn],
                        principal={"Service": [service_principal("events", args.region), service_principal("sqs", args.region)]},
                        conditions={"ArnEquals": {"aws:SourceArn": [r.arn for r in self.rules.values()]}},
                    ),
                    statement(
                        "DenyInsecureTransport",
                        ["sqs:*"],
                        [self.queue.arn],
                        effect="Deny",
                        principal="*",
                        conditions={"Bool": {"aws:SecureTransport": "false"}},
                    ),
                ]
            ),
            opts=child_opts(self),
        )

        # --- controller identity --------------------------------------------------------
        self.controller_role = IrsaRole(
            f"{name}-controller",
            IrsaRoleArgs(
                oidc_provider_arn=args.oidc_provider_arn,
                oidc_issuer=args.oidc_issuer,
                subjects=(service_account_subject(args.namespace, args.service_account),),
                statements=tuple(
                    controller_statements(
                        args.cluster_name,
                        args.region,
                        args.cluster_arn,
                        self.queue.arn,
                        self.node_role.arn,
                        self.instance_profile.arn,
                    )
                ),
                description=f"Karpenter controller of {args.cluster_name}",
                tags={**tags, "strata:workload": "karpenter"},
            ),
            opts=child_opts(self),
        )

        # --- Helm release (installs the CRDs) --------------------------------------------
        k8s_opts = dict(provider=args.provider)
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name="karpenter",
            chart=KARPENTER_CHART,
            version=args.chart_version,
            namespace=args.namespace,
            skip_crds=False,
            atomic=True,
            timeout=600,
            values={
                "replicas": args.replicas,
                "serviceAccount": {
                    "create": True,
                    "name": args.service_account,
                    "annotations": {"eks.amazonaws.com/role-arn": self.controller_role.arn},
                },
                "settings": {
                    "clusterName": args.cluster_name,
                    "clusterEndpoint": args.cluster_endpoint,
                    "interruptionQueue": self.queue.name,
                },
                "controller": {
                    "resources": {
                        "requests": {"cpu": "500m", "memory": "512Mi"},
                        "limits": {"cpu": "1", "memory": "1Gi"},
                    }
                },
            },
            opts=child_opts(
                self,
                depends_on=[self.controller_role, queue_policy, access_entry, self.instance_profile, *args.depends_on],
                **k8s_opts,
            ),
        )

        # --- custom resources, after their CRDs -------------------------------------------
        node_class = ec2_node_class(
            args.node_class_name,
            discovery_tag={"karpenter.sh/discovery": args.cluster_name},
            # EKS tags the cluster security group (which all nodes share) with this key.
            security_group_tag={"aws:eks:cluster-name": args.cluster_name},
            instance_profile=self.instance_profile_name,
            tags={k: v for k, v in tags.items() if not k.startswith("kubernetes.io/cluster")},
            root_volume_gib=args.node_root_volume_gib,
            ami_alias=args.ami_alias,
        )
        node_pool = cpu_spot_node_pool(
            args.cpu_spot_pool_name,
            node_class_name=args.node_class_name,
            cpu_limit=args.cpu_limit,
            memory_limit_gib=args.memory_limit_gib,
            labels={"strata.dev/pool": "cpu-spot-karpenter", "strata.dev/capacity-type": "spot"},
        )
        self.node_class = _custom_resource(f"{name}-node-class", node_class, self, args.provider, self.release)
        self.node_pool = _custom_resource(
            f"{name}-cpu-spot-pool", node_pool, self, args.provider, self.release, after=[self.node_class]
        )
        self.controller_role_arn = self.controller_role.arn
        self.register_outputs(
            {
                "controllerRoleArn": self.controller_role_arn,
                "queueName": self.queue.name,
                "nodeRoleArn": self.node_role.arn,
                "nodePool": args.cpu_spot_pool_name,
            }
        )


def _custom_resource(
    name: str, resource: NodePool | EC2NodeClass, parent: pulumi.Resource, provider: k8s.Provider,
    operator: pulumi.Resource, after: Sequence[pulumi.Resource] = (),
) -> k8s.apiextensions.CustomResource:
    """Through `infra.crds.custom_resource`, like every CR: registered after its operator's release."""
    manifest = to_manifest(resource)
    return custom_resource(
        name,
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        metadata=CrObjectMeta(**manifest["metadata"]),
        spec=manifest["spec"],
        operator=operator,
        opts=child_opts(parent, provider=provider, depends_on=list(after)),
    )
