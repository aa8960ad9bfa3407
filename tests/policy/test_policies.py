"""Every policy fires on a violating resource and stays quiet on a compliant one.

Cases run through `evaluate()` (the offline adapter) with the whole pack, and the same
resource-policy cases are re-run through the engine's own argument shape (props wrapped in
`pulumi_policy`'s unknown-checking proxies) to prove the checks do not depend on plain dicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from pulumi_policy import (
    EnforcementLevel,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationPolicy,
)
from pulumi_policy.proxy import unknown_checking_proxy

from infra.modes import MODES, PolicyEnforcement
from infra.plan.harness import PlannedResource
from infra.policy import POLICIES, POLICIES_BY_NAME, evaluate, load_pack_config
from infra.policy.kube import pod_specs
from infra.policy.offline import CONFIG_FILES, PACK_DIR, _options, resolve_policy_config
from infra.policy.policies import image_problem, secret_like_env, secret_like_key, wildcard_actions
from tests.policy.builders import (
    DELETE,
    container,
    custom,
    deployment,
    pod_spec,
    ray_job,
    res,
    seldon,
    urn,
)

MANDATORY, ADVISORY = PolicyEnforcement.MANDATORY, PolicyEnforcement.ADVISORY


@dataclass
class Case:
    policy: str
    id: str
    resources: list[PlannedResource]
    fires: bool
    enforcement: PolicyEnforcement = MANDATORY
    expect_in_message: tuple[str, ...] = field(default_factory=tuple)


CASES: list[Case] = []


def case(policy, id, resources, fires, enforcement=MANDATORY, *expect):
    if isinstance(resources, PlannedResource):
        resources = [resources]
    CASES.append(Case(policy, id, resources, fires, enforcement, tuple(expect)))


# ----------------------------------------------------------------------------- AWS: EKS
EKS = "aws:eks/cluster:Cluster"
GOOD_EKS = {
    "roleArn": "arn:aws:iam::000000000000:role/eks",
    "vpcConfig": {"subnetIds": ["a", "b"], "endpointPublicAccess": False, "endpointPrivateAccess": True},
    "encryptionConfig": {"provider": {"keyArn": "arn:aws:kms:eu-west-1:0:key/k"}, "resources": ["secrets"]},
    "enabledClusterLogTypes": ["api", "audit", "authenticator", "controllerManager", "scheduler"],
}


def eks(**override):
    from tests.policy.builders import merge

    return res(EKS, "eks", merge(GOOD_EKS, override))


case("eks-endpoint-private", "private", eks(), False)
case("eks-endpoint-private", "public-unset", eks(vpcConfig={"endpointPublicAccess": DELETE}), True, MANDATORY, "vpcConfig.endpointPublicAccess")
case("eks-endpoint-private", "public-true", eks(vpcConfig={"endpointPublicAccess": True}), True, MANDATORY, "eks")
case("eks-endpoint-private", "public-allowlist-enterprise", eks(vpcConfig={"endpointPublicAccess": True, "publicAccessCidrs": ["203.0.113.0/24"]}), True)
case("eks-endpoint-private", "public-allowlist-advisory", eks(vpcConfig={"endpointPublicAccess": True, "publicAccessCidrs": ["203.0.113.0/24"]}), False, ADVISORY)
case("eks-endpoint-private", "public-open-advisory", eks(vpcConfig={"endpointPublicAccess": True, "publicAccessCidrs": ["0.0.0.0/0"]}), True, ADVISORY, "publicAccessCidrs")
case("eks-endpoint-private", "public-no-allowlist-advisory", eks(vpcConfig={"endpointPublicAccess": True}), True, ADVISORY, "publicAccessCidrs")
case("eks-secrets-encryption", "kms", eks(), False)
case("eks-secrets-encryption", "missing", eks(encryptionConfig=DELETE), True, MANDATORY, "encryptionConfig")
case("eks-secrets-encryption", "legacy-list-form", res(EKS, "eks", {**GOOD_EKS, "encryptionConfig": [GOOD_EKS["encryptionConfig"]]}), False)
case("eks-control-plane-logging", "all", eks(), False)
case("eks-control-plane-logging", "partial", eks(enabledClusterLogTypes=["api", "audit"]), True, MANDATORY, "scheduler", "enabledClusterLogTypes")

# ----------------------------------------------------------------------------- AWS: IMDS
LT = "aws:ec2/launchTemplate:LaunchTemplate"
case("ec2-imdsv2-hop-limit-1", "required-hop1", res(LT, "lt", {"metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1.0}}), False)
case("ec2-imdsv2-hop-limit-1", "optional-tokens", res(LT, "lt", {"metadataOptions": {"httpTokens": "optional", "httpPutResponseHopLimit": 1.0}}), True, MANDATORY, "metadataOptions.httpTokens")
case("ec2-imdsv2-hop-limit-1", "hop2", res(LT, "lt", {"metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 2.0}}), True, MANDATORY, "httpPutResponseHopLimit")
case("ec2-imdsv2-hop-limit-1", "unset", res(LT, "lt", {"imageId": "ami-1"}), True, MANDATORY, "metadataOptions")
case("ec2-imdsv2-hop-limit-1", "imds-disabled", res(LT, "lt", {"metadataOptions": {"httpEndpoint": "disabled"}}), False)
case("ec2-imdsv2-hop-limit-1", "karpenter-defaults", custom("karpenter.k8s.aws/v1", "EC2NodeClass", "default", {"amiSelectorTerms": [{"alias": "al2023@latest"}]}, namespace=None), False)
case("ec2-imdsv2-hop-limit-1", "karpenter-hop2", custom("karpenter.k8s.aws/v1", "EC2NodeClass", "default", {"metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 2}}), True, MANDATORY, "spec.metadataOptions.httpPutResponseHopLimit")

# ----------------------------------------------------------------------------- AWS: S3
BUCKET = "aws:s3/bucket:Bucket"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"


def sse(algorithm="aws:kms", key="arn:aws:kms:eu-west-1:0:key/k", bucket="lake-id", name="lake-sse"):
    default = {"sseAlgorithm": algorithm}
    if key:
        default["kmsMasterKeyId"] = key
    return res(SSE, name, {"bucket": bucket, "rules": [{"applyServerSideEncryptionByDefault": default, "bucketKeyEnabled": True}]})


def pab(bucket="lake-id", **flags):
    values = {"blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True, "restrictPublicBuckets": True}
    values.update(flags)
    return res(PAB, "lake-pab", {"bucket": bucket, **values})


def versioning(status="Enabled", bucket="lake-id"):
    return res(VERSIONING, "lake-versioning", {"bucket": bucket, "versioningConfiguration": {"status": status}})


def bucket(name="lake"):
    return res(BUCKET, name, {"bucketPrefix": "strata-lake-", "forceDestroy": False})


case("s3-sse-kms", "kms-cmk", sse(), False)
case("s3-sse-kms", "aes256", sse(algorithm="AES256", key=None), True, MANDATORY, "sseAlgorithm")
case("s3-sse-kms", "kms-without-key", sse(key=None), True, MANDATORY, "kmsMasterKeyId")
case("s3-public-access-block", "all-true", pab(), False)
case("s3-public-access-block", "one-false", pab(restrictPublicBuckets=False), True, MANDATORY, "restrictPublicBuckets")
case("s3-versioning-enabled", "enabled", versioning(), False)
case("s3-versioning-enabled", "suspended", versioning("Suspended"), True, MANDATORY, "versioningConfiguration.status")
case("s3-versioning-enabled", "suspended-advisory-not-required", versioning("Suspended"), False, ADVISORY)
case("s3-bucket-controls-attached", "all-attached", [bucket(), sse(), pab(), versioning()], False)
case("s3-bucket-controls-attached", "no-pab", [bucket(), sse(), versioning()], True, MANDATORY, "public access block", "lake")
case("s3-bucket-controls-attached", "controls-on-other-bucket", [bucket(), sse(bucket="other-id"), pab(bucket="other-id"), versioning(bucket="other-id")], True)
case("s3-bucket-controls-attached", "by-bucket-name", [res(BUCKET, "lake", {"bucket": "strata-lake"}), sse(bucket="strata-lake"), pab(bucket="strata-lake"), versioning(bucket="strata-lake")], False)
case("s3-bucket-controls-attached", "no-versioning-enterprise", [bucket(), sse(), pab()], True, MANDATORY, "versioning")
case("s3-bucket-controls-attached", "no-versioning-advisory", [bucket(), sse(), pab()], False, ADVISORY)

# ----------------------------------------------------------------------------- AWS: security groups
SG = "aws:ec2/securityGroup:SecurityGroup"
SG_IN = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
PUBLIC_TAGS = {"strata.dev/exposure": "public-lb"}


def sg(ingress, tags=None, name="sg"):
    return res(SG, name, {"description": "x", "ingress": ingress, "tags": tags or {}})


def rule(port=443, cidrs=("0.0.0.0/0",), protocol="tcp", **extra):
    return {"protocol": protocol, "fromPort": float(port), "toPort": float(port), "cidrBlocks": list(cidrs), **extra}


case("sg-no-public-ingress", "vpc-only", sg([rule(5432, ["10.0.0.0/16"])]), False)
case("sg-no-public-ingress", "ssh-open", sg([rule(22)]), True, MANDATORY, "ingress[0]", "0.0.0.0/0")
case("sg-no-public-ingress", "ipv6-open", sg([{"protocol": "tcp", "fromPort": 80.0, "toPort": 80.0, "ipv6CidrBlocks": ["::/0"]}]), True, MANDATORY, "::/0")
case("sg-no-public-ingress", "443-untagged", sg([rule(443)]), True, MANDATORY, "not tagged")
case("sg-no-public-ingress", "443-public-lb", sg([rule(443)], PUBLIC_TAGS), False)
case("sg-no-public-ingress", "80-public-lb", sg([rule(80)], PUBLIC_TAGS), True)
case("sg-no-public-ingress", "all-protocols-public-lb", sg([rule(0, protocol="-1")], PUBLIC_TAGS), True)
case("sg-no-public-ingress", "vpc-rule-443-tagged", res(SG_IN, "in", {"securityGroupId": "sg", "cidrIpv4": "0.0.0.0/0", "ipProtocol": "tcp", "fromPort": 443.0, "toPort": 443.0, "tags": PUBLIC_TAGS}), False)
case("sg-no-public-ingress", "vpc-rule-open", res(SG_IN, "in", {"securityGroupId": "sg", "cidrIpv6": "::/0", "ipProtocol": "tcp", "fromPort": 8080.0, "toPort": 8080.0}), True)
case("sg-no-public-ingress", "sg-rule-443", res(SG_RULE, "r", {"type": "ingress", "securityGroupId": "sg", "cidrBlocks": ["0.0.0.0/0"], "protocol": "tcp", "fromPort": 443.0, "toPort": 443.0}), True)
case("sg-no-public-ingress", "sg-rule-egress-open", res(SG_RULE, "r", {"type": "egress", "securityGroupId": "sg", "cidrBlocks": ["0.0.0.0/0"], "protocol": "-1", "fromPort": 0.0, "toPort": 0.0}), False)

# ----------------------------------------------------------------------------- AWS: IAM


def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


SCOPED = {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::b/*"}
case("iam-no-wildcard-actions", "scoped", res("aws:iam/policy:Policy", "p", {"policy": doc(SCOPED)}), False)
case("iam-no-wildcard-actions", "star", res("aws:iam/policy:Policy", "p", {"policy": doc({"Effect": "Allow", "Action": "*", "Resource": "*"})}), True, MANDATORY, "policy Statement[0]", "'*'")
case("iam-no-wildcard-actions", "service-star-role-policy", res("aws:iam/rolePolicy:RolePolicy", "rp", {"role": "r", "policy": doc(SCOPED, {"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"})}), True, MANDATORY, "Statement[1]", "s3:*")
case("iam-no-wildcard-actions", "deny-star-ok", res("aws:iam/rolePolicy:RolePolicy", "rp", {"role": "r", "policy": doc(SCOPED, {"Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})}), False)
case("iam-no-wildcard-actions", "role-inline", res("aws:iam/role:Role", "role", {"assumeRolePolicy": "{}", "inlinePolicies": [{"name": "x", "policy": doc({"Effect": "Allow", "Action": "*", "Resource": "*"})}]}), True, MANDATORY, "inlinePolicies[0].policy")
case("iam-no-wildcard-actions", "role-inline-scoped", res("aws:iam/role:Role", "role", {"assumeRolePolicy": "{}", "inlinePolicies": [{"name": "x", "policy": doc(SCOPED)}]}), False)
case("iam-no-wildcard-actions", "not-action", res("aws:iam/policy:Policy", "p", {"policy": doc({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})}), True, MANDATORY, "NotAction")
case("iam-no-wildcard-actions", "admin-attachment", res("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "a", {"role": "r", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}), True, MANDATORY, "AdministratorAccess")
case("iam-no-wildcard-actions", "eks-managed-attachment", res("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "a", {"role": "r", "policyArn": "arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"}), False)

# ----------------------------------------------------------------------------- AWS: RDS, ECR, KMS
RDS = "aws:rds/instance:Instance"
GOOD_RDS = {"instanceClass": "db.t4g.medium", "engine": "postgres", "storageEncrypted": True, "publiclyAccessible": False, "manageMasterUserPassword": True}
case("rds-storage-encrypted", "encrypted", res(RDS, "db", GOOD_RDS), False)
case("rds-storage-encrypted", "unencrypted", res(RDS, "db", {**GOOD_RDS, "storageEncrypted": False}), True, MANDATORY, "storageEncrypted")
case("rds-storage-encrypted", "cluster-unset", res("aws:rds/cluster:Cluster", "aurora", {"engine": "aurora-postgresql"}), True)
case("rds-not-public", "private", res(RDS, "db", GOOD_RDS), False)
case("rds-not-public", "public", res(RDS, "db", {**GOOD_RDS, "publiclyAccessible": True}), True, MANDATORY, "publiclyAccessible")
ECR = "aws:ecr/repository:Repository"
GOOD_ECR = {"imageScanningConfiguration": {"scanOnPush": True}, "imageTagMutability": "IMMUTABLE"}
case("ecr-scan-on-push", "on", res(ECR, "repo", GOOD_ECR), False)
case("ecr-scan-on-push", "off", res(ECR, "repo", {**GOOD_ECR, "imageScanningConfiguration": {"scanOnPush": False}}), True, MANDATORY, "scanOnPush")
case("ecr-scan-on-push", "unset", res(ECR, "repo", {"imageTagMutability": "IMMUTABLE"}), True)
case("ecr-immutable-tags", "immutable", res(ECR, "repo", GOOD_ECR), False)
case("ecr-immutable-tags", "mutable-default", res(ECR, "repo", {"imageScanningConfiguration": {"scanOnPush": True}}), True, MANDATORY, "imageTagMutability")
KMS = "aws:kms/key:Key"
case("kms-key-rotation", "rotating", res(KMS, "key", {"enableKeyRotation": True}), False)
case("kms-key-rotation", "not-rotating", res(KMS, "key", {"description": "x"}), True, MANDATORY, "enableKeyRotation")
case("kms-key-rotation", "asymmetric-exempt", res(KMS, "key", {"customerMasterKeySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY"}), False)

# ----------------------------------------------------------------------------- Kubernetes: Kafka


def kafka(listeners):
    return custom("kafka.strimzi.io/v1beta2", "Kafka", "events", {"kafka": {"listeners": listeners}, "entityOperator": {}})


case("kafka-tls-listeners", "tls", kafka([{"name": "tls", "port": 9093.0, "type": "internal", "tls": True}]), False)
case("kafka-tls-listeners", "plain", kafka([{"name": "tls", "port": 9093.0, "type": "internal", "tls": True}, {"name": "plain", "port": 9092.0, "type": "internal", "tls": False}]), True, MANDATORY, "spec.kafka.listeners[1]")
case("kafka-tls-listeners", "no-listeners", kafka([]), True)
case("kafka-tls-listeners", "strimzi-v1-api", custom("kafka.strimzi.io/v1", "Kafka", "events", {"kafka": {"listeners": [{"name": "p", "port": 9092, "type": "internal"}]}}), True)

# ----------------------------------------------------------------------------- Kubernetes: pods
C0 = "spec.template.spec.containers[0]"
case("container-resources", "set", deployment(), False)
case("container-resources", "no-limits", deployment(spec=pod_spec([container(resources={"limits": DELETE})])), True, MANDATORY, f"{C0}", "limits.memory")
case("container-resources", "no-requests", deployment(spec=pod_spec([container(resources={"requests": {"cpu": DELETE}})])), True, MANDATORY, "requests.cpu")
case("container-resources", "init-container", deployment(spec=pod_spec(initContainers=[container(name="init", resources=DELETE)])), True, MANDATORY, "initContainers[0]")
case("container-run-as-non-root", "container-level", deployment(spec=pod_spec(securityContext=DELETE)), False)
case("container-run-as-non-root", "pod-level-only", deployment(spec=pod_spec([container(securityContext={"runAsNonRoot": DELETE})])), False)
case("container-run-as-non-root", "missing", deployment(spec=pod_spec([container(securityContext={"runAsNonRoot": DELETE})], securityContext={"runAsNonRoot": DELETE})), True, MANDATORY, "runAsNonRoot")
case("container-run-as-non-root", "container-overrides-false", deployment(spec=pod_spec([container(securityContext={"runAsNonRoot": False})])), True)
case("container-run-as-non-root", "uid-0", deployment(spec=pod_spec([container(securityContext={"runAsUser": 0.0})])), True, MANDATORY, "runAsUser")
case("container-read-only-root-fs", "ro", deployment(), False)
case("container-read-only-root-fs", "rw", deployment(spec=pod_spec([container(securityContext={"readOnlyRootFilesystem": False})])), True, MANDATORY, "readOnlyRootFilesystem")
case("container-no-privilege-escalation", "false", deployment(), False)
case("container-no-privilege-escalation", "unset", deployment(spec=pod_spec([container(securityContext={"allowPrivilegeEscalation": DELETE})])), True, MANDATORY, "allowPrivilegeEscalation")
case("container-no-privilege-escalation", "privileged", deployment(spec=pod_spec([container(securityContext={"privileged": True})])), True, MANDATORY, "privileged")
case("container-drop-all-capabilities", "drop-all", deployment(), False)
case("container-drop-all-capabilities", "net-bind-ok", deployment(spec=pod_spec([container(securityContext={"capabilities": {"add": ["NET_BIND_SERVICE"]}})])), False)
case("container-drop-all-capabilities", "no-drop", deployment(spec=pod_spec([container(securityContext={"capabilities": DELETE})])), True, MANDATORY, "capabilities.drop")
case("container-drop-all-capabilities", "add-sys-admin", deployment(spec=pod_spec([container(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}})])), True, MANDATORY, "SYS_ADMIN")
case("pod-seccomp-runtime-default", "pod-level", deployment(spec=pod_spec([container(securityContext={"seccompProfile": DELETE})])), False)
case("pod-seccomp-runtime-default", "missing", deployment(spec=pod_spec([container(securityContext={"seccompProfile": DELETE})], securityContext={"seccompProfile": DELETE})), True, MANDATORY, "seccompProfile")
case("pod-seccomp-runtime-default", "unconfined", deployment(spec=pod_spec([container(securityContext={"seccompProfile": {"type": "Unconfined"}})])), True, MANDATORY, "Unconfined")
case("pod-no-host-namespaces", "none", deployment(spec=pod_spec(hostNetwork=False)), False)
case("pod-no-host-namespaces", "host-network", deployment(spec=pod_spec(hostNetwork=True)), True, MANDATORY, "spec.template.spec.hostNetwork")
case("pod-no-host-namespaces", "host-pid-daemonset", deployment(kind="DaemonSet", spec=pod_spec(hostPID=True)), True, MANDATORY, "hostPID")
case("pod-no-host-namespaces", "host-ipc-job", custom("batch/v1", "Job", "j", {"template": {"spec": pod_spec(hostIPC=True)}}), True, MANDATORY, "hostIPC")
case("container-probes", "both", deployment(), False)
case("container-probes", "no-readiness", deployment(spec=pod_spec([container(readinessProbe=DELETE)])), True, MANDATORY, "readinessProbe")
case("container-probes", "no-liveness-seldon", seldon(spec=pod_spec([container(livenessProbe=DELETE)])), True, MANDATORY, "livenessProbe", "componentSpecs[0]")
case("container-probes", "job-exempt", custom("batch/v1", "Job", "j", {"template": {"spec": pod_spec([container(livenessProbe=DELETE, readinessProbe=DELETE)])}}), False)
case("container-probes", "rayjob-exempt", ray_job(head=pod_spec([container(livenessProbe=DELETE, readinessProbe=DELETE)])), False)
case("images-pinned", "tag", deployment(), False)
case("images-pinned", "digest", deployment(spec=pod_spec([container(image="ghcr.io/x/app@sha256:" + "a" * 64)])), False)
case("images-pinned", "latest", deployment(spec=pod_spec([container(image="ghcr.io/x/app:latest")])), True, MANDATORY, ":latest")
case("images-pinned", "no-tag", deployment(spec=pod_spec([container(image="registry.local:5000/app")])), True, MANDATORY, "no tag")
case("images-pinned", "helm-values-latest", res("kubernetes:helm.sh/v3:Release", "r", {"chart": "mlflow", "version": "1.0.0", "values": {"image": {"tag": "latest"}}}), True, MANDATORY, "values.image.tag")
case("images-pinned", "seldon-prepackaged-no-image", seldon(spec=pod_spec([{k: v for k, v in container().items() if k != "image"}])), False)
case("helm-chart-version-pinned", "pinned", res("kubernetes:helm.sh/v3:Release", "istiod", {"chart": "istiod", "version": "1.27.1", "namespace": "istio-system"}), False)
case("helm-chart-version-pinned", "unpinned", res("kubernetes:helm.sh/v3:Release", "istiod", {"chart": "istiod", "namespace": "istio-system"}), True, MANDATORY, "version")

# ----------------------------------------------------------------------------- secrets
SECRET = "kubernetes:core/v1:Secret"
HELM = "kubernetes:helm.sh/v3:Release"
case("secrets-are-pulumi-secrets", "k8s-secret-secret", res(SECRET, "s", {"kind": "Secret", "stringData": {"k": "v"}}, secret_paths=("stringData",)), False)
case("secrets-are-pulumi-secrets", "k8s-secret-plain", res(SECRET, "s", {"kind": "Secret", "stringData": {"k": "v"}}), True, MANDATORY, "stringData")
case("secrets-are-pulumi-secrets", "rds-password-secret", res(RDS, "db", {**GOOD_RDS, "manageMasterUserPassword": DELETE, "password": "p"}, secret_paths=("password",)), False)
case("secrets-are-pulumi-secrets", "rds-password-plain", res(RDS, "db", {**{k: v for k, v in GOOD_RDS.items() if k != "manageMasterUserPassword"}, "password": "p"}), True, MANDATORY, "password")
case("secrets-are-pulumi-secrets", "rds-managed", res(RDS, "db", GOOD_RDS), False)
case("secrets-are-pulumi-secrets", "helm-plain-password", res(HELM, "pg", {"chart": "postgresql", "version": "1.0.0", "values": {"auth": {"postgresPassword": "hunter2", "existingSecret": "x"}}}), True, MANDATORY, "values.auth.postgresPassword")
case("secrets-are-pulumi-secrets", "helm-secret-values", res(HELM, "pg", {"chart": "postgresql", "version": "1.0.0", "values": {"auth": {"postgresPassword": "hunter2"}}}, secret_paths=("values",)), False)
case("secrets-are-pulumi-secrets", "helm-routing-key", res(HELM, "kps", {"chart": "kube-prometheus-stack", "version": "1.0.0", "values": {"alertmanager": {"config": {"receivers": [{"name": "pd", "pagerduty_configs": [{"routing_key": "abc"}]}]}}}}), True, MANDATORY, "routing_key")
case("secrets-are-pulumi-secrets", "secretsmanager-plain", res("aws:secretsmanager/secretVersion:SecretVersion", "sv", {"secretId": "x", "secretString": "{}"}), True)
case("no-plaintext-secret-config", "secret-ref", deployment(spec=pod_spec([container(env=[{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}, {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow"}])])), False)
case("no-plaintext-secret-config", "literal-env", deployment(spec=pod_spec([container(env=[{"name": "DB_PASSWORD", "value": "hunter2"}])])), True, MANDATORY, "env[0] DB_PASSWORD")
case("no-plaintext-secret-config", "credential-url-env", deployment(spec=pod_spec([container(env=[{"name": "STRATA_FEATURE_REGISTRY", "value": "postgresql+psycopg://feature_registry:hunter2@db:5432/feature_registry"}])])), True, MANDATORY, "env[0] STRATA_FEATURE_REGISTRY is a URL with a literal password")
case("no-plaintext-secret-config", "url-without-password-ok", deployment(spec=pod_spec([container(env=[{"name": "STRATA_REDIS_URL", "value": "redis://redis:6379/0"}, {"name": "U", "value": "https://user@example.com/x"}, {"name": "K", "value": "redis://:$(TOKEN)@redis:6379/0"}])])), False)
case("no-plaintext-secret-config", "file-path-env-ok", deployment(spec=pod_spec([container(env=[{"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/token"}])])), False)
case("no-plaintext-secret-config", "configmap-password", res("kubernetes:core/v1:ConfigMap", "cm", {"data": {"adminPassword": "x", "model.json": "{}"}}), True, MANDATORY, "data.adminPassword")
case("no-plaintext-secret-config", "configmap-plain", res("kubernetes:core/v1:ConfigMap", "cm", {"data": {"model.json": "{}"}}), False)

# ----------------------------------------------------------------------------- stack: namespaces


def namespace(name="team-a"):
    return res("kubernetes:core/v1:Namespace", f"ns-{name}", {"metadata": {"name": name}})


def netpol(namespace="team-a", spec=None, name="default-deny"):
    spec = spec if spec is not None else {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    return res("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{namespace}-{name}", {"metadata": {"name": name, "namespace": namespace}, "spec": spec})


case("namespace-default-deny", "deny", [namespace(), netpol()], False)
case("namespace-default-deny", "missing", [namespace(), namespace("team-b"), netpol()], True, MANDATORY, "team-b")
case("namespace-default-deny", "allow-rule-not-deny", [namespace(), netpol(spec={"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"namespaceSelector": {}}]}]})], True)
case("namespace-default-deny", "selective-not-deny", [namespace(), netpol(spec={"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Ingress"]})], True)
case("namespace-default-deny", "other-namespace", [namespace(), netpol(namespace="team-b")], True)

# ----------------------------------------------------------------------------- stack: istio


def istiod(values=None):
    return res(HELM, "istiod", {"chart": "istiod", "version": "1.27.1", "namespace": "istio-system", "values": values or {}})


def peer_auth(mode="STRICT", namespace="istio-system", selector=None, name="default", port_level=None):
    spec = {"mtls": {"mode": mode}}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if port_level:
        spec["portLevelMtls"] = port_level
    return custom("security.istio.io/v1", "PeerAuthentication", f"{namespace}-{name}", spec, namespace=namespace)


case("istio-strict-mtls", "strict", [istiod(), peer_auth()], False)
case("istio-strict-mtls", "no-istio", [deployment()], False)
case("istio-strict-mtls", "missing", [istiod()], True, MANDATORY, "istio-system", "STRICT")
case("istio-strict-mtls", "permissive-enterprise", [istiod(), peer_auth("PERMISSIVE")], True, MANDATORY, "PERMISSIVE")
case("istio-strict-mtls", "permissive-advisory", [istiod(), peer_auth("PERMISSIVE")], False, ADVISORY)
case("istio-strict-mtls", "namespace-scoped-only", [istiod(), peer_auth(namespace="team-a")], True, MANDATORY, "mesh-wide")
case("istio-strict-mtls", "workload-selector-in-root", [istiod(), peer_auth(selector={"app": "x"})], True)
case("istio-strict-mtls", "disable-override", [istiod(), peer_auth(), peer_auth("DISABLE", namespace="team-a")], True, MANDATORY, "DISABLE")
case("istio-strict-mtls", "port-level-disable", [istiod(), peer_auth(), peer_auth(namespace="team-a", port_level={"8080": {"mode": "DISABLE"}})], True, MANDATORY, "portLevelMtls")
case("istio-strict-mtls", "custom-root-namespace", [istiod({"meshConfig": {"rootNamespace": "mesh-root"}}), peer_auth(namespace="mesh-root")], False)
case("istio-strict-mtls", "istio-objects-without-release", [custom("networking.istio.io/v1", "VirtualService", "vs", {"hosts": ["x"]})], True)

# ----------------------------------------------------------------------------- stack: PDBs


def pdb(labels, namespace="team-a", name="pdb", **spec):
    spec = spec or {"maxUnavailable": 1.0}
    return res("kubernetes:policy/v1:PodDisruptionBudget", name, {"metadata": {"name": name, "namespace": namespace}, "spec": {"selector": {"matchLabels": labels}, **spec}})


case("serving-pdb", "multi-replica-with-pdb", [deployment(replicas=3), pdb({"app": "web"})], False)
case("serving-pdb", "multi-replica-no-pdb", [deployment(replicas=3)], True, MANDATORY, "web", "3 replicas")
case("serving-pdb", "pdb-other-namespace", [deployment(replicas=2), pdb({"app": "web"}, namespace="team-b")], True)
case("serving-pdb", "pdb-other-labels", [deployment(replicas=2), pdb({"app": "api"})], True)
case("serving-pdb", "single-replica", [deployment(replicas=1)], False)
case("serving-pdb", "statefulset", [deployment(kind="StatefulSet", replicas=3)], True)
case("serving-pdb", "seldon-no-pdb", [seldon(replicas=2)], True, MANDATORY, "componentSpecs[0]")
case("serving-pdb", "seldon-pdbspec", [seldon(replicas=2, component={"pdbSpec": {"maxUnavailable": 1}})], False)
case("serving-pdb", "seldon-external-pdb", [seldon(replicas=2), pdb({"seldon-deployment-id": "fraud"})], False)
case("serving-pdb", "seldon-single", [seldon(replicas=1)], False)


# ============================================================================= the tests


def _fired(results, policy):
    return [r for r in results if r.policy == policy]


@pytest.mark.parametrize("c", CASES, ids=[f"{c.policy}:{c.id}:{'fires' if c.fires else 'quiet'}" for c in CASES])
def test_policy_case(c: Case):
    results = evaluate(c.resources, c.enforcement)
    fired = _fired(results, c.policy)
    if c.fires:
        assert fired, f"{c.policy} did not fire on {c.id}; got {[r.format() for r in results]}"
        for result in fired:
            assert result.enforcement is c.enforcement
            assert result.urn in {r.urn for r in c.resources}, "a violation must name the resource"
        text = "\n".join(r.message for r in fired)
        for expected in c.expect_in_message:
            assert expected in text, f"{expected!r} not in {text!r}"
    else:
        assert not fired, [r.format() for r in fired]


def test_every_policy_has_violating_and_compliant_cases():
    names = {p.name for p in POLICIES}
    fires = {c.policy for c in CASES if c.fires}
    quiet = {c.policy for c in CASES if not c.fires}
    assert names - fires == set(), "policies without a violating case"
    assert names - quiet == set(), "policies without a compliant case"
    assert {c.policy for c in CASES} <= names


def test_compliant_workloads_pass_the_whole_pack():
    """The builders' defaults are the platform's golden path: no policy fires on them."""
    resources = [
        namespace(), netpol(), deployment(replicas=3), pdb({"app": "web"}), seldon(replicas=2, component={"pdbSpec": {"maxUnavailable": 1}}),
        ray_job(), istiod(), peer_auth(), bucket(), sse(), pab(), versioning(), eks(),
    ]
    assert [r.format() for r in evaluate(resources, MANDATORY)] == []


# ----------------------------------------------------------------------------- engine parity

RESOURCE_CASES = [
    c for c in CASES if isinstance(POLICIES_BY_NAME[c.policy], ResourceValidationPolicy) and c.policy != "secrets-are-pulumi-secrets"
]


@pytest.mark.parametrize("c", RESOURCE_CASES, ids=[f"{c.policy}:{c.id}" for c in RESOURCE_CASES])
def test_resource_policies_work_on_engine_proxies(c: Case):
    """The analyzer passes `unknown_checking_proxy` Mappings/Sequences, not dicts: same verdicts."""
    policy = POLICIES_BY_NAME[c.policy]
    _, properties = resolve_policy_config(policy, load_pack_config(c.enforcement))
    messages: list[str] = []
    for r in c.resources:
        args = ResourceValidationArgs(r.type, unknown_checking_proxy(json.loads(json.dumps(r.inputs))), r.urn, r.name, _options(r), None, properties)
        policy.validate(args, lambda message, urn=None: messages.append(message))
    assert bool(messages) == c.fires
    offline = [r.message for r in _fired(evaluate(c.resources, c.enforcement, policies=[policy]), c.policy)]
    assert messages == offline


def test_secret_policy_is_offline_only():
    """The analyzer hands policies plaintext; without secret paths the check must not guess."""
    policy = POLICIES_BY_NAME["secrets-are-pulumi-secrets"]
    r = res(SECRET, "s", {"stringData": {"k": "v"}})
    messages: list[str] = []
    policy.validate(ResourceValidationArgs(r.type, r.inputs, r.urn, r.name, _options(r), None), lambda m, u=None: messages.append(m))
    assert messages == []


def test_unknown_values_raise_like_the_engine_expects():
    """During preview an unknown input raises UnknownValueError, which the analyzer turns into a note."""
    from pulumi_policy.proxy import UnknownValueError

    policy = POLICIES_BY_NAME["rds-storage-encrypted"]
    props = unknown_checking_proxy({"storageEncrypted": "04da6b54-80e4-46f7-96ec-b56ff0331ba9"})
    with pytest.raises(UnknownValueError):
        policy.validate(ResourceValidationArgs(RDS, props, urn(RDS, "db"), "db", None, None), lambda *a: None)


# ----------------------------------------------------------------------------- the pod-spec extractor

EXTRACTOR_CASES = [
    (deployment(), ["spec.template.spec"]),
    (deployment(kind="StatefulSet"), ["spec.template.spec"]),
    (deployment(kind="DaemonSet"), ["spec.template.spec"]),
    (custom("batch/v1", "Job", "j", {"template": {"spec": pod_spec()}}), ["spec.template.spec"]),
    (custom("batch/v1", "CronJob", "cj", {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": pod_spec()}}}}), ["spec.jobTemplate.spec.template.spec"]),
    (seldon(), ["spec.predictors[0].componentSpecs[0].spec"]),
    (ray_job(), ["spec.rayClusterSpec.headGroupSpec.template.spec", "spec.rayClusterSpec.workerGroupSpecs[0].template.spec"]),
    (custom("ray.io/v1", "RayCluster", "rc", {"headGroupSpec": {"template": {"spec": pod_spec()}}, "workerGroupSpecs": []}), ["spec.headGroupSpec.template.spec"]),
    (custom("keda.sh/v1alpha1", "ScaledJob", "sj", {"jobTargetRef": {"template": {"spec": pod_spec()}}}), ["spec.jobTargetRef.template.spec"]),
    (res("kubernetes:core/v1:Pod", "p", {"spec": pod_spec()}), ["spec"]),
    (res("kubernetes:core/v1:ConfigMap", "cm", {"data": {}}), []),
    (res("aws:s3/bucket:Bucket", "b", {}), []),
]


@pytest.mark.parametrize("resource,paths", EXTRACTOR_CASES, ids=[r.type.rsplit(":", 1)[-1] + "-" + r.name for r, _ in EXTRACTOR_CASES])
def test_pod_spec_extractor_finds_every_embedded_pod(resource, paths):
    assert [p.path for p in pod_specs(resource.type, resource.inputs)] == paths


@pytest.mark.parametrize("resource,paths", [c for c in EXTRACTOR_CASES if c[1]], ids=[r.type.rsplit(":", 1)[-1] + "-" + r.name for r, p in EXTRACTOR_CASES if p])
def test_pod_policies_reach_every_workload_kind(resource, paths):
    """A container allowed to run as root is caught wherever the pod spec is embedded."""
    inputs = json.loads(json.dumps(resource.inputs).replace('"runAsNonRoot": true', '"runAsNonRoot": false'))
    results = evaluate([res(resource.type, resource.name, inputs)], MANDATORY, policies=[POLICIES_BY_NAME["container-run-as-non-root"]])
    for path in paths:
        assert any(f"({path}.containers[0])" in r.message for r in results), [r.message for r in results]


# ----------------------------------------------------------------------------- helpers with edge cases


@pytest.mark.parametrize(
    "image,pinned",
    [
        ("nginx:1.27.1", True),
        ("registry.local:5000/team/app:2024.10.01", True),
        ("ghcr.io/x/app@sha256:" + "0" * 64, True),
        ("ghcr.io/x/app:1.0@sha256:" + "0" * 64, True),
        ("nginx", False),
        ("nginx:latest", False),
        ("registry.local:5000/app", False),
        ("", False),
    ],
)
def test_image_pinning(image, pinned):
    assert (image_problem(image) is None) == pinned


def test_secret_key_and_env_heuristics():
    assert secret_like_key("adminPassword") and secret_like_key("routing_key") and secret_like_key("apiKey")
    assert not secret_like_key("existingSecret") and not secret_like_key("passwordSecretRef") and not secret_like_key("tokenTTL")
    assert secret_like_env("KAFKA_SASL_PASSWORD") and secret_like_env("PAGERDUTY_ROUTING_KEY")
    assert not secret_like_env("AWS_WEB_IDENTITY_TOKEN_FILE") and not secret_like_env("MLFLOW_TRACKING_URI")


def test_wildcard_actions_parses_single_statement_and_string_action():
    assert wildcard_actions(json.dumps({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}})) == [(0, "Action '*'")]
    assert wildcard_actions("not json") == []
    assert wildcard_actions(doc({"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"})) == []


# ----------------------------------------------------------------------------- the pack and its config


def test_policy_names_unique_and_enough():
    names = [p.name for p in POLICIES]
    assert len(names) == len(set(names))
    assert len(names) >= 20
    for p in POLICIES:
        assert p.description and isinstance(p, (ResourceValidationPolicy, StackValidationPolicy))
        assert p.enforcement_level is None, "levels come from the config files, not the code"


@pytest.mark.parametrize(
    "enforcement,level",
    [(PolicyEnforcement.MANDATORY, EnforcementLevel.MANDATORY), (PolicyEnforcement.ADVISORY, EnforcementLevel.ADVISORY)],
)
def test_config_files_map_to_levels(enforcement, level):
    assert CONFIG_FILES[enforcement].name == {"mandatory": "enterprise.json", "advisory": "advisory.json"}[enforcement.value]
    config = load_pack_config(enforcement)
    assert config["all"] == level.value
    for policy in POLICIES:
        assert resolve_policy_config(policy, config)[0] is level
    for key, entry in config.items():
        if key == "all":
            continue
        policy = POLICIES_BY_NAME[key]  # every entry names a real policy
        declared = set((policy.config_schema.properties if policy.config_schema else {}) or {})
        assert set(entry) - {"enforcementLevel"} <= declared, f"{key}: undeclared config properties"


def test_modes_select_their_config():
    assert MODES["enterprise"].policy_enforcement is PolicyEnforcement.MANDATORY
    assert MODES["quick"].policy_enforcement is PolicyEnforcement.ADVISORY
    assert MODES["standard"].policy_enforcement is PolicyEnforcement.ADVISORY


def test_pack_files_exist_and_pack_starts():
    """The analyzer runs `__main__.py` with the pack dir as cwd; it must serve and print its port."""
    import subprocess
    import sys

    import yaml

    pulumi_policy_yaml = yaml.safe_load((PACK_DIR / "PulumiPolicy.yaml").read_text())
    assert pulumi_policy_yaml["runtime"]["name"] == "python"
    proc = subprocess.Popen([sys.executable, "__main__.py"], cwd=PACK_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.isdigit(), proc.stderr.read() if proc.poll() is not None else line
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_pack_is_mandatory_unless_advisory_is_asked_for():
    """Issue 12 item 8: without --policy-pack-config every policy blocks."""
    from infra.policy.offline import PACK_DEFAULT_LEVEL, resolve_policy_config

    assert PACK_DEFAULT_LEVEL is EnforcementLevel.MANDATORY
    for policy in POLICIES:
        assert resolve_policy_config(policy, {})[0] is EnforcementLevel.MANDATORY
        assert resolve_policy_config(policy, load_pack_config(PolicyEnforcement.ADVISORY))[0] is EnforcementLevel.ADVISORY
