"""Cloud layer (AWS). PLACEHOLDER being replaced by the cloud-layer work: minimal VPC + EKS."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.config import StackSpec
from infra.contracts import CloudOutputs, CloudStorage, ClusterHandle, WorkloadIdentities


def build_cloud(spec: StackSpec) -> CloudOutputs:
    vpc = aws.ec2.Vpc(f"{spec.stack}-vpc", cidr_block=spec.config.network.vpc_cidr)
    cluster = aws.eks.Cluster(f"{spec.stack}-eks", role_arn="arn:aws:iam::000000000000:role/x",
                              vpc_config=aws.eks.ClusterVpcConfigArgs(subnet_ids=[]))
    provider = k8s.Provider(f"{spec.stack}-k8s", kubeconfig=cluster.endpoint)
    key = aws.kms.Key(f"{spec.stack}-kms")
    handle = ClusterHandle(name=cluster.name, provider=provider, kubernetes_version=spec.config.cluster.kubernetes_version,
                           gpu_nodes=spec.capabilities.gpu_spot_pool)
    storage = CloudStorage(kms_key_arn=key.arn, lake_buckets={}, artifacts_bucket=pulumi.Output.from_input("a"),
                           checkpoints_bucket=pulumi.Output.from_input("c"), ecr_repositories={})
    return CloudOutputs(cluster=handle, storage=storage, identities=WorkloadIdentities(), vpc_id=vpc.id)
