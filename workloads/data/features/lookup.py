"""Online lookups: read a model's features for its request entities from Redis.

The read side of the online store (`workloads.data.features.online` writes), with no
polars and no pydantic, so the serving environment (Seldon, Python 3.12) and the stream
worker share it. What a lookup needs is an `EnrichmentPlan`: the model's views (name,
join keys, features with their dtypes and defaults) and its `onOutage`, built from the
spec by `workloads.data.features.repo.enrichment_plan` and handed to the server as JSON.

One Redis hash per (view, entity): `strata:fv:<view>:<key values>`, one field per feature
plus `_event_us` (the row's event time). One pipeline per lookup, one `HMGET` per
(view, entity); the event time read with the values gives `strata_feature_age_seconds`
(how old what serving got is: the freshness the alerts watch). Every metric carries the
plan's `model` (a view can be shared by models; each model's alerts read its own series).
An unknown or expired entity gets each feature's default and counts
`strata_feature_lookups_total{outcome="default"}`; a Redis error counts
`strata_feature_store_errors_total` and, per `onOutage`, serves the defaults or raises
`FeatureStoreUnavailable`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from prometheus_client import REGISTRY, CollectorRegistry

from workloads.monitoring import metrics as contract

PREFIX = "strata:fv"
EVENT_FIELD = "_event_us"
OnOutage = Literal["defaults", "reject"]


class FeatureStoreUnavailable(RuntimeError):
    """The online store cannot be read and the model's spec says to refuse (503)."""


class MissingEntityKey(KeyError):
    """A request lacks a join key of one of its model's views."""

    def __str__(self) -> str:
        return str(self.args[0])


class OnlineMetrics:
    """The contract's `features` metrics (workloads.monitoring.metrics), on `registry`."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        c = contract.collectors(contract.Emitter.FEATURES, registry)
        self.lookups = c["strata_feature_lookups_total"]
        self.errors = c["strata_feature_store_errors_total"]
        self.latency = c["strata_feature_lookup_seconds"]
        # freshness as serving sees it: now - the event time of each stored row it served
        self.age = c["strata_feature_age_seconds"]


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    dtype: str  # int64 | float64 | bool | string
    default: Any = None


def _key_part(value: Any) -> str:
    # 12.0 (a JSON number through protobuf's Struct) and 12 name the same entity
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class ViewPlan:
    """What a lookup needs of one feature view."""

    name: str
    join_keys: tuple[str, ...]
    features: tuple[FeatureColumn, ...]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def key(self, entity: Mapping[str, Any]) -> str:
        try:
            return f"{PREFIX}:{self.name}:" + ":".join(_key_part(entity[k]) for k in self.join_keys)
        except KeyError as missing:
            raise MissingEntityKey(f"view {self.name!r} is keyed by {', '.join(self.join_keys)}; "
                                   f"the request lacks {missing}") from None


@dataclass(frozen=True)
class EnrichmentPlan:
    """A model's online features: its views and what an outage does (the spec's `onOutage`)."""

    views: tuple[ViewPlan, ...]
    on_outage: OnOutage = "reject"
    model: str = ""  # whose plan: the `model` label of the feature metrics

    @property
    def key_fields(self) -> list[str]:
        return list(dict.fromkeys(k for v in self.views for k in v.join_keys))

    @property
    def feature_names(self) -> list[str]:
        return [n for v in self.views for n in v.feature_names]

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "onOutage": self.on_outage, "views": [
            {"name": v.name, "joinKeys": list(v.join_keys),
             "features": [{"name": f.name, "dtype": f.dtype, "default": f.default} for f in v.features]}
            for v in self.views]}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EnrichmentPlan":
        try:
            doc = json.loads(text)
            views = tuple(ViewPlan(v["name"], tuple(v["joinKeys"]),
                                   tuple(FeatureColumn(f["name"], f["dtype"], f.get("default")) for f in v["features"]))
                          for v in doc["views"])
            on_outage = doc.get("onOutage", "reject")
            model = doc.get("model", "")
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"feature plan is not valid ({type(error).__name__}: {error}): {text[:200]!r}") from None
        if on_outage not in ("defaults", "reject"):
            raise ValueError(f"feature plan: onOutage must be defaults or reject, got {on_outage!r}")
        if not views:
            raise ValueError("feature plan names no views")
        if not isinstance(model, str):
            raise ValueError(f"feature plan: model must be a string, got {model!r}")
        return cls(views, on_outage, model)


def encode(value: Any, dtype: str) -> str | None:
    if value is None:
        return None
    if dtype == "bool":
        return "1" if value else "0"
    return repr(float(value)) if dtype == "float64" else str(value)


DECODE = {"float64": float, "int64": int, "bool": lambda b: b == b"1", "string": lambda b: b.decode()}


@dataclass
class OnlineReader:
    client: Any  # redis.Redis
    metrics: OnlineMetrics
    on_outage: OnOutage = "reject"
    model: str = ""  # the `model` label of every metric this reader counts

    def get_many(self, entities: Sequence[Mapping[str, Any]], views: Sequence[ViewPlan]) -> list[dict[str, Any]]:
        """The features of each entity over `views`; unknown features take their defaults."""
        out: list[dict[str, Any]] = [{} for _ in entities]
        for found in self.lookup([(view, entities) for view in views]):
            for row, values in zip(out, found):
                row.update(values)
        return out

    def lookup(self, wanted: Sequence[tuple[ViewPlan, Sequence[Mapping[str, Any]]]]) -> list[list[dict[str, Any]]]:
        """Per (view, entities): each entity's features of that view. One pipeline for all."""
        start = time.perf_counter()
        pipe = self.client.pipeline(transaction=False)
        for view, entities in wanted:
            fields = [*view.feature_names, EVENT_FIELD]
            for entity in entities:
                pipe.hmget(view.key(entity), fields)
        names = ", ".join(dict.fromkeys(v.name for v, _ in wanted))
        try:
            replies = pipe.execute()
        except Exception as error:  # noqa: BLE001 - redis.RedisError and OS errors alike
            for view, _ in wanted:
                self.metrics.errors.labels(self.model, view.name).inc()
            if self.on_outage == "reject":
                raise FeatureStoreUnavailable(
                    f"online feature store unavailable ({type(error).__name__}: {error}); views {names}") from error
            replies = [[None] * (len(v.features) + 1) for v, entities in wanted for _ in entities]
        now_us, i, result = time.time() * 1e6, 0, []
        for view, entities in wanted:
            decoders = [(f.name, DECODE[f.dtype], f.default) for f in view.features]
            rows, ages = [], []
            for _ in entities:
                reply = replies[i]
                i += 1
                if reply[-1] is not None:  # stored: its event time says how old the values are
                    ages.append((now_us - int(reply[-1])) / 1e6)
                rows.append({name: decode(raw) if raw is not None else default
                             for (name, decode, default), raw in zip(decoders, reply)})
            age = self.metrics.age.labels(self.model, view.name)
            for seconds in ages:
                age.observe(seconds)
            self.metrics.lookups.labels(self.model, view.name, "hit").inc(len(ages))
            self.metrics.lookups.labels(self.model, view.name, "default").inc(len(entities) - len(ages))
            result.append(rows)
        self.metrics.latency.labels(self.model, names).observe(time.perf_counter() - start)
        return result
