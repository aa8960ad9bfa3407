"""The fraud example's streaming view, as its spec declares it once issue 15's spec change is in
(`card_activity_stream`, from the CDC pipeline's per-card aggregates): a fixture for the tests
of the feature aggregator, independent of what the committed example spec holds."""

from __future__ import annotations

from typing import Any

VIEW = "card_activity_stream"


def streaming_features_section(features: tuple[str, ...] = ("txn_count_1h", "txn_count_24h"),
                               ttl: str = "2d") -> dict[str, Any]:
    return {
        "entities": [{"name": "card", "joinKeys": ["card_id"]}],
        "views": [{"name": VIEW, "source": f"gold/{VIEW}", "entities": ["card"], "timestampField": "event_ts",
                   "ttl": ttl, "features": [{"name": f, "dtype": "float64", "default": 0.0} for f in features]}],
        "onOutage": "defaults",
    }


def stack_config_with_streaming_view(stack: str, **section: Any) -> dict:
    """The committed stack's config, its fraud model declaring the streaming view, and the
    enterprise stack's CDC pipeline of card transactions (with its `features`) in every stack."""
    import copy

    from infra.config import read_stack_file

    raw = read_stack_file(stack)
    raw["strata:models"]["fraud"]["features"] = streaming_features_section(**section)
    raw["strata:cdc"] = copy.deepcopy(read_stack_file("enterprise")["strata:cdc"])
    return raw
