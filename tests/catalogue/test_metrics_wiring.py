"""Issue 12, item 2: every metric an alert or dashboard uses is really scraped, in every mode.

Over the rendered plan of each stack (what `strata plan --format json` prints), each contract
metric that a shipped PrometheusRule or dashboard reads is resolved to its path: which pod
exports it on which named port, which Service selects that pod, which ServiceMonitor or
PodMonitor selects that Service (or pod) in a namespace the platform Prometheus watches, and
which NetworkPolicy admits Prometheus there. A metric with no such path in a mode means the
alert or panel would never see data: the test fails, naming the metric and the missing link.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pytest

from infra.plan.harness import Plan, PlannedResource
from workloads.catalogue.model import WORKLOAD_LABEL
from workloads.monitoring import metrics as contract

STACKS = ("quick", "standard", "enterprise")
SERIES = re.compile(r"\bstrata_[a-z0-9_]+\b")
MONITORING_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}
ISTIO_MERGED_PORT = 15020

#: Who emits each contract emitter's metrics, as catalogue components / cluster pods.
EMITTER_COMPONENTS = {
    contract.Emitter.SERVING: {"model-server"},
    contract.Emitter.STREAMING: {"stream-worker"},
    contract.Emitter.DRIFT: {"drift-monitor", "quality-service"},
    contract.Emitter.RETRAIN: {"retrain-trigger"},
    contract.Emitter.COST: {"cost-exporter"},
    contract.Emitter.ROLLOUT: {"rollout-controller"},
    contract.Emitter.TRAINING: {"training-metrics"},  # from MLflow's run records (jobs are too short to scrape)
    contract.Emitter.FEATURES: {"model-server", "stream-worker"},  # models with online features
    contract.Emitter.FEATURE_AGGREGATES: {"feature-aggregator"},  # the CDC pipelines' streaming features
}


def series_to_metric() -> dict[str, contract.Metric]:
    return {series: m for m in contract.CONTRACT for series in (*m.series_names, m.name)}


def used_metrics(plan: Plan) -> dict[str, set[str]]:
    """Contract metric -> the rules/dashboards (object names) that read it."""
    by_series = series_to_metric()
    used: dict[str, set[str]] = {}
    for resource in plan.resources:
        if resource.kind == "PrometheusRule":
            text = json.dumps(resource.inputs.get("spec", {}))
        elif resource.kind == "ConfigMap" and (resource.inputs["metadata"].get("labels") or {}).get("grafana_dashboard"):
            text = json.dumps(resource.inputs.get("data", {}))
        else:
            continue
        for series in SERIES.findall(text):
            if series in by_series:
                used.setdefault(by_series[series].name, set()).add(resource.inputs["metadata"]["name"])
    return used


@dataclass(frozen=True)
class Pod:
    """A pod template of the plan: where it runs, its labels and named container ports."""

    source: PlannedResource
    namespace: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    ports: Mapping[str, int]


def pods(plan: Plan) -> list[Pod]:
    found = []
    for resource in plan.resources:
        meta = resource.inputs.get("metadata") if isinstance(resource.inputs, dict) else None
        if not isinstance(meta, dict):
            continue
        if resource.kind == "Deployment":
            templates = [resource.inputs["spec"]["template"]]
            extra: dict[str, str] = {}
        elif resource.kind == "SeldonDeployment":  # the operator adds seldon-deployment-id = the CR's name
            templates = [c for p in resource.inputs["spec"]["predictors"] for c in p["componentSpecs"]]
            extra = {"seldon-deployment-id": meta["name"]}
        else:
            continue
        for template in templates:
            tmeta = template.get("metadata") or {}
            ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])
                     if "name" in p}
            found.append(Pod(resource, meta["namespace"], {**(tmeta.get("labels") or {}), **extra},
                             tmeta.get("annotations") or {}, ports))
    return found


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def admits_scrape(plan: Plan, pod: Pod, port: int, monitoring: str) -> PlannedResource | None:
    """A NetworkPolicy of the pod's namespace letting the monitoring namespace's Prometheus in
    on `port`: one selecting the pod by its labels before a namespace-wide one (not the
    registration order, which depends on how Pulumi resolves dependencies)."""
    policies = plan.of_kind("NetworkPolicy")
    for policy in sorted(policies, key=lambda p: not ((p.inputs["spec"].get("podSelector") or {}).get("matchLabels"))):
        meta, spec = policy.inputs["metadata"], policy.inputs["spec"]
        if meta["namespace"] != pod.namespace or "Ingress" not in spec.get("policyTypes", []):
            continue
        selector = (spec.get("podSelector") or {}).get("matchLabels") or {}
        if selector and not selects(selector, pod.labels):
            continue
        for rule in spec.get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            for peer in rule.get("from", []):
                ns_sel = peer.get("namespaceSelector") or {}
                names = set((ns_sel.get("matchLabels") or {}).values())
                names |= {v for e in ns_sel.get("matchExpressions", []) for v in e.get("values", [])}
                pod_sel = (peer.get("podSelector") or {}).get("matchLabels") or {}
                if monitoring in names and (not pod_sel or selects(pod_sel, MONITORING_POD_LABELS)):
                    return policy
    return None


def scrape_path(plan: Plan, pod: Pod, monitoring: str) -> str | None:
    """'<Service>/<port> <- ServiceMonitor <name> (NetworkPolicy <name>)', or None."""
    for service in plan.of_kind("Service"):
        smeta, sspec = service.inputs["metadata"], service.inputs["spec"]
        if smeta["namespace"] != pod.namespace or not selects(sspec.get("selector") or {}, pod.labels):
            continue
        for monitor in plan.of_kind("ServiceMonitor"):
            mmeta, mspec = monitor.inputs["metadata"], monitor.inputs["spec"]
            if mmeta["namespace"] != pod.namespace:
                continue  # the platform Prometheus watches every namespace; a monitor selects in its own
            if not selects(mspec["selector"]["matchLabels"], smeta.get("labels") or {}):
                continue
            for endpoint in mspec["endpoints"]:
                for port in sspec["ports"]:
                    if port["name"] != endpoint.get("port"):
                        continue
                    target = port["targetPort"]
                    number = pod.ports.get(target) if isinstance(target, str) else target
                    if number is None:
                        continue
                    if number == ISTIO_MERGED_PORT and not pod.annotations.get("prometheus.io/port"):
                        continue  # merged metrics name the app's port by annotation
                    policy = admits_scrape(plan, pod, number, monitoring)
                    if policy is not None:
                        return (f"{smeta['name']}/{port['name']} <- ServiceMonitor {mmeta['name']} "
                                f"(NetworkPolicy {policy.inputs['metadata']['name']})")
    return None


def emitters(plan: Plan, components: Iterable[str]) -> list[Pod]:
    wanted = set(components)
    return [pod for pod in pods(plan) if pod.labels.get("app.kubernetes.io/component") in wanted
            and WORKLOAD_LABEL in pod.labels]


@pytest.mark.parametrize("stack", STACKS)
def test_every_metric_an_alert_or_dashboard_reads_is_scraped(plans, stack):
    plan = plans[stack]
    used = used_metrics(plan)
    if not plan.spec.capabilities.monitoring:
        assert not used, f"{stack} has no Prometheus but ships rules/dashboards reading {sorted(used)}"
        return
    monitoring = plan.spec.config.namespace_prefix + "monitoring"
    problems = []
    for name, readers in sorted(used.items()):
        metric = contract.metric(name)
        exporters = emitters(plan, EMITTER_COMPONENTS[metric.emitter])
        if not exporters:
            problems.append(f"{name} (read by {sorted(readers)}): no {metric.emitter.value} pod in {stack}")
            continue
        unscraped = [p.source.name for p in exporters if scrape_path(plan, p, monitoring) is None]
        if unscraped:
            problems.append(f"{name}: exported by {unscraped} but nothing scrapes them")
    assert not problems, "\n".join(problems)


def test_the_path_names_its_links(plans):
    """One resolved path, spelled out: the drift exporter of the first model in standard."""
    plan = plans["standard"]
    model = plan.spec.models[0]
    [pod] = [p for p in emitters(plan, {"drift-monitor"}) if p.labels.get("strata.dev/model") == model.name]
    path = scrape_path(plan, pod, "monitoring")
    # standard is meshed: Prometheus (no sidecar) scrapes Istio's merged metrics of the pod
    assert path == (f"{model.name}-drift/http-merged-metrics <- ServiceMonitor {model.name}-drift "
                    f"(NetworkPolicy {model.name}-drift-scrape)")


def test_no_rule_or_panel_ships_without_its_emitter(plans):
    """Standard has no Kafka: the streaming dashboard and the stream alerts are not shipped there."""
    standard, enterprise = used_metrics(plans["standard"]), used_metrics(plans["enterprise"])
    assert not [m for m in standard if m.startswith("strata_stream_")]
    assert [m for m in enterprise if m.startswith("strata_stream_")]


@pytest.mark.parametrize("stack", ("standard", "enterprise"))
def test_training_alerts_ship_with_their_exporter(plans, stack):
    """TrainingJobFailed and the training panels read strata_training_*: the training metrics
    exporter (MLflow's run records) is their emitter, rendered and scraped in every monitored mode."""
    plan = plans[stack]
    used = used_metrics(plan)
    assert "strata_training_runs_total" in used and "strata_training_last_success_timestamp_seconds" in used
    rules = [r for p in plan.of_kind("PrometheusRule") for g in p.inputs["spec"]["groups"] for r in g["rules"]]
    assert any(r.get("alert") == "TrainingJobFailed" for r in rules)
    [pod] = emitters(plan, EMITTER_COMPONENTS[contract.Emitter.TRAINING])
    assert pod.namespace == plan.spec.config.namespace_prefix + "monitoring"
    assert scrape_path(plan, pod, pod.namespace) is not None
