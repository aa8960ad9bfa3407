"""Training sets by point-in-time join: each entity row gets, per view, the feature values
that were known at its timestamp, and nothing later.

For an entity row (keys, t) a feature row (same keys, event time e, created time c) is
visible when e <= t, c <= t (a late row is not known before it arrived), and e >= t - ttl.
Of the visible rows the latest (e, then c, then the row order of the source) wins; when
none is visible the features are null. Every entity row comes out once, in input order,
duplicates included (Feast's Dask/File join drops entity rows sharing key and timestamp,
feast-dev/feast#6787, and its created-timestamp tie-break lets late rows leak, #6615).

Vectorised (polars, no Python loop over rows): the winner among the rows known by time a is
a running maximum, over the rows in order of availability a = max(e, c), of their rank by
(e, c, row); one as-of join on a finds it for every entity row. TTL is checked on the
winner alone: it has the greatest event time of the visible rows, so if it is too old, all are.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Mapping, Sequence

import polars as pl

from workloads.data.features.repo import FeatureRepo, ViewDefinition

ENTITY_TIMESTAMP = "event_timestamp"
_UTC = pl.Datetime("us", "UTC")


class JoinError(ValueError):
    """An entity frame or a source table that cannot be joined; the message says which column."""


def _as_utc(frame: pl.DataFrame, column: str, what: str) -> pl.Expr:
    if column not in frame.columns:
        raise JoinError(f"{what} has no column {column!r}; columns: {', '.join(frame.columns)}")
    dtype = frame.schema[column]
    if not isinstance(dtype, pl.Datetime):
        raise JoinError(f"{what} column {column!r} is {dtype}, not a timestamp")
    expr = pl.col(column)
    expr = expr.dt.replace_time_zone("UTC") if dtype.time_zone is None else expr.dt.convert_time_zone("UTC")
    return expr.dt.cast_time_unit("us")


def point_in_time_join(entities: pl.DataFrame, source: pl.DataFrame, view: ViewDefinition,
                       timestamp: str = ENTITY_TIMESTAMP, event_time_as: str | None = None) -> pl.DataFrame:
    """`entities` (join keys + `timestamp` + anything else) with the view's features added
    (and, as `event_time_as`, the event time of the row they came from)."""
    keys, spec = list(view.join_keys), view.view
    names, ts, created = view.feature_names, spec.timestamp_field, spec.created_timestamp_field
    missing = [k for k in keys if k not in entities.columns]
    if missing:
        raise JoinError(f"entity frame lacks join key(s) {', '.join(missing)} of view {view.name!r}")
    clash = sorted(set(names) & set(entities.columns))
    if clash:
        raise JoinError(f"entity frame already has column(s) {', '.join(clash)} of view {view.name!r}")
    lacking = [c for c in keys + [ts] + ([created] if created else []) + names if c not in source.columns]
    if lacking:
        raise JoinError(f"source {spec.source} of view {view.name!r} lacks column(s) {', '.join(lacking)}")
    t = _as_utc(entities, timestamp, "entity frame")
    if entities.get_column(timestamp).null_count():
        raise JoinError(f"entity frame has {entities.get_column(timestamp).null_count()} row(s) with a null "
                        f"{timestamp!r}: a training row needs its point in time")

    ranked = (source.select([*keys, _as_utc(source, ts, spec.source).alias("__e"),
                             (_as_utc(source, created, spec.source) if created else pl.col(ts).alias("__c_unused"))
                             .alias("__c"), *names])
              .with_row_index("__row")
              .filter(pl.col("__e").is_not_null() & pl.all_horizontal([pl.col(k).is_not_null() for k in keys]))
              .filter(pl.col("__c").is_not_null() if created else pl.lit(True))
              .sort(["__e", "__c", "__row"] if created else ["__e", "__row"])
              .with_row_index("__rank"))
    available = pl.max_horizontal("__e", "__c") if created else pl.col("__e")
    winners = (ranked.select([*keys, available.alias("__a"), "__rank"])
               .sort([*keys, "__a", "__rank"])
               .with_columns(pl.col("__rank").cum_max().over(keys).alias("__best"))
               .group_by([*keys, "__a"]).agg(pl.col("__best").max())
               .sort("__a"))
    left = (entities.with_row_index("__entity_row").with_columns(t.alias("__t"))
            .cast({k: ranked.schema[k] for k in keys}, strict=False).sort("__t"))
    with warnings.catch_warnings():  # both sides are sorted by time above; polars cannot check it per group
        warnings.filterwarnings("ignore", message="Sortedness of columns cannot be checked")
        asof = left.join_asof(winners, left_on="__t", right_on="__a", by=keys, strategy="backward")
    joined = (asof.join(ranked.select(["__rank", "__e", *names]), left_on="__best", right_on="__rank", how="left"))
    fresh = pl.col("__e") >= pl.col("__t") - timedelta(seconds=spec.ttl_seconds)
    extra = [pl.col("__e").alias(event_time_as)] if event_time_as else []
    out = (joined.with_columns([pl.when(fresh).then(pl.col(n)).otherwise(None).alias(n)
                                for n in (names + ["__e"])])
           .sort("__entity_row"))
    return out.select(entities.columns + names + extra).cast({k: entities.schema[k] for k in keys})


def training_set(entities: pl.DataFrame, repo: FeatureRepo, views: Sequence[str],
                 sources: Mapping[str, pl.DataFrame], timestamp: str = ENTITY_TIMESTAMP) -> pl.DataFrame:
    """The entity frame joined with each named view's features (`sources`: view -> its gold rows)."""
    out = entities
    for name in views:
        view = repo.view(name)
        if name not in sources:
            raise JoinError(f"no source rows given for view {name!r} ({view.view.source})")
        out = point_in_time_join(out, sources[name], view, timestamp)
    if out.height != entities.height:  # the contract of this module; a join bug must not pass silently
        raise AssertionError(f"point-in-time join changed the row count: {entities.height} -> {out.height}")
    return out
