"""Alertmanager configuration, generated from the model specs.

- One PagerDuty (Events API v2) receiver pair per routing key name: `pd-<key>-page`
  (severity critical: high urgency) and `pd-<key>-ticket` (severity warning: low urgency).
  Keys are never in this file: `routing_key_file` points at the mounted Secret that the
  platform layer builds from the Pulumi secret `strata:pagerdutyRoutingKeys`
  (one file per `pagerduty.routingKeyName`).
- Routing per team (from the specs); a model whose routing key differs from its team's
  first model gets its own sub-route.
- `retrain="true"` alerts also go (continue) to the retraining webhook, grouped per model.
- Inhibition: a page silences the ticket of the same alert and model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from workloads.monitoring.rules import PAGE, PLATFORM_ROUTING_KEY, PLATFORM_TEAM, TICKET
from workloads.spec import ModelSpec

ROUTING_KEY_DIR = "/etc/alertmanager/secrets/strata-pagerduty-routing-keys"
RETRAIN_WEBHOOK_URL = "http://retrain-trigger.strata-monitoring.svc:8080/v1/alertmanager"
RETRAIN_TOKEN_SECRET = "retrain-trigger-token"  # a Secret with key `token`: the webhook's bearer token
RETRAIN_TOKEN_FILE = f"/etc/alertmanager/secrets/{RETRAIN_TOKEN_SECRET}/token"  # alertmanagerSpec.secrets mount


@dataclass(frozen=True)
class AlertmanagerOptions:
    routing_key_dir: str = ROUTING_KEY_DIR
    pagerduty_url: str | None = None  # None: PagerDuty's default Events v2 endpoint
    retrain_webhook_url: str = RETRAIN_WEBHOOK_URL
    retrain_token_file: str = RETRAIN_TOKEN_FILE  # Alertmanager authenticates to the trigger with it
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"
    page_repeat_interval: str = "1h"
    retrain_repeat_interval: str = "6h"
    resolve_timeout: str = "5m"


def _pagerduty(key: str, severity: str, options: AlertmanagerOptions) -> dict[str, Any]:
    config: dict[str, Any] = {
        "routing_key_file": f"{options.routing_key_dir}/{key}",
        "send_resolved": True,
        "severity": "critical" if severity == PAGE else "warning",
        "client": "Strata Alertmanager",
        "description": "[{{ .CommonLabels.severity }}] {{ .CommonLabels.alertname }}"
                       "{{ if .CommonLabels.model }} ({{ .CommonLabels.model }}){{ end }}: "
                       "{{ .CommonAnnotations.summary }}",
        "component": "{{ .CommonLabels.model }}",
        "group": "{{ .CommonLabels.team }}",
        "class": "{{ .CommonLabels.alertname }}",
        "details": {
            "alertname": "{{ .CommonLabels.alertname }}",
            "team": "{{ .CommonLabels.team }}",
            "model": "{{ .CommonLabels.model }}",
            "firing": "{{ .Alerts.Firing | len }}",
            "description": "{{ .CommonAnnotations.description }}",
            "runbook_url": "{{ .CommonAnnotations.runbook_url }}",
        },
        "links": [{"href": "{{ .CommonAnnotations.runbook_url }}", "text": "Runbook"}],
    }
    if options.pagerduty_url:
        config["url"] = options.pagerduty_url
    return config


def _receiver_name(key: str, severity: str) -> str:
    return f"pd-{key}-{severity}"


def _severity_routes(key: str, options: AlertmanagerOptions) -> list[dict[str, Any]]:
    return [{
        "receiver": _receiver_name(key, PAGE),
        "matchers": [f'severity="{PAGE}"'],
        "repeat_interval": options.page_repeat_interval,
    }]


def team_routing(specs: Sequence[ModelSpec]) -> dict[str, dict[str, str]]:
    """team -> {model: routing key name}."""
    teams: dict[str, dict[str, str]] = {}
    for spec in sorted(specs, key=lambda s: s.name):
        teams.setdefault(spec.team, {})[spec.name] = spec.pagerduty.routing_key_name
    return teams


def alertmanager_config(specs: Sequence[ModelSpec], options: AlertmanagerOptions = AlertmanagerOptions()) -> dict[str, Any]:
    teams = team_routing(specs)
    keys = sorted({PLATFORM_ROUTING_KEY} | {k for models in teams.values() for k in models.values()})

    routes: list[dict[str, Any]] = [{
        "receiver": "retrain-webhook",
        "matchers": ['retrain="true"'],
        "group_by": ["model"],
        "group_wait": options.group_wait,
        "group_interval": options.group_interval,
        "repeat_interval": options.retrain_repeat_interval,
        "continue": True,
    }]
    for team in sorted(teams):
        models = teams[team]
        default_key = models[sorted(models)[0]]
        children = []
        for model in sorted(models):
            if models[model] != default_key:
                children.append({
                    "receiver": _receiver_name(models[model], TICKET),
                    "matchers": [f'model="{model}"'],
                    "routes": _severity_routes(models[model], options),
                })
        children += _severity_routes(default_key, options)
        routes.append({"receiver": _receiver_name(default_key, TICKET), "matchers": [f'team="{team}"'], "routes": children})
    if PLATFORM_TEAM not in teams:
        routes.append({
            "receiver": _receiver_name(PLATFORM_ROUTING_KEY, TICKET),
            "matchers": [f'team="{PLATFORM_TEAM}"'],
            "routes": _severity_routes(PLATFORM_ROUTING_KEY, options),
        })

    receivers: list[dict[str, Any]] = []
    for key in keys:
        for severity in (PAGE, TICKET):
            receivers.append({"name": _receiver_name(key, severity), "pagerduty_configs": [_pagerduty(key, severity, options)]})
    receivers.append({"name": "retrain-webhook", "webhook_configs": [{
        "url": options.retrain_webhook_url, "send_resolved": False, "max_alerts": 0,
        "http_config": {"authorization": {"type": "Bearer", "credentials_file": options.retrain_token_file}},
    }]})

    return {
        "global": {"resolve_timeout": options.resolve_timeout},
        "route": {
            # Unrouted alerts (no or unknown team) reach the platform team as tickets.
            "receiver": _receiver_name(PLATFORM_ROUTING_KEY, TICKET),
            "group_by": ["alertname", "team", "model"],
            "group_wait": options.group_wait,
            "group_interval": options.group_interval,
            "repeat_interval": options.repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": [{
            # A page silences its ticket: same alert, same model (burn-rate windows).
            "source_matchers": [f'severity="{PAGE}"'],
            "target_matchers": [f'severity="{TICKET}"'],
            "equal": ["alertname", "model"],
        }],
        "receivers": receivers,
    }
