"""Batch ingestion: CSV, Parquet or JSON files dropped under a landing prefix -> bronze.

    s3://strata-lake-bronze/landing/<table>/<anything>.csv|.parquet|.json|.jsonl

Each file is read in chunks of at most `chunk_rows` rows, every chunk one bronze commit
(so no step ever holds more than a chunk). Exactly-once per file content: a chunk's commit
records (`file:<bucket>/<key>@<etag>`, chunk number) as a Delta transaction, so re-running
skips what is in, a crash mid-file resumes at the next chunk, and a changed file (new
etag) is a new input. Offsets order records across files by arrival: (bronze version << 20)
+ row, so a later file's row for a key supersedes an earlier one in silver.

A file that lacks a column the contract needs is not ingested: `ContractError` names the
file and the column, and the file stays in landing. Added columns are taken in.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from workloads.data.lake.contract import Contract, ContractError
from workloads.data.lake.tables import Lake, _consumed, append_bronze
from workloads.data.storage import split_s3_uri

FORMATS = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "ndjson", ".ndjson": "ndjson"}
MAX_CHUNK_ROWS = 1 << 20  # offsets reserve 20 bits for the row within a chunk


@dataclass
class IngestResult:
    table: str
    files: int = 0  # files with at least one new chunk
    chunks: int = 0
    rows: int = 0
    skipped: int = 0  # chunks already in bronze
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def landing_prefix(lake: Lake, table: str) -> str:
    return f"s3://{lake.buckets['bronze']}/landing/{table}/"


def _scan(path: Path, fmt: str) -> pl.LazyFrame:
    if fmt == "csv":
        return pl.scan_csv(path, infer_schema=False)  # as received: every value a string
    if fmt == "parquet":
        return pl.scan_parquet(path)
    if fmt == "ndjson":
        return pl.scan_ndjson(path, infer_schema_length=None)
    return pl.read_json(path).lazy()


def _file_columns(scan: pl.LazyFrame) -> list[str]:
    return scan.collect_schema().names()


def ingest_landing(lake: Lake, table: str, contract: Contract, chunk_rows: int = 250_000,
                   prefix: str | None = None) -> IngestResult:
    """Ingest every new file (or remaining chunk) under the landing prefix into bronze/<table>."""
    if not 1 <= chunk_rows <= MAX_CHUNK_ROWS:
        raise ValueError(f"chunk_rows must be in 1..{MAX_CHUNK_ROWS}, got {chunk_rows}")
    prefix = prefix or landing_prefix(lake, table)
    bucket, key_prefix = split_s3_uri(prefix)
    s3 = lake.settings.client()
    result = IngestResult(table)
    objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix)
               for o in page.get("Contents", [])]
    for obj in sorted(objects, key=lambda o: (o["LastModified"], o["Key"])):
        key, etag = obj["Key"], obj["ETag"].strip('"')
        fmt = FORMATS.get(Path(key).suffix.lower())
        if fmt is None:
            result.errors.append(f"s3://{bucket}/{key}: not ingested: unsupported file type (use {', '.join(FORMATS)})")
            continue
        app = f"file:{bucket}/{key}@{etag}"
        done = _consumed(lake.table("bronze", table), app)
        with tempfile.TemporaryDirectory(prefix="strata-landing-") as tmp:
            local = Path(tmp) / Path(key).name
            s3.download_file(bucket, key, str(local))
            try:
                scan = _scan(local, fmt)
                missing = [c for c in contract.columns if c not in _file_columns(scan)]
            except Exception as error:  # noqa: BLE001 - a malformed file is reported, never half-read
                result.errors.append(f"s3://{bucket}/{key}: not ingested: cannot read as {fmt}: {error}")
                continue
            if missing:
                result.errors.append(f"s3://{bucket}/{key}: not ingested: the data contract needs column(s) "
                                     f"{', '.join(missing)}, which the file lacks")
                continue
            rows = scan.select(pl.len()).collect().item()
            chunks = (rows + chunk_rows - 1) // chunk_rows
            new = False
            for chunk in range(chunks):
                if chunk <= done:
                    result.skipped += 1
                    continue
                frame = scan.slice(chunk * chunk_rows, chunk_rows).collect()
                bronze = lake.table("bronze", table)
                base = (bronze.version() + 1 if bronze is not None else 0) << 20
                append_bronze(lake, table, frame, source=f"s3://{bucket}/{key}",
                              offsets=list(range(base, base + frame.height)), txns=[(app, chunk)])
                result.chunks += 1
                result.rows += frame.height
                new = True
            result.files += int(new)
    if result.errors:
        raise ContractError(f"landing {prefix}: {len(result.errors)} file(s) not ingested "
                            f"(ingested {result.rows} rows from {result.files} file(s)):\n  "
                            + "\n  ".join(result.errors))
    return result
