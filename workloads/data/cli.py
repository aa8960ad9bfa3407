"""`strata data ...`: ingest, refine and publish a model's lake tables; list, diff, trace and
rebuild versions. The entry point reads the S3 settings from the environment (the AWS
variables; `strata local up` exports the local SeaweedFS's) and the contract from the spec.

    strata data run fraud                 # landing files -> bronze -> silver (+quarantine) -> gold,
                                          # and gold/<view> of each streaming view of bronze/fraud
    strata data versions fraud --layer gold
    strata data diff fraud 3 5            # rows added / removed / changed between gold v3 and v5
    strata data trace fraud 5             # gold v5 -> silver versions -> bronze versions
    strata data rebuild fraud 5 --expect-digest <sha256>   # the training set of v5, same digest
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

data_app = typer.Typer(help="The lake: ingest, refine, publish; versions, diffs, lineage, rebuilds.",
                       no_args_is_help=True, add_completion=False)
console = Console()


def _context(model: str, stack: Optional[str]):
    from workloads.data.lake.contract import Contract
    from workloads.data.lake.tables import Lake
    from workloads.data.storage import S3Settings
    from workloads.training.cli import resolve_spec
    from workloads.training.hooks import load_hooks

    spec, prefix = resolve_spec(model, stack)
    if not spec.training.data_key:
        raise typer.BadParameter(f"{prefix}training.dataKey is not set: the lake needs the record key of {model}'s data")
    hooks = load_hooks(spec.training.entrypoint)
    contract = Contract(hooks.feature_schema, key=spec.training.data_key)
    return spec, contract, Lake(S3Settings.from_env())


def _emit(payload, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        console.print_json(json.dumps(payload, default=str))


@data_app.command("ingest")
def ingest_command(model: str, stack: Optional[str] = typer.Option(None, "--stack"),
                   chunk_rows: int = typer.Option(250_000, "--chunk-rows", help="rows per bronze commit"),
                   as_json: bool = typer.Option(False, "--json")) -> None:
    """Landing files (s3://<bronze>/landing/<model>/) -> bronze/<model>."""
    from workloads.data.ingest.files import ingest_landing

    _spec, contract, lake = _context(model, stack)
    _emit(ingest_landing(lake, model, contract, chunk_rows).to_dict(), as_json)


@data_app.command("run")
def run_command(model: str, stack: Optional[str] = typer.Option(None, "--stack"),
                ingest: bool = typer.Option(True, "--ingest/--no-ingest", help="ingest landing files first"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Every step, incrementally: landing -> bronze -> silver (+ quarantine) -> gold, and the offline
    copy (gold/<view>) of each streaming view a CDC pipeline of the table declares."""
    from workloads.data.ingest.files import ingest_landing
    from workloads.data.lake.aggregates import aggregate
    from workloads.data.lake.tables import LakeError, publish, refine

    spec, contract, lake = _context(model, stack)
    out = {}
    if ingest:
        out["bronze"] = ingest_landing(lake, model, contract).to_dict()
    out["silver"] = refine(lake, model, contract, spec.training.baseline.max_invalid_row_fraction).to_dict()
    out["gold"] = publish(lake, model, contract).to_dict()
    failed = False
    for pipeline in _pipelines_of(model, stack):  # the offline copies of its streaming views
        try:
            out[f"gold/{pipeline.features.view}"] = aggregate(lake, model, pipeline.aggregation()).to_dict()
        except LakeError as error:  # gold/<model> is committed; say which copy could not be built and why
            out[f"gold/{pipeline.features.view}"] = {"error": str(error)}
            failed = True
    _emit(out, as_json)
    if failed:
        raise typer.Exit(1)


def _pipelines_of(table: str, stack: Optional[str]):
    """The CDC pipelines capturing bronze/<table> that declare streaming features: the stack's
    `strata:cdc` (listed in every mode: without Kafka they are not rendered, and this step writes
    their views' offline copies from the batch-ingested bronze), or without a stack the local
    mode's pipeline (workloads.local.cdc_sink)."""
    if stack is not None:
        from infra.config import load_stack  # lazily: the training image has no Pulumi

        pipelines = load_stack(stack).cdc_pipelines
    else:
        from workloads.local.cdc_sink import local_pipeline

        pipelines = (local_pipeline(),)
    return [p for p in pipelines if p.lake_table == table and p.features is not None]


@data_app.command("versions")
def versions_command(model: str, layer: str = typer.Option("gold", "--layer", help="bronze|silver|quarantine|gold"),
                     as_json: bool = typer.Option(False, "--json")) -> None:
    """A table's versions, newest first, with the input versions each was built from."""
    from workloads.data.lake.tables import Lake, history
    from workloads.data.storage import S3Settings

    entries = history(Lake(S3Settings.from_env()), layer, model)
    if as_json:
        _emit(entries, True)
        return
    table = Table(title=f"{layer}/{model}")
    for col in ("version", "operation", "inputs", "rows"):
        table.add_column(col)
    for e in entries:
        lin = e["lineage"] or {}
        table.add_row(str(e["version"]), str(e["operation"]), json.dumps(lin.get("inputs", {})), str(lin.get("rows", "")))
    console.print(table)


@data_app.command("diff")
def diff_command(model: str, old: int, new: int, stack: Optional[str] = typer.Option(None, "--stack"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Rows added, removed and changed (by key) between two gold versions."""
    from workloads.data.lake.versions import diff

    _spec, contract, lake = _context(model, stack)
    _emit(diff(lake, model, contract, old, new), as_json)


@data_app.command("trace")
def trace_command(model: str, version: int, layer: str = typer.Option("gold", "--layer"),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """The input versions a table version was built from, down to bronze."""
    from workloads.data.lake.tables import Lake, lineage
    from workloads.data.storage import S3Settings

    _emit(lineage(Lake(S3Settings.from_env()), layer, model, version), as_json)


@data_app.command("rebuild")
def rebuild_command(model: str, version: int, stack: Optional[str] = typer.Option(None, "--stack"),
                    out: Optional[Path] = typer.Option(None, "--out", help="write the training set (.npz)"),
                    expect_digest: Optional[str] = typer.Option(None, "--expect-digest",
                                                                help="fail unless the rebuilt set has this digest"),
                    as_json: bool = typer.Option(False, "--json")) -> None:
    """The training set of a gold version, with its content digest (as training recorded it)."""
    from workloads.data.lake.versions import rebuild

    _spec, contract, lake = _context(model, stack)
    dataset = rebuild(lake, model, contract, version)
    digest = dataset.meta["lake.digest"]
    if out:
        import numpy as np

        np.savez_compressed(out, features=dataset.features, labels=dataset.labels, names=np.array(dataset.names))
    _emit({"table": f"gold/{model}", "version": version, "rows": len(dataset), "digest": digest,
           "out": str(out) if out else None}, as_json)
    if expect_digest and expect_digest != digest:
        console.print(f"[red]digest mismatch[/]: gold/{model} v{version} rebuilt to {digest}, expected {expect_digest}")
        raise typer.Exit(1)


def score_command(model: str = typer.Argument(..., help="The registered model (MLflow) to score with."),
                  version: Optional[str] = typer.Option(None, "--version", help="Model version number or alias "
                                                        "(default: the champion)."),
                  input_table: Optional[str] = typer.Option(None, "--input", help="TABLE@N: a gold table and its version "
                                                            "(default: the model's table, latest version)."),
                  concurrency: int = typer.Option(1, "--concurrency", help="Ray Data scoring actors."),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Batch scoring: Ray Data over a gold table version -> gold/<model>_predictions (Delta)."""
    import os

    from workloads.data.lake.tables import Lake, LakeError
    from workloads.data.scoring import ScoringError, parse_input, score
    from workloads.data.storage import S3Settings

    try:
        table, input_version = parse_input(input_table) if input_table else (model, None)
        if "MLFLOW_TRACKING_URI" not in os.environ:
            raise ScoringError("MLFLOW_TRACKING_URI is not set: the model version comes from the MLflow registry "
                               "(`strata local up` exports the local one)")
        result = score(Lake(S3Settings.from_env()), model, version, table, input_version, concurrency=concurrency)
    except (ScoringError, LakeError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    _emit(result.to_dict(), as_json)
