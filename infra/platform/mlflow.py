"""`MlflowTracking`: the MLflow tracking server and model registry.

Backend store: an in-cluster PostgreSQL StatefulSet (`in-cluster-postgres`) or the RDS
instance from the cloud layer (`rds`, `rds-multi-az`). The connection URI, password
included, lives only in a Kubernetes Secret built from secret Outputs and reaches the
server as `MLFLOW_BACKEND_STORE_URI` (never in args, never in plain inputs).

The server is shared with the feature store's SQL registry (`infra.platform.feature_registry`,
its own database and role): `MlflowTracking.database_server` says where it is and which Secret
holds the admin URL.

Artifacts: `s3://<artifacts bucket>/mlflow` on AWS, written and read directly by clients
(IRSA roles; `--no-serve-artifacts`); on a kubeconfig target, a PVC served by the
tracking server itself (`--serve-artifacts`, one replica since the volume is RWO).
"""

from __future__ import annotations

import secrets as _secrets
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s

from infra.contracts import MlflowDatabase
from infra.crds import prometheus as prometheus_crds
from infra.k8s import (container, empty_dir, exec_probe, http_probe, labels, pod_disruption_budget_spec,
                       resources, restricted_pod_security_context, selector_labels, topology_spread)
from infra.modes import MlflowBackend
from infra.platform.charts import IMAGES

PORT = 5000
DB_NAME = "mlflow"
DB_USER = "mlflow"
DB_SECRET, ADMIN_URL_KEY = "mlflow-db", "backend-store-uri"  # MLflow's URI is the server's admin (RDS master) login
POSTGRES_APP = "mlflow-postgres"
POSTGRES_UID = 999  # the postgres user of the official image
ARTIFACTS_MOUNT = "/mlartifacts"


RDS_CA_BUNDLE = "/etc/ssl/certs/rds-global-bundle.pem"  # baked into the tracking image


METRICS_DIR = "/tmp/metrics"  # prometheus-flask-exporter's multiprocess directory (`--expose-prometheus`)
ARTIFACTS_BUCKET_ENV = "MLFLOW_ARTIFACTS_BUCKET"


def server_container(args: "MlflowTrackingArgs", namespace: str, artifacts_root: str, serve_flag: str,
                     extra_env: Sequence[dict[str, Any]], mounts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The server's container, rendered from the catalogue's one `mlflow` declaration (what
    local mode runs): argv, the backend URI's Secret, named port, probes, resources."""
    from infra.workloads import ClusterContext, container as workload_container
    from workloads.catalogue.declarations import mlflow as declaration
    from workloads.catalogue.model import Placement

    workload = declaration()
    tracking = {"workers": str(args.workers), "serve_flag": serve_flag}

    def state(_workload, _resource, output: str) -> str:
        if output not in tracking:
            raise KeyError(f"tracking has no cluster output {output!r} ({', '.join(tracking)})")
        return tracking[output]

    def artifacts(_workload, resource, output: str) -> str:
        if output != "root" or resource.params.get("bucket") != "mlflow-artifacts":
            raise KeyError(f"object-store {resource.params} has no cluster output {output!r} here (mlflow-artifacts.root)")
        return artifacts_root

    ctx = ClusterContext(namespaces={Placement.MLFLOW: namespace}, team_namespaces={},
                         catalogue={workload.name: workload}, provisioners={"state": state, "object-store": artifacts})
    server = workload_container(workload, ctx, image=args.image, extra_env=extra_env, volume_mounts=mounts)
    for probe in ("livenessProbe", "readinessProbe"):  # MLflow answers only the allowed Host names
        server[probe]["httpGet"]["httpHeaders"] = [{"name": "Host", "value": "localhost"}]
    return server


@dataclass(frozen=True)
class DatabaseServer:
    """MLflow's PostgreSQL, as another tenant of the server (the feature registry) needs it."""

    namespace: str  # MLflow's: where the admin Secret is
    host: pulumi.Input[str]
    port: pulumi.Input[int]
    tls: str  # libpq query parameters: `sslmode=disable` in-cluster, verify-full against the RDS CA bundle
    admin_secret: str  # a Secret in `namespace`; key `admin_url_key` is the admin's URL
    admin_url_key: str
    pod_labels: Optional[Mapping[str, str]]  # the in-cluster server's pod selector; None: RDS (the VPC)
    ready: tuple[pulumi.Resource, ...]  # wait for these before connecting


def tracking_uri(namespace: str) -> str:
    return f"http://mlflow.{namespace}.svc.cluster.local:{PORT}"


@dataclass(frozen=True)
class MlflowTrackingArgs:
    """Defaults: two server replicas (one with PVC artifacts), 20 GiB database volume."""

    namespace: str
    backend: MlflowBackend
    artifacts_bucket: Optional[pulumi.Input[str]] = None  # None: PVC artifacts served by MLflow
    database: Optional[MlflowDatabase] = None  # required for the RDS backends
    database_password: Optional[pulumi.Input[str]] = None  # in-cluster DB; None: generated once, kept in the Secret
    role_arn: Optional[pulumi.Input[str]] = None  # IRSA role (S3 artifacts)
    image: pulumi.Input[str] = IMAGES["mlflow"].ref
    postgres_image: str = IMAGES["postgres"].ref
    replicas: int = 2
    database_storage_gib: int = 20
    artifacts_storage_gib: int = 50
    storage_class: Optional[str] = None
    workers: int = 2

    def __post_init__(self) -> None:
        if self.backend is not MlflowBackend.IN_CLUSTER_DB and self.database is None:
            raise ValueError(f"MlflowTrackingArgs.database: backend {self.backend.value!r} needs the cloud layer's "
                             "MLflow database (CloudStorage.mlflow_database)")


class MlflowTracking(pulumi.ComponentResource):
    def __init__(self, name: str, args: MlflowTrackingArgs, prometheus_operator: Optional[pulumi.Resource] = None,
                 after: Sequence[pulumi.Resource] = (), opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:platform:MlflowTracking", name, None, opts)
        deps = list(after)
        child = pulumi.ResourceOptions(parent=self, depends_on=deps)
        ns = args.namespace
        app = "mlflow"
        match = selector_labels(app)
        version = IMAGES["mlflow"].tag

        annotations = {"eks.amazonaws.com/role-arn": args.role_arn} if args.role_arn is not None else None
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata={"name": app, "namespace": ns, "labels": labels(app, "tracking-server"),
                                    **({"annotations": annotations} if annotations else {})},
            automount_service_account_token=False, opts=child)

        # --- backend store credentials: one Secret, built from secret Outputs --------------
        secret_opts = child
        if args.backend is MlflowBackend.IN_CLUSTER_DB:
            host: pulumi.Input[str] = f"{POSTGRES_APP}.{ns}.svc.cluster.local"
            port: pulumi.Input[int] = 5432
            user, database = DB_USER, DB_NAME
            if args.database_password is not None:
                password = pulumi.Output.secret(args.database_password)
            else:
                # Generated on first `up` and kept: the Secret ignores later changes, so the
                # password lives only in the cluster and the (encrypted) Pulumi state.
                password = pulumi.Output.secret(_secrets.token_urlsafe(32))
                secret_opts = pulumi.ResourceOptions(parent=self, depends_on=deps, ignore_changes=["stringData", "data"])
            # The in-cluster PostgreSQL serves no TLS: its only clients are the mlflow pods of this
            # namespace (NetworkPolicy); said explicitly rather than `prefer`, which hides a downgrade.
            tls = "sslmode=disable"
        else:
            db = args.database
            host, port, user, database = db.host, db.port, db.username, db.database
            password = pulumi.Output.secret(db.password)
            # RDS: encrypted AND the server's certificate checked against the RDS CA bundle the
            # image carries (workloads/tracking/Dockerfile); `prefer` would fall back to plaintext.
            tls = f"sslmode=verify-full&sslrootcert={RDS_CA_BUNDLE}"
        uri = pulumi.Output.all(host, port, password).apply(
            lambda v: f"postgresql://{quote(user, safe='')}:{quote(str(v[2]), safe='')}@{v[0]}:{int(v[1])}/{database}"
                      f"?{tls}")
        self.db_secret = k8s.core.v1.Secret(
            f"{name}-db-credentials",
            metadata={"name": DB_SECRET, "namespace": ns, "labels": labels(app, "database")},
            type="Opaque",
            string_data={"username": user, "password": password, ADMIN_URL_KEY: pulumi.Output.secret(uri)},
            opts=secret_opts,
        )

        if args.backend is MlflowBackend.IN_CLUSTER_DB:
            self._postgres(name, args, child)
        in_cluster = args.backend is MlflowBackend.IN_CLUSTER_DB
        self.database_server = DatabaseServer(
            namespace=ns, host=host, port=port, tls=tls, admin_secret=DB_SECRET, admin_url_key=ADMIN_URL_KEY,
            pod_labels=selector_labels(POSTGRES_APP) if in_cluster else None,
            ready=(self.db_secret, *((self.postgres,) if in_cluster else ())))

        # --- artifacts ----------------------------------------------------------------------
        volumes: list[dict[str, Any]] = [empty_dir("tmp", "1Gi")]
        mounts: list[dict[str, Any]] = []
        replicas = args.replicas
        service_hosts = [f"mlflow.{ns}.svc.cluster.local", f"mlflow.{ns}.svc", f"mlflow.{ns}", "mlflow"]
        allowed_hosts = ",".join([*service_hosts, *(f"{h}:{PORT}" for h in service_hosts), "localhost", f"localhost:{PORT}"])
        # cluster-only facts: the Host names it answers to, its metrics (the image carries
        # prometheus-flask-exporter; the ServiceMonitor below scrapes them)
        extra_env: list[dict[str, Any]] = [{"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": allowed_hosts},
                                           {"name": "MLFLOW_EXPOSE_PROMETHEUS", "value": METRICS_DIR}]
        if args.artifacts_bucket is not None:
            # the bucket's name is an Output: passed as env, expanded by Kubernetes in the args
            extra_env.append({"name": ARTIFACTS_BUCKET_ENV, "value": args.artifacts_bucket})
            artifacts_root, serve_flag = f"s3://$({ARTIFACTS_BUCKET_ENV})/mlflow", "--no-serve-artifacts"
        else:
            pvc_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                                        "resources": {"requests": {"storage": f"{args.artifacts_storage_gib}Gi"}}}
            if args.storage_class:
                pvc_spec["storageClassName"] = args.storage_class
            self.artifacts_pvc = k8s.core.v1.PersistentVolumeClaim(
                f"{name}-artifacts", metadata={"name": "mlflow-artifacts", "namespace": ns,
                                               "labels": labels(app, "artifacts")},
                spec=pvc_spec, opts=child)
            volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": "mlflow-artifacts"}})
            mounts.append({"name": "artifacts", "mountPath": ARTIFACTS_MOUNT})
            extra_env.append({"name": "MLFLOW_ARTIFACTS_DESTINATION", "value": ARTIFACTS_MOUNT})
            artifacts_root, serve_flag = "mlflow-artifacts:/", "--serve-artifacts"
            replicas = 1  # one writer on an RWO volume
        server = server_container(args, ns, artifacts_root, serve_flag, extra_env, mounts)
        pod_labels = labels(app, "tracking-server", version=version)
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-server",
            metadata={"name": app, "namespace": ns, "labels": pod_labels},
            spec={
                "replicas": replicas,
                "selector": {"matchLabels": match},
                "strategy": {"type": "Recreate"} if replicas == 1 and args.artifacts_bucket is None
                else {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {
                        "serviceAccountName": app,
                        # The API token is not needed; IRSA's web-identity token is a separate projected volume.
                        "automountServiceAccountToken": False,
                        "securityContext": restricted_pod_security_context(),
                        "topologySpreadConstraints": topology_spread(match),
                        "containers": [server],
                        "volumes": volumes,
                    },
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*deps, self.db_secret, self.service_account]),
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": app, "namespace": ns, "labels": labels(app, "tracking-server")},
            spec={"selector": match, "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}]},
            opts=child)
        if replicas > 1:
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb", metadata={"name": app, "namespace": ns, "labels": labels(app, "tracking-server")},
                spec=pod_disruption_budget_spec(match), opts=child)
        if prometheus_operator is not None:
            prometheus_crds.service_monitor(
                f"{name}-service-monitor", name=app, namespace=ns, operator=prometheus_operator, opts=child,
                labels=labels(app, "tracking-server"),
                spec=prometheus_crds.ServiceMonitorSpec(
                    selector=prometheus_crds.LabelSelector(match_labels=labels(app, "tracking-server")),
                    endpoints=[prometheus_crds.Endpoint(port="http", path="/metrics", interval="30s")]))

        self.tracking_uri = pulumi.Output.concat("http://", self.service.metadata["name"], f".{ns}.svc.cluster.local:{PORT}")
        self.register_outputs({"trackingUri": self.tracking_uri})

    def _postgres(self, name: str, args: MlflowTrackingArgs, child: pulumi.ResourceOptions) -> None:
        ns, app = args.namespace, POSTGRES_APP
        match = selector_labels(app)
        pod_labels = labels(app, "database", version=args.postgres_image.rsplit(":", 1)[-1])
        self.postgres_service = k8s.core.v1.Service(
            f"{name}-postgres-service",
            metadata={"name": app, "namespace": ns, "labels": labels(app, "database")},
            spec={"clusterIP": "None", "selector": match,
                  "ports": [{"name": "postgres", "port": 5432, "targetPort": "postgres", "protocol": "TCP"}]},
            opts=child)
        secret_env = lambda env, key: {"name": env, "valueFrom": {"secretKeyRef": {"name": DB_SECRET, "key": key}}}  # noqa: E731
        ready = ["pg_isready", "-h", "127.0.0.1", "-U", DB_USER, "-d", DB_NAME]
        pvc_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                                    "resources": {"requests": {"storage": f"{args.database_storage_gib}Gi"}}}
        if args.storage_class:
            pvc_spec["storageClassName"] = args.storage_class
        db = container(
            name="postgres",
            image=args.postgres_image,
            env=[secret_env("POSTGRES_USER", "username"), secret_env("POSTGRES_PASSWORD", "password"),
                 {"name": "POSTGRES_DB", "value": DB_NAME},
                 {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}],
            ports=[{"name": "postgres", "containerPort": 5432, "protocol": "TCP"}],
            resources=resources("250m", "512Mi", "1", "1Gi"),
            liveness_probe=exec_probe(ready, initial_delay=30, period=15),
            readiness_probe=exec_probe(ready, initial_delay=5, period=5),
            run_as_user=POSTGRES_UID,
            volumeMounts=[{"name": "data", "mountPath": "/var/lib/postgresql/data"},
                          {"name": "run", "mountPath": "/var/run/postgresql"},
                          {"name": "tmp", "mountPath": "/tmp"}],
        )
        self.postgres = k8s.apps.v1.StatefulSet(
            f"{name}-postgres",
            metadata={"name": app, "namespace": ns, "labels": pod_labels},
            spec={
                "serviceName": app,
                "replicas": 1,
                "selector": {"matchLabels": match},
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": restricted_pod_security_context(POSTGRES_UID),
                        "containers": [db],
                        "volumes": [empty_dir("run", "16Mi"), empty_dir("tmp", "256Mi")],
                    },
                },
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": pvc_spec}],
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*child.depends_on, self.db_secret]))
