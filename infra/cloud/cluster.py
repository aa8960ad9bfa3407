"""`EksCluster` (control plane, OIDC, Kubernetes provider) and `ManagedNodeGroups` (node pools).

The control plane is pinned to the stack's Kubernetes version, encrypts Secrets with its own
KMS key (rotation on), sends all five control-plane log types to CloudWatch and uses the
access-entry API for authentication (no aws-auth ConfigMap). The identity that runs
`pulumi up` is granted cluster-admin at creation (`bootstrap_cluster_creator_admin_permissions`)
so the Kubernetes provider can deploy the platform; with a private-only endpoint it must run
from inside the VPC (a runner, VPN or bastion).

Node pools are EKS managed node groups on AL2023 behind launch templates that require IMDSv2
with a hop limit of 1 (pods cannot reach the node's credentials) and encrypted gp3 roots.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.cloud.common import child_opts, managed_policy_arn, service_principal, with_name
from infra.cloud.iam import IrsaRole, IrsaRoleArgs, node_role, service_account_subject, service_trust_policy
from infra.modes import EndpointAccess

CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
GPU_TAINT_KEY = "nvidia.com/gpu"
POOL_LABEL = "strata.dev/pool"
CAPACITY_LABEL = "strata.dev/capacity-type"


@dataclass(frozen=True)
class EksClusterArgs:
    """The EKS control plane. Defaults are the quick mode's."""

    cluster_name: str  # physical name; also the value of subnet discovery tags
    region: str
    kubernetes_version: str  # pinned, e.g. "1.35"
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[Sequence[str]]
    public_subnet_ids: pulumi.Input[Sequence[str]]
    endpoint_access: EndpointAccess = EndpointAccess.PUBLIC_ALLOWLIST
    endpoint_allowlist: tuple[str, ...] = ()  # CIDRs; required when the endpoint is public
    nat_public_ips: pulumi.Input[Sequence[str]] = ()  # allowed too when the endpoint is public-only
    deletion_protection: bool = False  # enterprise: True
    ebs_csi_driver: bool = True  # managed add-on with its own IRSA role (PVCs need it)
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        public = self.endpoint_access is not EndpointAccess.PRIVATE
        if public and not self.endpoint_allowlist:
            raise ValueError("cluster.endpointAllowlist: a public API endpoint needs at least one allowed CIDR")
        for cidr in self.endpoint_allowlist:
            if cidr.endswith("/0"):
                raise ValueError(f"cluster.endpointAllowlist: {cidr} opens the API server to the whole internet")


def endpoint_settings(
    access: EndpointAccess, allowlist: Sequence[str], nat_public_ips: pulumi.Input[Sequence[str]] = ()
) -> dict[str, object]:
    """`vpc_config` endpoint fields for an endpoint-access mode.

    With a public-only endpoint the nodes reach the API server from the NAT gateways' public
    addresses, so those (/32) join the allowlist; with a private endpoint they need not.
    """
    if access is EndpointAccess.PRIVATE:
        return {"endpoint_private_access": True, "endpoint_public_access": False}
    cidrs: pulumi.Input[Sequence[str]] = list(allowlist)
    if access is EndpointAccess.PUBLIC_ALLOWLIST:
        cidrs = pulumi.Output.from_input(nat_public_ips).apply(
            lambda ips: list(allowlist) + [f"{ip}/32" for ip in ips or () if ip]
        )
    return {
        "endpoint_private_access": access is EndpointAccess.PUBLIC_AND_PRIVATE,
        "endpoint_public_access": True,
        "public_access_cidrs": cidrs,
    }


def kubeconfig_json(cluster_name: str, region: str, endpoint: pulumi.Input[str], ca_data: pulumi.Input[str]) -> pulumi.Output[str]:
    """A kubeconfig that authenticates with `aws eks get-token` (no static credentials)."""
    return pulumi.Output.json_dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
            "preferences": {},
            "users": [
                {
                    "name": cluster_name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region, "--output", "json"],
                            "interactiveMode": "Never",
                        }
                    },
                }
            ],
        }
    )


class EksCluster(pulumi.ComponentResource):
    """`strata:cloud:EksCluster`: role, KMS key, EKS, OIDC provider, kubeconfig and provider."""

    def __init__(self, name: str, args: EksClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:cloud:EksCluster", name, None, opts)
        tags = dict(args.tags)
        self.tags = tags
        self.cluster_name = args.cluster_name

        role = aws.iam.Role(
            f"{name}-role",
            description=f"EKS control plane of {args.cluster_name}",
            assume_role_policy=service_trust_policy(service_principal("eks", args.region)),
            tags=tags,
            opts=child_opts(self),
        )
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-role-cluster-policy",
            role=role.name,
            policy_arn=managed_policy_arn("AmazonEKSClusterPolicy", args.region),
            opts=child_opts(self),
        )
        self.secrets_key = aws.kms.Key(
            f"{name}-secrets-key",
            description=f"Envelope encryption of Kubernetes Secrets in {args.cluster_name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=tags,
            opts=child_opts(self),
        )
        aws.kms.Alias(
            f"{name}-secrets-key-alias",
            name=f"alias/{args.cluster_name}-eks-secrets",
            target_key_id=self.secrets_key.key_id,
            opts=child_opts(self),
        )
        self.control_plane_logs = aws.cloudwatch.LogGroup(
            f"{name}-control-plane-logs",
            # EKS writes to exactly this name; creating it first lets us own its retention.
            name=f"/aws/eks/{args.cluster_name}/cluster",
            retention_in_days=90,
            tags=tags,
            opts=child_opts(self),
        )
        subnet_ids = pulumi.Output.all(args.private_subnet_ids, args.public_subnet_ids).apply(
            lambda ids: list(ids[0]) + (list(ids[1]) if args.endpoint_access is not EndpointAccess.PRIVATE else [])
        )
        self.cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=args.cluster_name,
            version=args.kubernetes_version,
            role_arn=role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=subnet_ids,
                **endpoint_settings(args.endpoint_access, args.endpoint_allowlist, args.nat_public_ips),
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=True,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=self.secrets_key.arn),
                resources=["secrets"],
            ),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOG_TYPES),
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type="STANDARD"),
            deletion_protection=args.deletion_protection,
            tags=tags,
            opts=child_opts(self, depends_on=[attachment, self.control_plane_logs]),
        )
        # IRSA: the cluster's OIDC issuer as an IAM identity provider.
        self.oidc_issuer_url = self.cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer)
        self.oidc_issuer = self.oidc_issuer_url.apply(lambda url: url.removeprefix("https://"))
        self.oidc_provider = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc",
            url=self.oidc_issuer_url,
            client_id_lists=["sts.amazonaws.com"],
            tags=tags,
            opts=child_opts(self),
        )
        self.oidc_provider_arn = self.oidc_provider.arn
        self.cluster_security_group_id = self.cluster.vpc_config.apply(lambda vpc: vpc.cluster_security_group_id)

        self.kubeconfig = kubeconfig_json(
            args.cluster_name, args.region, self.cluster.endpoint, self.cluster.certificate_authority.apply(lambda ca: ca.data)
        )
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            opts=child_opts(self),
        )

        self.addons: list[aws.eks.Addon] = []
        self.ebs_csi_role: Optional[IrsaRole] = None
        if args.ebs_csi_driver:
            self.ebs_csi_role = IrsaRole(
                f"{name}-ebs-csi",
                IrsaRoleArgs(
                    oidc_provider_arn=self.oidc_provider_arn,
                    oidc_issuer=self.oidc_issuer,
                    subjects=(service_account_subject("kube-system", "ebs-csi-controller-sa"),),
                    managed_policy_arns=(managed_policy_arn("service-role/AmazonEBSCSIDriverPolicy", args.region),),
                    description=f"EBS CSI driver of {args.cluster_name}",
                    tags=tags,
                ),
                opts=child_opts(self),
            )

        self.register_outputs(
            {
                "clusterName": self.cluster.name,
                "endpoint": self.cluster.endpoint,
                "oidcProviderArn": self.oidc_provider_arn,
                "kubeconfig": self.kubeconfig,
            }
        )

    def install_addons(self, name: str, after: Sequence[pulumi.Resource]) -> list[aws.eks.Addon]:
        """Managed add-ons whose pods need nodes: created once the node groups exist."""
        if self.ebs_csi_role is not None:
            self.addons.append(
                aws.eks.Addon(
                    f"{name}-addon-ebs-csi",
                    cluster_name=self.cluster.name,
                    addon_name="aws-ebs-csi-driver",
                    service_account_role_arn=self.ebs_csi_role.arn,
                    resolve_conflicts_on_create="OVERWRITE",
                    resolve_conflicts_on_update="PRESERVE",
                    tags=self.tags,
                    opts=child_opts(self, depends_on=list(after)),
                )
            )
        return self.addons


# --- node pools -----------------------------------------------------------------------------


class CapacityType(str, enum.Enum):
    ON_DEMAND = "ON_DEMAND"
    SPOT = "SPOT"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str = "NO_SCHEDULE"  # the EKS API spelling


@dataclass(frozen=True)
class NodeGroupSpec:
    """One managed node group. `desired` is only the initial size when `autoscaled`."""

    role: str  # "system", "cpu-spot", "gpu-spot", "gpu-on-demand"
    capacity_type: CapacityType
    instance_types: tuple[str, ...]
    min_size: int
    desired_size: int
    max_size: int
    ami_type: str = "AL2023_x86_64_STANDARD"
    root_volume_gib: int = 50
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    autoscaled: bool = False  # an autoscaler owns desired_size after creation

    def __post_init__(self) -> None:
        if not self.min_size <= self.desired_size <= self.max_size or self.max_size < 1:
            raise ValueError(
                f"node group {self.role!r}: need min <= desired <= max and max >= 1, "
                f"got {self.min_size}/{self.desired_size}/{self.max_size}"
            )
        if not self.instance_types:
            raise ValueError(f"node group {self.role!r}: needs at least one instance type")


def node_group_specs(
    *,
    system_instance_types: Sequence[str],
    system_size: int,
    cpu_spot: bool,
    cpu_spot_instance_types: Sequence[str],
    cpu_spot_size: int,
    gpu_spot: bool,
    gpu_spot_instance_types: Sequence[str],
    gpu_spot_max: int,
    gpu_on_demand_type: str,
) -> tuple[NodeGroupSpec, ...]:
    """The node pools of a mode, as data (the component turns each into a node group).

    - system: on-demand, not tainted (the quick mode has no other on-demand capacity for
      stateful platform services), labelled `strata.dev/pool=system`.
    - cpu-spot: diversified instance types, spot.
    - gpu-spot: spot GPUs tainted `nvidia.com/gpu=true:NoSchedule`, scaling from 0.
    - gpu-on-demand: the same taint and label, min 0, the fallback when spot GPUs are gone.
    """

    def labels(pool: str, capacity: CapacityType, **extra: str) -> dict[str, str]:
        return {POOL_LABEL: pool, CAPACITY_LABEL: capacity.value.lower().replace("_", "-"), **extra}

    specs = [
        NodeGroupSpec(
            role="system",
            capacity_type=CapacityType.ON_DEMAND,
            instance_types=tuple(system_instance_types),
            min_size=system_size,
            desired_size=system_size,
            max_size=max(system_size * 2, system_size + 1),
            labels=labels("system", CapacityType.ON_DEMAND),
        )
    ]
    if cpu_spot and cpu_spot_size > 0:
        specs.append(
            NodeGroupSpec(
                role="cpu-spot",
                capacity_type=CapacityType.SPOT,
                instance_types=tuple(cpu_spot_instance_types),
                min_size=0,
                desired_size=cpu_spot_size,
                max_size=max(cpu_spot_size * 2, 1),
                root_volume_gib=100,
                labels=labels("cpu-spot", CapacityType.SPOT),
                autoscaled=True,
            )
        )
    if gpu_spot and gpu_spot_max > 0:
        gpu_taint = (Taint(GPU_TAINT_KEY, "true"),)
        for role, capacity, types in (
            ("gpu-spot", CapacityType.SPOT, tuple(gpu_spot_instance_types)),
            ("gpu-on-demand", CapacityType.ON_DEMAND, (gpu_on_demand_type,)),
        ):
            specs.append(
                NodeGroupSpec(
                    role=role,
                    capacity_type=capacity,
                    instance_types=types,
                    min_size=0,
                    desired_size=0,
                    max_size=gpu_spot_max,
                    ami_type="AL2023_x86_64_NVIDIA",
                    root_volume_gib=200,
                    labels=labels(role, capacity, **{"nvidia.com/gpu.present": "true"}),
                    taints=gpu_taint,
                    autoscaled=True,
                )
            )
    return tuple(specs)


@dataclass(frozen=True)
class ManagedNodeGroupsArgs:
    """Node pools of one cluster. `groups` comes from `node_group_specs`."""

    cluster_name: pulumi.Input[str]
    region: str
    subnet_ids: pulumi.Input[Sequence[str]]  # private subnets
    groups: tuple[NodeGroupSpec, ...]
    kubernetes_version: Optional[str] = None  # None: the control plane's version
    max_unavailable_percentage: int = 33  # rolling updates
    tags: Mapping[str, str] = field(default_factory=dict)


class ManagedNodeGroups(pulumi.ComponentResource):
    """`strata:cloud:ManagedNodeGroups`: node role + one launch template and node group per pool."""

    def __init__(self, name: str, args: ManagedNodeGroupsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:cloud:ManagedNodeGroups", name, None, opts)
        tags = dict(args.tags)
        self.node_role, attachments = node_role(self, name, "EKS managed node groups", args.region, tags)
        self.launch_templates: dict[str, aws.ec2.LaunchTemplate] = {}
        self.node_groups: dict[str, aws.eks.NodeGroup] = {}
        for group in args.groups:
            template = aws.ec2.LaunchTemplate(
                f"{name}-{group.role}-lt",
                description=f"Strata {group.role} nodes",
                update_default_version=True,
                **hardened_launch_template(group.root_volume_gib, with_name(tags, f"{name}-{group.role}")),
                tags=tags,
                opts=child_opts(self),
            )
            scaling = aws.eks.NodeGroupScalingConfigArgs(
                min_size=group.min_size, desired_size=group.desired_size, max_size=group.max_size
            )
            self.launch_templates[group.role] = template
            self.node_groups[group.role] = aws.eks.NodeGroup(
                f"{name}-{group.role}",
                cluster_name=args.cluster_name,
                node_role_arn=self.node_role.arn,
                subnet_ids=args.subnet_ids,
                version=args.kubernetes_version,
                capacity_type=group.capacity_type.value,
                instance_types=list(group.instance_types),
                ami_type=group.ami_type,
                scaling_config=scaling,
                update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable_percentage=args.max_unavailable_percentage),
                launch_template=aws.eks.NodeGroupLaunchTemplateArgs(id=template.id, version=template.latest_version.apply(_version)),
                labels=dict(group.labels),
                taints=[aws.eks.NodeGroupTaintArgs(key=t.key, value=t.value, effect=t.effect) for t in group.taints],
                tags={**tags, "strata.dev/pool": group.role},
                opts=child_opts(
                    self,
                    depends_on=attachments,
                    ignore_changes=["scalingConfig.desiredSize"] if group.autoscaled else None,
                ),
            )
        self.ready: tuple[pulumi.Resource, ...] = tuple(self.node_groups.values())
        self.register_outputs({"nodeGroups": {k: g.node_group_name for k, g in self.node_groups.items()}, "nodeRoleArn": self.node_role.arn})


def _version(latest: Optional[int]) -> Optional[str]:
    """A node group pins the template's latest version, so a template change rolls the nodes.

    (Unset only where the version is not known yet; the template's default is then used,
    which `update_default_version` keeps equal to the latest.)
    """
    return None if latest is None else str(latest)


def hardened_launch_template(root_volume_gib: int, instance_tags: Mapping[str, str]) -> dict[str, object]:
    """Launch-template fields shared by every node: IMDSv2 only, hop limit 1, encrypted gp3 root.

    Hop limit 1 keeps pods (one network hop away) off the instance metadata service, so they
    cannot take the node role's credentials; pods get AWS access through IRSA instead.
    """
    return {
        "metadata_options": aws.ec2.LaunchTemplateMetadataOptionsArgs(
            http_endpoint="enabled",
            http_tokens="required",
            http_put_response_hop_limit=1,
            instance_metadata_tags="disabled",
        ),
        "block_device_mappings": [
            aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda",
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=root_volume_gib,
                    volume_type="gp3",
                    encrypted="true",
                    delete_on_termination="true",
                ),
            )
        ],
        "tag_specifications": [
            aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=dict(instance_tags))
            for kind in ("instance", "volume", "network-interface")
        ],
    }
