"""`OnlineFeatureStore`: the cluster side of the online feature store, for the models that
declare online feature views (`workloads.catalogue.declarations.feature_plan`).

Where the store runs is the mode's `online_store` row (`infra.modes`):

| online_store                   | store                                        | URL in the team Secret          |
|--------------------------------|----------------------------------------------|---------------------------------|
| `in-cluster-redis` (quick; also any kubeconfig target) | StatefulSet `feature-store-redis` (official image, pinned), namespace `features` | `redis://:<token>@feature-store-redis.<ns>.svc.cluster.local:6379/0` |
| `elasticache-valkey[-multi-az]` | `infra.cloud.features.FeatureCache`         | `rediss://:<token>@<primary endpoint>:6379/0` |

Objects:

| object                                   | where                | what for                                        |
|------------------------------------------|----------------------|-------------------------------------------------|
| Secret `feature-store` (key `url`)       | each consumer or writer team namespace | the URL, token included: consumers and the CDC pipelines' feature aggregators read it as `STRATA_FEATURE_STORE_URL` from a `secretKeyRef`, never from a plain value |
| NetworkPolicy `feature-store-egress`     | each consumer team namespace | egress on 6379 from the consumers only (to the Redis pods, or to the VPC where ElastiCache is) |
| Secret `feature-store-redis` (`password`, `redis.conf`) | `features` (in-cluster) | the AUTH password as Redis's `requirepass`, read from a mounted file: never in argv |
| StatefulSet + headless Service `feature-store-redis` | `features` (in-cluster) | one Redis with append-only persistence on a PVC |
| NetworkPolicy `feature-store-redis-clients` | `features` (in-cluster) | ingress on 6379 from exactly the consumers and the aggregators (`writers`) of each team namespace |

The consumers are the pods whose `strata.dev/model` is a model with online views of that team
and whose `app.kubernetes.io/component` is one of `CONSUMER_COMPONENTS` (model servers,
stream workers, the materialization CronJob). NetworkPolicies add up, so the `features`
namespace admits no team at namespace level: the pod-level policy is the only way in.

The in-cluster token is generated on the first `up` and kept (`ignore_changes` on the
Secret's data); every URL is built from that Secret's output, so a team added later gets
the same token. The in-cluster Redis serves no TLS (like the in-cluster MLflow database):
its only clients are admitted by the policy above; ElastiCache requires TLS.
"""

from __future__ import annotations

import base64
import secrets as _secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s

from infra.contracts import FeatureCacheEndpoint
from infra.k8s import (NAMESPACE_NAME_LABEL, container, empty_dir, exec_probe, labels, resources,
                       restricted_pod_security_context, selector_labels)
from infra.platform.charts import IMAGES
from workloads.catalogue.declarations import FEATURE_STORE_SECRET, FEATURE_STORE_URL_ENV
from workloads.catalogue.model import WORKLOAD_LABEL

REDIS_PORT = 6379
REDIS_UID = 999  # the redis user of the official image
REDIS_APP = "feature-store-redis"
# in each consumer (and writer) team namespace; the catalogue's declarations read the same Secret
SECRET_NAME, URL_KEY = FEATURE_STORE_SECRET.secret, FEATURE_STORE_SECRET.key
URL_ENV = FEATURE_STORE_URL_ENV  # what consumers read the URL into
CONFIG_DIR = "/etc/redis"
MODEL_LABEL = "strata.dev/model"
COMPONENT_LABEL = "app.kubernetes.io/component"
MATERIALIZATION_COMPONENT = "feature-materialization"
CONSUMER_COMPONENTS = ("model-server", "stream-worker", MATERIALIZATION_COMPONENT)
WRITER_COMPONENT = "feature-aggregator"  # the CDC pipelines' streaming features (workloads.catalogue)


def url_env() -> dict[str, Any]:
    """The env entry every consumer container gets: the URL from the team's Secret."""
    return {"name": URL_ENV, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": URL_KEY}}}


def url_output(output: str) -> str:
    """`${resources.<feature-store>.<output>}` on the cluster: `url` is the env var the pod reads
    from the team's Secret (Kubernetes expands `$(VAR)` in args), never the URL itself."""
    if output != "url":
        raise KeyError(f"feature-store has no cluster output {output!r} (url)")
    return f"$({URL_ENV})"


def writer_selector(workloads: Sequence[str]) -> dict[str, Any]:
    """The feature aggregators `workloads` (catalogue names), which write streaming features."""
    return {"matchExpressions": [
        {"key": WORKLOAD_LABEL, "operator": "In", "values": sorted(workloads)},
        {"key": COMPONENT_LABEL, "operator": "In", "values": [WRITER_COMPONENT]},
    ]}


@dataclass(frozen=True)
class FeatureStoreAccess:
    """What a writer's own egress policy needs: the Secret and where Redis is (a NetworkPolicy peer)."""

    secret: str
    peer: Mapping[str, Any]
    port: int


def consumer_selector(models: Sequence[str]) -> dict[str, Any]:
    """The pods of `models` that read or write online features."""
    return {"matchExpressions": [
        {"key": MODEL_LABEL, "operator": "In", "values": sorted(models)},
        {"key": COMPONENT_LABEL, "operator": "In", "values": list(CONSUMER_COMPONENTS)},
    ]}


@dataclass(frozen=True)
class OnlineFeatureStoreArgs:
    """Defaults: one in-cluster Redis with 10 GiB of append-only storage."""

    consumers: Mapping[str, tuple[str, ...]]  # team namespace -> its models with online views
    # team namespace -> its feature aggregators (catalogue workload names): the URL Secret lands
    # there too, and the in-cluster Redis admits them; their own egress policy is their renderer's
    writers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cache: Optional[FeatureCacheEndpoint] = None  # ElastiCache; None: the in-cluster Redis
    namespace: str = "features"  # the in-cluster Redis's namespace (unused with a cache)
    cache_cidr: Optional[str] = None  # where ElastiCache's addresses are (the VPC); None: anywhere
    image: str = IMAGES["redis"].ref
    storage_gib: int = 10
    storage_class: Optional[str] = None
    max_memory_mib: int = 768  # maxmemory; the container's limit is 1 GiB

    def __post_init__(self) -> None:
        if not self.consumers or not all(self.consumers.values()):
            raise ValueError("OnlineFeatureStoreArgs.consumers: name at least one team namespace, each with "
                             f"at least one model with online views (got {dict(self.consumers)})")
        if not all(self.writers.values()):
            raise ValueError(f"OnlineFeatureStoreArgs.writers: each team namespace needs at least one aggregator "
                             f"(got {dict(self.writers)})")


class OnlineFeatureStore(pulumi.ComponentResource):
    """`strata:platform:OnlineFeatureStore`; see the module docstring."""

    def __init__(self, name: str, args: OnlineFeatureStoreArgs, after: Sequence[pulumi.Resource] = (),
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:platform:OnlineFeatureStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(after))
        if args.cache is not None:
            scheme, port = "rediss", args.cache.port
            host: pulumi.Input[str] = args.cache.host
            token = pulumi.Output.secret(args.cache.auth_token)
        else:
            scheme, port = "redis", REDIS_PORT
            host = f"{REDIS_APP}.{args.namespace}.svc.cluster.local"
            token = self._redis(name, args, child)
        url = pulumi.Output.secret(pulumi.Output.all(host, token).apply(
            lambda v: f"{scheme}://:{quote(str(v[1]), safe='')}@{v[0]}:{port}/0"))

        self.url_secrets: dict[str, k8s.core.v1.Secret] = {}
        self.egress_policies: dict[str, k8s.networking.v1.NetworkPolicy] = {}
        if args.cache is not None:
            to: dict[str, Any] = {"ipBlock": {"cidr": args.cache_cidr or "0.0.0.0/0"}}
        else:
            to = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: args.namespace}},
                  "podSelector": {"matchLabels": selector_labels(REDIS_APP)}}
        self.access = FeatureStoreAccess(secret=SECRET_NAME, peer=to, port=port)
        for team_ns in sorted({*args.consumers, *args.writers}):
            meta = {"namespace": team_ns, "labels": labels(SECRET_NAME, "online-store-client")}
            self.url_secrets[team_ns] = k8s.core.v1.Secret(
                f"{name}-url-{team_ns}", metadata={"name": SECRET_NAME, **meta}, type="Opaque",
                string_data={URL_KEY: url}, opts=child)
            models = args.consumers.get(team_ns)
            if not models:
                continue
            self.egress_policies[team_ns] = k8s.networking.v1.NetworkPolicy(
                f"{name}-egress-{team_ns}", metadata={"name": f"{SECRET_NAME}-egress", **meta},
                spec={"podSelector": consumer_selector(models), "policyTypes": ["Egress"],
                      "egress": [{"to": [to], "ports": [{"port": port, "protocol": "TCP"}]}]},
                opts=child)
        self.secret_name = SECRET_NAME
        self.register_outputs({"secret": SECRET_NAME, "inCluster": args.cache is None})

    def _redis(self, name: str, args: OnlineFeatureStoreArgs, child: pulumi.ResourceOptions) -> pulumi.Output[str]:
        """The in-cluster Redis; returns its AUTH password (a secret Output read back from its Secret)."""
        ns = args.namespace
        match = selector_labels(REDIS_APP)
        version = args.image.rsplit(":", 1)[-1]
        pod_labels = labels(REDIS_APP, "online-store", version=version)
        password = _secrets.token_urlsafe(32)
        config = "\n".join([
            f"requirepass {password}", f"port {REDIS_PORT}", "bind * -::*", "protected-mode no",
            "dir /data", "appendonly yes", "appendfsync everysec",
            # as locally: when full, writes fail loudly (FeatureStoreErrors) and reads go on; nothing is evicted silently
            f"maxmemory {args.max_memory_mib}mb", "maxmemory-policy noeviction",
            "",
        ])
        b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
        # Generated on the first `up` and kept; `data` (not stringData) so its output is the kept value.
        self.redis_secret = k8s.core.v1.Secret(
            f"{name}-redis-auth",
            metadata={"name": REDIS_APP, "namespace": ns, "labels": labels(REDIS_APP, "online-store")},
            type="Opaque",
            data={"password": pulumi.Output.secret(b64(password)), "redis.conf": pulumi.Output.secret(b64(config))},
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                ignore_changes=["data"], additional_secret_outputs=["data"])))
        token = pulumi.Output.secret(self.redis_secret.data.apply(
            lambda data: base64.b64decode(data["password"]).decode()))

        self.redis_service = k8s.core.v1.Service(
            f"{name}-redis-service",
            metadata={"name": REDIS_APP, "namespace": ns, "labels": labels(REDIS_APP, "online-store")},
            spec={"clusterIP": "None", "selector": match,
                  "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}]},
            opts=child)
        # redis-cli reads the password from REDISCLI_AUTH: the probes carry no secret either.
        ping = ["sh", "-c", 'test "$(redis-cli -p 6379 ping)" = PONG']
        redis = container(
            name="redis",
            image=args.image,
            command=["redis-server", f"{CONFIG_DIR}/redis.conf"],
            env=[{"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": {"name": REDIS_APP, "key": "password"}}}],
            ports=[{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
            resources=resources("100m", "1Gi", "1", "1Gi"),
            liveness_probe=exec_probe(ping, initial_delay=15, period=15),
            readiness_probe=exec_probe(ping, initial_delay=3, period=5),
            run_as_user=REDIS_UID,
            volumeMounts=[{"name": "data", "mountPath": "/data"},
                          {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                          {"name": "tmp", "mountPath": "/tmp"}],
        )
        pvc_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                                    "resources": {"requests": {"storage": f"{args.storage_gib}Gi"}}}
        if args.storage_class:
            pvc_spec["storageClassName"] = args.storage_class
        self.redis = k8s.apps.v1.StatefulSet(
            f"{name}-redis",
            metadata={"name": REDIS_APP, "namespace": ns, "labels": pod_labels},
            spec={
                "serviceName": REDIS_APP,
                "replicas": 1,
                "selector": {"matchLabels": match},
                "template": {"metadata": {"labels": pod_labels}, "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": restricted_pod_security_context(REDIS_UID),
                    "containers": [redis],
                    "volumes": [{"name": "config", "secret": {"secretName": REDIS_APP, "defaultMode": 0o440,
                                                              "items": [{"key": "redis.conf", "path": "redis.conf"}]}},
                                empty_dir("tmp", "64Mi")],
                }},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": pvc_spec}],
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*child.depends_on, self.redis_secret]))
        self.client_policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-redis-clients",
            metadata={"name": f"{REDIS_APP}-clients", "namespace": ns, "labels": labels(REDIS_APP, "online-store")},
            spec={"podSelector": {"matchLabels": match}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [*({"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: team_ns}},
                                           "podSelector": consumer_selector(models)}
                                          for team_ns, models in sorted(args.consumers.items())),
                                        *({"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: team_ns}},
                                           "podSelector": writer_selector(aggregators)}
                                          for team_ns, aggregators in sorted(args.writers.items()))],
                               "ports": [{"port": REDIS_PORT, "protocol": "TCP"}]}]},
            opts=child)
        return token
