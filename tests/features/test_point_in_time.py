"""The point-in-time join against a brute-force oracle: duplicate key+timestamp rows on both
sides, late created timestamps, TTL edges, unknown entities. Zero mismatches, rows in == out."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.features.specs import model_spec
from workloads.data.features.pit import JoinError, point_in_time_join, training_set
from workloads.data.features.repo import build_repo

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
NAMES = ["f0", "f1", "f2"]


def view(ttl: str = "2h", created: bool = True):
    return build_repo([model_spec(ttl=ttl, created=created)]).view("card_activity")


def oracle(entities: list[dict], source: list[dict], ttl_s: int, created: bool) -> list[dict]:
    """For each entity row, scan every source row: the definition, written as plainly as possible."""
    out = []
    for e in entities:
        best, best_rank = None, None
        for i, r in enumerate(source):
            if r["card_id"] != e["card_id"] or r["event_ts"] > e["event_timestamp"]:
                continue
            if created and r["created_ts"] > e["event_timestamp"]:
                continue  # not known yet at the entity's time
            rank = (r["event_ts"], r["created_ts"] if created else 0, i)
            if best_rank is None or rank > best_rank:
                best, best_rank = r, rank
        fresh = best is not None and best["event_ts"] >= e["event_timestamp"] - timedelta(seconds=ttl_s)
        out.append({**e, **{n: (best[n] if fresh else None) for n in NAMES}})
    return out


def frames(entities: list[dict], source: list[dict]) -> tuple[pl.DataFrame, pl.DataFrame]:
    ts = pl.Datetime("us", "UTC")
    e = pl.DataFrame(entities, schema={"card_id": pl.Int64, "event_timestamp": ts, "label": pl.Int64})
    s = pl.DataFrame(source, schema={"card_id": pl.Int64, "event_ts": ts, "created_ts": ts,
                                     **{n: pl.Float64 for n in NAMES}})
    return e, s


def check(entities: list[dict], source: list[dict], ttl: str = "2h", created: bool = True) -> pl.DataFrame:
    v = view(ttl, created)
    e, s = frames(entities, source)
    got = point_in_time_join(e, s, v)
    want = pl.DataFrame(oracle(entities, source, v.view.ttl_seconds, created), schema=got.schema)
    assert got.height == e.height
    mismatches = got.with_row_index().join(want.with_row_index(), on="index", suffix="_want").filter(
        pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}_want")) for c in got.columns]))
    assert mismatches.height == 0, mismatches
    return got


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_edges_by_hand():
    source = [
        # card 1: two rows at the same event time; the later-created one wins once it is known
        {"card_id": 1, "event_ts": at(0), "created_ts": at(0), "f0": 1.0, "f1": 1.0, "f2": 1.0},
        {"card_id": 1, "event_ts": at(0), "created_ts": at(30), "f0": 2.0, "f1": 2.0, "f2": 2.0},
        # a late row: event at 10, known only at 90
        {"card_id": 1, "event_ts": at(10), "created_ts": at(90), "f0": 3.0, "f1": 3.0, "f2": 3.0},
        # card 2: exact duplicates (key, event, created): the later source row wins
        {"card_id": 2, "event_ts": at(5), "created_ts": at(5), "f0": 4.0, "f1": 4.0, "f2": 4.0},
        {"card_id": 2, "event_ts": at(5), "created_ts": at(5), "f0": 5.0, "f1": 5.0, "f2": 5.0},
    ]
    entities = [
        {"card_id": 1, "event_timestamp": at(-1), "label": 0},  # before any row
        {"card_id": 1, "event_timestamp": at(0), "label": 0},  # at the event time: visible (<=)
        {"card_id": 1, "event_timestamp": at(0), "label": 1},  # duplicate entity row: kept
        {"card_id": 1, "event_timestamp": at(45), "label": 0},  # the re-created row is known
        {"card_id": 1, "event_timestamp": at(60), "label": 0},  # the late row is not known yet
        {"card_id": 1, "event_timestamp": at(95), "label": 0},  # now it is
        {"card_id": 1, "event_timestamp": at(130), "label": 0},  # TTL 2 h from event 10: still fresh
        {"card_id": 1, "event_timestamp": at(130.0001), "label": 0},  # just past the TTL
        {"card_id": 2, "event_timestamp": at(5), "label": 0},
        {"card_id": 3, "event_timestamp": at(5), "label": 0},  # unknown entity
    ]
    got = check(entities, source).get_column("f0").to_list()
    assert got == [None, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, None, 5.0, None]


rows = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(0, 20), st.floats(-5, 5, width=32)),
                min_size=0, max_size=40)
ents = st.lists(st.tuples(st.integers(0, 4), st.integers(-5, 80)), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(rows, ents, st.sampled_from(["5m", "20m", "1h"]), st.booleans())
def test_matches_the_oracle(source_rows, entity_rows, ttl, created):
    # coarse minute grids make duplicate keys+timestamps and TTL-boundary hits common
    source = [{"card_id": k, "event_ts": at(e), "created_ts": at(e + lag), "f0": float(x), "f1": float(-x),
               "f2": float(i)} for i, (k, e, lag, x) in enumerate(source_rows)]
    entities = [{"card_id": k, "event_timestamp": at(t), "label": i} for i, (k, t) in enumerate(entity_rows)]
    check(entities, source, ttl, created)


def test_a_larger_frame_keeps_every_row():
    import numpy as np

    rng = np.random.default_rng(3)
    n_src, n_ent = 20_000, 5_000
    e_min = rng.integers(0, 2_000, n_src)
    source = [{"card_id": int(k), "event_ts": at(int(e)), "created_ts": at(int(e) + int(l)), "f0": float(i),
               "f1": 0.0, "f2": 0.0} for i, (k, e, l) in enumerate(zip(rng.integers(0, 300, n_src), e_min,
                                                                        rng.integers(0, 30, n_src)))]
    entities = [{"card_id": int(k), "event_timestamp": at(int(t)), "label": 0}
                for k, t in zip(rng.integers(0, 320, n_ent), rng.integers(0, 2_100, n_ent))]
    got = check(entities[:600], source[:4_000])  # oracle is quadratic: a slice of it
    assert got.height == 600
    e, s = frames(entities, source)
    assert point_in_time_join(e, s, view()).height == n_ent


def test_bad_input_names_the_column():
    v = view()
    e, s = frames([{"card_id": 1, "event_timestamp": at(0), "label": 0}], [])
    with pytest.raises(JoinError, match="join key"):
        point_in_time_join(e.drop("card_id"), s, v)
    with pytest.raises(JoinError, match="lacks column.*f1"):
        point_in_time_join(e, s.drop("f1"), v)
    with pytest.raises(JoinError, match="not a timestamp"):
        point_in_time_join(e.with_columns(pl.lit("x").alias("event_timestamp")), s, v)
    with pytest.raises(JoinError, match="null"):
        point_in_time_join(e.with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("event_timestamp")), s, v)
    with pytest.raises(JoinError, match="no source rows"):
        training_set(e, build_repo([model_spec()]), ["card_activity"], {})
