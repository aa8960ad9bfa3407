"""Strata's policy pack: every check, written once.

Each policy is a `pulumi_policy.ResourceValidationPolicy` or `StackValidationPolicy` whose
validate function reads only what both the Pulumi engine and the offline plan provide:

* resource policies: `args.resource_type`, `args.name`, `args.props` (camelCase inputs),
  `args.get_config()`, and -- offline only -- `args.secret_paths` (see `infra.policy.offline`);
* stack policies: `args.resources` (each with `resource_type`, `name`, `urn`, `props`,
  `parent`, `dependencies`, `property_dependencies`) and `args.get_config()`.

Messages name the resource and the property path. Mode-dependent knobs (public EKS endpoint
with an allowlist, versioning, PERMISSIVE mTLS) are policy *config*, set per enforcement level
in `enterprise.json` / `advisory.json` -- never by inspecting the mode.

Decisions worth knowing:
* Open ingress (0.0.0.0/0 or ::/0) is allowed only for TCP 443 exactly, and only on a security
  group or `aws:vpc/securityGroupIngressRule` tagged `strata.dev/exposure=public-lb`.
  `aws:ec2/securityGroupRule` has no tags, so it can never open to the world.
* CPU limits are not required by default (throttling hurts latency-sensitive serving);
  `requireCpuLimit: true` turns them on. Requests (cpu, memory) and a memory limit are required.
* Default-deny means: a NetworkPolicy in the namespace with an empty podSelector, `Ingress`
  in policyTypes and no ingress rules (egress default-deny is recommended, not required).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Optional

from pulumi_policy import (
    PolicyConfigSchema,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.policy.kube import (
    ContainerRef,
    all_containers,
    as_int,
    as_list,
    as_map,
    containers,
    effective_security,
    is_false,
    is_list,
    is_map,
    is_true,
    k8s_kind,
    labels_match,
    metadata,
    object_name,
    object_namespace,
    pod_specs,
)

PUBLIC_LB_TAG = "strata.dev/exposure"
PUBLIC_LB_TAG_VALUE = "public-lb"
OPEN_CIDRS = frozenset({"0.0.0.0/0", "::/0"})
EKS_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
ADMIN_MANAGED_POLICIES = ("AdministratorAccess", "PowerUserAccess", "IAMFullAccess")

ResourceCheck = Callable[[ResourceValidationArgs], Iterable[str]]
StackCheck = Callable[[StackValidationArgs], Iterable[tuple[str, Optional[str]]]]


# ---------------------------------------------------------------------------------------------
# Small shared helpers
# ---------------------------------------------------------------------------------------------


def _where(args: Any) -> str:
    return f"{args.resource_type} '{args.name}'"


def _config(args: Any) -> Mapping[str, Any]:
    try:
        return args.get_config() or {}
    except AttributeError:
        return {}


def _secret_paths(args: Any) -> tuple[str, ...] | None:
    """Input paths that were Pulumi secrets; None where the analyzer cannot see secretness (engine)."""
    paths = getattr(args, "secret_paths", None)
    return tuple(paths) if paths is not None else None


def _is_secret(path: str, secret_paths: Iterable[str]) -> bool:
    for s in secret_paths:
        if s == "<root>" or path == s or path.startswith(s + ".") or path.startswith(s + "["):
            return True
    return False


def _resource_policy(
    name: str,
    description: str,
    check: ResourceCheck,
    config_schema: PolicyConfigSchema | None = None,
) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation) -> None:
        for message in check(args):
            report_violation(message)

    validate.__name__ = f"validate_{name.replace('-', '_')}"
    return ResourceValidationPolicy(name=name, description=description, validate=validate, config_schema=config_schema)


def _stack_policy(
    name: str,
    description: str,
    check: StackCheck,
    config_schema: PolicyConfigSchema | None = None,
) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation) -> None:
        for message, urn in check(args):
            report_violation(message, urn)

    validate.__name__ = f"validate_{name.replace('-', '_')}"
    return StackValidationPolicy(name=name, description=description, validate=validate, config_schema=config_schema)


def _bool_schema(key: str, default: bool, description: str) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties={key: {"type": "boolean", "default": default, "description": description}})


# ---------------------------------------------------------------------------------------------
# AWS: EKS
# ---------------------------------------------------------------------------------------------

EKS_CLUSTER = "aws:eks/cluster:Cluster"


def check_eks_endpoint_private(args) -> Iterator:
    if args.resource_type != EKS_CLUSTER:
        return
    vpc = as_map(args.props.get("vpcConfig"))
    public = vpc.get("endpointPublicAccess")
    public = True if public is None else is_true(public)  # the AWS default is public
    if not public:
        if not is_true(vpc.get("endpointPrivateAccess")):
            yield f"{_where(args)}: vpcConfig.endpointPrivateAccess must be true when the public endpoint is off"
        return
    if not _config(args).get("allowPublicAllowlist", False):
        yield (
            f"{_where(args)}: vpcConfig.endpointPublicAccess is "
            f"{'unset (AWS default: true)' if vpc.get('endpointPublicAccess') is None else 'true'}; "
            "set it false and endpointPrivateAccess true (private API endpoint only)"
        )
        return
    cidrs = [c for c in as_list(vpc.get("publicAccessCidrs")) if isinstance(c, str)]
    if not cidrs:
        yield f"{_where(args)}: vpcConfig.publicAccessCidrs is empty: a public endpoint needs a CIDR allowlist"
    for cidr in cidrs:
        if cidr in OPEN_CIDRS:
            yield f"{_where(args)}: vpcConfig.publicAccessCidrs contains {cidr}: the allowlist must not be open"


def _single_or_first(value: Any) -> list[Mapping[str, Any]]:
    if is_map(value):
        return [value]
    return [v for v in as_list(value) if is_map(v)]


def check_eks_secrets_encryption(args) -> Iterator:
    if args.resource_type != EKS_CLUSTER:
        return
    configs = _single_or_first(args.props.get("encryptionConfig"))
    ok = any(
        "secrets" in [r for r in as_list(c.get("resources"))] and as_map(c.get("provider")).get("keyArn")
        for c in configs
    )
    if not ok:
        yield (
            f"{_where(args)}: encryptionConfig must encrypt resources [\"secrets\"] with a KMS key "
            "(encryptionConfig.provider.keyArn)"
        )


def check_eks_control_plane_logging(args) -> Iterator:
    if args.resource_type != EKS_CLUSTER:
        return
    enabled = {t for t in as_list(args.props.get("enabledClusterLogTypes")) if isinstance(t, str)}
    missing = [t for t in EKS_LOG_TYPES if t not in enabled]
    if missing:
        yield f"{_where(args)}: enabledClusterLogTypes is missing {missing} (all of {list(EKS_LOG_TYPES)} are required)"


# ---------------------------------------------------------------------------------------------
# AWS: EC2 instance metadata (IMDSv2, hop limit 1)
# ---------------------------------------------------------------------------------------------

IMDS_TYPES = ("aws:ec2/launchTemplate:LaunchTemplate", "aws:ec2/instance:Instance")


def _check_metadata_options(where: str, options: Mapping[str, Any], path: str, defaults_ok: bool) -> Iterator[str]:
    if str(options.get("httpEndpoint", "")).lower() == "disabled":
        return
    tokens = options.get("httpTokens")
    if tokens is None and defaults_ok:
        pass
    elif str(tokens).lower() != "required":
        yield f"{where}: {path}.httpTokens is {tokens!r}; must be \"required\" (IMDSv2 only)"
    hops = options.get("httpPutResponseHopLimit")
    if hops is None and defaults_ok:
        return
    if as_int(hops) != 1:
        yield f"{where}: {path}.httpPutResponseHopLimit is {hops!r}; must be 1 (pods must not reach node credentials)"


def check_imdsv2(args) -> Iterator:
    if args.resource_type in IMDS_TYPES:
        options = args.props.get("metadataOptions")
        if not is_map(options):
            yield f"{_where(args)}: metadataOptions is unset; set httpTokens \"required\" and httpPutResponseHopLimit 1"
            return
        yield from _check_metadata_options(_where(args), options, "metadataOptions", defaults_ok=False)
    elif k8s_kind(args.resource_type) == ("karpenter.k8s.aws", "EC2NodeClass"):
        # Karpenter's defaults are already httpTokens=required, hop limit 1: only overrides can break it.
        options = as_map(as_map(args.props.get("spec")).get("metadataOptions"))
        yield from _check_metadata_options(_where(args), options, "spec.metadataOptions", defaults_ok=True)


# ---------------------------------------------------------------------------------------------
# AWS: S3
# ---------------------------------------------------------------------------------------------

S3_BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
S3_SSE_TYPES = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
S3_PAB_TYPE = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
S3_VERSIONING_TYPES = ("aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketVersioningV2:BucketVersioningV2")
S3_PAB_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
KMS_SSE = ("aws:kms", "aws:kms:dsse")


def check_s3_sse_kms(args) -> Iterator:
    if args.resource_type not in S3_SSE_TYPES:
        return
    rules = [r for r in as_list(args.props.get("rules")) if is_map(r)]
    if not rules:
        yield f"{_where(args)}: rules is empty; a rule with applyServerSideEncryptionByDefault (aws:kms) is required"
    for i, rule in enumerate(rules):
        default = as_map(rule.get("applyServerSideEncryptionByDefault"))
        algorithm = default.get("sseAlgorithm")
        if algorithm not in KMS_SSE:
            yield f"{_where(args)}: rules[{i}].applyServerSideEncryptionByDefault.sseAlgorithm is {algorithm!r}; must be \"aws:kms\""
        elif not default.get("kmsMasterKeyId"):
            yield f"{_where(args)}: rules[{i}].applyServerSideEncryptionByDefault.kmsMasterKeyId is unset; use the platform's KMS key"


def check_s3_public_access_block(args) -> Iterator:
    if args.resource_type != S3_PAB_TYPE:
        return
    off = [flag for flag in S3_PAB_FLAGS if not is_true(args.props.get(flag))]
    if off:
        yield f"{_where(args)}: {', '.join(off)} must be true (all four public-access-block flags)"


_VERSIONING_SCHEMA = _bool_schema("requireVersioning", True, "Buckets must have versioning Enabled.")


def check_s3_versioning(args) -> Iterator:
    if args.resource_type not in S3_VERSIONING_TYPES or not _config(args).get("requireVersioning", True):
        return
    status = as_map(args.props.get("versioningConfiguration")).get("status")
    if status != "Enabled":
        yield f"{_where(args)}: versioningConfiguration.status is {status!r}; must be \"Enabled\""


def _bucket_identifiers(bucket: Any) -> set[str]:
    props = as_map(bucket.props)
    ids = {v for v in (props.get("bucket"), props.get("id"), props.get("arn")) if isinstance(v, str) and v}
    return ids


def _attached_to(attachment: Any, bucket: Any, identifiers: set[str]) -> bool:
    ref = as_map(attachment.props).get("bucket")
    if isinstance(ref, str) and ref in identifiers:
        return True
    deps = list(as_map(getattr(attachment, "property_dependencies", None) or {}).get("bucket", []) or [])
    deps += list(getattr(attachment, "dependencies", None) or [])
    return any(getattr(d, "urn", None) == bucket.urn for d in deps)


def check_s3_bucket_controls(args) -> Iterator:
    resources = list(args.resources)
    require_versioning = _config(args).get("requireVersioning", True)
    wanted = {
        "server-side encryption configuration": S3_SSE_TYPES,
        "public access block": (S3_PAB_TYPE,),
    }
    if require_versioning:
        wanted["versioning configuration"] = S3_VERSIONING_TYPES
    for bucket in resources:
        if bucket.resource_type not in S3_BUCKET_TYPES:
            continue
        identifiers = _bucket_identifiers(bucket)
        for label, types in wanted.items():
            if not any(r.resource_type in types and _attached_to(r, bucket, identifiers) for r in resources):
                yield (
                    f"{bucket.resource_type} '{bucket.name}': no {label} resource ({types[0]}) targets this bucket "
                    "(its `bucket` input must be this bucket's id)",
                    bucket.urn,
                )


# ---------------------------------------------------------------------------------------------
# AWS: security groups
# ---------------------------------------------------------------------------------------------

SG_TYPE = "aws:ec2/securityGroup:SecurityGroup"
SG_INGRESS_RULE_TYPE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_RULE_TYPE = "aws:ec2/securityGroupRule:SecurityGroupRule"


def _public_lb_tagged(props: Mapping[str, Any]) -> bool:
    return as_map(props.get("tags")).get(PUBLIC_LB_TAG) == PUBLIC_LB_TAG_VALUE


def _https_only(protocol: Any, from_port: Any, to_port: Any) -> bool:
    return str(protocol).lower() in ("tcp", "6") and as_int(from_port) == 443 and as_int(to_port) == 443


def check_sg_public_ingress(args) -> Iterator:
    props = args.props
    rules: list[tuple[str, Mapping[str, Any], list[str], str]] = []  # (path, rule, open cidrs, protocol key)
    if args.resource_type == SG_TYPE:
        for i, rule in enumerate(as_list(props.get("ingress"))):
            rule = as_map(rule)
            cidrs = [c for c in list(as_list(rule.get("cidrBlocks"))) + list(as_list(rule.get("ipv6CidrBlocks"))) if c in OPEN_CIDRS]
            if cidrs:
                rules.append((f"ingress[{i}]", rule, cidrs, "protocol"))
        tagged = _public_lb_tagged(props)
    elif args.resource_type == SG_INGRESS_RULE_TYPE:
        cidrs = [c for c in (props.get("cidrIpv4"), props.get("cidrIpv6")) if c in OPEN_CIDRS]
        if cidrs:
            rules.append(("", props, cidrs, "ipProtocol"))
        tagged = _public_lb_tagged(props)
    elif args.resource_type == SG_RULE_TYPE and props.get("type") == "ingress":
        cidrs = [c for c in list(as_list(props.get("cidrBlocks"))) + list(as_list(props.get("ipv6CidrBlocks"))) if c in OPEN_CIDRS]
        if cidrs:
            rules.append(("", props, cidrs, "protocol"))
        tagged = False  # no tags on this resource type: it can never be the public-LB exception
    else:
        return
    for path, rule, cidrs, protocol_key in rules:
        where = f"{_where(args)}: {path + ' ' if path else ''}allows ingress from {', '.join(cidrs)}"
        if _https_only(rule.get(protocol_key), rule.get("fromPort"), rule.get("toPort")):
            if not tagged:
                yield f"{where} on 443 but is not tagged {PUBLIC_LB_TAG}={PUBLIC_LB_TAG_VALUE} (public load balancers only)"
        else:
            yield (
                f"{where} ({rule.get(protocol_key)} {rule.get('fromPort')}-{rule.get('toPort')}); "
                "only TCP 443 on a tagged public load balancer may be open to the internet"
            )


# ---------------------------------------------------------------------------------------------
# AWS: IAM
# ---------------------------------------------------------------------------------------------

IAM_POLICY_DOC_TYPES = (
    "aws:iam/policy:Policy",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/groupPolicy:GroupPolicy",
)
IAM_ATTACHMENT_TYPES = (
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
    "aws:iam/policyAttachment:PolicyAttachment",
)


def _policy_documents(resource_type: str, props: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    if resource_type in IAM_POLICY_DOC_TYPES:
        yield "policy", props.get("policy")
    elif resource_type == "aws:iam/role:Role":
        for i, inline in enumerate(as_list(props.get("inlinePolicies"))):
            yield f"inlinePolicies[{i}].policy", as_map(inline).get("policy")


def _parse_document(document: Any) -> Mapping[str, Any] | None:
    if is_map(document):
        return document
    if isinstance(document, str) and document.strip():
        try:
            parsed = json.loads(document)
        except ValueError:
            return None
        return parsed if isinstance(parsed, Mapping) else None
    return None


def wildcard_actions(document: Any) -> list[tuple[int, str]]:
    """(statement index, problem) for every Allow statement granting `*`, `service:*` or NotAction."""
    parsed = _parse_document(document)
    if parsed is None:
        return []
    statements = parsed.get("Statement")
    statements = [statements] if is_map(statements) else list(as_list(statements))
    problems: list[tuple[int, str]] = []
    for i, statement in enumerate(statements):
        statement = as_map(statement)
        if statement.get("Effect", "Allow") != "Allow":
            continue
        if statement.get("NotAction") is not None:
            problems.append((i, "Allow with NotAction (grants everything else)"))
        actions = statement.get("Action")
        actions = [actions] if isinstance(actions, str) else list(as_list(actions))
        for action in actions:
            if isinstance(action, str) and (action.strip() == "*" or action.strip().endswith(":*")):
                problems.append((i, f"Action {action!r}"))
    return problems


def check_iam_no_wildcards(args) -> Iterator:
    for path, document in _policy_documents(args.resource_type, args.props):
        for index, problem in wildcard_actions(document):
            yield f"{_where(args)}: {path} Statement[{index}] allows {problem}; list the actions it needs"
    if args.resource_type in IAM_ATTACHMENT_TYPES:
        arn = args.props.get("policyArn")
        if isinstance(arn, str) and arn.rsplit("/", 1)[-1] in ADMIN_MANAGED_POLICIES:
            yield f"{_where(args)}: policyArn attaches {arn} (wildcard actions); attach a least-privilege policy"
    if args.resource_type == "aws:iam/role:Role":
        for i, arn in enumerate(as_list(args.props.get("managedPolicyArns"))):
            if isinstance(arn, str) and arn.rsplit("/", 1)[-1] in ADMIN_MANAGED_POLICIES:
                yield f"{_where(args)}: managedPolicyArns[{i}] is {arn} (wildcard actions)"


# ---------------------------------------------------------------------------------------------
# AWS: RDS, ECR, KMS
# ---------------------------------------------------------------------------------------------

RDS_INSTANCE = "aws:rds/instance:Instance"
RDS_CLUSTER = "aws:rds/cluster:Cluster"
RDS_CLUSTER_INSTANCE = "aws:rds/clusterInstance:ClusterInstance"


def check_rds_encrypted(args) -> Iterator:
    if args.resource_type in (RDS_INSTANCE, RDS_CLUSTER) and not is_true(args.props.get("storageEncrypted")):
        yield f"{_where(args)}: storageEncrypted must be true (with kmsKeyId for the platform key)"


def check_rds_not_public(args) -> Iterator:
    if args.resource_type in (RDS_INSTANCE, RDS_CLUSTER_INSTANCE) and is_true(args.props.get("publiclyAccessible")):
        yield f"{_where(args)}: publiclyAccessible must be false (databases live in private subnets)"


ECR_REPOSITORY = "aws:ecr/repository:Repository"


def check_ecr_scan_on_push(args) -> Iterator:
    if args.resource_type == ECR_REPOSITORY:
        if not is_true(as_map(args.props.get("imageScanningConfiguration")).get("scanOnPush")):
            yield f"{_where(args)}: imageScanningConfiguration.scanOnPush must be true"


def check_ecr_immutable_tags(args) -> Iterator:
    if args.resource_type == ECR_REPOSITORY:
        mutability = args.props.get("imageTagMutability") or "MUTABLE"
        if mutability not in ("IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION"):
            yield f"{_where(args)}: imageTagMutability is {mutability!r}; must be \"IMMUTABLE\""


def check_kms_rotation(args) -> Iterator:
    if args.resource_type != "aws:kms/key:Key":
        return
    props = args.props
    symmetric = (props.get("customerMasterKeySpec") or props.get("keySpec") or "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"
    if symmetric and (props.get("keyUsage") or "ENCRYPT_DECRYPT") == "ENCRYPT_DECRYPT" and not is_true(props.get("enableKeyRotation")):
        yield f"{_where(args)}: enableKeyRotation must be true"


# ---------------------------------------------------------------------------------------------
# Kubernetes: Kafka
# ---------------------------------------------------------------------------------------------


def check_kafka_tls(args) -> Iterator:
    if k8s_kind(args.resource_type) != ("kafka.strimzi.io", "Kafka"):
        return
    listeners = as_list(as_map(as_map(args.props.get("spec")).get("kafka")).get("listeners"))
    if not listeners:
        yield f"{_where(args)}: spec.kafka.listeners is empty; declare TLS listeners"
    for i, listener in enumerate(listeners):
        listener = as_map(listener)
        if not is_true(listener.get("tls")):
            yield f"{_where(args)}: spec.kafka.listeners[{i}] ({listener.get('name', '?')}) must set tls: true"


# ---------------------------------------------------------------------------------------------
# Kubernetes: pod and container hardening (all through the one pod-spec extractor)
# ---------------------------------------------------------------------------------------------


def _c(args, ref: ContainerRef) -> str:
    return f"{_where(args)}: container '{ref.name}' ({ref.path})"


_CPU_LIMIT_SCHEMA = _bool_schema("requireCpuLimit", False, "Also require resources.limits.cpu.")


def check_container_resources(args) -> Iterator:
    require_cpu_limit = _config(args).get("requireCpuLimit", False)
    for ref in all_containers(args.resource_type, args.props):
        resources = as_map(ref.container.get("resources"))
        requests, limits = as_map(resources.get("requests")), as_map(resources.get("limits"))
        missing = [f"requests.{k}" for k in ("cpu", "memory") if not requests.get(k)]
        missing += [f"limits.{k}" for k in (("cpu", "memory") if require_cpu_limit else ("memory",)) if not limits.get(k)]
        if missing:
            yield f"{_c(args, ref)}: resources {', '.join(missing)} must be set"


def check_run_as_non_root(args) -> Iterator:
    for ref in all_containers(args.resource_type, args.props):
        non_root, path = effective_security(ref, "runAsNonRoot")
        user, user_path = effective_security(ref, "runAsUser")
        if not is_true(non_root):
            yield f"{_c(args, ref)}: {path} must be true (container or pod securityContext)"
        if as_int(user) == 0:
            yield f"{_c(args, ref)}: {user_path} is 0 (root)"


def check_read_only_root_fs(args) -> Iterator:
    for ref in all_containers(args.resource_type, args.props):
        if not is_true(as_map(ref.container.get("securityContext")).get("readOnlyRootFilesystem")):
            yield f"{_c(args, ref)}: securityContext.readOnlyRootFilesystem must be true"


def check_no_privilege_escalation(args) -> Iterator:
    for ref in all_containers(args.resource_type, args.props):
        sc = as_map(ref.container.get("securityContext"))
        if not is_false(sc.get("allowPrivilegeEscalation")):
            yield f"{_c(args, ref)}: securityContext.allowPrivilegeEscalation must be false"
        if is_true(sc.get("privileged")):
            yield f"{_c(args, ref)}: securityContext.privileged must not be true"


ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})


def check_drop_all_capabilities(args) -> Iterator:
    for ref in all_containers(args.resource_type, args.props):
        caps = as_map(as_map(ref.container.get("securityContext")).get("capabilities"))
        dropped = {str(c).upper() for c in as_list(caps.get("drop"))}
        if "ALL" not in dropped:
            yield f"{_c(args, ref)}: securityContext.capabilities.drop must include \"ALL\""
        added = sorted({str(c).upper().removeprefix("CAP_") for c in as_list(caps.get("add"))} - ALLOWED_ADDED_CAPABILITIES)
        if added:
            yield f"{_c(args, ref)}: securityContext.capabilities.add {added} is not allowed (only NET_BIND_SERVICE)"


def check_seccomp(args) -> Iterator:
    for ref in all_containers(args.resource_type, args.props):
        profile, path = effective_security(ref, "seccompProfile")
        kind = as_map(profile).get("type")
        if kind not in ("RuntimeDefault", "Localhost"):
            yield f"{_c(args, ref)}: {path}.type is {kind!r}; must be \"RuntimeDefault\" (pod or container securityContext)"


def check_host_namespaces(args) -> Iterator:
    for pod in pod_specs(args.resource_type, args.props):
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if is_true(pod.spec.get(key)):
                yield f"{_where(args)}: {pod.path}.{key} must not be true"


def check_probes(args) -> Iterator:
    for pod in pod_specs(args.resource_type, args.props):
        if not pod.long_running:
            continue
        for ref in containers(pod, include_init=False):
            missing = [p for p in ("livenessProbe", "readinessProbe") if not is_map(ref.container.get(p))]
            if missing:
                yield f"{_c(args, ref)}: {' and '.join(missing)} must be set"


def image_problem(image: Any) -> str | None:
    """Why an image reference is not pinned, or None when it has a digest or a non-latest tag."""
    if not isinstance(image, str) or not image.strip():
        return "has no image"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag (resolves to :latest)"
    tag = last.split(":", 1)[1]
    if not tag or tag.lower() == "latest":
        return f"image {image!r} uses the :latest tag"
    return None


HELM_TYPES = ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart")


def _helm_latest_tags(values: Any, path: str) -> Iterator[str]:
    if is_map(values):
        for key, value in values.items():
            sub = f"{path}.{key}"
            if key == "tag" and isinstance(value, str) and value.lower() == "latest":
                yield sub
            else:
                yield from _helm_latest_tags(value, sub)
    elif is_list(values):
        for i, value in enumerate(values):
            yield from _helm_latest_tags(value, f"{path}[{i}]")


def check_images_pinned(args) -> Iterator:
    for ref in all_containers(args.resource_type, args.props):
        image = ref.container.get("image")
        if image is None and k8s_kind(args.resource_type) == ("machinelearning.seldon.io", "SeldonDeployment"):
            continue  # a prepackaged-server graph node: Seldon supplies a pinned image
        problem = image_problem(image)
        if problem:
            yield f"{_c(args, ref)}: {problem}; pin a version tag or a digest"
    if args.resource_type in HELM_TYPES:
        for path in _helm_latest_tags(args.props.get("values"), "values"):
            yield f"{_where(args)}: {path} is \"latest\"; pin a version"


def check_helm_chart_pinned(args) -> Iterator:
    if args.resource_type in HELM_TYPES:
        version = args.props.get("version")
        if not isinstance(version, str) or not version.strip() or version.strip() in ("*", "latest", ">0.0.0-0"):
            yield f"{_where(args)}: version must pin the chart version (got {version!r})"


# ---------------------------------------------------------------------------------------------
# Kubernetes: secrets
# ---------------------------------------------------------------------------------------------

_SECRET_KEY_WORDS = frozenset(
    {"password", "passwd", "token", "apikey", "secretkey", "secretaccesskey", "clientsecret",
     "routingkey", "servicekey", "integrationkey", "privatekey", "bearertoken", "authtoken", "webhookurl"}
)


def secret_like_key(key: str) -> bool:
    """`adminPassword`, `routing_key`, `apiKey`, ... but not `existingSecret` / `passwordSecretRef`."""
    normalized = re.sub(r"[^a-z]", "", key.lower())
    return normalized.endswith("password") or normalized in _SECRET_KEY_WORDS


_SECRET_ENV = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY|ROUTING_KEY|CREDENTIALS?)")
_NOT_SECRET_ENV_SUFFIX = ("_FILE", "_PATH", "_DIR", "_NAME", "_REF", "_URL_FILE")


# `scheme://user:password@host`: a URL that carries its password (a registry, a broker, a cache),
# whatever the variable's name (`STRATA_FEATURE_REGISTRY`, `REDIS_URL`, ...)
_CREDENTIAL_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)


def credential_url(value: str) -> bool:
    """True for a URL with a literal password; `$(VAR)` (Kubernetes expands it from a Secret) is not."""
    match = _CREDENTIAL_URL.search(value)
    return bool(match) and "$(" not in match.group(0)


def secret_like_env(name: str) -> bool:
    upper = name.upper()
    return bool(_SECRET_ENV.search(upper)) and not upper.endswith(_NOT_SECRET_ENV_SUFFIX)


def _secret_leaves(values: Any, path: str) -> Iterator[tuple[str, Any]]:
    if is_map(values):
        for key, value in values.items():
            sub = f"{path}.{key}"
            if isinstance(key, str) and secret_like_key(key) and isinstance(value, str) and value:
                yield sub, value
            else:
                yield from _secret_leaves(value, sub)
    elif is_list(values):
        for i, value in enumerate(values):
            yield from _secret_leaves(value, f"{path}[{i}]")


def check_secrets_are_pulumi_secrets(args) -> Iterator:
    secret_paths = _secret_paths(args)
    if secret_paths is None:
        return  # the engine hands analyzers plaintext: secretness is checked by the offline plan
    props, rtype = args.props, args.resource_type
    candidates: list[str] = []
    if rtype == "kubernetes:core/v1:Secret":
        candidates = [key for key in ("data", "stringData") if as_map(props.get(key))]
    elif rtype in (RDS_INSTANCE, RDS_CLUSTER):
        key = "password" if rtype == RDS_INSTANCE else "masterPassword"
        if props.get(key) and not is_true(props.get("manageMasterUserPassword")):
            candidates = [key]
    elif rtype == "aws:secretsmanager/secretVersion:SecretVersion":
        candidates = [key for key in ("secretString", "secretBinary") if props.get(key)]
    elif rtype in HELM_TYPES:
        candidates = [path for path, _ in _secret_leaves(props.get("values"), "values")]
    for path in candidates:
        if not _is_secret(path, secret_paths):
            yield f"{_where(args)}: {path} is a plaintext value; pass it as a Pulumi secret (pulumi.Output.secret / config --secret)"


def check_no_plaintext_secret_config(args) -> Iterator:
    for ref in all_containers(args.resource_type, args.props):
        for i, env in enumerate(as_list(ref.container.get("env"))):
            env = as_map(env)
            name, value = env.get("name"), env.get("value")
            if isinstance(name, str) and secret_like_env(name) and isinstance(value, str) and value:
                yield f"{_c(args, ref)}: env[{i}] {name} has a literal value; use valueFrom.secretKeyRef"
            elif isinstance(name, str) and isinstance(value, str) and credential_url(value):
                yield f"{_c(args, ref)}: env[{i}] {name} is a URL with a literal password; use valueFrom.secretKeyRef"
    if args.resource_type == "kubernetes:core/v1:ConfigMap":
        for key in as_map(args.props.get("data")):
            if isinstance(key, str) and secret_like_key(key):
                yield f"{_where(args)}: data.{key} looks like a secret; put it in a Secret, not a ConfigMap"


# ---------------------------------------------------------------------------------------------
# Stack policies: Kubernetes relationships
# ---------------------------------------------------------------------------------------------


def _of_kind(resources: Iterable[Any], group: str, kind: str) -> list[Any]:
    return [r for r in resources if k8s_kind(r.resource_type) == (group, kind)]


def is_default_deny(props: Mapping[str, Any]) -> bool:
    spec = as_map(props.get("spec"))
    selector = as_map(spec.get("podSelector"))
    selects_all = not as_map(selector.get("matchLabels")) and not as_list(selector.get("matchExpressions"))
    return selects_all and "Ingress" in list(as_list(spec.get("policyTypes"))) and not as_list(spec.get("ingress"))


def check_namespace_default_deny(args) -> Iterator:
    resources = list(args.resources)
    covered = {
        object_namespace(np.props)
        for np in _of_kind(resources, "networking.k8s.io", "NetworkPolicy")
        if is_default_deny(as_map(np.props))
    }
    for ns in _of_kind(resources, "core", "Namespace"):
        name = object_name(as_map(ns.props), ns.name)
        if name not in covered:
            yield (
                f"kubernetes:core/v1:Namespace '{ns.name}': namespace {name!r} has no default-deny NetworkPolicy "
                "(spec.podSelector {} with policyTypes [Ingress] and no ingress rules)",
                ns.urn,
            )


ISTIO_CHARTS = frozenset({"istiod", "base", "istio-base", "istio-cni", "ztunnel"})
_MTLS_SCHEMA = PolicyConfigSchema(
    properties={
        "allowedModes": {
            "type": "array",
            "items": {"type": "string", "enum": ["STRICT", "PERMISSIVE"]},
            "default": ["STRICT"],
            "description": "mTLS modes the mesh-wide PeerAuthentication (and any override) may use.",
        }
    }
)


def _chart_name(props: Mapping[str, Any]) -> str:
    chart = props.get("chart")
    return chart.rsplit("/", 1)[-1] if isinstance(chart, str) else ""


def check_istio_strict_mtls(args) -> Iterator:
    resources = list(args.resources)
    allowed = [m for m in as_list(_config(args).get("allowedModes", ["STRICT"])) if isinstance(m, str)] or ["STRICT"]
    releases = [r for r in resources if r.resource_type in HELM_TYPES and _chart_name(as_map(r.props)) in ISTIO_CHARTS]
    istio_objects = [r for r in resources if (k8s_kind(r.resource_type) or ("", ""))[0].endswith("istio.io")]
    if not releases and not istio_objects:
        return  # Istio is not deployed: nothing to check
    root = "istio-system"
    for release in releases:
        props = as_map(release.props)
        if _chart_name(props) == "istiod":
            root = as_map(as_map(props.get("values")).get("meshConfig")).get("rootNamespace") or props.get("namespace") or root
    peer_auths = _of_kind(resources, "security.istio.io", "PeerAuthentication")
    mesh_wide = [
        pa for pa in peer_auths
        if object_namespace(as_map(pa.props)) == root and not as_map(as_map(pa.props).get("spec")).get("selector")
    ]
    if not any(as_map(as_map(as_map(pa.props).get("spec")).get("mtls")).get("mode") in allowed for pa in mesh_wide):
        anchor = (releases or istio_objects)[0]
        yield (
            f"Istio is deployed but no mesh-wide PeerAuthentication in namespace {root!r} (no spec.selector) "
            f"sets spec.mtls.mode to one of {allowed}",
            anchor.urn,
        )
    for pa in peer_auths:
        spec = as_map(as_map(pa.props).get("spec"))
        modes = [("spec.mtls.mode", as_map(spec.get("mtls")).get("mode"))]
        modes += [(f"spec.portLevelMtls.{port}.mode", as_map(v).get("mode")) for port, v in as_map(spec.get("portLevelMtls")).items()]
        for path, mode in modes:
            if mode not in (None, "UNSET") and mode not in allowed:
                yield f"{pa.resource_type} '{pa.name}': {path} is {mode!r}; allowed: {allowed}", pa.urn


def _replicas(value: Any, default: int = 1) -> int:
    n = as_int(value)
    return default if n is None else n


def _pdbs_by_namespace(resources: Iterable[Any]) -> dict[str, list[Mapping[str, Any]]]:
    found: dict[str, list[Mapping[str, Any]]] = {}
    for pdb in _of_kind(resources, "policy", "PodDisruptionBudget"):
        props = as_map(pdb.props)
        spec = as_map(props.get("spec"))
        if spec.get("minAvailable") is None and spec.get("maxUnavailable") is None:
            continue
        found.setdefault(object_namespace(props), []).append(as_map(as_map(spec.get("selector")).get("matchLabels")))
    return found


def check_serving_pdb(args) -> Iterator:
    resources = list(args.resources)
    pdbs = _pdbs_by_namespace(resources)
    for r in resources:
        kind = k8s_kind(r.resource_type)
        props = as_map(r.props)
        namespace = object_namespace(props)
        selectors = pdbs.get(namespace, [])
        if kind in (("apps", "Deployment"), ("apps", "StatefulSet")):
            if _replicas(as_map(props.get("spec")).get("replicas")) < 2:
                continue
            for pod in pod_specs(r.resource_type, props):
                if not any(labels_match(sel, pod.labels) for sel in selectors):
                    yield (
                        f"{r.resource_type} '{r.name}': {_replicas(as_map(props.get('spec')).get('replicas'))} replicas "
                        f"but no PodDisruptionBudget in namespace {namespace!r} selects its pod labels {dict(pod.labels)}",
                        r.urn,
                    )
        elif kind == ("machinelearning.seldon.io", "SeldonDeployment"):
            spec = as_map(props.get("spec"))
            for i, predictor in enumerate(as_list(spec.get("predictors"))):
                predictor = as_map(predictor)
                base = _replicas(predictor.get("replicas"), _replicas(spec.get("replicas")))
                for j, component in enumerate(as_list(predictor.get("componentSpecs"))):
                    component = as_map(component)
                    if _replicas(component.get("replicas"), base) < 2 or is_map(component.get("pdbSpec")):
                        continue
                    labels = dict(as_map(predictor.get("labels")))
                    labels.update(as_map(metadata(component).get("labels")))
                    labels["seldon-deployment-id"] = object_name(props, r.name)
                    if not any(labels_match(sel, labels) for sel in selectors):
                        yield (
                            f"{r.resource_type} '{r.name}': spec.predictors[{i}].componentSpecs[{j}] runs several replicas "
                            "without pdbSpec and no PodDisruptionBudget selects its pods",
                            r.urn,
                        )


# ---------------------------------------------------------------------------------------------
# The pack
# ---------------------------------------------------------------------------------------------

_ENDPOINT_SCHEMA = _bool_schema(
    "allowPublicAllowlist", False,
    "Allow a public API endpoint when publicAccessCidrs is a non-open allowlist (quick/standard modes).",
)

POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    # AWS
    _resource_policy("eks-endpoint-private", "EKS API endpoint is private (public only behind a CIDR allowlist where config allows it).", check_eks_endpoint_private, _ENDPOINT_SCHEMA),
    _resource_policy("eks-secrets-encryption", "EKS encrypts Kubernetes Secrets with a KMS key (envelope encryption).", check_eks_secrets_encryption),
    _resource_policy("eks-control-plane-logging", "EKS ships every control-plane log type to CloudWatch.", check_eks_control_plane_logging),
    _resource_policy("ec2-imdsv2-hop-limit-1", "Launch templates, instances and Karpenter node classes require IMDSv2 with hop limit 1.", check_imdsv2),
    _resource_policy("s3-sse-kms", "S3 default encryption uses SSE-KMS with a customer key.", check_s3_sse_kms),
    _resource_policy("s3-public-access-block", "S3 public access blocks set all four flags.", check_s3_public_access_block),
    _resource_policy("s3-versioning-enabled", "S3 bucket versioning is Enabled.", check_s3_versioning, _VERSIONING_SCHEMA),
    _stack_policy("s3-bucket-controls-attached", "Every S3 bucket has encryption, public-access-block and versioning resources attached.", check_s3_bucket_controls, _VERSIONING_SCHEMA),
    _resource_policy("sg-no-public-ingress", "No 0.0.0.0/0 or ::/0 ingress, except TCP 443 on security groups tagged strata.dev/exposure=public-lb.", check_sg_public_ingress),
    _resource_policy("iam-no-wildcard-actions", "IAM policies grant no '*' or 'service:*' actions, no Allow+NotAction, no admin managed policies.", check_iam_no_wildcards),
    _resource_policy("rds-storage-encrypted", "RDS instances and clusters encrypt storage.", check_rds_encrypted),
    _resource_policy("rds-not-public", "RDS instances are not publicly accessible.", check_rds_not_public),
    _resource_policy("ecr-scan-on-push", "ECR repositories scan images on push.", check_ecr_scan_on_push),
    _resource_policy("ecr-immutable-tags", "ECR repositories have immutable tags.", check_ecr_immutable_tags),
    _resource_policy("kms-key-rotation", "Symmetric KMS keys rotate yearly.", check_kms_rotation),
    # Kubernetes
    _resource_policy("kafka-tls-listeners", "Strimzi Kafka listeners all use TLS.", check_kafka_tls),
    _resource_policy("container-resources", "Containers set cpu/memory requests and a memory limit.", check_container_resources, _CPU_LIMIT_SCHEMA),
    _resource_policy("container-run-as-non-root", "Containers run as non-root (runAsNonRoot, never runAsUser 0).", check_run_as_non_root),
    _resource_policy("container-read-only-root-fs", "Containers have a read-only root filesystem.", check_read_only_root_fs),
    _resource_policy("container-no-privilege-escalation", "Containers set allowPrivilegeEscalation false and are not privileged.", check_no_privilege_escalation),
    _resource_policy("container-drop-all-capabilities", "Containers drop ALL capabilities (may add back only NET_BIND_SERVICE).", check_drop_all_capabilities),
    _resource_policy("pod-seccomp-runtime-default", "Pods use the RuntimeDefault (or Localhost) seccomp profile.", check_seccomp),
    _resource_policy("pod-no-host-namespaces", "Pods do not share the node's network, PID or IPC namespaces.", check_host_namespaces),
    _resource_policy("container-probes", "Long-running containers have liveness and readiness probes.", check_probes),
    _resource_policy("images-pinned", "Images are pinned to a version tag or digest (no :latest, no missing tag).", check_images_pinned),
    _resource_policy("helm-chart-version-pinned", "Helm releases pin their chart version.", check_helm_chart_pinned),
    _resource_policy("secrets-are-pulumi-secrets", "Secret material (Secret data, DB passwords, Helm secret values) is a Pulumi secret.", check_secrets_are_pulumi_secrets),
    _resource_policy("no-plaintext-secret-config", "No secret-looking literals (nor URLs with a password) in container env or ConfigMaps.", check_no_plaintext_secret_config),
    _stack_policy("namespace-default-deny", "Every namespace the stack creates has a default-deny NetworkPolicy.", check_namespace_default_deny),
    _stack_policy("istio-strict-mtls", "Where Istio is deployed, a mesh-wide PeerAuthentication enforces STRICT mTLS and nothing weakens it.", check_istio_strict_mtls, _MTLS_SCHEMA),
    _stack_policy("serving-pdb", "Every multi-replica Deployment/StatefulSet/SeldonDeployment has a PodDisruptionBudget.", check_serving_pdb),
]

POLICIES_BY_NAME: dict[str, ResourceValidationPolicy | StackValidationPolicy] = {p.name: p for p in POLICIES}
