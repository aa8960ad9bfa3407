"""Small pure helpers shared by the cloud components: partitions, names, tags, child options.

Nothing here creates a resource or calls AWS; everything is a function of plain values so
the components stay thin and the plan stays fast under mocks.
"""

from __future__ import annotations

from typing import Mapping

import pulumi


def partition_of(region: str) -> str:
    """The ARN partition of a region, without an AWS call (`cn-north-1` -> `aws-cn`)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def dns_suffix_of(region: str) -> str:
    """The service-principal DNS suffix of a region's partition."""
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def service_principal(service: str, region: str) -> str:
    """`ec2` -> `ec2.amazonaws.com` in the region's partition."""
    return f"{service}.{dns_suffix_of(region)}"


def managed_policy_arn(name: str, region: str) -> str:
    """ARN of an AWS-managed IAM policy, e.g. `AmazonEKSClusterPolicy`."""
    return f"arn:{partition_of(region)}:iam::aws:policy/{name}"


def physical_prefix(project: str, stack: str, environment: str) -> str:
    """The prefix of every explicit physical name: two stacks or environments never collide.

    `strata`, `enterprise`, `prod` -> `strata-enterprise-prod`; the environment is left out
    when the stack is already named after it (`strata`, `prod`, `prod` -> `strata-prod`).
    """
    parts = [project, stack] if stack == environment else [project, stack, environment]
    return "-".join(parts).lower()


def with_name(tags: Mapping[str, str], name: str) -> dict[str, str]:
    """The stack's tags plus the console-friendly `Name` tag."""
    return {**tags, "Name": name}


def child_opts(parent: pulumi.Resource, **extra) -> pulumi.ResourceOptions:
    """`ResourceOptions(parent=...)` plus any extra options (depends_on, provider, ...)."""
    return pulumi.ResourceOptions(parent=parent, **extra)
