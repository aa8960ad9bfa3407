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
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from workloads.data.features.pit import point_in_time_join
from workloads.data.features.repo import FeatureRepo, Registry, ViewDefinition

PREFIX = "strata:fv"
EVENT_FIELD = "_event_us"


class FeatureStoreUnavailable(RuntimeError):
    """The online store cannot be read and the model's spec says to refuse (503)."""


class OnlineMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.lookups = Counter("strata_feature_lookups_total", "Online feature lookups per view and outcome "
                               "(hit: stored values; default: unknown or expired entity)",
                               ["view", "outcome"], registry=registry)
        self.errors = Counter("strata_feature_store_errors_total", "Online store errors per view",
                              ["view"], registry=registry)
        self.latency = Histogram("strata_feature_lookup_seconds", "Online lookup latency (one request, all views)",
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                                 registry=registry)


def _encode(value: Any, dtype: str) -> str | None:
    if value is None:
        return None
    if dtype == "bool":
        return "1" if value else "0"
    return repr(float(value)) if dtype == "float64" else str(value)


_DECODE = {"float64": float, "int64": int, "bool": lambda b: b == b"1", "string": lambda b: b.decode()}


def entity_key(view: ViewDefinition, entity: Mapping[str, Any]) -> str:
    try:
        return f"{PREFIX}:{view.name}:" + ":".join(str(entity[k]) for k in view.join_keys)
    except KeyError as missing:
        raise KeyError(f"view {view.name!r} is keyed by {', '.join(view.join_keys)}; the request lacks {missing}") \
            from None


@dataclass
class OnlineStore:
    client: Any  # redis.Redis
    repo: FeatureRepo
    metrics: OnlineMetrics
    on_outage: Literal["defaults", "reject"] = "reject"

    # ------------------------------------------------------------------ write
    def write(self, view_name: str, rows: pl.DataFrame, chunk: int = 2_000) -> int:
        """Store `rows` (join keys, the view's timestamp and features; one row per entity)."""
        view = self.repo.view(view_name)
        spec, now_us = view.view, time.time() * 1e6
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
                key = entity_key(view, keys[i])
                values = {n: _encode(col[i], dtype) for n, (dtype, col) in columns.items()}
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
        start = time.perf_counter()
        defs = [self.repo.view(v) for v in views]
        out: list[dict[str, Any]] = [{} for _ in entities]
        pipe = self.client.pipeline(transaction=False)
        for view in defs:
            names = view.feature_names
            for entity in entities:
                pipe.hmget(entity_key(view, entity), names)
        try:
            replies = pipe.execute()
        except Exception as error:  # noqa: BLE001 - redis.RedisError and OS errors alike
            for view in defs:
                self.metrics.errors.labels(view.name).inc()
            if self.on_outage == "reject":
                raise FeatureStoreUnavailable(f"online feature store unavailable ({type(error).__name__}: {error}); "
                                              f"views {', '.join(views)}") from error
            replies = [[None] * len(v.feature_names) for v in defs for _ in entities]
        i = 0
        for view in defs:
            decoders = [(f.name, _DECODE[f.dtype], f.default) for f in view.view.features]
            hits = 0
            for row in out:
                reply = replies[i]
                i += 1
                known = any(v is not None for v in reply)
                hits += known
                for (name, decode, default), raw in zip(decoders, reply):
                    row[name] = decode(raw) if raw is not None else default
            self.metrics.lookups.labels(view.name, "hit").inc(hits)
            self.metrics.lookups.labels(view.name, "default").inc(len(entities) - hits)
        self.metrics.latency.observe(time.perf_counter() - start)
        return out


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
