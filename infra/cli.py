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
) -> None:
    """Check every stack file and the model specs they reference; errors name the property path."""
    failed = False
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


def _mount_subcommands() -> None:
    from workloads.local.cli import local_app

    app.add_typer(local_app, name="local", help="Local mode: start, check and stop the local services.")


_mount_subcommands()

if __name__ == "__main__":
    app()
