"""Batch scoring: a registered model version over a gold table version -> a predictions table.

`strata score MODEL [--version V] [--input gold@N]` resolves the model version in the MLflow
registry (a number, or an alias; default the champion), downloads its serving bundle once,
and runs Ray Data `map_batches` over the gold table at version N (latest when omitted): each
Ray worker loads the bundle and scores float32 batches in the bundle's feature order. The
rows go to the Delta table `gold/<model>_predictions`, one partition per (model version,
input version), replaced as a whole by a re-run, in one commit whose metadata records model,
version, run, input table and version, rows and the content digest. Order is preserved
(Ray's `preserve_order`) and batches have a fixed size, so the same versions give the same
rows in the same order and the same digest. Nothing is collected on the driver: batches
stream from Ray into the Delta writer.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from workloads.data.lake.tables import LINEAGE_KEY, Lake, LakeError

MODEL_VERSION, INPUT_VERSION = "model_version", "input_version"
BATCH_ROWS = 8_192


class ScoringError(ValueError):
    """A scoring request that cannot run; the message names the model, version or table."""


@dataclass(frozen=True)
class ScoreResult:
    model: str
    model_version: str
    run_id: str
    input_table: str
    input_version: int
    output_table: str
    output_version: int
    rows: int
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_input(value: str) -> tuple[str, int | None]:
    """`fraud@3` or `gold/fraud@3` -> ("fraud", 3); `fraud` -> ("fraud", None)."""
    name, sep, version = value.removeprefix("gold/").partition("@")
    if not name or "/" in name:
        raise ScoringError(f"--input {value!r}: expected <gold table>[@<version>], e.g. fraud@3")
    if sep and not version.isdigit():
        raise ScoringError(f"--input {value!r}: the version after @ must be a number")
    return name, int(version) if sep else None


def resolve_version(model: str, version: str | None) -> Any:
    """The MLflow model version: a number, an alias, or (None) the champion."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        if version is None or not version.isdigit():
            return client.get_model_version_by_alias(model, version or "champion")
        return client.get_model_version(model, version)
    except MlflowException as error:
        raise ScoringError(f"model {model!r} has no version {version or '@champion'} in the registry "
                           f"({error.message.splitlines()[0]})") from None


class _Scorer:
    """A Ray Data actor: loads the bundle once, scores batches in the bundle's feature order."""

    def __init__(self, bundle_dir: str, key: str, model_version: str, input_version: int):
        from workloads.training.artifacts import load_bundle

        self.bundle = load_bundle(bundle_dir)
        self.names, self.key = self.bundle.schema.names, key
        self.model_version, self.input_version = model_version, input_version

    def __call__(self, batch: pa.Table) -> pa.Table:
        x = np.column_stack([batch.column(n).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
                             for n in self.names]) if batch.num_rows else np.zeros((0, len(self.names)), np.float32)
        proba = self.bundle.predict_proba(x) if batch.num_rows else np.zeros((0, 2), np.float32)
        classes = list(self.bundle.manifest.get("classes") or range(proba.shape[1]))
        n = batch.num_rows
        return pa.table({
            self.key: batch.column(self.key),
            "score": pa.array(proba[:, -1] if proba.shape[1] == 2 else proba.max(axis=1), pa.float32()),
            "predicted": pa.array(np.asarray(classes)[proba.argmax(axis=1)] if n else [], pa.int64()),
            MODEL_VERSION: pa.array([self.model_version] * n, pa.string()),
            INPUT_VERSION: pa.array([self.input_version] * n, pa.int64()),
        })


def _column_bytes(column: pa.Array) -> bytes:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return "".join(f"{len(v)}:{v}" for v in column.to_pylist()).encode()  # length-prefixed: unambiguous
    return column.to_numpy(zero_copy_only=False).tobytes()


def _digest(batches: Iterator[pa.RecordBatch], sink: list[Any]) -> Iterator[pa.RecordBatch]:
    """Pass batches through, hashing each column's values in order: one hash per column, so
    the digest depends on the rows and their order, not on where Ray cut the batches."""
    hashes: list[Any] = []
    for batch in batches:
        if not hashes:
            hashes = [hashlib.sha256(f"{f.name}:{f.type}".encode()) for f in batch.schema]
        for h, column in zip(hashes, batch.columns):
            h.update(_column_bytes(column))
        sink[0] += batch.num_rows
        yield batch
    sink.append(hashlib.sha256("".join(h.hexdigest() for h in hashes).encode()).hexdigest())


def score(lake: Lake, model: str, version: str | None = None, table: str | None = None,
          input_version: int | None = None, key: str | None = None, batch_rows: int = BATCH_ROWS,
          concurrency: int = 1) -> ScoreResult:
    import ray
    from deltalake import CommitProperties, write_deltalake

    from workloads.training import ray_jobs
    from workloads.training.tracking import download_version

    mv = resolve_version(model, version)
    table = table or model
    gold = lake.require("gold", table, input_version)  # a clear error for a missing table or version
    input_version = gold.version()
    with tempfile.TemporaryDirectory(prefix="strata-score-") as tmp:
        bundle_dir = download_version(model, str(mv.version), Path(tmp))
        from workloads.training.artifacts import load_bundle

        schema = load_bundle(bundle_dir).schema
        columns = [f.name for f in gold.schema().fields]
        key = key or next((c for c in columns if c not in schema.names and c != schema.label
                           and not c.startswith("_")), None)
        missing = [c for c in schema.names if c not in columns]
        if key is None or missing:
            raise ScoringError(f"gold/{table}@{input_version} cannot be scored by {model} v{mv.version}: "
                               + (f"it lacks feature column(s) {', '.join(missing)}" if missing
                                  else "it has no key column besides the features and label"))
        ray_jobs.ensure_ray(dashboard=False)
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        ds = ray.data.read_delta(lake.uri("gold", table), version=input_version,
                                 storage_options=lake.settings.delta_options(), columns=[key, *schema.names])
        # the bundle travels as a Ray object, so workers on other nodes need no shared disk
        scored = ds.map_batches(_BundleScorer, fn_constructor_args=(_pack(bundle_dir), key, str(mv.version),
                                                                    input_version),
                                batch_size=batch_rows, batch_format="pyarrow", concurrency=concurrency)
        out_schema = pa.schema([(key, pa.schema(gold.schema().to_arrow()).field(key).type), ("score", pa.float32()),
                                ("predicted", pa.int64()), (MODEL_VERSION, pa.string()), (INPUT_VERSION, pa.int64())])
        sink: list[Any] = [0]
        batches = _digest((b.cast(out_schema) for t in scored.iter_batches(batch_format="pyarrow", batch_size=None)
                           for b in t.to_batches()), sink)
        name = f"{model.replace('-', '_')}_predictions"
        predicate = f"{MODEL_VERSION} = '{mv.version}' AND {INPUT_VERSION} = {input_version}"
        reader = pa.RecordBatchReader.from_batches(out_schema, batches)
        lineage = {"step": "score", "model": model, "modelVersion": str(mv.version), "runId": mv.run_id,
                   "inputs": {f"gold/{table}": input_version}}
        exists = lake.table("gold", name) is not None
        write_deltalake(lake.uri("gold", name), reader, mode="overwrite" if exists else "append",
                        predicate=predicate if exists else None, partition_by=[MODEL_VERSION, INPUT_VERSION],
                        storage_options=lake.settings.delta_options(),
                        commit_properties=CommitProperties(custom_metadata={LINEAGE_KEY: json.dumps(lineage)}))
        rows, digest = sink[0], sink[1]
    out = lake.require("gold", name)
    return ScoreResult(model, str(mv.version), mv.run_id or "", f"gold/{table}", input_version, f"gold/{name}",
                       out.version(), rows, digest)


def _pack(bundle_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(bundle_dir)): p.read_bytes() for p in Path(bundle_dir).rglob("*") if p.is_file()}


class _BundleScorer(_Scorer):
    def __init__(self, files: dict[str, bytes], key: str, model_version: str, input_version: int):
        self._dir = tempfile.mkdtemp(prefix="strata-bundle-")
        for rel, data in files.items():
            path = Path(self._dir) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        super().__init__(self._dir, key, model_version, input_version)


def partition(lake: Lake, model: str, model_version: str, input_version: int) -> "Any":
    """The predictions of one (model version, input version), in the order they were written."""
    import polars as pl

    name = f"{model.replace('-', '_')}_predictions"
    table = lake.table("gold", name)
    if table is None:
        raise LakeError(f"no predictions table gold/{name}; run `strata score {model}` first")
    frame = pl.from_arrow(table.to_pyarrow_table(filters=[(MODEL_VERSION, "=", model_version),
                                                          (INPUT_VERSION, "=", input_version)]))
    return frame
