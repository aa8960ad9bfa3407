"""prometheus-operator custom resources: `ServiceMonitor` and `PrometheusRule`.

Mirrors `monitoring.coreos.com/v1` as served by prometheus-operator **v0.93.1** (the
CRDs bundled with kube-prometheus-stack 88.5.3, pinned in `infra.platform.charts`:
`charts/kube-prometheus-stack/charts/crds/crds/crd-{servicemonitors,prometheusrules}.yaml`
of prometheus-community/helm-charts at tag kube-prometheus-stack-88.5.3); API reference:
https://prometheus-operator.dev/docs/api-reference/api/ .

The platform's Prometheus selects every ServiceMonitor/PrometheusRule in the cluster
(`*SelectorNilUsesHelmValues: false`), so no release label is needed.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field

from infra.crds import CrdModel, ObjectMeta, custom_resource

API_VERSION = "monitoring.coreos.com/v1"
OPERATOR_VERSION = "v0.93.1"

_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"


class LabelSelector(CrdModel):
    match_labels: dict[str, str]


class NamespaceSelector(CrdModel):
    any: bool | None = None
    match_names: list[str] | None = None


class Endpoint(CrdModel):
    port: str | None = None  # the Service port's name
    path: str | None = None
    interval: str | None = Field(None, pattern=_DURATION)
    scrape_timeout: str | None = Field(None, pattern=_DURATION)
    scheme: str | None = None


class ServiceMonitorSpec(CrdModel):
    selector: LabelSelector
    endpoints: list[Endpoint] = Field(min_length=1)
    namespace_selector: NamespaceSelector | None = None
    job_label: str | None = None


class Rule(CrdModel):
    expr: str
    alert: str | None = None
    record: str | None = None
    for_: str | None = Field(None, alias="for", pattern=_DURATION)
    keep_firing_for: str | None = Field(None, pattern=_DURATION)
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class RuleGroup(CrdModel):
    name: str
    interval: str | None = Field(None, pattern=_DURATION)
    rules: list[Rule]


class PrometheusRuleSpec(CrdModel):
    groups: list[RuleGroup]


def service_monitor(resource_name: str, *, name: str, namespace: str, spec: ServiceMonitorSpec,
                    operator: pulumi.Resource, opts: pulumi.ResourceOptions | None = None,
                    labels: dict[str, str] | None = None) -> k8s.apiextensions.CustomResource:
    return custom_resource(resource_name, api_version=API_VERSION, kind="ServiceMonitor",
                           metadata=ObjectMeta(name=name, namespace=namespace, labels=labels),
                           spec=spec, operator=operator, opts=opts)


def prometheus_rule(resource_name: str, *, name: str, namespace: str, spec: PrometheusRuleSpec,
                    operator: pulumi.Resource, opts: pulumi.ResourceOptions | None = None,
                    labels: dict[str, str] | None = None) -> k8s.apiextensions.CustomResource:
    return custom_resource(resource_name, api_version=API_VERSION, kind="PrometheusRule",
                           metadata=ObjectMeta(name=name, namespace=namespace, labels=labels),
                           spec=spec, operator=operator, opts=opts)
