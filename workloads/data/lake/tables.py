"""The medallion lake: Delta tables in the lake buckets, and the steps between them.

    bronze/<source>      raw records as received (all payload columns strings), append-only,
                         with `_source`, `_offset` (LSN or file row), `_op`, `_ingested_at`
                         and, from CDC, `_absent` (the known columns a change event lacked)
    silver/<source>      typed and validated, one row per key (the highest offset wins)
    silver/_quarantine/<source>   every rejected row, as received, with `_rules`
    gold/<source>        model-ready: key, features, label, from batches that passed

Incremental and idempotent through Delta's own idempotent-write record: each commit of a
step carries a transaction (`appId` = "<step>:<input table>", `version` = the input version
it consumed), so a step resumes after the last input version it committed and a re-run
adds nothing, even after a crash between commits. Each bronze version is one ingestion
batch (a landing file chunk, a CDC poll), bounded in rows by the ingester, so a step
holds one batch in memory at a time, never a table. Lineage (input versions -> output
version, row counts) is commit metadata, read back by `lineage()`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import polars as pl
import pyarrow as pa

from workloads.data.lake import metrics
from workloads.data.lake.contract import RULES_COLUMN, Contract, ContractError, split
from workloads.data.storage import LAKE_BUCKETS, S3Settings

SOURCE, OFFSET, OP, INGESTED_AT, ABSENT = "_source", "_offset", "_op", "_ingested_at", "_absent"
BRONZE_VERSION, BATCH_PASSED = "_bronze_version", "_batch_passed"
META = (SOURCE, OFFSET, OP, INGESTED_AT)
LINEAGE_KEY = "strata.lineage"
CDF = {"delta.enableChangeDataFeed": "true"}


class LakeError(RuntimeError):
    """A lake step cannot go on; the message names the table, version and what to do."""


@dataclass(frozen=True)
class Lake:
    """Where the lake's tables live. Buckets default to the local names; the cloud layer's
    lake buckets are passed in on the cluster."""

    settings: S3Settings
    buckets: dict[str, str] = field(default_factory=lambda: dict(LAKE_BUCKETS))
    # (thread, uri) -> the table at its latest version, brought forward by reading only the
    # commits since (a fresh open re-reads the log from its last checkpoint: up to 100 S3
    # reads, the largest cost of a CDC poll). Per thread: a DeltaTable is not shared.
    _latest: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def uri(self, layer: str, name: str) -> str:
        if layer == "quarantine":
            return f"s3://{self.buckets['silver']}/_quarantine/{name}"
        if layer not in self.buckets:
            raise ValueError(f"unknown lake layer {layer!r}; layers: bronze, silver, quarantine, gold")
        return f"s3://{self.buckets[layer]}/{name}"

    def table(self, layer: str, name: str, version: int | None = None, refresh: bool = True):
        """The Delta table, or None when it does not exist yet. At its latest version (the
        default) the object is this thread's own, kept up to date: read it, do not move it
        to another version (ask for `version` instead: a fresh object). `refresh=False`: as
        this thread last saw or wrote it (a step that just refreshed it saves an S3 round trip;
        a commit from it still detects a concurrent writer's commit)."""
        from deltalake import DeltaTable

        uri, opts = self.uri(layer, name), self.settings.delta_options()
        slot = (threading.get_ident(), uri)
        if version is None and slot in self._latest:
            table = self._latest[slot]
            if refresh:
                table.update_incremental()
            return table
        if not DeltaTable.is_deltatable(uri, storage_options=opts):
            return None
        table = DeltaTable(uri, storage_options=opts)
        if version is not None:
            table.load_as_version(version)
        else:
            self._latest[slot] = table
        return table

    def require(self, layer: str, name: str, version: int | None = None):
        table = self.table(layer, name)
        if table is None:
            raise LakeError(f"no {layer} table {name!r} at {self.uri(layer, name)}; ingest into bronze first "
                            f"(`strata data ingest`)")
        if version is not None:
            latest = table.version()
            if not 0 <= version <= latest:
                raise LakeError(f"{layer}/{name} has versions 0..{latest}; there is no version {version}")
            return self.table(layer, name, version)
        return table


@dataclass
class StepResult:
    step: str
    table: str
    batches: int = 0  # input versions consumed
    rows_in: int = 0
    rows_out: int = 0
    quarantined: int = 0
    superseded: int = 0  # older records of a key replaced in the same batch
    refused_batches: list[int] = field(default_factory=list)  # bronze versions over maxInvalidRowFraction
    output_version: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> wall time (where a step's time goes)
    merge_files: dict[str, int] = field(default_factory=dict)  # delta-rs merge metrics: target files scanned/skipped

    def add_seconds(self, phase: str, since: float) -> float:
        """Add the time from `since` (perf_counter) to `phase`; returns now."""
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - since
        return now

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _commit(app_id: str, version: int, lineage: dict[str, Any]):
    from deltalake import CommitProperties, Transaction

    return CommitProperties(custom_metadata={LINEAGE_KEY: json.dumps(lineage, sort_keys=True)},
                            app_transactions=[Transaction(app_id, version)])


def _consumed(table, app_id: str) -> int:
    """The last input version a step committed into `table` (-1: none)."""
    if table is None:
        return -1
    version = table.transaction_version(app_id)
    return -1 if version is None else int(version)


def _write(lake: Lake, layer: str, name: str, frame: pl.DataFrame, commit, mode: str = "append") -> int:
    """Commit `frame` (callers have just refreshed the table: it is not read again)."""
    from deltalake import write_deltalake

    table = lake.table(layer, name, refresh=False)
    data = frame.to_arrow()
    if table is None:  # version 0: the empty table with its change data feed on (rows start at 1,
        # so every data commit's rows are in the feed)
        write_deltalake(lake.uri(layer, name), data.schema.empty_table(), mode="error", configuration=CDF,
                        storage_options=lake.settings.delta_options())
        table = lake.require(layer, name)
    write_deltalake(table, data, mode=mode, schema_mode="merge",
                    storage_options=lake.settings.delta_options(), commit_properties=commit)
    return table.version()  # the object moved to the version it committed


# --- bronze ------------------------------------------------------------------------------
def append_bronze(lake: Lake, name: str, records: pl.DataFrame, source: str, offsets: list[int] | pa.Array,
                  op: str | list[str] = "c", txns: list[tuple[str, int]] = (),
                  extra_lineage: dict[str, Any] | None = None, absent: list[str | None] | None = None) -> int | None:
    """Append one ingestion batch, payload columns as strings. `txns` = [(app id, position)]
    make the append exactly-once: a batch whose positions the table already recorded for
    those app ids is skipped (returns None), and the commit records them atomically.
    `absent`: per record, the comma-separated columns it did not carry (a column dropped
    at the source reads as null in Delta; this keeps "absent" apart from "null")."""
    from deltalake import CommitProperties, Transaction

    table = lake.table("bronze", name)
    if txns and all(_consumed(table, app) >= position for app, position in txns):
        return None
    payload = records.with_columns(pl.all().cast(pl.String))
    clash = [c for c in payload.columns if c.startswith("_") and c != ABSENT]
    if clash:
        raise ContractError(f"bronze/{name}: source columns may not start with '_' (reserved): {', '.join(clash)}")
    now = datetime.now(timezone.utc)
    if absent is not None:
        payload = payload.with_columns(pl.Series(ABSENT, absent, dtype=pl.String))
    frame = payload.with_columns(
        pl.lit(source).alias(SOURCE),
        pl.Series(OFFSET, offsets, dtype=pl.Int64),
        (pl.Series(OP, op, dtype=pl.String) if isinstance(op, list) else pl.lit(op)).alias(OP),
        pl.lit(now).dt.replace_time_zone("UTC").cast(pl.Datetime("us", "UTC")).alias(INGESTED_AT),
    )
    lineage = {"step": "bronze", "source": source, "rows": frame.height, **(extra_lineage or {})}
    commit = CommitProperties(custom_metadata={LINEAGE_KEY: json.dumps(lineage, sort_keys=True)},
                              app_transactions=[Transaction(app, position) for app, position in txns] or None)
    version = _write(lake, "bronze", name, frame, commit)
    metrics.ROWS.labels(step="bronze", table=name, outcome="ingested").inc(frame.height)
    metrics.VERSION.labels(layer="bronze", table=name).set(version)
    metrics.LAST_INGEST.labels(table=name).set(time.time())
    return version


def _changes(table, version: int) -> pl.DataFrame:
    """One commit's change data feed (deltalake returns Arrow C-stream tables: via pyarrow)."""
    return pl.from_arrow(pa.table(table.load_cdf(starting_version=version, ending_version=version).read_all()))


# --- silver ------------------------------------------------------------------------------
DEFAULT_VERSIONS_PER_MERGE = 256  # bronze versions one silver commit consumes at most (memory bound)


def refine(lake: Lake, name: str, contract: Contract, max_invalid_fraction: float = 0.001,
           versions_per_merge: int = DEFAULT_VERSIONS_PER_MERGE) -> StepResult:
    """bronze -> silver (+ quarantine), resumable. The bronze versions not yet consumed are read
    in ranges of up to `versions_per_merge` (one change-data-feed read each) and each range is
    ONE silver merge (and at most one quarantine append): a CDC consumer commits a bronze
    version per poll, and a merge per version would rewrite silver's files that many times.
    Validation stays per bronze version: each is a batch that passes or is held from gold
    (`maxInvalidRowFraction`), and an error in version k commits the range's versions before k."""
    if not contract.key:
        raise ContractError(f"silver/{name}: the contract needs a key to deduplicate by")
    if versions_per_merge < 1:
        raise ValueError(f"refine: versions_per_merge must be >= 1, got {versions_per_merge}")
    result, t0 = StepResult("silver", name), time.perf_counter()
    bronze = lake.require("bronze", name)
    app = f"silver:{lake.uri('bronze', name)}"
    first, last = _consumed(lake.table("silver", name), app) + 1, bronze.version()
    result.add_seconds("refresh", t0)
    for low in range(first, last + 1, versions_per_merge):
        _refine_range(lake, name, contract, max_invalid_fraction, bronze, app, low,
                      min(last, low + versions_per_merge - 1), result)
    if result.output_version is not None:
        metrics.VERSION.labels(layer="silver", table=name).set(result.output_version)
    return result


def _range_rows(table, low: int, high: int) -> pl.DataFrame:
    """The rows bronze versions low..high added, with the version each came from."""
    changes = pl.from_arrow(pa.table(table.load_cdf(starting_version=low, ending_version=high).read_all()))
    if changes.is_empty():
        return pl.DataFrame()
    return (changes.filter(pl.col("_change_type").is_in(["insert", "update_postimage"]))
            .with_columns(pl.col("_commit_version").cast(pl.Int64).alias(BRONZE_VERSION))
            .drop(["_change_type", "_commit_version", "_commit_timestamp"]))


def _refine_range(lake: Lake, name: str, contract: Contract, max_invalid_fraction: float, bronze, app: str,
                  low: int, high: int, result: StepResult) -> None:
    key = contract.key
    t0 = time.perf_counter()
    rows_all = _range_rows(bronze, low, high)
    phase = result.add_seconds("read", t0)
    if rows_all.is_empty():
        return
    versions = sorted(rows_all.get_column(BRONZE_VERSION).unique().to_list())
    # The range is validated in one pass (a pass costs ~40 ms however few its rows: most of a
    # CDC poll's refine). A version that breaks the contract as a whole is found first; then
    # the versions go one by one, so those before it commit and the error names it.
    whole = _first_unfit_version(contract, rows_all) is None
    chunks = [(f"bronze/{name} v{low}..v{high}", rows_all)] if whole else \
        [(f"bronze/{name} v{v}", rows_all.filter(pl.col(BRONZE_VERSION) == v)) for v in versions]
    valids, deletes, quarantined, batches = [], [], [], []
    failure: Exception | None = None
    for where, chunk in chunks:
        try:
            rows = _without_absent(contract, chunk, where=where)
            # one row per key within each version: the highest offset (LSN) wins; replays collapse
            if key in rows.columns:  # rows without a key are not merged away: they go to quarantine
                keyed = rows.filter(pl.col(key).is_not_null())
                deduped = pl.concat([keyed.sort(OFFSET).unique(subset=[BRONZE_VERSION, key], keep="last",
                                                               maintain_order=True),
                                     rows.filter(pl.col(key).is_null())], how="diagonal_relaxed")
            else:
                deduped = rows
            upserts, removed = deduped.filter(pl.col(OP) != "d"), deduped.filter(pl.col(OP) == "d")
            parts = split(contract, upserts, where=where, batch=BRONZE_VERSION)
        except ContractError as error:  # commit the versions before this one, then stop
            failure = error
            break
        rejected = parts.quarantined.with_columns(pl.col(BRONZE_VERSION).cast(pl.Int64))
        per_version = _counts_by_version(upserts=upserts, valid=parts.valid, quarantined=rejected, deleted=removed)
        rules = _rule_counts_by_version(rejected)
        passed_versions = []
        for version in sorted(chunk.get_column(BRONZE_VERSION).unique().to_list()):
            n = per_version.get(version, {})
            checked = n.get("valid", 0) + n.get("quarantined", 0)
            invalid = n.get("quarantined", 0) / checked if checked else 0.0
            passed = invalid <= max_invalid_fraction
            if passed:
                passed_versions.append(version)
            else:
                result.refused_batches.append(version)
                metrics.REFUSED.labels(table=name).inc()
            batches.append({"version": version, "rows": n.get("upserts", 0), "valid": n.get("valid", 0),
                            "quarantined": n.get("quarantined", 0), "deleted": n.get("deleted", 0),
                            "invalidFraction": invalid, "passed": passed, "rules": rules.get(version, {})})
            metrics.ROWS.labels(step="silver", table=name, outcome="quarantined").inc(n.get("quarantined", 0))
            metrics.INVALID_FRACTION.labels(table=name).set(invalid)
        tag = parts.valid.get_column(BRONZE_VERSION)  # last, then the batch's verdict, as silver's columns were
        valids.append(parts.valid.drop(BRONZE_VERSION).with_columns(tag, tag.is_in(passed_versions).alias(BATCH_PASSED)))
        deletes.append(removed.select(key, OFFSET, OP, BRONZE_VERSION))
        if rejected.height:  # as received (strings), the bronze version last as before
            quarantined.append(rejected.drop(BRONZE_VERSION).with_columns(rejected.get_column(BRONZE_VERSION)))
        result.batches += chunk.get_column(BRONZE_VERSION).n_unique()
        result.rows_in += rows.height
        result.superseded += rows.height - deduped.height
        result.quarantined += rejected.height
    if batches:
        consumed = batches[-1]["version"]
        # across the range, too, one row per key: the latest event (highest offset) wins
        # (as merging version by version would: silver keeps the higher offset, the earlier on a tie)
        events = pl.concat([*valids, *deletes], how="diagonal_relaxed")
        latest = (events.sort([OFFSET, BRONZE_VERSION], descending=[False, True])
                  .unique(subset=[key], keep="last", maintain_order=True))
        superseded = events.height - latest.height
        result.superseded += superseded
        valid, removed = latest.filter(pl.col(OP) != "d"), latest.filter(pl.col(OP) == "d")
        lineage = {"step": "silver", "inputs": {f"bronze/{name}": [b["version"] for b in batches]},
                   "rows": sum(b["rows"] for b in batches), "valid": valid.height,
                   "quarantined": sum(b["quarantined"] for b in batches), "deleted": removed.height,
                   "supersededAcrossVersions": superseded,
                   "invalidFraction": max(b["invalidFraction"] for b in batches),
                   "passed": all(b["passed"] for b in batches), "maxInvalidFraction": max_invalid_fraction,
                   "batches": batches}
        phase = result.add_seconds("validate", phase)
        if quarantined:
            done = _consumed(lake.table("quarantine", name), app)  # a crash after the quarantine append: not twice
            rejected_rows = pl.concat(quarantined, how="diagonal_relaxed").filter(pl.col(BRONZE_VERSION) > done)
            if rejected_rows.height:
                _write(lake, "quarantine", name, rejected_rows, _commit(app, consumed, lineage))
            phase = result.add_seconds("quarantine", phase)
        result.output_version = _merge_silver(lake, name, key, valid, removed, _commit(app, consumed, lineage),
                                             result)
        result.add_seconds("merge", phase)
        result.rows_out += sum(b["valid"] for b in batches)
        metrics.ROWS.labels(step="silver", table=name, outcome="valid").inc(sum(b["valid"] for b in batches))
        metrics.ROWS.labels(step="silver", table=name, outcome="superseded").inc(superseded)
        metrics.STEP_SECONDS.labels(step="silver", table=name).observe(time.perf_counter() - t0)
    if failure is not None:
        raise failure


def _counts_by_version(**frames: pl.DataFrame) -> dict[int, dict[str, int]]:
    """bronze version -> {frame name: its rows from that version}."""
    out: dict[int, dict[str, int]] = {}
    for label, frame in frames.items():
        if frame.height:
            for version, n in frame.group_by(BRONZE_VERSION).len().iter_rows():
                out.setdefault(int(version), {})[label] = int(n)
    return out


def _rule_counts_by_version(quarantined: pl.DataFrame) -> dict[int, dict[str, int]]:
    """bronze version -> {rule id: rows from that version that broke it}."""
    out: dict[int, dict[str, int]] = {}
    if quarantined.height:
        broken = quarantined.select(BRONZE_VERSION, RULES_COLUMN).explode(RULES_COLUMN).drop_nulls(RULES_COLUMN)
        for version, rule, n in broken.group_by(BRONZE_VERSION, RULES_COLUMN).len().sort(RULES_COLUMN).iter_rows():
            out.setdefault(int(version), {})[rule] = int(n)
    return out


def _first_unfit_version(contract: Contract, rows: pl.DataFrame) -> int | None:
    """The first bronze version that breaks the contract as a whole, in one grouped pass: a
    contract column absent from its change events or from the table, or a column none of
    whose values parse (the checks of `_without_absent` and `check_columns`, per version)."""
    first = int(rows.get_column(BRONZE_VERSION).min())
    if any(c not in rows.columns for c in contract.columns):
        return first
    checks = []
    if ABSENT in rows.columns:
        lacks = pl.col(ABSENT).str.split(",")
        checks.append(pl.any_horizontal([lacks.list.contains(c) for c in contract.columns]).fill_null(False).any())
    for column in contract.schema.names + [contract.schema.label]:
        dtype = rows.schema[column]
        if dtype.is_numeric() or dtype == pl.Null:
            continue
        if dtype != pl.String:
            return first
        value = pl.col(column).str.strip_chars()
        present = value.is_not_null() & (value.str.len_chars() > 0)
        checks.append(present.any() & ~(present & value.cast(pl.Float64, strict=False).is_not_null()).any())
    if not checks:
        return None
    flags = rows.group_by(BRONZE_VERSION).agg(pl.any_horizontal(checks).alias("unfit")).filter(pl.col("unfit"))
    return None if flags.is_empty() else int(flags.get_column(BRONZE_VERSION).min())


def _without_absent(contract: Contract, rows: pl.DataFrame, where: str) -> pl.DataFrame:
    """Stop (naming them) when change events lack a column the contract needs: the source
    dropped it. Rows are not quarantined for it: the fix is the contract or the source."""
    if ABSENT not in rows.columns:
        return rows
    lacked = (rows.get_column(ABSENT).drop_nulls().str.split(",").explode().value_counts()
              .filter(pl.col(ABSENT).is_in(contract.columns)))
    if lacked.height:
        named = ", ".join(f"{c} ({n} events)" for c, n in sorted(lacked.iter_rows()))
        raise ContractError(f"{where}: change events without the data contract's column(s) {named}: dropped at the "
                            "source? Restore the column or change the contract; silver stays at the batch before")
    return rows.drop(ABSENT)


def _merge_silver(lake: Lake, name: str, key: str, valid: pl.DataFrame, deletes: pl.DataFrame, commit,
                  result: StepResult) -> int:
    silver = lake.table("silver", name, refresh=False)  # refine refreshed it to read its progress
    if silver is None:
        return _write(lake, "silver", name, valid, commit)
    source = pl.concat([valid, deletes.select([c for c in deletes.columns if c in (key, OFFSET, OP)])],
                       how="diagonal_relaxed") if deletes.height else valid
    # Not streamed: the batch is in memory already, and only a materialised source gives
    # delta-rs the key range it prunes silver's files with (streamed, every merge read every file).
    merged = (silver.merge(source.to_arrow(), predicate=f"t.{key} = s.{key}", source_alias="s", target_alias="t",
                           merge_schema=True, streamed_exec=False, commit_properties=commit)
              .when_matched_delete(predicate=f"s.{OP} = 'd' AND t.{OFFSET} < s.{OFFSET}")
              .when_matched_update_all(predicate=f"s.{OP} <> 'd' AND t.{OFFSET} < s.{OFFSET}")
              .when_not_matched_insert_all(predicate=f"s.{OP} <> 'd'")
              .execute())
    for metric in ("num_target_files_scanned", "num_target_files_skipped_during_scan"):
        result.merge_files[metric] = result.merge_files.get(metric, 0) + int(merged.get(metric) or 0)
    return silver.version()  # the object moved to the version it committed


# --- gold --------------------------------------------------------------------------------
def publish(lake: Lake, name: str, contract: Contract) -> StepResult:
    """silver -> gold: the contract's columns of rows from passed batches, by key."""
    key = contract.key
    silver = lake.require("silver", name)
    app = f"gold:{lake.uri('silver', name)}"
    result = StepResult("gold", name)
    start = _consumed(lake.table("gold", name), app) + 1
    columns = contract.columns
    for version in range(start, silver.version() + 1):
        t0 = time.perf_counter()
        changes = _changes(silver, version)
        if changes.is_empty():
            continue
        result.batches += 1
        upserts = changes.filter(pl.col("_change_type").is_in(["insert", "update_postimage"]) & pl.col(BATCH_PASSED))
        deletes = changes.filter(pl.col("_change_type") == "delete").select(key)
        held = changes.filter(pl.col("_change_type").is_in(["insert", "update_postimage"]) & ~pl.col(BATCH_PASSED)).height
        result.rows_in += upserts.height + held
        frame = upserts.select(columns + [OFFSET]).with_columns(pl.lit(version, dtype=pl.Int64).alias("_silver_version"))
        lineage = {"step": "gold", "inputs": {f"silver/{name}": version}, "rows": frame.height,
                   "deleted": deletes.height, "held": held}
        commit = _commit(app, version, lineage)
        gold = lake.table("gold", name)
        if gold is None:
            result.output_version = _write(lake, "gold", name, frame, commit)
        else:
            source = pl.concat([frame.with_columns(pl.lit(False).alias("_delete")),
                                deletes.with_columns(pl.lit(True).alias("_delete"))], how="diagonal_relaxed")
            (gold.merge(source.to_arrow(), predicate=f"t.{key} = s.{key}", source_alias="s", target_alias="t",
                        commit_properties=commit)
             .when_matched_delete(predicate="s._delete")
             .when_matched_update(updates={c: f"s.{c}" for c in frame.columns}, predicate="NOT s._delete")
             .when_not_matched_insert(updates={c: f"s.{c}" for c in frame.columns}, predicate="NOT s._delete")
             .execute())
            result.output_version = lake.require("gold", name).version()
        result.rows_out += frame.height
        metrics.ROWS.labels(step="gold", table=name, outcome="published").inc(frame.height)
        metrics.ROWS.labels(step="gold", table=name, outcome="held").inc(held)
        metrics.STEP_SECONDS.labels(step="gold", table=name).observe(time.perf_counter() - t0)
    if result.output_version is not None:
        metrics.VERSION.labels(layer="gold", table=name).set(result.output_version)
    return result


# --- versions, lineage, digests ------------------------------------------------------------
def history(lake: Lake, layer: str, name: str) -> list[dict[str, Any]]:
    """Each version of a table, newest first: version, time, operation, lineage."""
    table = lake.require(layer, name)
    out = []
    for entry in table.history():
        raw = entry.get(LINEAGE_KEY)
        out.append({"version": entry.get("version"), "timestamp": entry.get("timestamp"),
                    "operation": entry.get("operation"), "lineage": json.loads(raw) if raw else None})
    return out


def lineage(lake: Lake, layer: str, name: str, version: int) -> dict[str, list[int]]:
    """The input versions a table version was built from, down to bronze:
    {"gold/fraud": [0..v], "silver/fraud": [...], "bronze/fraud": [...]}."""
    trace: dict[str, list[int]] = {f"{layer}/{name}": list(range(version + 1))}
    frontier = [(layer, name, version)]
    while frontier:
        lay, nm, ver = frontier.pop()
        inputs: dict[str, set[int]] = {}
        for entry in history(lake, lay, nm):
            if entry["version"] is not None and entry["version"] <= ver and entry["lineage"]:
                for table, v in (entry["lineage"].get("inputs") or {}).items():  # a version or a list of them
                    inputs.setdefault(table, set()).update(int(x) for x in (v if isinstance(v, list) else [v]))
        for table, versions in inputs.items():
            trace[table] = sorted(versions)
            in_layer, in_name = table.split("/", 1)
            frontier.append((in_layer, in_name, max(versions)))
    return trace


def read(lake: Lake, layer: str, name: str, version: int | None = None, key: str | None = None) -> pl.DataFrame:
    """A table snapshot as a frame, ordered by `key` when given (a deterministic order for digests)."""
    table = lake.require(layer, name, version)
    frame = pl.from_arrow(table.to_pyarrow_table())
    return frame.sort(key) if key and key in frame.columns else frame


def digest(frame: pl.DataFrame) -> str:
    """sha256 over the columns' names, types and Arrow IPC bytes (rows in the frame's order)."""
    h = hashlib.sha256(repr(frame.schema).encode())
    table = frame.rechunk().to_arrow().combine_chunks()  # the bytes must not depend on chunking
    for batch in table.to_batches(max_chunksize=65_536):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def iter_versions(lake: Lake, layer: str, name: str) -> Iterator[int]:
    yield from range(lake.require(layer, name).version() + 1)
