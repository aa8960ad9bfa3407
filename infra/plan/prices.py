"""Versioned price table for the offline cost estimate.

List prices in USD for one region family (eu-west-1), rounded; spot prices are the
table's long-run average discount, not a quote. Bump `PRICE_TABLE_VERSION` with any
change so plans say which table they used.
"""

from __future__ import annotations

from types import MappingProxyType

PRICE_TABLE_VERSION = "2026-11-eu-west-1-v2"  # v2: instance capacities (the floor beyond the node groups)
HOURS_PER_MONTH = 730

# On-demand USD per hour, Linux.
EC2_ON_DEMAND_HOURLY = MappingProxyType({
    "m5.large": 0.107, "m5.xlarge": 0.214, "m5.2xlarge": 0.428,
    "m6i.large": 0.107, "m6i.xlarge": 0.214, "m6i.2xlarge": 0.428,
    "m6a.large": 0.0963, "m6a.xlarge": 0.1926, "m6a.2xlarge": 0.3852,
    "m7i.large": 0.1124, "m7i.xlarge": 0.2247, "m7i.2xlarge": 0.4494,
    "c6i.xlarge": 0.192, "c7i.xlarge": 0.2016, "r6i.xlarge": 0.282,
    "g4dn.xlarge": 0.587, "g5.xlarge": 1.123, "g5.2xlarge": 1.361, "g6.xlarge": 0.8905,
})
# (vCPU, GiB) per instance type: how much of the models' floor a node group already carries.
INSTANCE_CAPACITY = MappingProxyType({
    "m5.large": (2, 8), "m5.xlarge": (4, 16), "m5.2xlarge": (8, 32),
    "m6i.large": (2, 8), "m6i.xlarge": (4, 16), "m6i.2xlarge": (8, 32),
    "m6a.large": (2, 8), "m6a.xlarge": (4, 16), "m6a.2xlarge": (8, 32),
    "m7i.large": (2, 8), "m7i.xlarge": (4, 16), "m7i.2xlarge": (8, 32),
    "c6i.xlarge": (4, 8), "c7i.xlarge": (4, 8), "r6i.xlarge": (4, 32),
    "g4dn.xlarge": (4, 16), "g5.xlarge": (4, 16), "g5.2xlarge": (8, 32), "g6.xlarge": (4, 16),
})
# Average spot price as a fraction of on-demand, by instance family prefix.
SPOT_FRACTION = MappingProxyType({"m": 0.38, "c": 0.36, "r": 0.35, "g": 0.42})

EKS_CLUSTER_HOURLY = 0.10
NAT_GATEWAY_HOURLY = 0.048
PUBLIC_IPV4_HOURLY = 0.005
KMS_KEY_MONTHLY = 1.00
RDS_POSTGRES_HOURLY = MappingProxyType({
    "db.t4g.micro": 0.018, "db.t4g.small": 0.036, "db.t4g.medium": 0.072,
    "db.m7g.large": 0.178, "db.m6g.large": 0.171, "db.r6g.large": 0.258,
})
RDS_GP3_GB_MONTHLY = 0.127
# ElastiCache for Valkey, on-demand per node hour (Valkey is priced 20% under Redis OSS).
ELASTICACHE_VALKEY_HOURLY = MappingProxyType({
    "cache.t4g.micro": 0.0144, "cache.t4g.small": 0.0288, "cache.t4g.medium": 0.0576,
    "cache.m7g.large": 0.1408, "cache.r7g.large": 0.1904,
})
EBS_GP3_GB_MONTHLY = 0.088
SQS_QUEUE_MONTHLY = 0.40  # interruption events are few; a floor for the queue
# Elastic (Karpenter/HPA-scheduled) capacity: per requested vCPU / GiB hour on spot m-family.
SPOT_VCPU_HOURLY = 0.0175
SPOT_GIB_HOURLY = 0.0022
ON_DEMAND_VCPU_HOURLY = 0.0462
ON_DEMAND_GIB_HOURLY = 0.0058


def instance_hourly(instance_type: str, spot: bool) -> float:
    try:
        on_demand = EC2_ON_DEMAND_HOURLY[instance_type]
    except KeyError:
        raise KeyError(f"no price for instance type {instance_type!r} in table {PRICE_TABLE_VERSION}") from None
    if not spot:
        return on_demand
    return on_demand * SPOT_FRACTION.get(instance_type[0], 0.4)
