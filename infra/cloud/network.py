"""`Network`: the VPC the cluster and the database live in.

Layout of a VPC CIDR of prefix /P (P in 16..20, validated by the stack config):
the VPC is cut into 8 blocks of /P+3; blocks 0..az_count-1 are the private subnets (one
per AZ, large: pods take VPC addresses with the VPC CNI); block 7 is cut into 8 blocks of
/P+6 and the first az_count of those are the public subnets (load balancers and NATs only).
For 10.42.0.0/16: private 10.42.0.0/19, 10.42.32.0/19, ...; public 10.42.224.0/22, ...
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Optional

import pulumi
import pulumi_aws as aws

from infra.cloud.common import child_opts, service_principal, with_name
from infra.cloud.iam import document, service_trust_policy, statement
from infra.modes import NatStrategy

MAX_AZS = 6


@dataclass(frozen=True)
class SubnetPlan:
    az_index: int
    private_cidr: str
    public_cidr: str


def plan_subnets(vpc_cidr: str, az_count: int) -> tuple[SubnetPlan, ...]:
    """Carve the VPC CIDR into one private and one public subnet per AZ (see module doc)."""
    if not 1 <= az_count <= MAX_AZS:
        raise ValueError(f"az_count must be 1..{MAX_AZS}, got {az_count}")
    vpc = ipaddress.ip_network(vpc_cidr, strict=True)
    blocks = list(vpc.subnets(prefixlen_diff=3))
    public_blocks = list(blocks[-1].subnets(prefixlen_diff=3))
    return tuple(
        SubnetPlan(az_index=i, private_cidr=str(blocks[i]), public_cidr=str(public_blocks[i])) for i in range(az_count)
    )


@dataclass(frozen=True)
class NetworkArgs:
    """What the network needs. Defaults are those of the stack config's `network` section."""

    cluster_name: str  # tags subnets for ELB and Karpenter discovery of this cluster
    region: str
    vpc_cidr: str = "10.42.0.0/16"
    az_count: int = 2  # quick: 2, standard/enterprise: 3
    nat_strategy: NatStrategy = NatStrategy.SINGLE  # enterprise: ONE_PER_AZ
    flow_log_retention_days: int = 30
    flow_log_traffic_type: str = "ALL"  # ACCEPT | REJECT | ALL
    tags: Mapping[str, str] = field(default_factory=dict)


class Network(pulumi.ComponentResource):
    """`strata:cloud:Network`: VPC, subnets, IGW, NAT gateways, route tables, flow logs."""

    def __init__(self, name: str, args: NetworkArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:cloud:Network", name, None, opts)
        tags = dict(args.tags)
        plans = plan_subnets(args.vpc_cidr, args.az_count)

        zones = aws.get_availability_zones_output(
            state="available",
            filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])],
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        self.availability_zones = zones.names.apply(lambda names: self._first_zones(names, args.az_count))

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=with_name(tags, name),
            opts=child_opts(self),
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags=with_name(tags, f"{name}-igw"), opts=child_opts(self)
        )
        cluster_tag = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"}

        # Routes inline (not aws.ec2.Route resources): a table's routes are then all in one place.
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags=with_name(tags, f"{name}-public"),
            opts=child_opts(self),
        )

        self.public_subnets: list[aws.ec2.Subnet] = []
        self.private_subnets: list[aws.ec2.Subnet] = []
        nat_gateways: list[aws.ec2.NatGateway] = []
        for plan in plans:
            az = self.availability_zones.apply(lambda names, i=plan.az_index: names[i])
            public = aws.ec2.Subnet(
                f"{name}-public-{plan.az_index}",
                vpc_id=self.vpc.id,
                cidr_block=plan.public_cidr,
                availability_zone=az,
                map_public_ip_on_launch=False,
                tags={**with_name(tags, f"{name}-public-{plan.az_index}"), **cluster_tag, "kubernetes.io/role/elb": "1", "strata.dev/tier": "public"},
                opts=child_opts(self),
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{plan.az_index}-rta", subnet_id=public.id, route_table_id=public_rt.id, opts=child_opts(self)
            )
            private = aws.ec2.Subnet(
                f"{name}-private-{plan.az_index}",
                vpc_id=self.vpc.id,
                cidr_block=plan.private_cidr,
                availability_zone=az,
                tags={
                    **with_name(tags, f"{name}-private-{plan.az_index}"),
                    **cluster_tag,
                    "kubernetes.io/role/internal-elb": "1",
                    "karpenter.sh/discovery": args.cluster_name,
                    "strata.dev/tier": "private",
                },
                opts=child_opts(self),
            )
            self.public_subnets.append(public)
            self.private_subnets.append(private)
            if args.nat_strategy is NatStrategy.ONE_PER_AZ or plan.az_index == 0:
                eip = aws.ec2.Eip(
                    f"{name}-nat-{plan.az_index}-eip",
                    domain="vpc",
                    tags=with_name(tags, f"{name}-nat-{plan.az_index}"),
                    opts=child_opts(self, depends_on=[igw]),
                )
                nat_gateways.append(
                    aws.ec2.NatGateway(
                        f"{name}-nat-{plan.az_index}",
                        allocation_id=eip.allocation_id,
                        subnet_id=public.id,
                        connectivity_type="public",
                        tags=with_name(tags, f"{name}-nat-{plan.az_index}"),
                        opts=child_opts(self, depends_on=[igw]),
                    )
                )

        # Each private subnet routes out through its own AZ's NAT (one-per-az) or the one NAT.
        for plan, private in zip(plans, self.private_subnets):
            nat = nat_gateways[plan.az_index] if args.nat_strategy is NatStrategy.ONE_PER_AZ else nat_gateways[0]
            rt = aws.ec2.RouteTable(
                f"{name}-private-{plan.az_index}-rt",
                vpc_id=self.vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags=with_name(tags, f"{name}-private-{plan.az_index}"),
                opts=child_opts(self),
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{plan.az_index}-rta", subnet_id=private.id, route_table_id=rt.id, opts=child_opts(self)
            )
        self.nat_gateways = nat_gateways
        self.nat_public_ips = pulumi.Output.all(*[nat.public_ip for nat in nat_gateways])

        self._flow_logs(name, args, tags)

        self.vpc_id = self.vpc.id
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in self.private_subnets])
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in self.public_subnets])
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
                "availabilityZones": self.availability_zones,
            }
        )

    @staticmethod
    def _first_zones(names: list[str], count: int) -> list[str]:
        if len(names) < count:
            raise ValueError(f"network.azCount is {count} but the region has only {len(names)} available zones")
        return list(names[:count])

    def _flow_logs(self, name: str, args: NetworkArgs, tags: dict[str, str]) -> None:
        """VPC flow logs to a CloudWatch log group, written by a role only the flow-log service assumes."""
        self.flow_log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=f"/strata/vpc/{args.cluster_name}/flow-logs",
            retention_in_days=args.flow_log_retention_days,
            tags=tags,
            opts=child_opts(self),
        )
        role = aws.iam.Role(
            f"{name}-flow-logs-role",
            description=f"VPC flow logs of {args.cluster_name} to CloudWatch Logs",
            assume_role_policy=service_trust_policy(service_principal("vpc-flow-logs", args.region)),
            tags=tags,
            opts=child_opts(self),
        )
        log_group_arn = self.flow_log_group.arn
        aws.iam.RolePolicy(
            f"{name}-flow-logs-policy",
            role=role.name,
            policy=document(
                [
                    statement(
                        "WriteFlowLogs",
                        ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                        [log_group_arn, log_group_arn.apply(lambda a: f"{a.removesuffix(':*')}:log-stream:*")],
                    ),
                ]
            ),
            opts=child_opts(self),
        )
        self.flow_log = aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=self.vpc.id,
            traffic_type=args.flow_log_traffic_type,
            log_destination_type="cloud-watch-logs",
            log_destination=log_group_arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=60,
            tags=with_name(tags, f"{name}-flow-log"),
            opts=child_opts(self),
        )
