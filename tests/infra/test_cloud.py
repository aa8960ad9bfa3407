"""The AWS cloud layer, run as the real program under Pulumi mocks (`infra.plan.harness`).

Per mode: topology (AZs, NATs, endpoint access, node pools, Karpenter, RDS, lake layout);
for every mode: hardening invariants (IMDSv2, encrypted buckets, no wildcard actions, IRSA
subjects, secret password, tags, collision-free names). Plus the pure helpers and the typed
Karpenter CRD models.
"""

from __future__ import annotations

import inspect
import ipaddress
import json
from functools import lru_cache

import pulumi_aws
import pytest
from pydantic import ValidationError

from infra.cloud.cluster import CapacityType, EksClusterArgs, NodeGroupSpec, node_group_specs
from infra.cloud.common import physical_prefix
from infra.cloud.iam import PolicyError, irsa_trust_policy, statement
from infra.cloud.network import plan_subnets
from infra.cloud.storage import lake_bucket_keys
from infra.crds import karpenter as crds
from infra.modes import EndpointAccess
from infra.plan.harness import Plan, PlannedResource, run_stack

STACKS = ("quick", "standard", "enterprise")

T_SUBNET = "aws:ec2/subnet:Subnet"
T_NAT = "aws:ec2/natGateway:NatGateway"
T_RT = "aws:ec2/routeTable:RouteTable"
T_RTA = "aws:ec2/routeTableAssociation:RouteTableAssociation"
T_EKS = "aws:eks/cluster:Cluster"
T_NODEGROUP = "aws:eks/nodeGroup:NodeGroup"
T_LT = "aws:ec2/launchTemplate:LaunchTemplate"
T_BUCKET = "aws:s3/bucket:Bucket"
T_RDS = "aws:rds/instance:Instance"
T_ROLE = "aws:iam/role:Role"
T_RELEASE = "kubernetes:helm.sh/v3:Release"
T_NODEPOOL = "kubernetes:karpenter.sh/v1:NodePool"
T_NODECLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"


@lru_cache(maxsize=None)
def plan_of(stack: str) -> Plan:
    return run_stack(stack)


@pytest.fixture(params=STACKS)
def plan(request) -> Plan:
    return plan_of(request.param)


def one(plan: Plan, type_token: str, name: str) -> PlannedResource:
    matches = [r for r in plan.by_type(type_token) if r.name == name]
    assert len(matches) == 1, f"expected one {type_token} named {name}, got {[r.name for r in plan.by_type(type_token)]}"
    return matches[0]


def children(plan: Plan, parent: PlannedResource, type_token: str) -> list[PlannedResource]:
    return [r for r in plan.children_of(parent.urn) if r.type == type_token]


def route_targets(plan: Plan) -> dict[int, str]:
    """Private subnet AZ index -> NAT gateway id of its route table's default route."""
    targets = {}
    for rt in plan.by_type(T_RT):
        if "-private-" in rt.name:
            (route,) = rt.inputs["routes"]
            assert route["cidrBlock"] == "0.0.0.0/0"
            targets[int(rt.name.rsplit("-", 2)[-2])] = route["natGatewayId"]
    return targets


def policy_documents(plan: Plan) -> list[tuple[str, dict]]:
    fields = {
        T_ROLE: "assumeRolePolicy",
        "aws:iam/rolePolicy:RolePolicy": "policy",
        "aws:iam/policy:Policy": "policy",
        "aws:s3/bucketPolicy:BucketPolicy": "policy",
        "aws:sqs/queuePolicy:QueuePolicy": "policy",
        "aws:kms/key:Key": "policy",
    }
    docs = []
    for resource in plan.resources:
        field = fields.get(resource.type)
        if field and resource.inputs.get(field):
            docs.append((resource.name, json.loads(resource.inputs[field])))
    return docs


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


# --- per-mode topology ------------------------------------------------------------------------


def test_quick_two_azs_one_nat_public_allowlisted_endpoint_no_gpu_no_karpenter():
    plan = plan_of("quick")
    subnets = plan.by_type(T_SUBNET)
    assert sorted(s.name for s in subnets) == [
        "quick-network-private-0", "quick-network-private-1", "quick-network-public-0", "quick-network-public-1",
    ]
    assert len(plan.by_type(T_NAT)) == 1
    assert set(route_targets(plan).values()) == {"quick-network-nat-0-id"}

    vpc = one(plan, T_EKS, "quick-cluster-eks").inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is True and vpc["endpointPrivateAccess"] is False
    assert "203.0.113.0/24" in vpc["publicAccessCidrs"]
    assert not any(c.endswith("/0") for c in vpc["publicAccessCidrs"])

    groups = {g.name for g in plan.by_type(T_NODEGROUP)}
    assert groups == {"quick-nodes-system", "quick-nodes-cpu-spot"}
    assert not [r for r in plan.resources if "karpenter" in r.type or "karpenter" in r.name]
    assert not plan.by_type("aws:sqs/queue:Queue")
    assert not plan.by_type(T_RDS)
    assert [b.name for b in plan.by_type(T_BUCKET) if "lake" in b.name] == ["quick-storage-lake-bucket"]


def test_standard_three_azs_karpenter_with_interruption_queue_and_single_az_rds():
    plan = plan_of("standard")
    assert len([s for s in plan.by_type(T_SUBNET) if "-private-" in s.name]) == 3
    assert len(plan.by_type(T_NAT)) == 1

    vpc = one(plan, T_EKS, "standard-cluster-eks").inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is True and vpc["endpointPrivateAccess"] is True
    assert set(vpc["publicAccessCidrs"]) == {"203.0.113.0/24", "198.51.100.0/24"}

    queue = one(plan, "aws:sqs/queue:Queue", "standard-karpenter-interruption")
    assert queue.inputs["sqsManagedSseEnabled"] is True
    rules = plan.by_type("aws:cloudwatch/eventRule:EventRule")
    detail_types = {json.loads(r.inputs["eventPattern"])["detail-type"][0] for r in rules}
    assert detail_types == {
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
        "AWS Health Event",
    }
    targets = plan.by_type("aws:cloudwatch/eventTarget:EventTarget")
    assert len(targets) == 4 and {t.inputs["arn"] for t in targets} == {"arn:aws:mock:::standard-karpenter-interruption"}
    (queue_policy,) = plan.by_type("aws:sqs/queuePolicy:QueuePolicy")
    send = json.loads(queue_policy.inputs["policy"])["Statement"][0]
    assert send["Action"] == ["sqs:SendMessage"] and "events.amazonaws.com" in send["Principal"]["Service"]
    assert set(send["Condition"]["ArnEquals"]["aws:SourceArn"]) == {f"arn:aws:mock:::{r.name}" for r in rules}

    release = one(plan, T_RELEASE, "standard-karpenter-release")
    assert release.inputs["version"] == crds.KARPENTER_VERSION
    assert release.inputs["values"]["settings"]["interruptionQueue"] == queue.inputs["name"]
    assert release.inputs["values"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"] == (
        "arn:aws:mock:::standard-karpenter-controller-role"
    )

    db = one(plan, T_RDS, "standard-mlflow-db-db").inputs
    assert db["multiAz"] is False and db["deletionProtection"] is False
    assert db["storageEncrypted"] is True and db["publiclyAccessible"] is False
    assert db["backupRetentionPeriod"] >= 7
    assert sorted(b.name for b in plan.by_type(T_BUCKET) if "lake" in b.name) == [
        "standard-storage-lake-bronze-bucket", "standard-storage-lake-gold-bucket", "standard-storage-lake-silver-bucket",
    ]


def test_enterprise_nat_per_az_with_each_private_subnet_routed_to_its_own_nat():
    plan = plan_of("enterprise")
    nats = {n.name: n for n in plan.by_type(T_NAT)}
    assert sorted(nats) == ["enterprise-network-nat-0", "enterprise-network-nat-1", "enterprise-network-nat-2"]
    for index in range(3):
        assert nats[f"enterprise-network-nat-{index}"].inputs["subnetId"] == f"enterprise-network-public-{index}-id"
    assert route_targets(plan) == {i: f"enterprise-network-nat-{i}-id" for i in range(3)}
    # each private subnet is associated with the route table of its own AZ
    associations = {a.inputs["subnetId"]: a.inputs["routeTableId"] for a in plan.by_type(T_RTA)}
    for index in range(3):
        assert associations[f"enterprise-network-private-{index}-id"] == f"enterprise-network-private-{index}-rt-id"


def test_enterprise_private_only_endpoint_and_hardened_control_plane():
    plan = plan_of("enterprise")
    eks = one(plan, T_EKS, "enterprise-cluster-eks").inputs
    assert eks["vpcConfig"]["endpointPublicAccess"] is False
    assert eks["vpcConfig"]["endpointPrivateAccess"] is True
    assert "publicAccessCidrs" not in eks["vpcConfig"]
    assert all("private" in s for s in eks["vpcConfig"]["subnetIds"])
    assert eks["version"] == plan.spec.config.cluster.kubernetes_version
    assert eks["accessConfig"]["authenticationMode"] == "API"
    assert sorted(eks["enabledClusterLogTypes"]) == ["api", "audit", "authenticator", "controllerManager", "scheduler"]
    assert eks["encryptionConfig"]["resources"] == ["secrets"]
    key = one(plan, "aws:kms/key:Key", "enterprise-cluster-secrets-key")
    assert eks["encryptionConfig"]["provider"]["keyArn"] == f"arn:aws:mock:::{key.name}"
    assert key.inputs["enableKeyRotation"] is True
    oidc = one(plan, "aws:iam/openIdConnectProvider:OpenIdConnectProvider", "enterprise-cluster-oidc")
    assert oidc.inputs["clientIdLists"] == ["sts.amazonaws.com"]
    assert oidc.inputs["url"].startswith("https://")


def test_enterprise_gpu_spot_group_tainted_with_on_demand_fallback():
    plan = plan_of("enterprise")
    groups = {g.name.removeprefix("enterprise-nodes-"): g.inputs for g in plan.by_type(T_NODEGROUP)}
    assert set(groups) == {"system", "cpu-spot", "gpu-spot", "gpu-on-demand"}
    gpu_taint = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}

    spot, fallback = groups["gpu-spot"], groups["gpu-on-demand"]
    assert spot["capacityType"] == "SPOT" and fallback["capacityType"] == "ON_DEMAND"
    assert spot["taints"] == [gpu_taint] and fallback["taints"] == [gpu_taint]
    assert spot["instanceTypes"] == list(plan.spec.config.cluster.gpu_spot_instance_types)
    assert fallback["instanceTypes"] == [plan.spec.config.cluster.gpu_on_demand_fallback_type]
    assert fallback["scalingConfig"]["minSize"] == 0
    assert spot["scalingConfig"]["maxSize"] == plan.spec.capabilities.gpu_spot_max
    assert spot["amiType"] == fallback["amiType"] == "AL2023_x86_64_NVIDIA"

    cpu = groups["cpu-spot"]
    assert cpu["capacityType"] == "SPOT"
    assert cpu["instanceTypes"] == list(plan.spec.config.cluster.cpu_spot_instance_types)
    assert len(cpu["instanceTypes"]) >= 3  # diversified
    assert cpu["scalingConfig"]["desiredSize"] == plan.spec.capabilities.cpu_spot_pool_size
    system = groups["system"]
    assert system["capacityType"] == "ON_DEMAND" and not system.get("taints")
    assert system["scalingConfig"]["desiredSize"] == plan.spec.capabilities.system_pool_size
    assert system["labels"]["strata.dev/pool"] == "system"


def test_enterprise_rds_multi_az_with_deletion_protection():
    plan = plan_of("enterprise")
    db = one(plan, T_RDS, "enterprise-mlflow-db-db").inputs
    assert db["multiAz"] is True and db["deletionProtection"] is True
    assert db["storageEncrypted"] is True and db["kmsKeyId"] == "arn:aws:mock:::enterprise-storage-key"
    assert db["publiclyAccessible"] is False and db["skipFinalSnapshot"] is False
    assert db["backupRetentionPeriod"] == 14
    subnets = one(plan, "aws:rds/subnetGroup:SubnetGroup", "enterprise-mlflow-db-subnets").inputs["subnetIds"]
    assert subnets == [f"enterprise-network-private-{i}-id" for i in range(3)]
    (ingress,) = [r for r in plan.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
                  if r.inputs["securityGroupId"] in db["vpcSecurityGroupIds"]]  # the feature store has its own
    assert ingress.inputs["fromPort"] == ingress.inputs["toPort"] == 5432
    assert "cidrIpv4" not in ingress.inputs  # from the cluster security group, never an address range
    assert db["vpcSecurityGroupIds"] == [ingress.inputs["securityGroupId"]]


def test_enterprise_lake_versioned_with_lifecycle_rules():
    plan = plan_of("enterprise")
    for layer in ("bronze", "silver", "gold"):
        versioning = one(plan, "aws:s3/bucketVersioning:BucketVersioning", f"enterprise-storage-lake-{layer}-versioning")
        assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"
        lifecycle = one(plan, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", f"enterprise-storage-lake-{layer}-lifecycle")
        rule_ids = {r["id"] for r in lifecycle.inputs["rules"]}
        assert {"expire-noncurrent-versions", "abort-incomplete-multipart-uploads"} <= rule_ids
        assert all(r["status"] == "Enabled" for r in lifecycle.inputs["rules"])


def test_lake_is_not_versioned_below_enterprise():
    plan = plan_of("standard")
    lake_versioning = [v for v in plan.by_type("aws:s3/bucketVersioning:BucketVersioning") if "-lake-" in v.name]
    assert lake_versioning == []


# --- invariants of every mode -----------------------------------------------------------------


def test_every_launch_template_requires_imdsv2_hop_limit_1_and_encrypted_gp3(plan: Plan):
    templates = plan.by_type(T_LT)
    assert len(templates) == len(plan.by_type(T_NODEGROUP)) >= 2
    for template in templates:
        metadata = template.inputs["metadataOptions"]
        assert metadata["httpTokens"] == "required", template.name
        assert metadata["httpPutResponseHopLimit"] == 1, template.name
        assert metadata["httpEndpoint"] == "enabled"
        (root,) = template.inputs["blockDeviceMappings"]
        assert root["ebs"]["encrypted"] == "true" and root["ebs"]["volumeType"] == "gp3", template.name
    for group in plan.by_type(T_NODEGROUP):
        assert group.inputs["launchTemplate"]["id"] == f"{group.name}-lt-id"
        assert all("private" in s for s in group.inputs["subnetIds"])


def test_every_bucket_is_kms_encrypted_private_owner_enforced_and_tls_only(plan: Plan):
    buckets = plan.by_type(T_BUCKET)
    assert len(buckets) == len(lake_bucket_keys(plan.spec.capabilities.lake_layout)) + 2  # + artifacts, checkpoints
    data_key = f"arn:aws:mock:::{plan.stack}-storage-key"
    for bucket in buckets:
        base = bucket.name.removesuffix("-bucket")
        bucket_id = f"{bucket.name}-id"
        sse = one(plan, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", f"{base}-sse")
        (rule,) = sse.inputs["rules"]
        assert sse.inputs["bucket"] == bucket_id
        assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": data_key}
        block = one(plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", f"{base}-public-access").inputs
        assert block["bucket"] == bucket_id
        for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
            assert block[flag] is True, (bucket.name, flag)
        ownership = one(plan, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", f"{base}-ownership").inputs
        assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"
        policy = json.loads(one(plan, "aws:s3/bucketPolicy:BucketPolicy", f"{base}-policy").inputs["policy"])
        deny_http = [s for s in policy["Statement"] if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool")]
        assert deny_http and deny_http[0]["Condition"]["Bool"]["aws:SecureTransport"] == "false"
        assert not [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    for always_versioned in ("artifacts", "checkpoints"):
        versioning = one(plan, "aws:s3/bucketVersioning:BucketVersioning", f"{plan.stack}-storage-{always_versioned}-versioning")
        assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"


def test_ecr_repositories_are_immutable_scanned_and_kms_encrypted(plan: Plan):
    repositories = plan.by_type("aws:ecr/repository:Repository")
    names = {r.inputs["name"].rsplit("/", 1)[-1] for r in repositories}
    assert {"training", "serving", "stream-worker", "rollout-controller"} <= names
    for repository in repositories:
        assert repository.inputs["imageTagMutability"] == "IMMUTABLE"
        assert repository.inputs["imageScanningConfiguration"]["scanOnPush"] is True
        assert repository.inputs["encryptionConfigurations"] == [
            {"encryptionType": "KMS", "kmsKey": f"arn:aws:mock:::{plan.stack}-storage-key"}
        ]


def test_no_policy_document_grants_a_wildcard_action(plan: Plan):
    docs = policy_documents(plan)
    assert len(docs) >= 10
    for name, doc in docs:
        for st in as_list(doc["Statement"]):
            actions = as_list(st.get("Action", []))
            assert "*" not in actions, name
            if st["Effect"] == "Allow":
                assert not [a for a in actions if "*" in a], (name, st.get("Sid"))
                # "*" resources only for calls IAM cannot scope (Describe*, pricing).
                if "*" in as_list(st.get("Resource", [])):
                    assert all(a.startswith(("ec2:Describe", "pricing:")) for a in actions), (name, st.get("Sid"))


def test_irsa_roles_trust_only_the_named_service_accounts(plan: Plan):
    spec = plan.spec
    issuer = f"oidc.eks.mock/id/{plan.stack}-cluster-eks"
    expected: dict[str, set[str]] = {
        f"{plan.stack}-workload-roles-mlflow-role": {"system:serviceaccount:mlflow:mlflow"},
        f"{plan.stack}-cluster-ebs-csi-role": {"system:serviceaccount:kube-system:ebs-csi-controller-sa"},
    }
    for team in spec.teams:
        namespace = f"{spec.config.namespace_prefix}team-{team}"
        models = [m.name for m in spec.models if m.team == team]
        for role in ("training", "serving"):
            expected[f"{plan.stack}-workload-roles-{role}-{team}-role"] = {
                f"system:serviceaccount:{namespace}:{m}-{role}" for m in models
            }
    if spec.capabilities.karpenter:
        expected[f"{plan.stack}-karpenter-controller-role"] = {"system:serviceaccount:kube-system:karpenter"}
    for pipeline in spec.cdc_pipelines if spec.capabilities.kafka else ():
        namespace = f"{spec.config.namespace_prefix}team-{pipeline.team}"
        expected[f"{plan.stack}-workload-roles-cdc-sink-{pipeline.name}-role"] = {
            f"system:serviceaccount:{namespace}:{pipeline.name}-cdc-sink"}

    irsa = {}
    for role in plan.by_type(T_ROLE):
        (st,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
        if st["Action"] == "sts:AssumeRoleWithWebIdentity":
            irsa[role.name] = st
    assert set(irsa) == set(expected)
    for name, st in irsa.items():
        assert st["Principal"] == {"Federated": f"arn:aws:mock:::{plan.stack}-cluster-oidc"}
        conditions = st["Condition"]["StringEquals"]
        assert set(as_list(conditions[f"{issuer}:sub"])) == expected[name], name
        assert conditions[f"{issuer}:aud"] == "sts.amazonaws.com"
        assert "StringLike" not in st["Condition"]  # no wildcard subjects


def test_workload_roles_are_least_privilege(plan: Plan):
    def actions_on(policy_name: str) -> dict[str, set[str]]:
        doc = json.loads(one(plan, "aws:iam/rolePolicy:RolePolicy", policy_name).inputs["policy"])
        granted: dict[str, set[str]] = {}
        for st in doc["Statement"]:
            for resource in as_list(st["Resource"]):
                granted.setdefault(resource, set()).update(st["Action"])
        return granted

    artifacts = f"arn:aws:mock:::{plan.stack}-storage-artifacts-bucket"
    checkpoints = f"arn:aws:mock:::{plan.stack}-storage-checkpoints-bucket"
    for team in plan.spec.teams:
        serving = actions_on(f"{plan.stack}-workload-roles-serving-{team}-policy")
        assert "s3:GetObject" in serving[f"{artifacts}/*"]
        assert not [a for acts in serving.values() for a in acts if a.startswith("s3:Put") or a.startswith("s3:Delete")]
        assert checkpoints not in serving and f"{checkpoints}/*" not in serving
        training = actions_on(f"{plan.stack}-workload-roles-training-{team}-policy")
        assert "s3:PutObject" in training[f"{checkpoints}/*"] and "s3:PutObject" in training[f"{artifacts}/*"]
        lake_objects = [r for r in training if "-lake" in r and r.endswith("/*")]
        assert lake_objects and all("s3:PutObject" not in training[r] for r in lake_objects)
    mlflow = actions_on(f"{plan.stack}-workload-roles-mlflow-policy")
    assert "s3:PutObject" in mlflow[f"{artifacts}/*"]
    assert not [r for r in mlflow if "lake" in r or "checkpoints" in r]


def test_model_service_accounts_are_annotated_with_their_team_roles(plan: Plan):
    accounts = {r.inputs["metadata"]["name"]: r.inputs["metadata"] for r in plan.of_kind("ServiceAccount")}
    for model in plan.spec.models:
        for role in ("training", "serving"):
            metadata = accounts[f"{model.name}-{role}"]
            assert metadata["annotations"]["eks.amazonaws.com/role-arn"] == (
                f"arn:aws:mock:::{plan.stack}-workload-roles-{role}-{model.team}-role"
            )


def test_cdc_sink_roles_write_only_their_bronze_table_and_annotate_the_sink_account(plan: Plan):
    """Modes with Kafka: one role per pipeline, listing bronze only under `<table>/` and
    reading/writing only `<bronze>/<table>/*`; the sink's ServiceAccount names it. Modes
    without Kafka run no sink and get no such role."""
    roles = [r for r in plan.by_type(T_ROLE) if "-cdc-sink-" in r.name]
    pipelines = plan.spec.cdc_pipelines if plan.spec.capabilities.kafka else ()
    assert len(roles) == len(pipelines)
    accounts = {r.inputs["metadata"]["name"]: r.inputs["metadata"] for r in plan.of_kind("ServiceAccount")}
    for pipeline in pipelines:
        bronze = f"arn:aws:mock:::{plan.stack}-storage-lake-bronze-bucket"
        doc = json.loads(one(plan, "aws:iam/rolePolicy:RolePolicy",
                             f"{plan.stack}-workload-roles-cdc-sink-{pipeline.name}-policy").inputs["policy"])
        granted: dict[str, set[str]] = {}
        for st in doc["Statement"]:
            assert st["Effect"] == "Allow"
            for resource in as_list(st["Resource"]):
                granted.setdefault(resource, set()).update(st["Action"])
        s3 = {r for r in granted if r.startswith("arn:aws:mock:::") and "-bucket" in r}
        assert s3 == {bronze, f"{bronze}/{pipeline.lake_table}/*"}, s3
        assert {"s3:PutObject", "s3:GetObject", "s3:DeleteObject"} <= granted[f"{bronze}/{pipeline.lake_table}/*"]
        (listing,) = [st for st in doc["Statement"] if "s3:ListBucket" in st["Action"]]
        assert listing["Condition"] == {"StringLike": {"s3:prefix": [pipeline.lake_table, f"{pipeline.lake_table}/*"]}}
        assert granted[bronze] == {"s3:ListBucket", "s3:GetBucketLocation"}
        assert {a for acts in granted.values() for a in acts if a.startswith("kms:")} >= {"kms:GenerateDataKey"}
        metadata = accounts[f"{pipeline.name}-cdc-sink"]
        assert metadata["annotations"]["eks.amazonaws.com/role-arn"] == (
            f"arn:aws:mock:::{plan.stack}-workload-roles-cdc-sink-{pipeline.name}-role")


def test_bronze_writer_names_one_table_and_needs_the_bronze_bucket():
    from infra.cloud.iam import BronzeWriter, PolicyError, WorkloadRolesArgs

    for table in ("", "fraud/*", "*"):
        with pytest.raises(PolicyError, match="BronzeWriter.table"):
            BronzeWriter(namespace="team-a", service_account="x-cdc-sink", table=table)
    with pytest.raises(PolicyError, match="bronze_bucket_arn"):
        WorkloadRolesArgs(oidc_provider_arn="arn", oidc_issuer="issuer", kms_key_arn="key", artifacts_bucket_arn="a",
                          checkpoints_bucket_arn="c", lake_bucket_arns=(), team_models={},
                          cdc_sinks={"p": BronzeWriter(namespace="team-a", service_account="p-cdc-sink", table="t")})


def test_rds_password_is_a_secret():
    for stack in ("standard", "enterprise"):
        plan = plan_of(stack)
        (db,) = plan.by_type(T_RDS)
        assert "password" in db.secret_paths
        # the database's own version (the feature cache keeps its AUTH token in another)
        (version,) = [v for v in plan.by_type("aws:secretsmanager/secretVersion:SecretVersion")
                      if not v.name.endswith("feature-cache-auth-value")]
        assert "secretString" in version.secret_paths
        assert db.inputs["password"] == version.inputs["secretString"]
        assert len(db.inputs["password"]) >= 24


def test_every_taggable_aws_resource_carries_the_stack_tags(plan: Plan):
    checked = 0
    for resource in plan.resources:
        if not resource.custom or not resource.type.startswith("aws:"):
            continue
        module, cls = resource.type.split(":")[1].split("/")[0], resource.type.rsplit(":", 1)[-1]
        klass = getattr(getattr(pulumi_aws, module), cls)
        if "tags" not in inspect.signature(klass._internal_init).parameters:
            continue
        tags = resource.inputs.get("tags") or {}
        missing = {k: v for k, v in plan.spec.tags.items() if tags.get(k) != v}
        assert not missing, f"{resource.type} {resource.name} lacks tags {missing}"
        checked += 1
    assert checked >= 30


def test_physical_names_carry_the_stack_and_environment_and_never_collide():
    def names(plan: Plan) -> set[str]:
        found = set()
        for resource in plan.resources:
            if not resource.type.startswith("aws:"):
                continue
            for field in ("name", "identifier", "bucketPrefix", "namePrefix"):
                value = resource.inputs.get(field)
                if isinstance(value, str) and resource.type not in (
                    "aws:iam/rolePolicy:RolePolicy",
                ):
                    found.add(value)
        return found

    per_stack = {stack: names(plan_of(stack)) for stack in STACKS}
    for stack, found in per_stack.items():
        prefix = physical_prefix("strata", stack, plan_of(stack).spec.config.environment)
        assert found and all(prefix in name for name in found), (stack, sorted(n for n in found if prefix not in n))
    assert not per_stack["quick"] & per_stack["standard"]
    assert not per_stack["standard"] & per_stack["enterprise"]


def test_kubernetes_provider_uses_aws_eks_get_token_and_server_side_apply(plan: Plan):
    provider = one(plan, "pulumi:providers:kubernetes", f"{plan.stack}-cluster-k8s")
    assert provider.inputs["enableServerSideApply"] == "true"
    kubeconfig = json.loads(provider.inputs["kubeconfig"])
    (user,) = kubeconfig["users"]
    assert user["user"]["exec"]["command"] == "aws"
    assert user["user"]["exec"]["args"][:2] == ["eks", "get-token"]
    assert "token" not in user["user"]
    (cluster,) = kubeconfig["clusters"]
    assert cluster["cluster"]["server"] == f"https://{plan.stack}-cluster-eks.eks.mock"


def test_subnets_are_tagged_for_load_balancers_and_karpenter_discovery(plan: Plan):
    cluster = one(plan, T_EKS, f"{plan.stack}-cluster-eks").inputs["name"]
    for subnet in plan.by_type(T_SUBNET):
        tags = subnet.inputs["tags"]
        if "-private-" in subnet.name:
            assert tags["kubernetes.io/role/internal-elb"] == "1"
            assert tags["karpenter.sh/discovery"] == cluster
        else:
            assert tags["kubernetes.io/role/elb"] == "1"
            assert "karpenter.sh/discovery" not in tags


def test_vpc_flow_logs_go_to_cloudwatch_with_the_configured_retention(plan: Plan):
    (flow_log,) = plan.by_type("aws:ec2/flowLog:FlowLog")
    assert flow_log.inputs["trafficType"] == "ALL"
    assert flow_log.inputs["vpcId"] == f"{plan.stack}-network-vpc-id"
    group = one(plan, "aws:cloudwatch/logGroup:LogGroup", f"{plan.stack}-network-flow-logs")
    assert group.inputs["retentionInDays"] == plan.spec.config.network.flow_log_retention_days
    assert flow_log.inputs["logDestination"] == f"arn:aws:mock:::{group.name}"
    role = one(plan, T_ROLE, f"{plan.stack}-network-flow-logs-role")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}


def test_karpenter_custom_resources_follow_the_helm_release_and_the_pinned_schema():
    for stack in ("standard", "enterprise"):
        plan = plan_of(stack)
        release = one(plan, T_RELEASE, f"{stack}-karpenter-release")
        provider_urn = one(plan, "pulumi:providers:kubernetes", f"{stack}-cluster-k8s").urn
        node_class = one(plan, T_NODECLASS, f"{stack}-karpenter-node-class")
        node_pool = one(plan, T_NODEPOOL, f"{stack}-karpenter-cpu-spot-pool")
        for cr in (node_class, node_pool):
            assert release.urn in cr.dependencies, cr.name
            assert cr.provider and cr.provider.startswith(provider_urn)
        assert release.provider and release.provider.startswith(provider_urn)

        cluster = one(plan, T_EKS, f"{stack}-cluster-eks").inputs["name"]
        spec = node_class.inputs["spec"]
        assert spec["metadataOptions"] == {
            "httpEndpoint": "enabled", "httpProtocolIPv6": "disabled", "httpPutResponseHopLimit": 1, "httpTokens": "required",
        }
        (device,) = spec["blockDeviceMappings"]
        assert device["ebs"]["encrypted"] is True and device["rootVolume"] is True
        assert spec["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": cluster}}]
        assert spec["instanceProfile"] == one(plan, "aws:iam/instanceProfile:InstanceProfile", f"{stack}-karpenter-node-profile").inputs["name"]
        assert "role" not in spec

        template = node_pool.inputs["spec"]["template"]["spec"]
        assert template["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class.inputs["metadata"]["name"]}
        capacity = [r for r in template["requirements"] if r["key"] == "karpenter.sh/capacity-type"]
        assert capacity == [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]
        access = one(plan, "aws:eks/accessEntry:AccessEntry", f"{stack}-karpenter-node-access").inputs
        assert access["type"] == "EC2_LINUX" and access["principalArn"] == f"arn:aws:mock:::{stack}-karpenter-node-role"


# --- pure helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize("cidr", ["10.42.0.0/16", "172.20.0.0/18", "10.9.16.0/20"])
@pytest.mark.parametrize("az_count", [2, 3, 6])
def test_subnet_plan_is_disjoint_and_inside_the_vpc(cidr: str, az_count: int):
    plans = plan_subnets(cidr, az_count)
    vpc = ipaddress.ip_network(cidr)
    networks = [ipaddress.ip_network(c) for p in plans for c in (p.private_cidr, p.public_cidr)]
    assert len(plans) == az_count
    assert all(n.subnet_of(vpc) for n in networks)
    assert all(not a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])
    assert all(ipaddress.ip_network(p.private_cidr).num_addresses > ipaddress.ip_network(p.public_cidr).num_addresses for p in plans)


def test_subnet_plan_rejects_too_many_azs():
    with pytest.raises(ValueError, match="az_count"):
        plan_subnets("10.42.0.0/16", 7)


@pytest.mark.parametrize("action", ["*", "s3:*", "s3:Get*"])
def test_statement_rejects_wildcard_allow_actions(action: str):
    with pytest.raises(PolicyError, match="wildcard"):
        statement("Bad", [action], ["arn:aws:s3:::bucket"])


def test_statement_allows_a_service_wildcard_only_in_deny():
    rendered = statement("DenyHttp", ["s3:*"], ["arn:aws:s3:::b"], effect="Deny", principal="*")
    assert rendered["Effect"] == "Deny"
    with pytest.raises(PolicyError):
        statement("DenyAll", ["*"], ["arn:aws:s3:::b"], effect="Deny")


@pytest.mark.parametrize("subject", ["system:serviceaccount:team-a:*", "team-a:model-training"])
def test_irsa_trust_rejects_vague_subjects(subject: str):
    with pytest.raises(PolicyError):
        irsa_trust_policy("arn:aws:iam::1:oidc-provider/x", "oidc.example/id/1", [subject])


def test_public_endpoint_needs_an_allowlist():
    with pytest.raises(ValueError, match="endpointAllowlist"):
        EksClusterArgs(
            cluster_name="c", region="eu-west-1", kubernetes_version="1.35", vpc_id="v",
            private_subnet_ids=[], public_subnet_ids=[], endpoint_access=EndpointAccess.PUBLIC_ALLOWLIST,
        )


def test_node_group_specs_reject_inconsistent_sizes():
    with pytest.raises(ValueError, match="min <= desired <= max"):
        NodeGroupSpec(role="x", capacity_type=CapacityType.SPOT, instance_types=("m7i.large",), min_size=3, desired_size=1, max_size=4)
    with pytest.raises(ValueError, match="instance type"):
        NodeGroupSpec(role="x", capacity_type=CapacityType.SPOT, instance_types=(), min_size=0, desired_size=0, max_size=1)


def test_node_group_specs_follow_the_mode():
    common = dict(
        system_instance_types=("m7i.large",), system_size=2, cpu_spot_instance_types=("m7i.xlarge", "m6i.xlarge"),
        cpu_spot_size=3, gpu_spot_instance_types=("g5.xlarge",), gpu_on_demand_type="g5.xlarge",
    )
    assert [g.role for g in node_group_specs(cpu_spot=True, gpu_spot=False, gpu_spot_max=0, **common)] == ["system", "cpu-spot"]
    groups = {g.role: g for g in node_group_specs(cpu_spot=True, gpu_spot=True, gpu_spot_max=4, **common)}
    assert set(groups) == {"system", "cpu-spot", "gpu-spot", "gpu-on-demand"}
    assert groups["gpu-on-demand"].min_size == 0 and groups["gpu-on-demand"].capacity_type is CapacityType.ON_DEMAND
    assert all(g.autoscaled for g in groups.values() if g.role != "system")


# --- typed Karpenter CRDs ---------------------------------------------------------------------


def node_class(**overrides) -> crds.EC2NodeClass:
    kwargs = dict(
        discovery_tag={"karpenter.sh/discovery": "c"},
        security_group_tag={"aws:eks:cluster-name": "c"},
        instance_profile="c-karpenter-node",
        tags={"strata:stack": "s"},
    )
    kwargs.update(overrides)
    return crds.ec2_node_class("default", **kwargs)


def test_ec2_node_class_manifest_uses_the_crd_field_names():
    manifest = crds.to_manifest(node_class())
    assert manifest["apiVersion"] == "karpenter.k8s.aws/v1" and manifest["kind"] == "EC2NodeClass"
    spec = manifest["spec"]
    assert spec["amiSelectorTerms"] == [{"alias": "al2023@latest"}]
    assert spec["associatePublicIPAddress"] is False
    assert spec["metadataOptions"]["httpProtocolIPv6"] == "disabled"
    assert set(spec) <= {
        "amiFamily", "amiSelectorTerms", "subnetSelectorTerms", "securityGroupSelectorTerms", "role", "instanceProfile",
        "associatePublicIPAddress", "metadataOptions", "blockDeviceMappings", "kubelet", "detailedMonitoring", "userData", "tags",
    }


def test_node_pool_manifest_uses_the_crd_field_names():
    manifest = crds.to_manifest(crds.cpu_spot_node_pool("cpu-spot", node_class_name="default"))
    assert manifest["apiVersion"] == "karpenter.sh/v1" and manifest["kind"] == "NodePool"
    spec = manifest["spec"]
    assert set(spec) == {"template", "disruption", "limits"}
    assert spec["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
    assert spec["template"]["spec"]["expireAfter"] == "720h"
    family = [r for r in spec["template"]["spec"]["requirements"] if r["key"] == "karpenter.k8s.aws/instance-family"]
    assert family == [{"key": "karpenter.k8s.aws/instance-family", "operator": "Exists", "minValues": 5}]


def test_crd_models_reject_what_the_api_server_would():
    with pytest.raises(ValidationError, match="exactly one of"):
        crds.EC2NodeClassSpec(
            ami_selector_terms=[crds.AMISelectorTerm(alias="al2023@latest")],
            subnet_selector_terms=[crds.SubnetSelectorTerm(tags={"a": "b"})],
            security_group_selector_terms=[crds.SecurityGroupSelectorTerm(tags={"a": "b"})],
            role="r",
            instance_profile="p",
        )
    with pytest.raises(ValidationError):
        crds.MetadataOptions(http_put_response_hop_limit=0)
    with pytest.raises(ValidationError, match="restricted"):
        crds.NodeSelectorRequirementWithMinValues(key="karpenter.sh/nodepool", operator="Exists")
    with pytest.raises(ValidationError, match="needs at least one value"):
        crds.NodeSelectorRequirementWithMinValues(key="kubernetes.io/arch", operator="In", values=[])
    with pytest.raises(ValidationError, match="family"):
        crds.AMISelectorTerm(alias="ubuntu@latest")
    with pytest.raises(ValidationError):
        crds.NodePoolSpec.model_validate({"template": {"spec": {"nodeClassRef": {"group": "g", "kind": "k", "name": "n"},
                                                                 "requirements": [], "expireAfter": "720h"}}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        crds.Disruption.model_validate({"consolidateAfter": "1m", "consolidationPolicy": "WhenEmpty", "budget": []})
    with pytest.raises(ValidationError):
        crds.Disruption(consolidate_after="1m", consolidation_policy="Balanced")  # newer than the pinned CRD
    with pytest.raises(ValidationError, match="restricted"):
        node_class(tags={"kubernetes.io/cluster/c": "owned"})
