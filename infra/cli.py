"""`strata`: the command line of the platform (plan, validate, schema, ...).

Heavy imports (Pulumi, torch, Ray) happen inside the commands that need them, so
`strata --help` and `strata validate` stay fast.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from infra.config import PROJECT_ROOT, load_stack
from workloads.spec import SpecError, model_spec_json_schema

app = typer.Typer(help="Strata: an ML platform bundle driven by Pulumi.", no_args_is_help=True, add_completion=False)
console = Console()
errors = Console(stderr=True)

MODEL_SPEC_SCHEMA_FILE = PROJECT_ROOT / "workloads" / "model-spec.schema.json"


class PlanFormat(str, Enum):
    TABLE = "table"
    JSON = "json"


def _stacks() -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (PROJECT_ROOT / "stacks").glob("Pulumi.*.yaml"))


def _fail(error: SpecError, what: str) -> None:
    errors.print(f"[red]invalid {what}[/]")
    for path, message in error.problems:
        errors.print(f"  [bold]{path}[/]: {message}", highlight=False)
    raise typer.Exit(2)


@app.command()
def plan(
    stack: str = typer.Option(..., "--stack", "-s", help="Stack name: stacks/Pulumi.<stack>.yaml"),
    format: PlanFormat = typer.Option(PlanFormat.TABLE, "--format", "-f", help="table for people, json for tools"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout"),
    stack_file: Optional[Path] = typer.Option(None, "--stack-file", help="Read this file instead of stacks/Pulumi.<stack>.yaml"),
) -> None:
    """Offline plan: the program under Pulumi mocks -> resource tree, policies, cost. No credentials."""
    from infra.plan.report import build_report, print_table, to_json

    try:
        report = build_report(stack, stack_file)
    except SpecError as error:
        _fail(error, f"stack {stack!r}")
    if format is PlanFormat.JSON:
        text = json.dumps(to_json(report), indent=2, sort_keys=False, default=str)
        if output:
            output.write_text(text + "\n")
        else:
            sys.stdout.write(text + "\n")
    else:
        target = Console(file=output.open("w"), width=160) if output else console
        print_table(report, target)
    if report.mandatory_violations:
        errors.print(f"[red]{len(report.mandatory_violations)} mandatory policy violation(s)[/]")
        raise typer.Exit(1)


@app.command()
def validate(
    stack: Optional[list[str]] = typer.Option(None, "--stack", "-s", help="Only these stacks (default: all)"),
    hooks: bool = typer.Option(False, "--hooks", help="Also import each model's entrypoint and check the spec against it"),
) -> None:
    """Check every stack file and every model spec file; errors name the file and property path."""
    from rich.markup import escape

    from infra.onboard import check_model_specs

    failed = False
    specs, problems = check_model_specs(hooks=hooks)
    if problems:
        failed = True
        errors.print("[red]✗ model specs[/]")
        for path, message in problems:
            errors.print(f"  [bold]{escape(path)}[/]: {escape(message)}", highlight=False)
    if specs:
        console.print(f"model spec files: {len(specs)} valid ({', '.join(s.name for s in specs)})")
    for name in stack or _stacks():
        try:
            spec = load_stack(name)
        except SpecError as error:
            failed = True
            errors.print(f"[red]✗ stack {name}[/]")
            for path, message in error.problems:
                errors.print(f"  [bold]{path}[/]: {message}", highlight=False)
            continue
        console.print(f"[green]✓[/] stack {name}: mode {spec.mode.value}, {len(spec.models)} model(s): {', '.join(m.name for m in spec.models)}")
    if failed:
        raise typer.Exit(2)


@app.command()
def schema(
    check: bool = typer.Option(False, "--check", help="Exit 1 if the committed schema file is out of date"),
) -> None:
    """Write the model spec's JSON Schema (for editors) to workloads/model-spec.schema.json."""
    text = json.dumps(model_spec_json_schema(), indent=2, sort_keys=True) + "\n"
    if check:
        current = MODEL_SPEC_SCHEMA_FILE.read_text() if MODEL_SPEC_SCHEMA_FILE.exists() else ""
        if current != text:
            errors.print(f"[red]{MODEL_SPEC_SCHEMA_FILE.relative_to(PROJECT_ROOT)} is out of date: run `strata schema`[/]")
            raise typer.Exit(1)
        console.print("model spec schema is up to date")
        return
    MODEL_SPEC_SCHEMA_FILE.write_text(text)
    console.print(f"wrote {MODEL_SPEC_SCHEMA_FILE.relative_to(PROJECT_ROOT)}")


@app.command()
def serve(
    model: str = typer.Argument(..., help="Model name (workloads/examples/<name> or a stack's models map)"),
    alias: str = typer.Option("champion", "--alias", help="Registry alias to serve: champion or challenger"),
    port: int = typer.Option(19100, "--port", help="REST port on 127.0.0.1 (gRPC: port+1000, Seldon metrics: port+2000)"),
    stack: Optional[str] = typer.Option(None, "--stack", help="Read the model spec from this stack"),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", envvar="STRATA_STATE_DIR",
                                             help="Local state dir whose traffic proxy routes to this server"),
    register: bool = typer.Option(True, "--register/--no-register",
                                  help="Register with the local proxy: champion as `stable`, challenger as `candidate`"),
) -> None:
    """Serve MODEL locally with the Seldon wrapper (REST + gRPC), from the local registry export."""
    from workloads.serving import launch
    from workloads.training.cli import resolve_spec
    from workloads.traffic.split import ALIAS_OF_PREDICTOR, metrics_predictor

    try:
        spec, _ = resolve_spec(model, stack)
    except SpecError as error:
        _fail(error, f"model {model!r}")
    slot = next((s for s, a in ALIAS_OF_PREDICTOR.items() if a == alias), None)
    if register and slot is not None:
        from workloads.traffic.local_proxy import LocalProxyRouter
        from workloads.traffic.state import register_upstream

        router = LocalProxyRouter(state_dir)
        register_upstream(router.state_dir, spec.name, slot, port, grpc_port=port + 1000)
        try:
            router.refresh()
        except Exception as error:  # noqa: BLE001 - a proxy that is down reads the file when it starts
            errors.print(f"registered {spec.name}/{slot} on port {port}; the proxy did not reload ({error})")
    realtime = spec.serving.realtime
    predictor = metrics_predictor(slot, spec.serving.rollout.strategy) if slot else alias
    raise typer.Exit(launch.main([
        "--model", spec.name, "--alias", alias, "--team", spec.team, "--http-port", str(port),
        "--grpc-port", str(port + 1000), "--metrics-port", str(port + 2000), "--predictor", predictor,
        "--max-batch-rows", str(realtime.max_batch_rows), "--max-payload-bytes", str(realtime.max_payload_bytes),
        "--latency-target-ms", str(spec.slos.latency_p99_ms),
    ]))


@app.command()
def stream(
    model: str = typer.Argument(..., help="Model name"),
    bootstrap: str = typer.Option("127.0.0.1:19092", "--bootstrap", envvar="STRATA_KAFKA_BOOTSTRAP", help="Kafka bootstrap servers"),
    alias: str = typer.Option("champion", "--alias"),
    metrics_port: int = typer.Option(19200, "--metrics-port", help="Prometheus metrics on 127.0.0.1"),
    stack: Optional[str] = typer.Option(None, "--stack", help="Read the model spec from this stack"),
) -> None:
    """Run the Kafka stream worker for MODEL: input topic -> scores, bad records -> dead-letter topic."""
    from workloads.streaming.worker import main as worker_main
    from workloads.training.cli import resolve_spec

    try:
        spec, _ = resolve_spec(model, stack)
    except SpecError as error:
        _fail(error, f"model {model!r}")
    raise typer.Exit(worker_main([
        "--bootstrap", bootstrap, "--model", spec.name, "--alias", alias, "--team", spec.team,
        "--batch-size", str(spec.serving.streaming.batch_size), "--metrics-port", str(metrics_port),
    ]))


@app.command()
def generate(
    check: bool = typer.Option(False, "--check", help="Exit 1 if the committed files are out of date"),
) -> None:
    """Regenerate alert/recording rules, Alertmanager config, dashboards and the runbook index."""
    from workloads.monitoring.generate import main as generate_main

    raise typer.Exit(generate_main(["--check"] if check else []))


def _mount_subcommands() -> None:
    from workloads.local.cli import local_app
    from workloads.traffic.cli import rollback_command, rollout_command, upstream_command
    from workloads.training.cli import train_command

    app.add_typer(local_app, name="local", help="Local mode: start, check and stop the local services.")
    from workloads.data.cli import data_app, score_command

    app.add_typer(data_app, name="data", help="The lake: ingest, refine, publish; versions, diffs, lineage, rebuilds.")
    app.command("train")(train_command)
    app.command("score")(score_command)
    from workloads.data.features.cli import features_app

    app.add_typer(features_app, name="features", help="The feature store: registry and online materialization.")
    from workloads.rollout.cli import promote_command, rollout_status_command

    app.command("promote")(promote_command)
    app.command("rollout-status")(rollout_status_command)
    from infra.onboard import codeowners_command, onboard_command
    from infra.preview.cli import pr_comment_command, preview_app

    app.add_typer(preview_app, name="preview")
    app.command("pr-comment")(pr_comment_command)
    app.command("onboard")(onboard_command)
    app.command("codeowners")(codeowners_command)
    app.command("rollout")(rollout_command)
    app.command("rollback")(rollback_command)
    app.command("upstream")(upstream_command)


_mount_subcommands()

if __name__ == "__main__":
    app()
