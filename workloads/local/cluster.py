"""A local Kubernetes control plane on 127.0.0.1: the real components, no containers.

etcd -> kube-apiserver (client-certificate and ServiceAccount-token auth, RBAC, the
default admission plugins including PodSecurity) -> kube-controller-manager (every
default controller: the garbage collector, namespace, ServiceAccount and token
controllers among them; without the GC pulumi-kubernetes' foreground deletes never end)
-> kube-scheduler -> kwok, which plays the kubelet for fake Nodes labelled like the
stack's node pools (system on-demand, CPU spot, GPU spot with its taint) and runs their
pods to Ready. Each process leads its own process group; `down` stops every group and
frees every port. The binaries come from `.ci/cluster-binaries` (built once, cached).

`LocalCluster(state_dir).up()` returns when the API server is ready, the nodes are Ready
and the default ServiceAccount exists; `install_crds()` adds the operators' CRDs from the
same cached sources the offline schema checks use.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from workloads.local.errors import LocalError, MissingDependencyError, ServiceFailedError
from workloads.local.process import ProcessRecord, new_record, start_detached, stop_group

BIN_DIR_ENV = "STRATA_BIN"
KWOK_VERSION = "v0.8.0"  # .ci/cluster-binaries KWOK_VERSION: its stage file's name
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
STORAGE_CLASS = "local-static"
VOLUME_POOL_SIZE = 64  # claims bind once (Retain): enough for a session of ups and destroys
VOLUME_SIZE = "100Gi"
OPENAPI_TIMEOUT_S = 180.0  # building /openapi/v2 once, on a loaded machine
OPENAPI_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"  # what client-go asks for

# The stack's node pools (infra/cloud/cluster.py: POOL_LABEL, CAPACITY_LABEL, the GPU
# label and taint), small: enough room for a preview stack and its models.
POOL_LABEL = "strata.dev/pool"
CAPACITY_LABEL = "strata.dev/capacity-type"
GPU_TAINT_KEY = "nvidia.com/gpu"


@dataclass(frozen=True)
class NodePool:
    name: str
    capacity_type: str  # on-demand | spot
    count: int
    cpu: str
    memory: str
    gpus: int = 0
    instance_type: str = "m7i.xlarge"

    def labels(self) -> dict[str, str]:
        # What EKS managed node groups put on their nodes, plus the stack's own pool labels.
        labels = {POOL_LABEL: self.name, CAPACITY_LABEL: self.capacity_type,
                  "eks.amazonaws.com/nodegroup": self.name,
                  "eks.amazonaws.com/capacityType": self.capacity_type.upper().replace("-", "_"),
                  "node.kubernetes.io/instance-type": self.instance_type, "type": "kwok"}
        if self.gpus:
            labels["nvidia.com/gpu.present"] = "true"
        return labels

    def taints(self) -> list[dict[str, str]]:
        return [{"key": GPU_TAINT_KEY, "value": "true", "effect": "NoSchedule"}] if self.gpus else []


POOLS = (
    NodePool("system", "on-demand", 1, "8", "32Gi", instance_type="m7i.large"),
    NodePool("cpu-spot", "spot", 2, "16", "64Gi", instance_type="m7i.xlarge"),
    NodePool("gpu-spot", "spot", 1, "8", "32Gi", gpus=1, instance_type="g5.xlarge"),
)


def default_bin_dir() -> Path:
    env = os.environ.get(BIN_DIR_ENV)
    cache = Path(os.environ.get("STRATA_CACHE_HOME", Path.home() / ".cache" / "strata"))
    return Path(env) if env else cache / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------------------ PKI


@dataclass(frozen=True)
class Identity:
    name: str  # file stem
    common_name: str
    groups: tuple[str, ...] = ()


IDENTITIES = (
    Identity("admin", "strata-admin", ("system:masters",)),
    Identity("controller-manager", "system:kube-controller-manager"),
    Identity("scheduler", "system:kube-scheduler"),
    # kwok plays every node's kubelet (status, leases, pods): an admin identity, like kwokctl's.
    Identity("kwok", "kwok-controller", ("system:masters",)),
)


def _write_pem(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def make_pki(pki: Path) -> None:
    """A CA, the API server's serving certificate, one client certificate per identity and
    the ServiceAccount token signing key (ECDSA P-256: fast to make)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=30)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "strata-local-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    _write_pem(pki / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    _write_pem(pki / "ca.key", key_pem(ca_key), private=True)

    def issue(stem: str, subject: x509.Name, usage, sans: list | None = None) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_pem(pki / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write_pem(pki / f"{stem}.key", key_pem(key), private=True)

    service_ip = next(ipaddress.ip_network(SERVICE_CIDR).hosts())
    issue("apiserver", x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
          ExtendedKeyUsageOID.SERVER_AUTH,
          [x509.DNSName(name) for name in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                            "kubernetes.default.svc.cluster.local")]
          + [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(service_ip)])
    for identity in IDENTITIES:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.common_name)]
                            + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in identity.groups])
        issue(identity.name, subject, ExtendedKeyUsageOID.CLIENT_AUTH)
    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write_pem(pki / "sa.key", key_pem(sa_key), private=True)
    _write_pem(pki / "sa.pub", sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo))


def kubeconfig_document(server: str, ca_pem: bytes, user: str, credentials: dict[str, str]) -> dict[str, Any]:
    """A one-cluster kubeconfig; `credentials` is the user entry (client cert data or a token)."""
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "strata-local",
        "clusters": [{"name": "strata-local", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "strata-local", "context": {"cluster": "strata-local", "user": user}}],
    }


# ------------------------------------------------------------------------------ the cluster


class ClusterError(LocalError):
    """The local control plane could not start or stop; the message names the component."""


@dataclass
class ClusterInfo:
    kubeconfig: Path
    server: str
    ports: dict[str, int]
    started_s: float = 0.0
    nodes: list[str] = field(default_factory=list)


class LocalCluster:
    """The control plane's processes, state (PKI, etcd data, logs, kubeconfigs) in `state_dir`."""

    def __init__(self, state_dir: Path, bin_dir: Path | None = None, pools: Iterable[NodePool] = POOLS):
        self.state_dir = Path(state_dir)
        self.bin_dir = Path(bin_dir) if bin_dir else default_bin_dir()
        self.pools = tuple(pools)
        self.pki = self.state_dir / "pki"
        self.run_dir = self.state_dir / "run"
        self.logs = self.state_dir / "logs"

    # -- paths -------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (system:masters)."""
        return self.state_dir / "kubeconfig"

    def _kubeconfig_of(self, identity: str) -> Path:
        return self.state_dir / f"{identity}.kubeconfig"

    def _record_path(self, component: str) -> Path:
        return self.run_dir / f"{component}.json"

    def binary(self, name: str) -> Path:
        return self.bin_dir / name

    def missing_binaries(self) -> list[str]:
        return [name for name in COMPONENTS if not os.access(self.binary(name), os.X_OK)]

    def _require_binaries(self) -> None:
        missing = self.missing_binaries()
        if not (self.bin_dir / f"kwok-stages-{KWOK_VERSION}.yaml").is_file():
            missing.append(f"kwok-stages-{KWOK_VERSION}.yaml")
        if missing:
            raise MissingDependencyError("cluster", f"{', '.join(missing)} in {self.bin_dir}",
                                         "build them once with `.ci/cluster-binaries` (from the Go module proxy)")

    # -- state -------------------------------------------------------------------------
    def records(self) -> dict[str, ProcessRecord]:
        found = {}
        for component in COMPONENTS:
            record = ProcessRecord.load(self._record_path(component))
            if record is not None:
                found[component] = record
        return found

    def running(self) -> bool:
        records = self.records()
        return len(records) == len(COMPONENTS) and all(r.leader_alive() for r in records.values())

    def info(self) -> ClusterInfo:
        records = self.records()
        if not records:
            raise ClusterError(f"no local cluster in {self.state_dir}: run `strata local cluster up`")
        ports = {k: v for r in records.values() for k, v in r.ports.items()}
        return ClusterInfo(self.kubeconfig, f"https://127.0.0.1:{ports['apiserver']}", ports)

    # -- up ----------------------------------------------------------------------------
    def up(self, timeout_s: float = 60.0) -> ClusterInfo:
        """Start every component (a fresh cluster: new PKI and etcd data) and wait until it
        serves; anything that fails to start is stopped again and named in the error."""
        if self.running():
            return self.info()
        self._require_binaries()
        self.down()
        started = time.monotonic()
        deadline = started + timeout_s
        for path in (self.pki, self.run_dir, self.state_dir / "etcd"):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.run_dir, self.logs):
            path.mkdir(parents=True, exist_ok=True)
        make_pki(self.pki)
        ports = {key: free_port() for key in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler")}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        ca_pem = (self.pki / "ca.crt").read_bytes()
        for identity in IDENTITIES:
            # Certificates inline: the file stands alone (Pulumi keeps it in the provider's state).
            creds = {key: base64.b64encode((self.pki / f"{identity.name}.{ext}").read_bytes()).decode()
                     for key, ext in (("client-certificate-data", "crt"), ("client-key-data", "key"))}
            doc = kubeconfig_document(server, ca_pem, identity.common_name, creds)
            path = self.kubeconfig if identity.name == "admin" else self._kubeconfig_of(identity.name)
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            path.chmod(0o600)
        try:
            self._start("etcd", self._etcd_command(ports), {"etcd": ports["etcd"], "etcd-peer": ports["etcd-peer"]})
            self._wait("etcd", deadline, lambda: self._http_ok(f"http://127.0.0.1:{ports['etcd']}/health"))
            self._start("kube-apiserver", self._apiserver_command(ports), {"apiserver": ports["apiserver"]})
            self._wait("kube-apiserver", deadline, lambda: self._https_ok(f"{server}/readyz"))
            self._start("kube-controller-manager", self._controller_manager_command(ports),
                        {"controller-manager": ports["controller-manager"]})
            self._start("kube-scheduler", self._scheduler_command(ports), {"scheduler": ports["scheduler"]})
            self._start("kwok", self._kwok_command(), {})
            self._create_nodes()
            self._create_storage()
            self._wait("kwok", deadline, self._nodes_ready)
            self._wait("kube-controller-manager", deadline, self._default_service_account)
            self._wait("kube-scheduler", deadline, lambda: self._https_ok(
                f"https://127.0.0.1:{ports['scheduler']}/healthz", client=False))
        except BaseException:
            self.down()
            raise
        info = ClusterInfo(self.kubeconfig, server, ports, time.monotonic() - started,
                           [n for p in self.pools for n in self._node_names(p)])
        return info

    def _start(self, component: str, command: list[str], ports: dict[str, int]) -> None:
        log = self.logs / f"{component}.log"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.state_dir)}
        proc = start_detached(command, env=env, cwd=self.state_dir, log_path=log)
        new_record(component, proc, command, ports, log).save(self._record_path(component))

    def _wait(self, component: str, deadline: float, ready) -> None:
        record = ProcessRecord.load(self._record_path(component))
        last_error = ""
        while time.monotonic() < deadline:
            if record is not None and not record.leader_alive():
                raise ServiceFailedError(component, "exited during start-up", record.log, self._log_tail(component))
            try:
                if ready():
                    return
            except Exception as error:  # noqa: BLE001 - not ready yet; the last reason goes in the error
                last_error = f"{type(error).__name__}: {error}"
            time.sleep(0.2)
        raise ServiceFailedError(component, f"not ready in time ({last_error or 'no answer'})",
                                 record.log if record else None, self._log_tail(component))

    def _log_tail(self, component: str, lines: int = 15) -> str:
        try:
            return "\n".join((self.logs / f"{component}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @staticmethod
    def _http_ok(url: str) -> bool:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200

    def _ssl_context(self, client: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if client:
            context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        else:  # the scheduler's self-signed serving certificate: only "it answers" matters
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _https_ok(self, url: str, client: bool = True) -> bool:
        with urllib.request.urlopen(url, timeout=2, context=self._ssl_context(client)) as response:
            return response.status == 200

    # -- commands ----------------------------------------------------------------------
    def _etcd_command(self, ports: dict[str, int]) -> list[str]:
        client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
        return [str(self.binary("etcd")), "--name=strata-local", f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=strata-local={peer}", "--unsafe-no-fsync", "--log-level=warn"]

    def _apiserver_command(self, ports: dict[str, int]) -> list[str]:
        pki = self.pki
        return [str(self.binary("kube-apiserver")), f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-account-issuer={SA_ISSUER}", f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC", "--allow-privileged=true", "--profiling=false",
                "--anonymous-auth=false"]

    def _controller_manager_command(self, ports: dict[str, int]) -> list[str]:
        kubeconfig = self._kubeconfig_of("controller-manager")
        return [str(self.binary("kube-controller-manager")), f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={ports['controller-manager']}",
                f"--cert-dir={self.state_dir / 'controller-manager-certs'}", "--leader-elect=false",
                "--use-service-account-credentials=true", f"--service-account-private-key-file={self.pki / 'sa.key'}",
                f"--root-ca-file={self.pki / 'ca.crt'}", f"--cluster-signing-cert-file={self.pki / 'ca.crt'}",
                f"--cluster-signing-key-file={self.pki / 'ca.key'}", "--controllers=*",
                "--node-monitor-grace-period=60s"]

    def _scheduler_command(self, ports: dict[str, int]) -> list[str]:
        kubeconfig = self._kubeconfig_of("scheduler")
        return [str(self.binary("kube-scheduler")), f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={ports['scheduler']}",
                f"--cert-dir={self.state_dir / 'scheduler-certs'}", "--leader-elect=false"]

    def _kwok_command(self) -> list[str]:
        return [str(self.binary("kwok")), f"--kubeconfig={self._kubeconfig_of('kwok')}",
                f"--config={self.bin_dir / f'kwok-stages-{KWOK_VERSION}.yaml'}",
                "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}", "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40"]

    # -- nodes -------------------------------------------------------------------------
    def api_client(self):
        from kubernetes import client, config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    @staticmethod
    def _node_names(pool: NodePool) -> list[str]:
        return [f"kwok-{pool.name}-{index}" for index in range(pool.count)]

    def _create_nodes(self) -> None:
        from kubernetes import client

        api = client.CoreV1Api(self.api_client())
        for zone, pool in enumerate(self.pools):
            for index, name in enumerate(self._node_names(pool)):
                capacity = {"cpu": pool.cpu, "memory": pool.memory, "pods": "110", "ephemeral-storage": "100Gi"}
                if pool.gpus:
                    capacity[GPU_TAINT_KEY] = str(pool.gpus)
                labels = {**pool.labels(), "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                          "kubernetes.io/arch": "amd64",
                          "topology.kubernetes.io/zone": f"local-{'abc'[(zone + index) % 3]}"}
                api.create_node({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
                    "spec": {"taints": pool.taints()},
                    "status": {"capacity": capacity, "allocatable": capacity},
                })

    def _create_storage(self) -> None:
        """A default StorageClass with a pool of pre-made volumes: no provisioner runs here,
        so claims are bound by the controller-manager's volume binder to these."""
        from kubernetes import client

        api = self.api_client()
        client.StorageV1Api(api).create_storage_class({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate", "reclaimPolicy": "Delete",
        })
        core = client.CoreV1Api(api)
        for index in range(VOLUME_POOL_SIZE):
            core.create_persistent_volume({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": f"local-volume-{index}"},
                "spec": {"capacity": {"storage": VOLUME_SIZE}, "accessModes": ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
                         "hostPath": {"path": str(self.state_dir / "volumes" / str(index))}},
            })

    def _nodes_ready(self) -> bool:
        from kubernetes import client

        nodes = client.CoreV1Api(self.api_client()).list_node().items
        ready = [n for n in nodes if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])]
        return len(ready) == sum(p.count for p in self.pools)

    def _default_service_account(self) -> bool:
        from kubernetes import client

        api = client.CoreV1Api(self.api_client())
        api.read_namespaced_service_account("default", "default")
        api.read_namespaced_config_map("kube-root-ca.crt", "default")
        return True

    # -- CRDs --------------------------------------------------------------------------
    def install_crds(self, documents: Iterable[dict[str, Any]], timeout_s: float = 180.0) -> list[str]:
        """Create (or replace) each CRD and wait until every one is Established and published
        in /openapi/v2 (about 40 large CRDs: a minute or more on a loaded 2-core machine)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api = client.ApiextensionsV1Api(self.api_client())
        names, documents_kinds = [], set()
        for doc in documents:
            name = doc["metadata"]["name"]
            documents_kinds |= openapi_definitions(doc)
            body = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                    "metadata": {"name": name, "labels": (doc["metadata"].get("labels") or {})}, "spec": doc["spec"]}
            try:
                api.create_custom_resource_definition(body)
            except ApiException as error:
                if error.status != 409:
                    raise ClusterError(f"CRD {name} refused by the API server: {error.status} {error.body}") from None
                current = api.read_custom_resource_definition(name)
                body["metadata"]["resourceVersion"] = current.metadata.resource_version
                api.replace_custom_resource_definition(name, body)
            names.append(name)
        deadline = time.monotonic() + timeout_s
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                crd = api.read_custom_resource_definition(name)
                if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
                    pending.discard(name)
            if pending:
                time.sleep(0.2)
        if pending:
            raise ClusterError(f"CRDs not Established after {timeout_s:.0f}s: {', '.join(sorted(pending))}")
        self._publish_openapi(documents_kinds, time.monotonic() + OPENAPI_TIMEOUT_S)
        return names

    def _publish_openapi(self, kinds: set[str], deadline: float) -> None:
        """Wait until /openapi/v2 lists every CRD kind, in JSON and in protobuf. The API
        server builds that document lazily, on the first request after the CRDs change:
        with these operators' CRDs it takes 6-20 s on a loaded machine, longer than client
        timeouts allow (pulumi-kubernetes gives up at 32 s and calls the cluster
        unreachable). Asked once here, it is cached and answered in a fraction of a second."""
        url = f"{self.info().server}/openapi/v2"
        missing: set[str] = set(kinds)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterError(f"/openapi/v2 does not list {', '.join(sorted(missing))} "
                                   f"{OPENAPI_TIMEOUT_S:.0f}s after the CRDs were Established")
            try:
                with urllib.request.urlopen(url, timeout=remaining, context=self._ssl_context()) as response:
                    missing = kinds - set(json.load(response).get("definitions", {}))
            except OSError:
                missing = set(kinds)
            if not missing:
                break
            time.sleep(0.5)
        request = urllib.request.Request(url, headers={"Accept": OPENAPI_PROTOBUF})
        with urllib.request.urlopen(request, timeout=max(deadline - time.monotonic(), 1), context=self._ssl_context()) as response:
            response.read()

    # -- down --------------------------------------------------------------------------
    def down(self, timeout_s: float = 15.0) -> list[str]:
        """Stop every component (reverse start order); returns the ones stopped. Raises if a
        process group or a port outlives it."""
        stopped, stuck = [], []
        records = self.records()
        for component in reversed(COMPONENTS):
            record = records.get(component)
            if record is None:
                continue
            if record.live_members():
                if stop_group(record, timeout_s):
                    stopped.append(component)
                else:
                    stuck.append(component)
                    continue
            self._record_path(component).unlink(missing_ok=True)
        if stuck:
            raise ClusterError(f"could not stop {', '.join(stuck)} (see {self.run_dir})")
        busy = [f"{k}={p}" for r in records.values() for k, p in r.ports.items() if _port_open(p)]
        deadline = time.monotonic() + 5
        while busy and time.monotonic() < deadline:
            time.sleep(0.1)
            busy = [f"{k}={p}" for r in records.values() for k, p in r.ports.items() if _port_open(p)]
        if busy:
            raise ClusterError(f"ports still open after stopping the cluster: {', '.join(busy)}")
        return stopped


def openapi_definitions(crd: dict[str, Any]) -> set[str]:
    """The /openapi/v2 definition names of a CRD's served versions: `io.ray.v1.RayJob`."""
    spec = crd["spec"]
    group = ".".join(reversed(spec["group"].split(".")))
    return {f"{group}.{version['name']}.{spec['names']['kind']}" for version in spec["versions"]
            if version.get("served", True)}


def service_account_kubeconfig(cluster: LocalCluster, namespace: str, name: str, path: Path,
                               expiration_s: int = 3600) -> Path:
    """A kubeconfig that authenticates as ServiceAccount `namespace/name` with a bound token
    (TokenRequest), trusting the cluster's CA: what a pod's mounted token gives it."""
    from kubernetes import client

    api = client.CoreV1Api(cluster.api_client())
    token = api.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": expiration_s, "audiences": [SA_ISSUER]}}).status.token
    info = cluster.info()
    doc = kubeconfig_document(info.server, (cluster.pki / "ca.crt").read_bytes(), f"{namespace}:{name}", {"token": token})
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


def seldon_deployment_crd() -> dict[str, Any]:
    """A minimal CRD for Seldon Core v1's SeldonDeployment (machinelearning.seldon.io/v1).

    No registry reachable here ships Seldon's CRD (see infra.plan.schemas.CRD_SOURCES), so
    this one has its group, version, kind, names and a status subresource, and keeps every
    field (`x-kubernetes-preserve-unknown-fields`): the API server stores what Pulumi and
    the rollout controller write, but checks none of Seldon's own rules."""
    preserve = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "seldondeployments.machinelearning.seldon.io",
                     "labels": {"app.kubernetes.io/managed-by": "strata-local-cluster"}},
        "spec": {
            "group": "machinelearning.seldon.io", "scope": "Namespaced",
            "names": {"kind": "SeldonDeployment", "listKind": "SeldonDeploymentList", "plural": "seldondeployments",
                      "singular": "seldondeployment", "shortNames": ["sdep"]},
            "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                              "spec": preserve, "status": preserve}}}}],
        },
    }


def operator_crds() -> list[dict[str, Any]]:
    """Every operator CRD the stacks use: the real upstream ones from the schema cache, and
    the minimal SeldonDeployment."""
    from infra.plan.schemas import crd_documents

    return [*crd_documents(), seldon_deployment_crd()]
