"""Online enrichment: a request names its entity, the online store supplies its features.

A model whose spec has a `features` section is served with its `EnrichmentPlan`
(`workloads.data.features.lookup`): a named record (`jsonData`, REST or gRPC; a stream
record) then carries only its raw fields and the join keys of its views; each record's
view features are read from Redis in one pipeline per request (or per stream batch) and
merged in before the input contract checks the record. A join key that is not itself a
model feature is dropped after the lookup. A record that already carries a view feature
keeps its own value, and one that carries all of a view's features needs no lookup (nor
its key) for that view: a replay or a client that computes them still scores as before.

Failures, in the contract's terms (`InputError`, so a request never becomes a 5xx):
* a record without a join key: 400 `missing_field`, naming the key and the view;
* the store down and `onOutage: reject`: 503 `feature_store_unavailable` with the reason
  (the stream worker instead leaves the batch uncommitted and retries it); with
  `onOutage: defaults` the declared defaults are served. Either way
  `strata_feature_store_errors_total` counts it, and an unknown entity gets its defaults
  and counts `strata_feature_lookups_total{outcome="default"}`.

Ordered tensors/ndarrays have no field names, so they carry every feature themselves.
"""

from __future__ import annotations

from typing import Any, Sequence

from workloads.data.features.lookup import EnrichmentPlan, FeatureStoreUnavailable, OnlineMetrics, OnlineReader
from workloads.serving.contract import InputError


class Enricher:
    def __init__(self, plan: EnrichmentPlan, reader: OnlineReader, schema_names: Sequence[str]):
        self.plan = plan
        self.reader = reader
        self.views = list(plan.views)
        known = set(schema_names)
        self.drop = [k for k in plan.key_fields if k not in known]  # keys the model does not score on

    @classmethod
    def connect(cls, plan: EnrichmentPlan, url: str, schema_names: Sequence[str], metrics_registry: Any = None,
                timeout_s: float = 0.25) -> "Enricher":
        """A Redis client for `url` (`redis://` or `rediss://` with TLS); short timeouts, so an
        outage answers in a bounded time instead of holding the request."""
        import redis
        from prometheus_client import CollectorRegistry

        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                                      health_check_interval=30)
        metrics = OnlineMetrics(metrics_registry if metrics_registry is not None else CollectorRegistry())
        return cls(plan, OnlineReader(client, metrics, plan.on_outage, plan.model), schema_names)

    def _needs(self, record: dict[str, Any], view: Any) -> bool:
        return any(name not in record for name in view.feature_names)

    def missing_key(self, record: Any) -> str | None:
        """What a record lacks to be looked up (a message naming the key and view), or None."""
        if not isinstance(record, dict):
            return f"a record must be an object of field -> value, got {type(record).__name__}"
        for view in self.views:
            absent = [k for k in view.join_keys if k not in record]
            if absent and self._needs(record, view):
                return f"view {view.name!r} is keyed by {', '.join(view.join_keys)}; the record lacks {', '.join(absent)}"
        return None

    def enrich(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each record with its view features merged in (new dicts; the inputs are not changed)."""
        if not records:
            return records
        for i, record in enumerate(records):
            problem = self.missing_key(record)
            if problem:
                reason = "missing_field" if isinstance(record, dict) else "dtype"
                raise InputError(reason, f"record {i}: {problem}", field=f"records[{i}]")
        wanted = []  # per view: the records that do not bring all of its features themselves
        for view in self.views:
            needing = [i for i, record in enumerate(records) if self._needs(record, view)]
            if needing:
                wanted.append((view, needing))
        out = [dict(record) for record in records]
        if wanted:
            try:
                found = self.reader.lookup([(view, [records[i] for i in needing]) for view, needing in wanted])
            except FeatureStoreUnavailable as error:
                raise InputError("feature_store_unavailable", str(error), status=503) from None
            for (_view, needing), rows in zip(wanted, found):
                for i, values in zip(needing, rows):
                    for name, value in values.items():
                        out[i].setdefault(name, value)  # a value the record brings is kept
        for record in out:
            for key in self.drop:
                record.pop(key, None)
        return out

    def enrich_json_data(self, json_data: Any) -> Any:
        """`jsonData` in any of the contract's record forms: {"instances": [...]}, [...], or one record."""
        if isinstance(json_data, dict) and isinstance(json_data.get("instances"), list):
            return {**json_data, "instances": self.enrich(json_data["instances"])}
        if isinstance(json_data, list):
            return self.enrich(json_data)
        if isinstance(json_data, dict):
            return self.enrich([json_data])[0]
        return json_data  # not records: the contract names what is wrong

    def enrich_message(self, message: Any) -> Any:
        """A decoded Seldon JSON message with its `jsonData` records enriched (others as they are)."""
        if isinstance(message, dict) and "jsonData" in message:
            return {**message, "jsonData": self.enrich_json_data(message["jsonData"])}
        return message
