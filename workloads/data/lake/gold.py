"""Training sets from gold: `lake://gold/<table>[?version=N]` -> a Dataset, with its version.

The snapshot is read at one Delta version (the latest when none is given) and ordered by
the table's key, so the same version always gives the same rows in the same order and the
same content digest; the dataset's `meta` carries both (training logs them to MLflow).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from workloads.data.dataset import Dataset
from workloads.data.lake.tables import Lake, LakeError, read
from workloads.data.schema import FeatureSchema
from workloads.data.storage import S3Settings


def parse_lake_uri(uri: str) -> tuple[str, str, int | None]:
    """`lake://gold/fraud?version=3` -> ("gold", "fraud", 3)."""
    from workloads.data.dataset import parse_uri

    scheme, location, query = parse_uri(uri)
    layer, _, name = location.partition("/")
    if scheme != "lake" or layer not in ("bronze", "silver", "gold") or not name:
        raise ValueError(f"{uri!r}: expected lake://<bronze|silver|gold>/<table>[?version=N]")
    unknown = set(query) - {"version"}
    if unknown:
        raise ValueError(f"{uri!r}: unknown parameter(s) {', '.join(sorted(unknown))}; known: version")
    try:
        version = int(query["version"]) if "version" in query else None
    except ValueError:
        raise ValueError(f"{uri!r}: version must be an integer, got {query['version']!r}") from None
    return layer, name, version


def snapshot(lake: Lake, name: str, schema: FeatureSchema, version: int | None = None) -> tuple[pl.DataFrame, int]:
    """The gold rows at a version (key order) and the version read."""
    table = lake.require("gold", name, version)
    version = table.version()
    frame = read(lake, "gold", name, version)
    key = next((c for c in frame.columns if c not in schema.names and c != schema.label and not c.startswith("_")), None)
    return (frame.sort(key) if key else frame), version


def to_dataset(frame: pl.DataFrame, schema: FeatureSchema, uri: str, version: int) -> Dataset:
    missing = [c for c in schema.names + [schema.label] if c not in frame.columns]
    if missing:
        raise LakeError(f"{uri} (version {version}) lacks the contract's column(s) {', '.join(missing)}")
    features = frame.select(schema.names).to_numpy().astype(np.float32, copy=False)
    labels = frame.get_column(schema.label).to_numpy().astype(np.int64, copy=False)
    dataset = Dataset(features, labels, list(schema.names), uri)
    dataset.meta.update({"lake.table": uri.split("?")[0].removeprefix("lake://"), "lake.version": version,
                         "lake.digest": dataset.digest()})
    return dataset


def load_lake_uri(uri: str, schema: FeatureSchema | None, settings: S3Settings | None = None) -> Dataset:
    layer, name, version = parse_lake_uri(uri)
    if layer != "gold":
        raise ValueError(f"{uri!r}: training reads gold tables only (lake://gold/<table>)")
    if schema is None:
        raise ValueError(f"{uri!r}: reading a lake table needs the model's feature schema")
    lake = Lake(settings or S3Settings.from_env())
    frame, version = snapshot(lake, name, schema, version)
    return to_dataset(frame, schema, f"lake://gold/{name}?version={version}", version)
