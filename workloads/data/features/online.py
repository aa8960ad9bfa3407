"""The online store: each view's latest values per entity in Redis, read by serving.

One Redis hash per (view, entity): `strata:fv:<view>:<key values>`, one field per feature
plus `_event_us` (the row's event time, for freshness). A key expires at its row's event
time + the view's TTL, so a value past its TTL is never served. Materialization writes what
the point-in-time join would give at `as_of` (the same code decides, so training and serving
agree) and records the gold version in the registry.

A lookup of an unknown (or expired) entity returns each feature's declared default and
counts `strata_feature_lookups_total{outcome="default"}`; a Redis error counts
`strata_feature_store_errors_total` and, per the spec's `onOutage`, serves the defaults or
raises `FeatureStoreUnavailable` (serving answers 503 with its reason).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, Mapping, Sequence

import polars as pl

from workloads.data.features.lookup import (EVENT_FIELD, PREFIX, FeatureColumn, FeatureStoreUnavailable,
                                            OnlineMetrics, OnlineReader, ViewPlan, encode)
from workloads.data.features.pit import point_in_time_join
from workloads.data.features.repo import FeatureRepo, Registry, ViewDefinition

__all__ = ["EVENT_FIELD", "PREFIX", "FeatureStoreUnavailable", "OnlineMetrics", "OnlineStore", "entity_key",
           "materialize", "view_plan"]


def view_plan(view: ViewDefinition) -> ViewPlan:
    return ViewPlan(view.name, view.join_keys,
                    tuple(FeatureColumn(f.name, f.dtype, f.default) for f in view.view.features))


def entity_key(view: ViewDefinition, entity: Mapping[str, Any]) -> str:
    return view_plan(view).key(entity)


@dataclass
class OnlineStore:
    client: Any  # redis.Redis
    repo: FeatureRepo
    metrics: OnlineMetrics
    on_outage: Literal["defaults", "reject"] = "reject"
    model: str = ""  # the `model` label of the lookups' metrics

    # ------------------------------------------------------------------ write
    def write(self, view_name: str, rows: pl.DataFrame, chunk: int = 2_000) -> int:
        """Store `rows` (join keys, the view's timestamp and features; one row per entity)."""
        view = self.repo.view(view_name)
        spec, now_us, plan = view.view, time.time() * 1e6, view_plan(view)
        ts = rows.get_column(spec.timestamp_field).dt.epoch("us").to_list()
        keys = rows.select(list(view.join_keys)).to_dicts()
        columns = {f.name: (f.dtype, rows.get_column(f.name).to_list()) for f in spec.features}
        written = 0
        for start in range(0, rows.height, chunk):
            pipe = self.client.pipeline(transaction=False)
            for i in range(start, min(start + chunk, rows.height)):
                expire_us = ts[i] + spec.ttl_seconds * 1e6
                if expire_us <= now_us:
                    continue  # already past its TTL: serving must not see it
                key = plan.key(keys[i])
                values = {n: encode(col[i], dtype) for n, (dtype, col) in columns.items()}
                pipe.delete(key)
                pipe.hset(key, mapping={EVENT_FIELD: str(ts[i]), **{n: v for n, v in values.items() if v is not None}})
                pipe.pexpireat(key, int(expire_us // 1000))
                written += 1
            pipe.execute()
        return written

    # ------------------------------------------------------------------ read
    def get(self, entity: Mapping[str, Any], views: Sequence[str]) -> dict[str, Any]:
        """The features of one entity over `views`; unknown features take their defaults."""
        return self.get_many([entity], views)[0]

    def get_many(self, entities: Sequence[Mapping[str, Any]], views: Sequence[str]) -> list[dict[str, Any]]:
        reader = OnlineReader(self.client, self.metrics, self.on_outage, self.model)
        return reader.get_many(entities, [view_plan(self.repo.view(v)) for v in views])


def materialize(store: OnlineStore, view_name: str, source: pl.DataFrame, source_version: int,
                as_of: datetime | None = None, registry: Registry | None = None) -> int:
    """The view's values at `as_of` (default now) for every entity in `source`, into Redis."""
    view = store.repo.view(view_name)
    as_of = as_of or datetime.now(timezone.utc)
    keys = list(view.join_keys)
    entities = source.select(keys).unique().with_columns(pl.lit(as_of).dt.replace_time_zone("UTC")
                                                         .alias("__as_of"))
    ts = view.view.timestamp_field
    latest = point_in_time_join(entities, source, view, timestamp="__as_of", event_time_as="__event")
    fresh = latest.filter(pl.col("__event").is_not_null()).drop(ts, strict=False).rename({"__event": ts})
    written = store.write(view_name, fresh.select([*keys, ts, *view.feature_names]))
    if registry is not None:
        registry.record_materialization(view_name, source_version, as_of, written)
    return written
