"""`strata preview config|create|destroy|gc` and `strata pr-comment` (mounted in infra/cli.py).

The workflows (.github/workflows/preview.yml, preview-gc.yml, pr.yml) call these; so can a
person with the backend's credentials and the preview cluster's kubeconfig (see
runbooks/preview-environment-cleanup.md). Exit codes: 0 done, 1 a teardown or gc step
failed (named), 2 invalid input (the property or option is named).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from infra.preview.stacks import DEFAULT_TTL, derive_preview_config, namespace_prefix, preview_stack_name
from workloads.spec import SpecError

preview_app = typer.Typer(help="Preview environments: one stack pr-<number> per pull request.", no_args_is_help=True,
                          add_completion=False)
console = Console(stderr=True)

KUBECONFIG_ENV = "STRATA_PREVIEW_KUBECONFIG"  # a path to the shared preview cluster's kubeconfig
DEFAULT_TTL_HOURS = DEFAULT_TTL.total_seconds() / 3600


def _fail(error: SpecError) -> None:
    console.print("[red]invalid preview input[/]")
    for path, message in error.problems:
        console.print(f"  [bold]{escape(path)}[/]: {escape(message)}", highlight=False)
    raise typer.Exit(2)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def make_backends(kubeconfig: Optional[Path]):
    """The real Automation API + Kubernetes API; tests/cicd replace this function with doubles."""
    from infra.preview.automation import AutomationStacks, KubernetesCluster

    cluster = KubernetesCluster(kubeconfig) if kubeconfig is not None else None
    return AutomationStacks(), cluster


def _kubeconfig(path: Optional[Path]) -> Path:
    if path is None:
        _fail(SpecError([("--kubeconfig", f"required: the shared preview cluster's kubeconfig file (or ${KUBECONFIG_ENV})")]))
    if not path.is_file():
        _fail(SpecError([("--kubeconfig", f"no such file: {path}")]))
    return path


def _github_output(values: dict[str, str]) -> None:
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with open(target, "a") as handle:
            for key, value in values.items():
                handle.write(f"{key}={value}\n")


def _ttl(hours: float) -> timedelta:
    if hours <= 0:
        raise SpecError([("--ttl-hours", f"must be positive, got {hours}")])
    return timedelta(hours=hours)


PR_OPTION = typer.Option(..., "--pr", help="pull-request number: the stack is pr-<number>")
KUBECONFIG_OPTION = typer.Option(None, "--kubeconfig", envvar=KUBECONFIG_ENV, help="kubeconfig file of the shared preview cluster")


@preview_app.command("config")
def config_command(
    pr: str = PR_OPTION,
    ttl_hours: float = typer.Option(DEFAULT_TTL_HOURS, "--ttl-hours", help="hours until gc may destroy it"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write the stack file here (default stdout)"),
) -> None:
    """Print the preview's stack file (derived from quick); `strata plan --stack-file` plans it offline."""
    try:
        preview = derive_preview_config(pr, _now(), _ttl(ttl_hours))
    except SpecError as error:
        _fail(error)
    document = {"config": {**preview.config, "strata:kubeconfig": {"secure": "set by strata preview create"}}}
    text = f"# Preview stack {preview.stack}, derived from stacks/Pulumi.quick.yaml; expires {preview.tags['strata:expires-at']}\n"
    text += yaml.safe_dump(document, sort_keys=False)
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


@preview_app.command("create")
def create_command(
    pr: str = PR_OPTION,
    kubeconfig: Optional[Path] = KUBECONFIG_OPTION,
    ttl_hours: float = typer.Option(DEFAULT_TTL_HOURS, "--ttl-hours", help="hours until gc may destroy it"),
    url_template: str = typer.Option("", "--url-template", envvar="STRATA_PREVIEW_URL_TEMPLATE",
                                     help="the preview's URL, with {pr}, {stack}, {prefix} (e.g. a wildcard ingress host)"),
    json_out: bool = typer.Option(False, "--json", help="print a JSON summary on stdout"),
) -> None:
    """Create or update the stack pr-<number> on the shared preview cluster (`pulumi up`)."""
    from infra.preview.teardown import create_preview

    try:
        preview = derive_preview_config(pr, _now(), _ttl(ttl_hours))
    except SpecError as error:
        _fail(error)
    path = _kubeconfig(kubeconfig)
    stacks, _ = make_backends(path)
    outputs = create_preview(stacks, preview, path.read_text())
    prefix = preview.namespace_prefix
    url = url_template.format(pr=preview.pr, stack=preview.stack, prefix=prefix) if url_template else str(
        outputs.get("mlflowTrackingUri", ""))
    summary: dict[str, Any] = {"stack": preview.stack, "namespacePrefix": prefix, "url": url,
                               "expiresAt": preview.tags["strata:expires-at"], "outputs": outputs}
    _github_output({"stack": preview.stack, "url": url, "namespace-prefix": prefix,
                    "expires-at": summary["expiresAt"]})
    if json_out:
        typer.echo(json.dumps(summary, default=str))
    else:
        console.print(f"[green]preview {preview.stack} is up[/]: {url} (namespaces {prefix}*, expires {summary['expiresAt']})")


@preview_app.command("destroy")
def destroy_command(
    pr: str = PR_OPTION,
    kubeconfig: Optional[Path] = KUBECONFIG_OPTION,
    timeout_minutes: float = typer.Option(10, "--timeout-minutes", help="how long to wait for load balancers to go"),
) -> None:
    """Tear pr-<number> down: load balancers first, then destroy, then stack rm. Safe to repeat."""
    from infra.preview.teardown import TeardownError, destroy_preview

    try:
        stack = preview_stack_name(pr)
    except SpecError as error:
        _fail(error)
    stacks, cluster = make_backends(_kubeconfig(kubeconfig))
    try:
        report = destroy_preview(stacks, cluster, stack, timeout=timedelta(minutes=timeout_minutes))
    except TeardownError as error:
        console.print(f"[red]teardown of {stack} stopped:[/] {error}")
        raise typer.Exit(1) from None
    for step in report.steps:
        console.print(f"  {step}")
    console.print(f"[green]{stack} is gone[/] (namespaces {namespace_prefix(stack)}*)")


@preview_app.command("gc")
def gc_command(
    kubeconfig: Optional[Path] = KUBECONFIG_OPTION,
    ttl_hours: float = typer.Option(DEFAULT_TTL_HOURS, "--ttl-hours", help="TTL for stacks without an expiry tag"),
    open_pr: Optional[list[int]] = typer.Option(None, "--open-pr", help="open pull requests; other pr-* stacks are destroyed"),
    open_prs_file: Optional[Path] = typer.Option(None, "--open-prs-file", help="a JSON list of open pull-request numbers"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only list what would be destroyed"),
    timeout_minutes: float = typer.Option(10, "--timeout-minutes", help="per stack, for its load balancers to go"),
) -> None:
    """Destroy preview stacks past their TTL tag (or whose pull request is closed)."""
    from infra.preview.teardown import collect_garbage

    try:
        ttl = _ttl(ttl_hours)
        open_prs: Optional[set[int]] = set(open_pr) if open_pr else None
        if open_prs_file is not None:
            try:
                listed = json.loads(open_prs_file.read_text())
            except (OSError, ValueError) as error:
                raise SpecError([("--open-prs-file", f"not a readable JSON list: {error}")]) from None
            if not isinstance(listed, list) or not all(isinstance(n, int) for n in listed):
                raise SpecError([("--open-prs-file", "must hold a JSON list of pull-request numbers")])
            open_prs = (open_prs or set()) | set(listed)
    except SpecError as error:
        _fail(error)
    stacks, cluster = make_backends(None if dry_run and kubeconfig is None else _kubeconfig(kubeconfig))
    result = collect_garbage(stacks, cluster, _now(), ttl, open_prs, dry_run=dry_run,
                             timeout=timedelta(minutes=timeout_minutes))
    verb = "would destroy" if dry_run else "destroyed"
    for item in result.destroyed:
        console.print(f"{verb} {item.stack}: {item.reason}")
    for item, error in result.failed:
        console.print(f"[red]failed[/] {item.stack} ({item.reason}): {error}")
    console.print(f"kept {len(result.kept)} stack(s): {', '.join(result.kept) or '-'}")
    if result.failed:
        raise typer.Exit(1)


def pr_comment_command(
    head: Path = typer.Option(..., "--head", help="folder of <stack>.json plans of this pull request"),
    base: Optional[Path] = typer.Option(None, "--base", help="folder of <stack>.json plans of the base branch"),
    output: Path = typer.Option(..., "--output", "-o", help="write the markdown comment here"),
    head_ref: str = typer.Option("", "--head-ref"),
    base_ref: str = typer.Option("", "--base-ref"),
    preview_notice: str = typer.Option("", "--notice", help="a line about `pulumi preview` (ran / skipped and why)"),
    stacks: Optional[list[str]] = typer.Option(None, "--stack", help="stacks expected (a missing plan is reported as failed)"),
) -> None:
    """Render the pull-request comment from `strata plan --format json` outputs (head vs base)."""
    from infra.preview.comment import load_plans, render_comment

    if not head.is_dir():
        _fail(SpecError([("--head", f"no such folder: {head}")]))
    heads = load_plans(head)
    bases = load_plans(base) if base is not None and base.is_dir() else {}
    failures = {stack: "no plan (see the job log)" for stack in (stacks or []) if stack not in heads}
    if not heads and not failures:
        _fail(SpecError([("--head", f"no <stack>.json plan in {head}")]))
    output.write_text(render_comment(heads, {s: bases.get(s) for s in heads}, head_ref=head_ref, base_ref=base_ref,
                                     preview_notice=preview_notice, failures=failures))
    console.print(f"wrote {output}")
