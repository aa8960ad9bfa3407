"""Monthly cost estimate of a plan, from the versioned price table.

Fixed capacity is priced from what the plan registers (EKS, NAT, node groups, RDS,
ElastiCache, KMS, SQS). The models' serving floor (min replicas x requests, + one stream worker) runs on
the CPU spot node group first: only the part beyond that group's capacity is priced, as
elastic (Karpenter) capacity, spot where the mode autoscales CPU spot, on-demand otherwise;
pricing all of it on top of the node groups would count those pods twice. Usage-priced
items (S3 bytes, data transfer, logs) are listed as not estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.plan import prices
from infra.plan.harness import Plan, PlannedResource, mock_resource_id


@dataclass(frozen=True)
class CostLine:
    item: str
    resource: str
    monthly_usd: float
    spot: bool = False
    compute: bool = False


@dataclass
class CostReport:
    price_table: str
    lines: list[CostLine] = field(default_factory=list)
    not_estimated: list[str] = field(default_factory=list)

    @property
    def monthly_usd(self) -> float:
        return round(sum(line.monthly_usd for line in self.lines), 2)

    @property
    def compute_usd(self) -> float:
        return sum(line.monthly_usd for line in self.lines if line.compute)

    @property
    def spot_share(self) -> float:
        """Share of compute spend that runs on spot capacity (0..1)."""
        compute = self.compute_usd
        return 0.0 if compute == 0 else sum(l.monthly_usd for l in self.lines if l.compute and l.spot) / compute

    def by_item(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for line in self.lines:
            totals[line.item] = round(totals.get(line.item, 0.0) + line.monthly_usd, 2)
        return totals


def _monthly(hourly: float) -> float:
    return round(hourly * prices.HOURS_PER_MONTH, 2)


def _launch_template_types(plan: Plan) -> dict[str, dict]:
    """Launch templates by the mock id the node groups reference (`<name>-id`)."""
    return {mock_resource_id(r.name): r.inputs for r in plan.by_type("aws:ec2/launchTemplate:LaunchTemplate")}


def _node_group_line(group: PlannedResource, templates: dict[str, dict]) -> list[CostLine]:
    inputs = group.inputs
    spot = inputs.get("capacityType") == "SPOT"
    desired = int((inputs.get("scalingConfig") or {}).get("desiredSize", 0))
    types = list(inputs.get("instanceTypes") or [])
    template = templates.get(str((inputs.get("launchTemplate") or {}).get("id")), {})
    if not types and template.get("instanceType"):
        types = [template["instanceType"]]
    if not types:
        types = ["m5.large"]  # EKS's default for managed node groups
    hourly = prices.instance_hourly(types[0], spot) * desired
    volume_gib = 0
    for mapping in template.get("blockDeviceMappings") or []:
        volume_gib += int((mapping.get("ebs") or {}).get("volumeSize", 0))
    lines = [CostLine("node group" + (" (spot)" if spot else ""), group.name, _monthly(hourly), spot=spot, compute=True)]
    if volume_gib and desired:
        lines.append(CostLine("node volumes (gp3)", group.name, round(volume_gib * desired * prices.EBS_GP3_GB_MONTHLY, 2)))
    return lines


def estimate(plan: Plan) -> CostReport:
    report = CostReport(price_table=prices.PRICE_TABLE_VERSION)
    templates = _launch_template_types(plan)
    for resource in plan.custom_resources:
        t, inputs = resource.type, resource.inputs
        if t == "aws:eks/cluster:Cluster":
            report.lines.append(CostLine("EKS control plane", resource.name, _monthly(prices.EKS_CLUSTER_HOURLY)))
        elif t == "aws:ec2/natGateway:NatGateway":
            report.lines.append(CostLine("NAT gateway", resource.name, _monthly(prices.NAT_GATEWAY_HOURLY)))
        elif t == "aws:ec2/eip:Eip":
            report.lines.append(CostLine("public IPv4", resource.name, _monthly(prices.PUBLIC_IPV4_HOURLY)))
        elif t == "aws:eks/nodeGroup:NodeGroup":
            report.lines.extend(_node_group_line(resource, templates))
        elif t == "aws:rds/instance:Instance":
            instance_class = inputs.get("instanceClass", "db.t4g.medium")
            copies = 2 if inputs.get("multiAz") else 1
            hourly = prices.RDS_POSTGRES_HOURLY.get(instance_class)
            if hourly is None:
                raise KeyError(f"no price for RDS class {instance_class!r} in table {prices.PRICE_TABLE_VERSION}")
            storage = float(inputs.get("allocatedStorage", 20)) * prices.RDS_GP3_GB_MONTHLY * copies
            report.lines.append(CostLine("RDS PostgreSQL", resource.name, round(_monthly(hourly * copies) + storage, 2)))
        elif t == "aws:elasticache/replicationGroup:ReplicationGroup":
            node_type = inputs.get("nodeType", "cache.t4g.small")
            hourly = prices.ELASTICACHE_VALKEY_HOURLY.get(node_type)
            if hourly is None or inputs.get("engine") != "valkey":
                raise KeyError(f"no price for ElastiCache {inputs.get('engine')!r} {node_type!r} in table "
                               f"{prices.PRICE_TABLE_VERSION}")
            nodes = int(inputs.get("numCacheClusters", 1))
            report.lines.append(CostLine("ElastiCache (Valkey)", resource.name, _monthly(hourly * nodes)))
        elif t == "aws:kms/key:Key":
            report.lines.append(CostLine("KMS key", resource.name, prices.KMS_KEY_MONTHLY))
        elif t == "aws:sqs/queue:Queue":
            report.lines.append(CostLine("SQS queue", resource.name, prices.SQS_QUEUE_MONTHLY))
    report.lines.extend(_model_capacity(plan, _model_pool_capacity(plan, templates)))
    report.not_estimated = [
        "S3 storage and requests (usage)", "data transfer and NAT processing (usage)",
        "CloudWatch logs (usage)", "ECR storage (usage)", "training runs (per run, elastic)",
        "Karpenter burst capacity above the models' floors (elastic)",
    ]
    return report


def _model_pool_capacity(plan: Plan, templates: dict[str, dict]) -> tuple[float, float]:
    """(vCPU, GiB) of the untainted spot node groups at their desired size: where model pods land."""
    cpu = memory = 0.0
    for group in plan.by_type("aws:eks/nodeGroup:NodeGroup"):
        inputs = group.inputs
        if inputs.get("capacityType") != "SPOT" or inputs.get("taints"):
            continue
        types = list(inputs.get("instanceTypes") or []) or [
            templates.get(str((inputs.get("launchTemplate") or {}).get("id")), {}).get("instanceType", "m5.large")]
        if types[0] not in prices.INSTANCE_CAPACITY:
            raise KeyError(f"no capacity for instance type {types[0]!r} in table {prices.PRICE_TABLE_VERSION}")
        vcpu, gib = prices.INSTANCE_CAPACITY[types[0]]
        desired = int((inputs.get("scalingConfig") or {}).get("desiredSize", 0))
        cpu, memory = cpu + vcpu * desired, memory + gib * desired
    return cpu, memory


def _model_capacity(plan: Plan, pool: tuple[float, float] = (0.0, 0.0)) -> list[CostLine]:
    """The models' steady-state serving floor beyond what `pool` (vCPU, GiB) already carries,
    shared among the models in proportion to their floors."""
    spec = plan.spec
    if spec is None:
        return []
    caps = spec.capabilities
    spot = caps.cpu_spot_autoscaled or caps.cpu_spot_pool
    vcpu = prices.SPOT_VCPU_HOURLY if spot else prices.ON_DEMAND_VCPU_HOURLY
    gib = prices.SPOT_GIB_HOURLY if spot else prices.ON_DEMAND_GIB_HOURLY
    floors = {}
    for model in spec.models:
        realtime = model.serving.realtime
        cpu, memory = 0.0, 0.0
        if realtime.enabled:
            replicas = realtime.autoscaling.min_replicas
            cpu += replicas * realtime.cpu
            memory += replicas * realtime.memory_gib
        if model.serving.streaming.enabled and caps.kafka:
            cpu += 1.0
            memory += 1.0
        floors[model.name] = (cpu, memory)
    total_cpu = sum(c for c, _ in floors.values())
    total_memory = sum(m for _, m in floors.values())
    extra_cpu, extra_memory = max(0.0, total_cpu - pool[0]), max(0.0, total_memory - pool[1])
    lines = []
    for name, (cpu, memory) in floors.items():
        share_cpu = extra_cpu * cpu / total_cpu if total_cpu else 0.0
        share_memory = extra_memory * memory / total_memory if total_memory else 0.0
        hourly = share_cpu * vcpu + share_memory * gib
        if hourly > 0:
            lines.append(CostLine("model serving beyond the node groups" + (" (spot)" if spot else ""), name,
                                  _monthly(hourly), spot=spot, compute=True))
    return lines
