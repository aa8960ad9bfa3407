"""`Monitoring`: kube-prometheus-stack (Prometheus, Alertmanager, Grafana with the dashboard
sidecar, prometheus-operator, kube-state-metrics, node-exporter).

The Alertmanager configuration is the one generated from the model specs by
`workloads.monitoring.alertmanager` (one source for rules, routes and receivers); it
holds no keys, only `routing_key_file` paths. The PagerDuty routing keys themselves go
from the secret Output `strata:pagerdutyRoutingKeys` into ONE Kubernetes Secret
(`strata-pagerduty-routing-keys`, one file per routingKeyName) that the Alertmanager
pods mount (`alertmanagerSpec.secrets`) at exactly the directory the generated config
reads. The keys therefore never appear in Helm values, plain inputs or the plan.

With `MonitoringArgs.observability` (the stack's model specs), a child
`strata:platform:Observability` (`infra.platform.observability`) deploys the generated
PrometheusRules and dashboard ConfigMaps and, where the mode has drift monitoring, the
retraining trigger that the Alertmanager config's `retrain-webhook` receiver calls.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s import labels, resources
from infra.platform.charts import helm_release
from infra.platform.observability import (GRAFANA_DASHBOARD_LABEL, GRAFANA_FOLDER_ANNOTATION, Observability,
                                          ObservabilityArgs, retrain_webhook_url)
from workloads.monitoring.alertmanager import RETRAIN_TOKEN_SECRET, ROUTING_KEY_DIR

ALERTMANAGER_SECRETS_DIR = "/etc/alertmanager/secrets"  # where prometheus-operator mounts `secrets`
ROUTING_KEYS_SECRET = posixpath.basename(ROUTING_KEY_DIR)

if posixpath.dirname(ROUTING_KEY_DIR) != ALERTMANAGER_SECRETS_DIR:  # the generated config must find the mount
    raise RuntimeError(f"ROUTING_KEY_DIR {ROUTING_KEY_DIR!r} is not under {ALERTMANAGER_SECRETS_DIR}")


def required_routing_keys(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The routingKeyNames the Alertmanager configuration reads a file for."""
    names = {
        posixpath.basename(pd["routing_key_file"])
        for receiver in config.get("receivers", [])
        for pd in receiver.get("pagerduty_configs", [])
        if "routing_key_file" in pd
    }
    return tuple(sorted(names))


def webhook_urls(config: Mapping[str, Any], receiver: str) -> tuple[str, ...]:
    """The webhook URLs of one receiver of an Alertmanager configuration."""
    return tuple(
        hook["url"]
        for r in config.get("receivers", []) if r.get("name") == receiver
        for hook in r.get("webhook_configs", [])
    )


def routing_key_files(routing_keys: Any, required: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Secret data (routingKeyName -> key) and the required names that have no key."""
    if not isinstance(routing_keys, Mapping):
        raise ValueError("strata:pagerdutyRoutingKeys: must be a map of routingKeyName -> PagerDuty routing key")
    data = {str(name): str(key) for name, key in routing_keys.items()}
    return data, sorted(set(required) - set(data))


@dataclass(frozen=True)
class MonitoringArgs:
    """Defaults: single replicas, 15 days of metrics on 50 GiB, no Alertmanager routes."""

    namespace: str
    ha: bool = False  # 2 Prometheus, 3 Alertmanager, 2 Grafana replicas (+ PDBs)
    retention: str = "15d"
    prometheus_storage_gib: int = 50
    alertmanager_storage_gib: int = 5
    storage_class: Optional[str] = None
    alertmanager_config: Mapping[str, Any] = field(default_factory=dict)  # workloads.monitoring.alertmanager
    # The generated rules/dashboards (+ retraining trigger) of the stack's models; None: none deployed.
    observability: Optional[ObservabilityArgs] = None

    def __post_init__(self) -> None:
        obs = self.observability
        if obs is None:
            return
        if obs.namespace != self.namespace:
            raise ValueError(f"MonitoringArgs.observability.namespace: {obs.namespace!r} is not the monitoring "
                             f"namespace {self.namespace!r}")
        if obs.retrain and self.alertmanager_config:
            expected = retrain_webhook_url(self.namespace)
            urls = webhook_urls(self.alertmanager_config, "retrain-webhook")
            if urls != (expected,):
                raise ValueError(
                    f"MonitoringArgs.alertmanager_config: receiver 'retrain-webhook' calls {list(urls)}, but the "
                    f"retraining trigger is {expected}: generate the config with "
                    f"AlertmanagerOptions(retrain_webhook_url=retrain_webhook_url({self.namespace!r}))")


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, pagerduty_routing_keys: pulumi.Output,
                 after: Sequence[pulumi.Resource] = (), opts: Optional[pulumi.ResourceOptions] = None,
                 team_namespaces: Sequence[pulumi.Resource] = ()):
        super().__init__("strata:platform:Monitoring", name, None, opts)
        if pagerduty_routing_keys is None:
            raise ValueError("strata:pagerdutyRoutingKeys: required where monitoring is enabled "
                             "(`pulumi config set --secret --path strata:pagerdutyRoutingKeys.<name> <key>`)")
        child = pulumi.ResourceOptions(parent=self, depends_on=list(after))
        required = required_routing_keys(args.alertmanager_config)

        def files(keys: Any) -> dict[str, str]:
            data, missing = routing_key_files(keys, required)
            if missing:
                pulumi.log.error(
                    f"strata:pagerdutyRoutingKeys: no routing key for {', '.join(missing)} (`pulumi config set "
                    f"--secret --path 'strata:pagerdutyRoutingKeys.<name>' <key>`); their pages cannot be sent",
                    resource=self)
            return data

        self.routing_keys = k8s.core.v1.Secret(
            f"{name}-pagerduty-routing-keys",
            metadata={"name": ROUTING_KEYS_SECRET, "namespace": args.namespace,
                      "labels": labels("alertmanager", "pagerduty-routing-keys")},
            type="Opaque",
            string_data=pulumi.Output.secret(pulumi.Output.secret(pagerduty_routing_keys).apply(files)),
            opts=child,
        )

        def pvc(size_gib: int) -> dict[str, Any]:
            spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": f"{size_gib}Gi"}}}
            if args.storage_class:
                spec["storageClassName"] = args.storage_class
            return {"volumeClaimTemplate": {"spec": spec}}

        ha = args.ha
        retrain = args.observability is not None and args.observability.retrain
        self.release = helm_release(
            f"{name}-release", "kube-prometheus-stack", release_name="kube-prometheus-stack", namespace=args.namespace,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*after, self.routing_keys]), timeout_s=900, values={
                "crds": {"enabled": True},
                "defaultRules": {"create": True, "labels": {"team": "platform"}},
                "prometheusOperator": {"resources": resources("100m", "256Mi", "500m", "512Mi")},
                "prometheus": {
                    "podDisruptionBudget": {"enabled": ha, "maxUnavailable": 1},
                    "prometheusSpec": {
                        "replicas": 2 if ha else 1,
                        "retention": args.retention,
                        "resources": resources("500m", "2Gi", "2", "8Gi"),
                        "storageSpec": pvc(args.prometheus_storage_gib),
                        # Select every ServiceMonitor/PodMonitor/PrometheusRule, not only this release's.
                        "serviceMonitorSelectorNilUsesHelmValues": False,
                        "podMonitorSelectorNilUsesHelmValues": False,
                        "ruleSelectorNilUsesHelmValues": False,
                        "probeSelectorNilUsesHelmValues": False,
                        "podAntiAffinity": "soft" if ha else "",
                    },
                },
                "alertmanager": {
                    "podDisruptionBudget": {"enabled": ha, "maxUnavailable": 1},
                    "config": dict(args.alertmanager_config),
                    "alertmanagerSpec": {
                        "replicas": 3 if ha else 1,
                        # mounted at ROUTING_KEY_DIR; the retrain webhook's token at RETRAIN_TOKEN_FILE
                        "secrets": [ROUTING_KEYS_SECRET, *([RETRAIN_TOKEN_SECRET] if retrain else [])],
                        "resources": resources("50m", "128Mi", "200m", "256Mi"),
                        "storage": pvc(args.alertmanager_storage_gib),
                        "podAntiAffinity": "soft" if ha else "",
                    },
                },
                "grafana": {
                    "replicas": 2 if ha else 1,
                    "resources": resources("100m", "256Mi", "500m", "512Mi"),
                    "podDisruptionBudget": {"maxUnavailable": 1} if ha else {},
                    "sidecar": {
                        "resources": resources("50m", "64Mi", "200m", "256Mi"),
                        "dashboards": {"enabled": True, "label": GRAFANA_DASHBOARD_LABEL, "labelValue": "1",
                                       "searchNamespace": "ALL", "folderAnnotation": GRAFANA_FOLDER_ANNOTATION,
                                       "provider": {"foldersFromFilesStructure": True}},
                        "datasources": {"enabled": True},
                    },
                },
                "kube-state-metrics": {"resources": resources("50m", "128Mi", "200m", "256Mi")},
                "prometheus-node-exporter": {"resources": resources("50m", "64Mi", "200m", "128Mi")},
            })
        self.namespace = args.namespace
        self.observability: Optional[Observability] = None
        if args.observability is not None:
            self.observability = Observability(
                f"{name}-observability", args.observability, prometheus_operator=self.release, after=after,
                team_namespaces=team_namespaces, opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({"release": self.release.status, "namespace": args.namespace,
                               "retrainWebhookUrl": self.observability.webhook_url if self.observability else None})
