"""A model spec with a `features` section, shared by the feature-store tests."""

from __future__ import annotations

from typing import Any

from workloads.spec import ModelSpec, parse_model_spec


def features_section(view: str = "card_activity", n_features: int = 3, ttl: str = "2h",
                     created: bool = True) -> dict[str, Any]:
    return {
        "entities": [{"name": "card", "joinKeys": ["card_id"]}],
        "views": [{
            "name": view, "source": f"gold/{view}", "entities": ["card"], "timestampField": "event_ts",
            **({"createdTimestampField": "created_ts"} if created else {}), "ttl": ttl,
            "features": [{"name": f"f{i}", "dtype": "float64", "default": -1.0} for i in range(n_features)],
        }],
        "onOutage": "defaults",
    }


def model_spec(name: str = "fraud-features", **features: Any) -> ModelSpec:
    return parse_model_spec({
        "name": name, "team": "payments-risk", "owner": "risk-ml@example.com",
        "pagerduty": {"routingKeyName": "payments-risk"},
        "training": {"entrypoint": "workloads.examples.fraud.model:hooks", "data": "lake://gold/fraud"},
        "features": features_section(**features),
    })
