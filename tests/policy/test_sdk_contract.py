"""The checks read the property names the real SDKs send (pulumi-aws 7.x, pulumi-kubernetes 4.x).

Resources are declared with the SDKs' own Args classes under the plan harness's mocks, so a
renamed input (e.g. `vpc_config.endpoint_public_access` -> `vpcConfig.endpointPublicAccess`)
breaks here rather than silently passing in production.
"""

from __future__ import annotations

import json
import warnings


from infra.modes import PolicyEnforcement
from infra.policy import evaluate

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import pulumi
    import pulumi_aws as aws
    import pulumi_kubernetes as k8s


def record(program):
    from infra.plan.harness import make_mocks

    records = []
    mocks, monitor = make_mocks("eu-west-1", records)
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project="strata", stack="policy-test", preview=False, monitor=monitor)
    pulumi.runtime.mocks.test(program)()
    return records


SCOPED = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"}]})
WILDCARD = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


def platform(good: bool):
    def program():
        key = aws.kms.Key("key", enable_key_rotation=good)
        aws.eks.Cluster(
            "eks",
            role_arn="arn:aws:iam::000000000000:role/eks",
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=["a", "b"], endpoint_public_access=not good, endpoint_private_access=True
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=key.arn), resources=["secrets"]
            ) if good else None,
            enabled_cluster_log_types=["api", "audit", "authenticator", "controllerManager", "scheduler"] if good else ["api"],
        )
        aws.ec2.LaunchTemplate(
            "nodes",
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required" if good else "optional", http_put_response_hop_limit=1 if good else 2
            ),
        )
        bucket = aws.s3.Bucket("lake", bucket_prefix="strata-lake-")
        aws.s3.BucketServerSideEncryptionConfiguration(
            "lake-sse",
            bucket=bucket.id,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="aws:kms" if good else "AES256", kms_master_key_id=key.arn if good else None
                ),
                bucket_key_enabled=True,
            )],
        )
        aws.s3.BucketPublicAccessBlock("lake-pab", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
                                       ignore_public_acls=True, restrict_public_buckets=good)
        if good:
            aws.s3.BucketVersioning("lake-versioning", bucket=bucket.id,
                                    versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"))
        aws.ec2.SecurityGroup(
            "alb",
            description="public ALB",
            ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=443, to_port=443, cidr_blocks=["0.0.0.0/0"])],
            tags={"strata.dev/exposure": "public-lb"} if good else {},
        )
        aws.vpc.SecurityGroupIngressRule("db-in", security_group_id="sg-1", ip_protocol="tcp", from_port=5432, to_port=5432,
                                         cidr_ipv4="10.0.0.0/16" if good else "0.0.0.0/0")
        role = aws.iam.Role("mlflow", assume_role_policy="{}", inline_policies=[aws.iam.RoleInlinePolicyArgs(name="x", policy=SCOPED if good else WILDCARD)])
        aws.iam.RolePolicy("mlflow-s3", role=role.name, policy=SCOPED)
        aws.rds.Instance("mlflow-db", instance_class="db.t4g.medium", engine="postgres", allocated_storage=20,
                         storage_encrypted=good, publicly_accessible=not good, username="mlflow",
                         manage_master_user_password=True)
        aws.ecr.Repository("serving", image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=good),
                           image_tag_mutability="IMMUTABLE" if good else "MUTABLE")

        k8s.core.v1.Namespace("team-a", metadata=k8s.meta.v1.ObjectMetaArgs(name="team-a"))
        if good:
            k8s.networking.v1.NetworkPolicy(
                "team-a-deny",
                metadata=k8s.meta.v1.ObjectMetaArgs(name="default-deny", namespace="team-a"),
                spec=k8s.networking.v1.NetworkPolicySpecArgs(pod_selector=k8s.meta.v1.LabelSelectorArgs(), policy_types=["Ingress", "Egress"]),
            )
            k8s.policy.v1.PodDisruptionBudget(
                "web-pdb",
                metadata=k8s.meta.v1.ObjectMetaArgs(name="web", namespace="team-a"),
                spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(max_unavailable=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app": "web"})),
            )
        probe = k8s.core.v1.ProbeArgs(http_get=k8s.core.v1.HTTPGetActionArgs(path="/health", port=8080))
        k8s.apps.v1.Deployment(
            "web",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="web", namespace="team-a"),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=2,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app": "web"}),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels={"app": "web"}),
                    spec=k8s.core.v1.PodSpecArgs(
                        host_network=not good,
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            run_as_non_root=good, seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault" if good else "Unconfined")
                        ),
                        containers=[k8s.core.v1.ContainerArgs(
                            name="app",
                            image="ghcr.io/x/app:1.2.3" if good else "ghcr.io/x/app",
                            env=[k8s.core.v1.EnvVarArgs(name="DB_PASSWORD", value_from=k8s.core.v1.EnvVarSourceArgs(
                                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name="db", key="password")))] if good
                            else [k8s.core.v1.EnvVarArgs(name="DB_PASSWORD", value="hunter2")],
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={"cpu": "100m", "memory": "128Mi"}, limits={"memory": "256Mi"} if good else None
                            ),
                            security_context=k8s.core.v1.SecurityContextArgs(
                                read_only_root_filesystem=good, allow_privilege_escalation=not good,
                                capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"] if good else ["NET_RAW"]),
                            ),
                            liveness_probe=probe, readiness_probe=probe if good else None,
                        )],
                    ),
                ),
            ),
        )
        k8s.apiextensions.CustomResource(
            "events", api_version="kafka.strimzi.io/v1beta2", kind="Kafka",
            metadata={"name": "events", "namespace": "kafka"},
            spec={"kafka": {"listeners": [{"name": "tls", "port": 9093, "type": "internal", "tls": good}]}},
        )
        k8s.helm.v3.Release("istiod", chart="istiod", version="1.27.1" if good else None, namespace="istio-system",
                            values={"pilot": {"autoscaleMin": 2}})
        k8s.apiextensions.CustomResource(
            "mesh-mtls", api_version="security.istio.io/v1", kind="PeerAuthentication",
            metadata={"name": "default", "namespace": "istio-system"},
            spec={"mtls": {"mode": "STRICT" if good else "PERMISSIVE"}},
        )
        k8s.core.v1.Secret("pd", metadata={"name": "pd", "namespace": "monitoring"}, string_data={"routingKey": "abc"})
        k8s.core.v1.ConfigMap("cfg", metadata={"name": "cfg", "namespace": "team-a"},
                              data={"model.json": "{}"} if good else {"adminPassword": "x"})

    return program


def test_compliant_sdk_resources_pass():
    results = evaluate(record(platform(good=True)), PolicyEnforcement.MANDATORY)
    assert [r.format() for r in results] == []


def test_violating_sdk_resources_fire_every_policy_they_break():
    results = evaluate(record(platform(good=False)), PolicyEnforcement.MANDATORY)
    fired = {r.policy for r in results}
    expected = {
        "kms-key-rotation", "eks-endpoint-private", "eks-secrets-encryption", "eks-control-plane-logging",
        "ec2-imdsv2-hop-limit-1", "s3-sse-kms", "s3-public-access-block", "s3-bucket-controls-attached",
        "sg-no-public-ingress", "iam-no-wildcard-actions", "rds-storage-encrypted", "rds-not-public",
        "ecr-scan-on-push", "ecr-immutable-tags", "namespace-default-deny", "serving-pdb", "pod-no-host-namespaces",
        "container-run-as-non-root", "pod-seccomp-runtime-default", "images-pinned", "no-plaintext-secret-config",
        "container-resources", "container-read-only-root-fs", "container-no-privilege-escalation",
        "container-drop-all-capabilities", "container-probes", "kafka-tls-listeners", "helm-chart-version-pinned",
        "istio-strict-mtls",
    }
    assert fired == expected, sorted(fired ^ expected)
