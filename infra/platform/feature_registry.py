"""`FeatureRegistry`: the feature store's SQL registry on the cluster, on MLflow's PostgreSQL.

The registry (`workloads.data.features.repo.Registry`: each view's content hash, and the gold
version each materialization read) lives in a database of its own, `feature_registry`, owned by
a role of the same name, on the server MLflow already runs (`MlflowTracking.database_server`):
the in-cluster PostgreSQL in quick (and on any kubeconfig target), RDS in standard and
enterprise. Not a second server: the registry holds a few rows per view and per run. A database,
not a schema in MLflow's: RDS creates only MLflow's database, so a small init step creates the
second one; it owns everything in it (no grants to keep in step with MLflow's migrations), and
restoring either never touches the other (`workloads.data.features.registry_database`).

| object | where | what for |
|---|---|---|
| Secret `feature-registry-credentials` (`password`) | MLflow's namespace | the role's password, generated on the first `up` and kept (`ignore_changes`) |
| Secret `feature-registry` (`url`) | MLflow's namespace, and each team namespace whose models materialize from gold | `postgresql+psycopg://feature_registry:<password>@<server>:5432/feature_registry?<tls>`, a Pulumi secret; TLS as MLflow's (`sslmode=disable` in-cluster, `verify-full` against the RDS CA bundle the training image carries) |
| Job `feature-registry-init` | MLflow's namespace | `strata features init-registry` on the training image, as the server's admin (MLflow's `backend-store-uri`, read from its Secret): role and database created or updated, then the tables; `pulumi up` waits for it; re-run when its spec changes |
| NetworkPolicy `feature-registry-egress` | each client team namespace | egress on 5432 from the materialization pods only: to the in-cluster PostgreSQL's pods, or to the VPC where RDS is (RDS's security group admits the cluster's nodes) |
| NetworkPolicy `feature-registry-clients` | MLflow's namespace (in-cluster only) | ingress on 5432 to the PostgreSQL pods from exactly those materialization pods |

The materialization CronJob (`infra.models.features`) reads the URL as `STRATA_FEATURE_REGISTRY`
from a `secretKeyRef`, never a plain value.
"""

from __future__ import annotations

import base64
import secrets as _secrets
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s import (NAMESPACE_NAME_LABEL, check_image_pinned, empty_dir, labels, resources,
                       restricted_container_security_context, restricted_pod_security_context)
from infra.platform.features import COMPONENT_LABEL, MATERIALIZATION_COMPONENT, MODEL_LABEL
from infra.platform.mlflow import DatabaseServer

REGISTRY_SECRET, URL_KEY = "feature-registry", "url"
CREDENTIALS_SECRET = "feature-registry-credentials"
DB_NAME = DB_USER = "feature_registry"
REGISTRY_ENV, ADMIN_ENV = "STRATA_FEATURE_REGISTRY", "STRATA_FEATURE_REGISTRY_ADMIN"  # workloads.data.features.cli
INIT_COMPONENT = "feature-registry-init"
TRAINING_UID = 10001  # workloads/training/Dockerfile's USER
POSTGRES_PORT = 5432


def registry_env(secret: str = REGISTRY_SECRET) -> dict[str, Any]:
    """The env entry of every registry client: the URL from the Secret of its namespace."""
    return {"name": REGISTRY_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": URL_KEY}}}


def materialization_selector(models: Sequence[str]) -> dict[str, Any]:
    """The materialization pods of `models` (the registry's only clients in a team namespace)."""
    return {"matchExpressions": [
        {"key": MODEL_LABEL, "operator": "In", "values": sorted(models)},
        {"key": COMPONENT_LABEL, "operator": "In", "values": [MATERIALIZATION_COMPONENT]},
    ]}


@dataclass(frozen=True)
class FeatureRegistryArgs:
    """Defaults: the init Job gets 250m / 256 MiB, six attempts within ten minutes."""

    server: DatabaseServer
    clients: Mapping[str, tuple[str, ...]]  # team namespace -> its models that materialize from gold
    image: pulumi.Input[str]  # the training image: Python, psycopg, `infra.cli`, the RDS CA bundle
    server_cidr: Optional[str] = None  # where RDS's addresses are (the VPC); None: anywhere
    backoff_limit: int = 5  # the in-cluster server may still be starting on a first `up`
    deadline_s: int = 600

    def __post_init__(self) -> None:
        if not self.clients or not all(self.clients.values()):
            raise ValueError("FeatureRegistryArgs.clients: name at least one team namespace, each with at least one "
                             f"model that materializes feature views (got {dict(self.clients)})")


class FeatureRegistry(pulumi.ComponentResource):
    """`strata:platform:FeatureRegistry`; see the module docstring."""

    def __init__(self, name: str, args: FeatureRegistryArgs, after: Sequence[pulumi.Resource] = (),
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:platform:FeatureRegistry", name, None, opts)
        server = args.server
        deps = [*after, *server.ready]
        child = pulumi.ResourceOptions(parent=self, depends_on=deps)
        meta = {"namespace": server.namespace, "labels": labels(REGISTRY_SECRET, "feature-registry")}

        # Generated on the first `up` and kept; `data` (not stringData) so its output is the kept value.
        self.credentials = k8s.core.v1.Secret(
            f"{name}-credentials", metadata={"name": CREDENTIALS_SECRET, **meta}, type="Opaque",
            data={"password": pulumi.Output.secret(base64.b64encode(_secrets.token_urlsafe(32).encode()).decode())},
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                ignore_changes=["data"], additional_secret_outputs=["data"])))
        password = self.credentials.data.apply(lambda data: base64.b64decode(data["password"]).decode())
        url = pulumi.Output.secret(pulumi.Output.all(server.host, server.port, password).apply(
            lambda v: f"postgresql+psycopg://{DB_USER}:{quote(str(v[2]), safe='')}@{v[0]}:{int(v[1])}/{DB_NAME}"
                      f"?{server.tls}"))

        self.url_secrets: dict[str, k8s.core.v1.Secret] = {}
        for ns in sorted({server.namespace, *args.clients}):
            self.url_secrets[ns] = k8s.core.v1.Secret(
                f"{name}-url-{ns}",
                metadata={"name": REGISTRY_SECRET, "namespace": ns, "labels": labels(REGISTRY_SECRET, "feature-registry")},
                type="Opaque", string_data={URL_KEY: url}, opts=child)

        self.init_job = self._init_job(name, args, [*deps, self.url_secrets[server.namespace]])

        if server.pod_labels is not None:
            to: dict[str, Any] = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: server.namespace}},
                                  "podSelector": {"matchLabels": dict(server.pod_labels)}}
        else:
            to = {"ipBlock": {"cidr": args.server_cidr or "0.0.0.0/0"}}
        port = [{"port": POSTGRES_PORT, "protocol": "TCP"}]
        self.egress_policies: dict[str, k8s.networking.v1.NetworkPolicy] = {}
        for ns, models in sorted(args.clients.items()):
            self.egress_policies[ns] = k8s.networking.v1.NetworkPolicy(
                f"{name}-egress-{ns}",
                metadata={"name": f"{REGISTRY_SECRET}-egress", "namespace": ns,
                          "labels": labels(REGISTRY_SECRET, "feature-registry")},
                spec={"podSelector": materialization_selector(models), "policyTypes": ["Egress"],
                      "egress": [{"to": [to], "ports": port}]},
                opts=child)
        self.client_policy: Optional[k8s.networking.v1.NetworkPolicy] = None
        if server.pod_labels is not None:
            # MLflow's namespace admits teams on MLflow's port only; this adds the database, for these pods only.
            self.client_policy = k8s.networking.v1.NetworkPolicy(
                f"{name}-clients", metadata={"name": f"{REGISTRY_SECRET}-clients", **meta},
                spec={"podSelector": {"matchLabels": dict(server.pod_labels)}, "policyTypes": ["Ingress"],
                      "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: ns}},
                                             "podSelector": materialization_selector(models)}
                                            for ns, models in sorted(args.clients.items())],
                                   "ports": port}]},
                opts=child)
        self.secret_name = REGISTRY_SECRET
        self.register_outputs({"secret": REGISTRY_SECRET, "database": DB_NAME, "initJob": INIT_COMPONENT})

    def _init_job(self, name: str, args: FeatureRegistryArgs, deps: list[pulumi.Resource]) -> k8s.batch.v1.Job:
        server = args.server
        check_image_pinned(args.image)
        pod_labels = labels(INIT_COMPONENT, INIT_COMPONENT)
        container = {
            "name": "init", "image": args.image, "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-m", "infra.cli", "features", "init-registry"],
            "env": [registry_env(),
                    {"name": ADMIN_ENV, "valueFrom": {"secretKeyRef": {"name": server.admin_secret,
                                                                       "key": server.admin_url_key}}},
                    {"name": "STRATA_STATE_DIR", "value": "/tmp/strata"}, {"name": "HOME", "value": "/tmp"}],
            "resources": resources("250m", "256Mi", "1", "512Mi"),
            "securityContext": restricted_container_security_context(TRAINING_UID),
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }
        return k8s.batch.v1.Job(
            f"{name}-init",
            metadata={"name": INIT_COMPONENT, "namespace": server.namespace, "labels": pod_labels},
            spec={"backoffLimit": args.backoff_limit, "activeDeadlineSeconds": args.deadline_s,
                  "template": {
                      # MLflow's namespace has no mesh; said anyway, as a Job's pod never completes with a sidecar
                      "metadata": {"labels": pod_labels, "annotations": {"sidecar.istio.io/inject": "false"}},
                      "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                               "securityContext": restricted_pod_security_context(TRAINING_UID),
                               "containers": [container], "volumes": [empty_dir("tmp", "64Mi")]}}},
            # a Job's template is immutable: a changed one replaces it (same name, so delete first)
            opts=pulumi.ResourceOptions(parent=self, depends_on=deps, delete_before_replace=True))
