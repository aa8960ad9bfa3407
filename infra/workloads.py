"""The cluster renderer of the workload catalogue (`workloads.catalogue`).

`RenderedWorkload` (type token `strata:workloads:Workload`) turns one declaration into:

| object            | when                                                   | derived from                      |
|-------------------|--------------------------------------------------------|-----------------------------------|
| Deployment        | the workload owns its pods (`pod_owner` is None)       | command/args/env/ports/probes/resources; `singleton` -> Recreate |
| Service           | it has ports                                           | the pod's NAMED ports (targetPort by name) |
| ServiceMonitor    | it has a metrics block and the mode has Prometheus     | the Service's metrics port by NAME, the metrics path and interval; job = `metrics.job` |
| NetworkPolicy x2  | per dependency edge `{workload, port}`                 | egress here + ingress on the peer, one edge (cdk8s-plus `allowTo`) |
| NetworkPolicy     | it has metrics and the mode has Prometheus             | ingress from the platform Prometheus on the scraped port |
| PodDisruptionBudget | `replicas > 1` (or autoscaled above 1)               | the selector labels               |

Pods whose template another object builds (`pod_owner`: the SeldonDeployment, a sidecar)
get everything above except the Deployment; `container()` renders the declaration's
container for whoever builds that pod (the stream worker's Deployment, which KEDA scales).

Inside the Istio mesh (team namespaces are injected, `istio=True`) Prometheus, which has no
sidecar, scrapes the agent's merged metrics (`:15020/stats/prometheus`: the app's own
metrics, as named by `prometheus.io/*` pod annotations, plus the proxy's), which works
under STRICT mTLS; the Service then carries that port too and the ServiceMonitor selects it.

What it cannot honour (`UNHONOURED`): `start_timeout_s` (probes' delays stand in for it).
Placeholders resolve through the shared `workloads.catalogue.substitution`:
`${bind}` is the pod's own IP (downward API `POD_IP`), never 0.0.0.0.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra.crds import prometheus as prometheus_crds
from infra.k8s import (NAMESPACE_NAME_LABEL, container as hardened_container, http_probe,
                       pod_disruption_budget_spec, restricted_pod_security_context)
from workloads.catalogue.model import Placement, Resource, Workload
from workloads.catalogue.substitution import render_argv, substitute

UNHONOURED = {"start_timeout_s": "readiness probes gate traffic instead of a start timeout"}
JOB_LABEL = "strata.dev/job"  # Service label the ServiceMonitors take the job name from
ISTIO_MERGED_METRICS_PORT = 15020
ISTIO_MERGED_METRICS_NAME = "http-merged-metrics"
ISTIO_MERGED_METRICS_PATH = "/stats/prometheus"
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}  # kube-prometheus-stack's Prometheus pods
POD_IP = "POD_IP"
BIND = f"$({POD_IP})"  # Kubernetes expands $(VAR) from the container's env in command/args

Provisioner = Callable[[Workload, Resource, str], str]


def waits_for(resources: Sequence[pulumi.Resource]) -> pulumi.ResourceTransformation:
    """A component transformation: every resource under it (Pulumi applies a component's
    transformations to all its descendants) also depends on `resources`, e.g. the namespaces
    it lands in, whose names are plain strings that carry no dependency, so `up` could
    create objects before their namespace."""
    resources = list(resources)

    def transformation(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult:
        return pulumi.ResourceTransformationResult(
            args.props, pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(depends_on=resources)))

    return transformation


@dataclass(frozen=True)
class ClusterContext:
    """What the cluster renderer needs to know about where things are (resolved by the caller)."""

    namespaces: Mapping[Placement, str]  # MONITORING, MLFLOW; TEAM per team below
    team_namespaces: Mapping[str, str]  # team -> namespace
    catalogue: Mapping[str, Workload]
    provisioners: Mapping[str, Provisioner] = field(default_factory=dict)  # resource type -> outputs
    prometheus: bool = False  # the mode runs the platform Prometheus (ServiceMonitors, scrape ingress)
    istio: bool = False  # team namespaces are in the mesh

    def namespace_of(self, workload: Workload) -> str:
        if workload.placement is Placement.TEAM:
            team = workload.labels.get("strata.dev/team")
            if team not in self.team_namespaces:
                raise ValueError(f"workload {workload.name}: no namespace for team {team!r}")
            return self.team_namespaces[team]
        return self.namespaces[workload.placement]

    def meshed(self, workload: Workload) -> bool:
        return self.istio and workload.placement is Placement.TEAM


class ClusterResolver:
    def __init__(self, ctx: ClusterContext):
        self.ctx = ctx

    def bind(self, workload: Workload) -> str:
        return BIND

    def own_port(self, workload: Workload, port: str) -> int:
        return workload.port(port).port

    def workload_address(self, workload: Workload, target: str, port: str) -> str:
        if target not in self.ctx.catalogue:
            raise KeyError(f"{target!r} is not in the catalogue")
        peer = self.ctx.catalogue[target]
        return f"{service_name(peer)}.{self.ctx.namespace_of(peer)}.svc.cluster.local:{peer.port(port).port}"

    def resource_output(self, workload: Workload, name: str, resource: Resource, output: str) -> str:
        provisioner = self.ctx.provisioners.get(resource.type)
        if provisioner is None:
            raise KeyError(f"resource type {resource.type!r} has no cluster provisioner here")
        return provisioner(workload, resource, output)


def _probe(workload: Workload, probe) -> dict[str, Any]:
    return http_probe(probe.path, probe.port, initial_delay=probe.initial_delay_s, period=probe.period_s,
                      failures=probe.failures)


def container(workload: Workload, ctx: ClusterContext, *, image: pulumi.Input[str] | None = None,
              prelude: Sequence[str] = (), extra_env: Sequence[Mapping[str, Any]] = (),
              volume_mounts: Sequence[Mapping[str, Any]] = (), run_as_user: int | None = None) -> dict[str, Any]:
    """The declaration's container: argv and env resolved, named ports, probes, resources.
    `prelude`: shell commands that must succeed first (e.g. a download), then `exec` argv."""
    from infra.platform.observability import pinned_image

    resolver = ClusterResolver(ctx)
    argv = render_argv(workload, resolver)
    if prelude:
        # Kubernetes expands $(POD_IP) in the string before the shell runs it (an IP needs no quotes)
        line = " && ".join([*prelude, "exec " + shlex.join(argv)]).replace(shlex.quote(BIND), BIND)
        command, args = ["/bin/sh", "-c"], [line]
    else:
        command, args = argv[: len(workload.command)], argv[len(workload.command):]
    env: list[dict[str, Any]] = [{"name": POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    for var in workload.env:
        if var.secret is not None:
            env.append({"name": var.name, "valueFrom": {"secretKeyRef": {"name": var.secret.secret,
                                                                         "key": var.secret.key}}})
        else:
            env.append({"name": var.name, "value": substitute(var.value or "", workload, resolver)})
    env += [{"name": "HOME", "value": "/tmp"}, *extra_env]
    res = workload.resources
    fields: dict[str, Any] = {"command": command, "args": args, "env": env,
                              "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *volume_mounts]}
    if workload.ports:
        fields["ports"] = [{"name": p.name, "containerPort": p.port, "protocol": p.protocol} for p in workload.ports]
    if workload.liveness is None or workload.readiness is None:
        return _sidecar(workload, image, res, run_as_user, fields)
    return hardened_container(
        name=workload.component, image=image if image is not None else pinned_image(workload.image),
        resources={"requests": {"cpu": res.cpu_request, "memory": res.memory_request},
                   "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit}},
        liveness_probe=_probe(workload, workload.liveness), readiness_probe=_probe(workload, workload.readiness),
        run_as_user=run_as_user, **fields)


def _sidecar(workload: Workload, image, res, run_as_user, fields) -> dict[str, Any]:
    """A container without HTTP probes (e.g. the registry sync): the caller adds exec probes."""
    from infra.k8s import restricted_container_security_context
    from infra.platform.observability import pinned_image

    return {"name": workload.component, "image": image if image is not None else pinned_image(workload.image),
            "imagePullPolicy": "IfNotPresent",
            "resources": {"requests": {"cpu": res.cpu_request, "memory": res.memory_request},
                          "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit}},
            "securityContext": restricted_container_security_context(run_as_user), **fields}


def scrape_annotations(workload: Workload) -> dict[str, str]:
    """What Istio's metrics merging reads to serve the app's metrics on :15020."""
    assert workload.metrics is not None
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(workload.port(workload.metrics.port).port),
            "prometheus.io/path": workload.metrics.path}


def service_ports(workload: Workload, ctx: ClusterContext) -> list[dict[str, Any]]:
    """grafana/jsonnet-libs `serviceFor`: every named container port, by name."""
    ports = [{"name": p.name, "port": p.port, "targetPort": p.name, "protocol": p.protocol,
              "appProtocol": p.app_protocol} for p in workload.ports]
    if workload.metrics is not None and ctx.meshed(workload):
        ports.append({"name": ISTIO_MERGED_METRICS_NAME, "port": ISTIO_MERGED_METRICS_PORT,
                      "targetPort": ISTIO_MERGED_METRICS_PORT, "protocol": "TCP", "appProtocol": "http"})
    return ports


def scrape_endpoint(workload: Workload, ctx: ClusterContext) -> tuple[str, str, int]:
    """(Service port name, path, container port) Prometheus scrapes for this workload."""
    assert workload.metrics is not None
    if ctx.meshed(workload):
        return ISTIO_MERGED_METRICS_NAME, ISTIO_MERGED_METRICS_PATH, ISTIO_MERGED_METRICS_PORT
    return workload.metrics.port, workload.metrics.path, workload.port(workload.metrics.port).port


def service_name(workload: Workload) -> str:
    """Our Service of a workload; `-metrics` where the pod owner (Seldon) names its own Services."""
    return workload.name if workload.pod_owner is None else f"{workload.name}-metrics"


def _peer(namespace: str, pods: Mapping[str, str]) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}},
            "podSelector": {"matchLabels": dict(pods)}}


def edge_policies(workload: Workload, ctx: ClusterContext) -> list[tuple[str, dict[str, Any]]]:
    """(role, NetworkPolicy manifest) for each dependency edge: egress from this workload's
    pods, ingress on the peer's pods, both on the peer's port; plus Prometheus's scrape."""
    ns = ctx.namespace_of(workload)
    policies = []
    for dep in workload.depends_on:
        peer = ctx.catalogue[dep.workload]
        peer_ns, port = ctx.namespace_of(peer), peer.port(dep.port).port
        name = f"{workload.name}-to-{peer.name}"
        policies.append((f"egress-{peer.name}", {
            "metadata": {"name": name, "namespace": ns, "labels": workload.common_labels},
            "spec": {"podSelector": {"matchLabels": workload.selector_labels}, "policyTypes": ["Egress"],
                     "egress": [{"to": [_peer(peer_ns, peer.selector_labels)],
                                 "ports": [{"port": port, "protocol": "TCP"}]}]}}))
        policies.append((f"ingress-{peer.name}", {
            "metadata": {"name": f"{name}-ingress", "namespace": peer_ns, "labels": peer.common_labels},
            "spec": {"podSelector": {"matchLabels": peer.selector_labels}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [_peer(ns, workload.selector_labels)],
                                  "ports": [{"port": port, "protocol": "TCP"}]}]}}))
    if workload.metrics is not None and ctx.prometheus:
        _, _, port = scrape_endpoint(workload, ctx)
        policies.append(("scrape", {
            "metadata": {"name": f"{workload.name}-scrape", "namespace": ns, "labels": workload.common_labels},
            "spec": {"podSelector": {"matchLabels": workload.selector_labels}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [_peer(ctx.namespaces[Placement.MONITORING], PROMETHEUS_POD_LABELS)],
                                  "ports": [{"port": port, "protocol": "TCP"}]}]}}))
    return policies


@dataclass(frozen=True)
class PodPatch:
    """The cluster-only parts of a pod (Score's patch templates): identity, volumes, sidecars."""

    service_account: Optional[str] = None
    automount_token: bool = False
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    sidecars: tuple[Mapping[str, Any], ...] = ()
    prelude: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    image: pulumi.Input[str] | None = None
    extra_env: tuple[Mapping[str, Any], ...] = ()  # cluster-only facts (own namespace, object names)
    max_replicas: int = 1  # autoscaled (KEDA/HPA) above `replicas`: a PDB is due when > 1
    pod_spec: Mapping[str, Any] = field(default_factory=dict)  # affinity, grace period, ...


def deployment_spec(workload: Workload, ctx: ClusterContext, patch: PodPatch) -> dict[str, Any]:
    from infra.k8s import empty_dir

    main = container(workload, ctx, image=patch.image, prelude=patch.prelude, volume_mounts=patch.volume_mounts,
                     extra_env=patch.extra_env)
    annotations = dict(patch.annotations)
    if workload.metrics is not None and ctx.meshed(workload):
        annotations.update(scrape_annotations(workload))
    template_meta: dict[str, Any] = {"labels": workload.common_labels}
    if annotations:
        template_meta["annotations"] = annotations
    spec: dict[str, Any] = {
        "replicas": workload.replicas,
        "selector": {"matchLabels": workload.selector_labels},
        "template": {"metadata": template_meta, "spec": {
            **({"serviceAccountName": patch.service_account} if patch.service_account else {}),
            "automountServiceAccountToken": patch.automount_token,
            "securityContext": restricted_pod_security_context(),
            "containers": [main, *patch.sidecars],
            "volumes": [empty_dir("tmp", "256Mi"), *patch.volumes],
            **patch.pod_spec,
        }},
    }
    if workload.singleton:
        spec["strategy"] = {"type": "Recreate"}
    return spec


class RenderedWorkload(pulumi.ComponentResource):
    """One catalogue workload on the cluster; see the module docstring."""

    def __init__(self, name: str, workload: Workload, ctx: ClusterContext, *, patch: PodPatch = PodPatch(),
                 prometheus_operator: Optional[pulumi.Resource] = None, after: Sequence[pulumi.Resource] = (),
                 deployment_opts: Optional[pulumi.ResourceOptions] = None,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("strata:workloads:Workload", name, None, opts)
        ns = ctx.namespace_of(workload)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(after))
        labels = workload.common_labels
        self.workload = workload
        self.deployment: Optional[k8s.apps.v1.Deployment] = None
        if workload.pod_owner is None:
            self.deployment = k8s.apps.v1.Deployment(
                f"{name}-deployment", metadata={"name": workload.name, "namespace": ns, "labels": labels},
                spec=deployment_spec(workload, ctx, patch),
                opts=pulumi.ResourceOptions.merge(child, deployment_opts or pulumi.ResourceOptions()))
        self.service: Optional[k8s.core.v1.Service] = None
        if workload.ports:
            service_labels = {**labels, **({JOB_LABEL: workload.job} if workload.job else {})}
            self.service = k8s.core.v1.Service(
                f"{name}-service", metadata={"name": service_name(workload), "namespace": ns, "labels": service_labels},
                spec={"selector": workload.selector_labels, "ports": service_ports(workload, ctx)}, opts=child)
            if workload.metrics is not None and ctx.prometheus and prometheus_operator is not None:
                port, path, _ = scrape_endpoint(workload, ctx)
                self.service_monitor = prometheus_crds.service_monitor(
                    f"{name}-service-monitor", name=service_name(workload), namespace=ns, operator=prometheus_operator,
                    labels=labels, opts=child,
                    spec=prometheus_crds.ServiceMonitorSpec(
                        selector=prometheus_crds.LabelSelector(match_labels={
                            **workload.selector_labels, JOB_LABEL: workload.job}),
                        endpoints=[prometheus_crds.Endpoint(port=port, path=path, interval=workload.metrics.interval)],
                        job_label=JOB_LABEL))
        self.network_policies = [
            k8s.networking.v1.NetworkPolicy(f"{name}-netpol-{role}", metadata=manifest["metadata"],
                                            spec=manifest["spec"], opts=child)
            for role, manifest in edge_policies(workload, ctx)]
        self.disruption_budget: Optional[k8s.policy.v1.PodDisruptionBudget] = None
        if max(workload.replicas, patch.max_replicas) > 1:
            self.disruption_budget = k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb", metadata={"name": workload.name, "namespace": ns, "labels": labels},
                spec=pod_disruption_budget_spec(workload.selector_labels,
                                                max_unavailable=workload.disruption.max_unavailable),
                opts=child)
        self.register_outputs({"service": service_name(workload) if workload.ports else None, "namespace": ns})
