"""Versions of gold: diff two, rebuild one (same rows, same order, same digest)."""

from __future__ import annotations

from typing import Any

import polars as pl

from workloads.data.dataset import Dataset
from workloads.data.lake.contract import Contract
from workloads.data.lake.gold import snapshot, to_dataset
from workloads.data.lake.tables import Lake


def rebuild(lake: Lake, name: str, contract: Contract, version: int) -> Dataset:
    frame, version = snapshot(lake, name, contract.schema, version)
    return to_dataset(frame, contract.schema, f"lake://gold/{name}?version={version}", version)


def diff(lake: Lake, name: str, contract: Contract, old: int, new: int, examples: int = 5) -> dict[str, Any]:
    """Keys added, removed, and changed (any contract column differs) from `old` to `new`."""
    key = contract.key
    cols = [c for c in contract.columns if c != key]
    a, _ = snapshot(lake, name, contract.schema, old)
    b, _ = snapshot(lake, name, contract.schema, new)
    a, b = a.select([key] + cols), b.select([key] + cols)
    added = b.join(a, on=key, how="anti")
    removed = a.join(b, on=key, how="anti")
    both = a.join(b, on=key, how="inner", suffix="__new")
    changed = both.filter(pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}__new")) for c in cols])) \
        if both.height else both
    return {
        "table": f"gold/{name}", "old": old, "new": new, "rowsOld": a.height, "rowsNew": b.height,
        "added": added.height, "removed": removed.height, "changed": changed.height,
        "examples": {"added": added.get_column(key).head(examples).to_list(),
                     "removed": removed.get_column(key).head(examples).to_list(),
                     "changed": changed.get_column(key).head(examples).to_list()},
    }
