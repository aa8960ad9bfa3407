"""Materialization into the real local Redis and online lookups: the values the point-in-time
join gives at `as_of`, declared defaults (and a metric) for unknown or expired entities, and
the spec's outage behaviour (defaults or a refusal) with the error metric."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from prometheus_client import CollectorRegistry

from tests.features.specs import model_spec
from workloads.data.features.online import FeatureStoreUnavailable, OnlineMetrics, OnlineStore, materialize
from workloads.data.features.pit import point_in_time_join
from workloads.data.features.repo import Registry, build_repo

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def source(n_cards: int = 50) -> pl.DataFrame:
    rows = []
    for card in range(n_cards):
        for step in range(3):  # three versions per card; the newest may be late or beyond as_of
            event = NOW - timedelta(minutes=30 * (3 - step))
            rows.append({"card_id": card, "event_ts": event, "created_ts": event + timedelta(minutes=card % 7),
                         "f0": float(card * 10 + step), "f1": float(step), "f2": float(-card)})
    rows.append({"card_id": 999, "event_ts": NOW - timedelta(hours=5), "created_ts": NOW - timedelta(hours=5),
                 "f0": 1.0, "f1": 1.0, "f2": 1.0})  # older than the 2 h TTL: never online
    return pl.DataFrame(rows).with_columns(pl.col("event_ts", "created_ts").dt.replace_time_zone("UTC"))


def metric(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_materialized_values_equal_the_join_and_unknowns_get_defaults(redis_client, view_name, tmp_path):
    repo = build_repo([model_spec(view=view_name)])
    prom = CollectorRegistry()
    store = OnlineStore(redis_client, repo, OnlineMetrics(prom), on_outage="defaults", model="fraud-features")
    registry = Registry(f"sqlite:///{tmp_path}/registry.db")
    registry.apply(repo)
    src = source()
    written = materialize(store, view_name, src, source_version=7, as_of=NOW, registry=registry)
    assert written == 50  # card 999 is past its TTL
    assert registry.last_materialization(view_name)["source_version"] == 7

    cards = [{"card_id": c} for c in (0, 3, 49, 999, 12345)]
    got = store.get_many(cards, [view_name])
    want = point_in_time_join(pl.DataFrame({"card_id": [c["card_id"] for c in cards],
                                            "event_timestamp": [NOW] * len(cards)})
                              .with_columns(pl.col("event_timestamp").dt.replace_time_zone("UTC")),
                              src, repo.view(view_name)).select(["f0", "f1", "f2"]).to_dicts()
    for g, w in zip(got, want):
        assert g == {k: (v if v is not None else -1.0) for k, v in w.items()}
    assert got[3] == got[4] == {"f0": -1.0, "f1": -1.0, "f2": -1.0}  # expired and unknown: the defaults
    assert metric(prom, "strata_feature_lookups_total", model="fraud-features", view=view_name, outcome="hit") == 3
    assert metric(prom, "strata_feature_lookups_total", model="fraud-features", view=view_name, outcome="default") == 2
    # freshness as served: one age per stored row, its event time 30 min or more ago
    assert metric(prom, "strata_feature_age_seconds_count", model="fraud-features", view=view_name) == 3
    assert metric(prom, "strata_feature_age_seconds_bucket", model="fraud-features", view=view_name, le="900.0") == 0
    assert metric(prom, "strata_feature_age_seconds_bucket", model="fraud-features", view=view_name, le="14400.0") == 3
    ttl_ms = redis_client.pttl(f"strata:fv:{view_name}:0")
    assert 0 < ttl_ms <= 2 * 3600 * 1000  # the key expires with its row's TTL


def test_outage_serves_defaults_or_refuses_per_spec(view_name):
    import redis

    repo = build_repo([model_spec(view=view_name)])
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, socket_timeout=0.5)
    prom = CollectorRegistry()
    lenient = OnlineStore(dead, repo, OnlineMetrics(prom), on_outage="defaults", model="fraud-features")
    assert lenient.get({"card_id": 1}, [view_name]) == {"f0": -1.0, "f1": -1.0, "f2": -1.0}
    assert metric(prom, "strata_feature_store_errors_total", model="fraud-features", view=view_name) == 1
    strict = OnlineStore(dead, repo, OnlineMetrics(CollectorRegistry()), on_outage="reject")
    with pytest.raises(FeatureStoreUnavailable, match="online feature store unavailable"):
        strict.get({"card_id": 1}, [view_name])
    with pytest.raises(KeyError, match="keyed by card_id"):
        lenient.get({"merchant": 1}, [view_name])
