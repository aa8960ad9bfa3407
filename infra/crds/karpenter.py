"""Typed Karpenter custom resources: `NodePool` (karpenter.sh/v1) and `EC2NodeClass` (karpenter.k8s.aws/v1).

The pydantic models mirror the CRD schemas shipped by the pinned Karpenter release
(`KARPENTER_VERSION`, the `karpenter` Helm chart of aws/karpenter-provider-aws installs its
CRDs: `karpenter.sh_nodepools` and `karpenter.k8s.aws_ec2nodeclasses`). API reference:
https://karpenter.sh/docs/concepts/nodepools/ and https://karpenter.sh/docs/concepts/nodeclasses/
(the Go types `NodePoolSpec`, `NodeClaimTemplate`, `NodeSelectorRequirementWithMinValues`,
`Disruption`, `Budget`, `EC2NodeClassSpec`, `SubnetSelectorTerm`, `SecurityGroupSelectorTerm`,
`AMISelectorTerm`, `MetadataOptions`, `BlockDeviceMapping`, `BlockDevice`).

Field names, enums, bounds and the schema's CEL rules that matter to us are checked here, so
a bad NodePool fails in `pulumi preview` (and in the offline plan) with the field named,
not in the API server after the Helm release is up. Only the fields the platform sets are
modelled; `extra="forbid"` makes a misspelt field an error. Upgrading Karpenter means
re-reading the new CRDs and updating this module together with `KARPENTER_VERSION`.

Each kind has ONE builder (`cpu_spot_node_pool`, `ec2_node_class`); `to_manifest` renders a
model as the camelCase object the API server expects.
"""

from __future__ import annotations

import re
from typing import Literal, Mapping, Optional, Sequence

from pydantic import Field, field_validator, model_validator

from infra.crds import CrdModel

KARPENTER_VERSION = "1.13.0"  # chart and CRD schema version (karpenter.sh/v1, karpenter.k8s.aws/v1)
NODEPOOL_API_VERSION = "karpenter.sh/v1"
EC2NODECLASS_API_VERSION = "karpenter.k8s.aws/v1"
EC2NODECLASS_GROUP = "karpenter.k8s.aws"

_DNS1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(\/))?([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_DURATION_OR_NEVER = r"^(([0-9]+(s|m|h))+|Never)$"
_DURATION = r"^([0-9]+(s|m|h))+$"
_BUDGET_NODES = r"^((100|[0-9]{1,2})%|[0-9]+)$"
_BUDGET_DURATION = r"^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$"
_QUANTITY = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
_VOLUME_SIZE = r"^([1-9][0-9]{0,4})(Gi|G|Ti|T)$"

# Well-known label keys Karpenter lets a requirement use (the rest of the restricted domains).
_KARPENTER_SH_ALLOWED = ("karpenter.sh/capacity-type", "karpenter.sh/nodepool")
_KARPENTER_AWS_ALLOWED = frozenset(
    {
        "karpenter.k8s.aws/instance-tenancy", "karpenter.k8s.aws/capacity-reservation-type",
        "karpenter.k8s.aws/capacity-reservation-id", "karpenter.k8s.aws/capacity-reservation-interruptible",
        "karpenter.k8s.aws/ec2nodeclass", "karpenter.k8s.aws/instance-encryption-in-transit-supported",
        "karpenter.k8s.aws/instance-category", "karpenter.k8s.aws/instance-hypervisor",
        "karpenter.k8s.aws/instance-family", "karpenter.k8s.aws/instance-generation",
        "karpenter.k8s.aws/instance-local-nvme", "karpenter.k8s.aws/instance-size",
        "karpenter.k8s.aws/instance-cpu", "karpenter.k8s.aws/instance-cpu-manufacturer",
        "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz", "karpenter.k8s.aws/instance-memory",
        "karpenter.k8s.aws/instance-ebs-bandwidth", "karpenter.k8s.aws/instance-network-bandwidth",
        "karpenter.k8s.aws/instance-gpu-name", "karpenter.k8s.aws/instance-gpu-manufacturer",
        "karpenter.k8s.aws/instance-gpu-count", "karpenter.k8s.aws/instance-gpu-memory",
        "karpenter.k8s.aws/instance-accelerator-name", "karpenter.k8s.aws/instance-accelerator-manufacturer",
        "karpenter.k8s.aws/instance-accelerator-count", "karpenter.k8s.aws/instance-capability-flex",
        "karpenter.k8s.aws/placement-group-id", "karpenter.k8s.aws/placement-group-partition",
    }
)
_RESTRICTED_TAG_KEYS = ("eks:eks-cluster-name", "karpenter.sh/nodepool", "karpenter.sh/nodeclaim", "karpenter.k8s.aws/ec2nodeclass")
_AMI_ALIAS_FAMILIES = {
    "al2": "AL2", "al2023": "AL2023", "bottlerocket": "Bottlerocket",
    "windows2019": "Windows2019", "windows2022": "Windows2022", "windows2025": "Windows2025",
}




def _check_labels(labels: Mapping[str, str] | None) -> Mapping[str, str] | None:
    for key, value in (labels or {}).items():
        if len(key) > 316 or not re.match(_LABEL_KEY, key):
            raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")
        if len(value) > 63 or not re.match(_LABEL_VALUE, value):
            raise ValueError(f"label {key}: value {value!r} is not a valid label value")
    return labels


class ObjectMeta(CrdModel):
    name: str = Field(pattern=_DNS1123, max_length=253)
    labels: Optional[dict[str, str]] = None
    annotations: Optional[dict[str, str]] = None

    @field_validator("labels")
    @classmethod
    def _valid_labels(cls, labels: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
        return _check_labels(labels)


# --- karpenter.sh/v1 NodePool ---------------------------------------------------------------


class NodeSelectorRequirementWithMinValues(CrdModel):
    key: str = Field(max_length=316, pattern=_LABEL_KEY)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Gte", "Lte"]
    values: Optional[list[str]] = None
    min_values: Optional[int] = Field(None, ge=1, le=50)

    @model_validator(mode="after")
    def _rules(self) -> "NodeSelectorRequirementWithMinValues":
        domain = self.key.split("/", 1)[0] if "/" in self.key else ""
        if self.key in ("karpenter.sh/nodepool", "kubernetes.io/hostname"):
            raise ValueError(f'label "{self.key}" is restricted')
        if domain.endswith("karpenter.sh") and self.key not in _KARPENTER_SH_ALLOWED:
            raise ValueError(f'label domain "karpenter.sh" is restricted ({self.key})')
        if domain.endswith("karpenter.k8s.aws") and self.key not in _KARPENTER_AWS_ALLOWED:
            raise ValueError(f'label domain "karpenter.k8s.aws" is restricted ({self.key})')
        values = self.values or []
        for value in values:
            if len(value) > 63 or not re.match(_LABEL_VALUE, value):
                raise ValueError(f"requirement {self.key}: value {value!r} is not a valid label value")
        if self.operator == "In" and not values:
            raise ValueError(f"requirement {self.key}: operator In needs at least one value")
        if self.operator in ("Gt", "Lt", "Gte", "Lte") and (len(values) != 1 or not values[0].isdigit()):
            raise ValueError(f"requirement {self.key}: operator {self.operator} needs exactly one non-negative integer value")
        if self.operator == "In" and self.min_values is not None and len(values) < self.min_values:
            raise ValueError(f"requirement {self.key}: minValues {self.min_values} exceeds the {len(values)} values listed")
        return self


class Taint(CrdModel):
    key: str = Field(pattern=_LABEL_KEY)
    value: Optional[str] = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeClassReference(CrdModel):
    group: str = Field(min_length=1, pattern=r"^[^/]*$")
    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)


class NodeClaimTemplateMetadata(CrdModel):
    labels: Optional[dict[str, str]] = None
    annotations: Optional[dict[str, str]] = None

    @field_validator("labels")
    @classmethod
    def _valid_labels(cls, labels: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
        return _check_labels(labels)


class NodeClaimTemplateSpec(CrdModel):
    node_class_ref: NodeClassReference
    requirements: list[NodeSelectorRequirementWithMinValues] = Field(min_length=1, max_length=100)
    taints: Optional[list[Taint]] = None
    startup_taints: Optional[list[Taint]] = None
    expire_after: str = Field("720h", pattern=_DURATION_OR_NEVER)  # the CRD's default
    termination_grace_period: Optional[str] = Field(None, pattern=_DURATION)


class NodeClaimTemplate(CrdModel):
    metadata: Optional[NodeClaimTemplateMetadata] = None
    spec: NodeClaimTemplateSpec


class Budget(CrdModel):
    nodes: str = Field("10%", pattern=_BUDGET_NODES)
    reasons: Optional[list[Literal["Underutilized", "Empty", "Drifted"]]] = Field(None, max_length=50)
    schedule: Optional[str] = None
    duration: Optional[str] = Field(None, pattern=_BUDGET_DURATION)

    @model_validator(mode="after")
    def _schedule_and_duration(self) -> "Budget":
        if (self.schedule is None) != (self.duration is None):
            raise ValueError("a budget's schedule and duration are set together or not at all")
        return self


class Disruption(CrdModel):
    consolidate_after: str = Field(pattern=_DURATION_OR_NEVER)
    # "Balanced" arrived after 1.13.0: not offered here.
    consolidation_policy: Literal["WhenEmpty", "WhenEmptyOrUnderutilized"] = "WhenEmptyOrUnderutilized"
    budgets: list[Budget] = Field(default_factory=lambda: [Budget()], max_length=50)


class NodePoolSpec(CrdModel):
    template: NodeClaimTemplate
    disruption: Disruption = Disruption(consolidate_after="0s")  # the CRD's default
    limits: Optional[dict[str, str]] = None
    weight: Optional[int] = Field(None, ge=1, le=100)

    @field_validator("limits")
    @classmethod
    def _quantities(cls, limits: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
        for resource, quantity in (limits or {}).items():
            if not re.match(_QUANTITY, quantity):
                raise ValueError(f"limits.{resource}: {quantity!r} is not a Kubernetes quantity")
        return limits


class NodePool(CrdModel):
    api_version: Literal["karpenter.sh/v1"] = NODEPOOL_API_VERSION
    kind: Literal["NodePool"] = "NodePool"
    metadata: ObjectMeta
    spec: NodePoolSpec


# --- karpenter.k8s.aws/v1 EC2NodeClass --------------------------------------------------------


def _check_tag_map(tags: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
    for key, value in (tags or {}).items():
        if not key or not value:
            raise ValueError("empty tag keys or values aren't supported")
    return tags


class SubnetSelectorTerm(CrdModel):
    tags: Optional[dict[str, str]] = None
    id: Optional[str] = Field(None, pattern=r"subnet-[0-9a-z]+")

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, tags: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
        return _check_tag_map(tags)

    @model_validator(mode="after")
    def _one_of(self) -> "SubnetSelectorTerm":
        if (self.tags is None) == (self.id is None):
            raise ValueError("a subnet selector term sets exactly one of tags or id")
        return self


class SecurityGroupSelectorTerm(CrdModel):
    tags: Optional[dict[str, str]] = None
    id: Optional[str] = Field(None, pattern=r"sg-[0-9a-z]+")
    name: Optional[str] = None

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, tags: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
        return _check_tag_map(tags)

    @model_validator(mode="after")
    def _one_of(self) -> "SecurityGroupSelectorTerm":
        if sum(x is not None for x in (self.tags, self.id, self.name)) != 1:
            raise ValueError("a security group selector term sets exactly one of tags, id or name")
        return self


class AMISelectorTerm(CrdModel):
    alias: Optional[str] = Field(None, max_length=30)
    id: Optional[str] = Field(None, pattern=r"ami-[0-9a-z]+")
    name: Optional[str] = None
    owner: Optional[str] = None
    ssm_parameter: Optional[str] = None
    tags: Optional[dict[str, str]] = None

    @model_validator(mode="after")
    def _rules(self) -> "AMISelectorTerm":
        if self.alias is not None:
            if any(x is not None for x in (self.id, self.name, self.owner, self.tags, self.ssm_parameter)):
                raise ValueError("'alias' is mutually exclusive with the other AMI selector fields")
            if not re.match(r"^[a-zA-Z0-9]+@.+$", self.alias):
                raise ValueError(f"'alias' must be '<family>@<version>', got {self.alias!r}")
            if self.alias.split("@")[0] not in _AMI_ALIAS_FAMILIES:
                raise ValueError(f"'alias' family must be one of {', '.join(_AMI_ALIAS_FAMILIES)}")
        elif self.id is not None and any(x is not None for x in (self.name, self.owner, self.tags)):
            raise ValueError("'id' is mutually exclusive with 'tags', 'name' and 'owner'")
        elif all(x is None for x in (self.id, self.name, self.tags, self.ssm_parameter)):
            raise ValueError("an AMI selector term sets alias, id, name, tags or ssmParameter")
        return self


class MetadataOptions(CrdModel):
    """Defaults are the CRD's: IMDSv2 required, hop limit 1 (pods cannot reach the node role)."""

    http_endpoint: Literal["enabled", "disabled"] = "enabled"
    http_protocol_ipv6: Literal["enabled", "disabled"] = Field("disabled", alias="httpProtocolIPv6")
    http_put_response_hop_limit: int = Field(1, ge=1, le=64)
    http_tokens: Literal["required", "optional"] = "required"


class BlockDevice(CrdModel):
    delete_on_termination: Optional[bool] = None
    encrypted: Optional[bool] = None
    iops: Optional[int] = None
    kms_key_id: Optional[str] = Field(None, alias="kmsKeyID")
    snapshot_id: Optional[str] = Field(None, alias="snapshotID")
    throughput: Optional[int] = None
    volume_size: Optional[str] = Field(None, pattern=_VOLUME_SIZE)
    volume_type: Optional[Literal["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"]] = None

    @model_validator(mode="after")
    def _size_or_snapshot(self) -> "BlockDevice":
        if self.snapshot_id is None and self.volume_size is None:
            raise ValueError("a block device needs snapshotID or volumeSize")
        return self


class BlockDeviceMapping(CrdModel):
    device_name: Optional[str] = None
    ebs: Optional[BlockDevice] = None
    root_volume: Optional[bool] = None


class KubeletConfiguration(CrdModel):
    max_pods: Optional[int] = Field(None, ge=0)
    pods_per_core: Optional[int] = Field(None, ge=0)
    system_reserved: Optional[dict[str, str]] = None
    kube_reserved: Optional[dict[str, str]] = None
    eviction_hard: Optional[dict[str, str]] = None
    image_gc_high_threshold_percent: Optional[int] = Field(None, ge=0, le=100, alias="imageGCHighThresholdPercent")
    image_gc_low_threshold_percent: Optional[int] = Field(None, ge=0, le=100, alias="imageGCLowThresholdPercent")


class EC2NodeClassSpec(CrdModel):
    ami_family: Optional[Literal["AL2", "AL2023", "Bottlerocket", "Custom", "Windows2019", "Windows2022", "Windows2025"]] = None
    ami_selector_terms: list[AMISelectorTerm] = Field(min_length=1, max_length=30)
    subnet_selector_terms: list[SubnetSelectorTerm] = Field(min_length=1, max_length=30)
    security_group_selector_terms: list[SecurityGroupSelectorTerm] = Field(min_length=1, max_length=30)
    role: Optional[str] = None
    instance_profile: Optional[str] = None
    associate_public_ip_address: Optional[bool] = Field(None, alias="associatePublicIPAddress")
    metadata_options: MetadataOptions = MetadataOptions()
    block_device_mappings: Optional[list[BlockDeviceMapping]] = Field(None, max_length=50)
    kubelet: Optional[KubeletConfiguration] = None
    detailed_monitoring: Optional[bool] = None
    user_data: Optional[str] = None
    tags: Optional[dict[str, str]] = None

    @model_validator(mode="after")
    def _rules(self) -> "EC2NodeClassSpec":
        if (self.role is None) == (self.instance_profile is None):
            raise ValueError("must specify exactly one of ['role', 'instanceProfile']")
        aliases = [t.alias for t in self.ami_selector_terms if t.alias is not None]
        if aliases and len(self.ami_selector_terms) != 1:
            raise ValueError("'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms")
        if not aliases and self.ami_family is None:
            raise ValueError("amiFamily is required when amiSelectorTerms has no alias")
        if aliases and self.ami_family is not None:
            expected = _AMI_ALIAS_FAMILIES[aliases[0].split("@")[0]]
            if self.ami_family not in ("Custom", expected):
                raise ValueError(f"amiFamily {self.ami_family!r} does not match the alias family {expected!r}")
        roots = [m for m in self.block_device_mappings or [] if m.root_volume]
        if len(roots) > 1:
            raise ValueError("must have only one blockDeviceMappings with rootVolume")
        for key, value in (self.tags or {}).items():
            if not key or key in _RESTRICTED_TAG_KEYS or key.startswith("kubernetes.io/cluster"):
                raise ValueError(f"tag key {key!r} is restricted by Karpenter")
            if not value:
                raise ValueError(f"tag {key!r} has an empty value")
        return self


class EC2NodeClass(CrdModel):
    api_version: Literal["karpenter.k8s.aws/v1"] = EC2NODECLASS_API_VERSION
    kind: Literal["EC2NodeClass"] = "EC2NodeClass"
    metadata: ObjectMeta
    spec: EC2NodeClassSpec


# --- the builders -----------------------------------------------------------------------------


def to_manifest(resource: NodePool | EC2NodeClass) -> dict:
    """The object as the API server takes it (camelCase, unset fields left out)."""
    return resource.render()


def ec2_node_class(
    name: str,
    *,
    discovery_tag: Mapping[str, str],
    security_group_tag: Mapping[str, str],
    instance_profile: str,
    tags: Mapping[str, str],
    root_volume_gib: int = 100,
    ami_alias: str = "al2023@latest",
    labels: Optional[Mapping[str, str]] = None,
) -> EC2NodeClass:
    """The EC2NodeClass of Karpenter-launched nodes: IMDSv2 (hop limit 1), encrypted gp3 root.

    Subnets are found by `discovery_tag` (the network tags its private subnets with it), security
    groups by `security_group_tag`; nodes use the pre-created `instance_profile` (so the controller
    needs no IAM instance-profile write permissions). `ami_alias`: pin a version (`al2023@v2025...`)
    to hold node images still across deploys; `latest` follows the newest EKS-optimized AL2023.
    """
    return EC2NodeClass(
        metadata=ObjectMeta(name=name, labels=dict(labels) if labels else None),
        spec=EC2NodeClassSpec(
            ami_selector_terms=[AMISelectorTerm(alias=ami_alias)],
            subnet_selector_terms=[SubnetSelectorTerm(tags=dict(discovery_tag))],
            security_group_selector_terms=[SecurityGroupSelectorTerm(tags=dict(security_group_tag))],
            instance_profile=instance_profile,
            associate_public_ip_address=False,
            metadata_options=MetadataOptions(
                http_endpoint="enabled", http_protocol_ipv6="disabled", http_put_response_hop_limit=1, http_tokens="required"
            ),
            block_device_mappings=[
                BlockDeviceMapping(
                    device_name="/dev/xvda",
                    root_volume=True,
                    ebs=BlockDevice(
                        volume_size=f"{root_volume_gib}Gi", volume_type="gp3", encrypted=True, delete_on_termination=True
                    ),
                )
            ],
            tags=dict(tags) or None,
        ),
    )


def cpu_spot_node_pool(
    name: str,
    *,
    node_class_name: str,
    instance_categories: Sequence[str] = ("c", "m", "r"),
    min_generation: int = 5,
    architectures: Sequence[str] = ("amd64",),
    cpu_limit: int = 256,
    memory_limit_gib: int = 1024,
    min_instance_types: int = 5,
    consolidate_after: str = "1m",
    expire_after: str = "720h",
    disruption_budget: str = "10%",
    labels: Optional[Mapping[str, str]] = None,
) -> NodePool:
    """The autoscaled CPU spot NodePool: diversified (at least `min_instance_types` types so spot
    capacity can be found), consolidated when under-used, capped by `cpu_limit`/`memory_limit_gib`.
    """
    return NodePool(
        metadata=ObjectMeta(name=name),
        spec=NodePoolSpec(
            template=NodeClaimTemplate(
                metadata=NodeClaimTemplateMetadata(labels=dict(labels) if labels else None),
                spec=NodeClaimTemplateSpec(
                    node_class_ref=NodeClassReference(group=EC2NODECLASS_GROUP, kind="EC2NodeClass", name=node_class_name),
                    requirements=[
                        NodeSelectorRequirementWithMinValues(key="karpenter.sh/capacity-type", operator="In", values=["spot"]),
                        NodeSelectorRequirementWithMinValues(key="kubernetes.io/arch", operator="In", values=list(architectures)),
                        NodeSelectorRequirementWithMinValues(key="kubernetes.io/os", operator="In", values=["linux"]),
                        NodeSelectorRequirementWithMinValues(
                            key="karpenter.k8s.aws/instance-category", operator="In", values=list(instance_categories)
                        ),
                        NodeSelectorRequirementWithMinValues(
                            key="karpenter.k8s.aws/instance-generation", operator="Gt", values=[str(min_generation)]
                        ),
                        NodeSelectorRequirementWithMinValues(
                            key="karpenter.k8s.aws/instance-family", operator="Exists", min_values=min_instance_types
                        ),
                    ],
                    expire_after=expire_after,
                ),
            ),
            disruption=Disruption(
                consolidation_policy="WhenEmptyOrUnderutilized",
                consolidate_after=consolidate_after,
                budgets=[Budget(nodes=disruption_budget)],
            ),
            limits={"cpu": str(cpu_limit), "memory": f"{memory_limit_gib}Gi"},
        ),
    )
