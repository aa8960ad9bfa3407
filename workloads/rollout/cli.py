"""`strata promote MODEL` and `strata rollout-status MODEL` (mounted by infra/cli.py)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)

STYLE = {"promote": "bold green", "rollback": "bold red", "discard": "red", "no_winner": "yellow",
         "hold": "yellow", "advance": "cyan", "start": "cyan", "resume": "magenta"}


def _registry(registry: Optional[Path]) -> Path:
    from workloads.serving.registry import default_root

    return registry or default_root()


def promote_command(
    model: str = typer.Argument(..., help="Model name (its spec decides the strategy, steps and window)"),
    stack: Optional[str] = typer.Option(None, "--stack", help="Read the model spec from this stack"),
    spec_file: Optional[Path] = typer.Option(None, "--spec-file", help="Read the model spec from this file"),
    registry: Optional[Path] = typer.Option(None, "--registry", help="Registry export (default $STRATA_REGISTRY_DIR)"),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="Local state dir (proxy, Prometheus)"),
    prometheus: Optional[str] = typer.Option(None, "--prometheus", envvar="STRATA_PROMETHEUS_URL"),
    force: bool = typer.Option(False, "--force", help="Roll out a version that already finished a rollout"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop after N seconds (the rollout stays recorded)"),
    kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", envvar="STRATA_KUBECONFIG",
                                              help="Run the rollout on this cluster (SeldonDeployment, ConfigMap, Events)"),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="With --kubeconfig: the model's namespace"),
    mlflow: Optional[str] = typer.Option(None, "--mlflow", envvar="MLFLOW_TRACKING_URI",
                                         help="With --kubeconfig: the cluster's MLflow (aliases)"),
    settle: Optional[float] = typer.Option(None, "--settle", min=0,
                                           help="Seconds after each analysis window before judging it: one scrape "
                                                "interval (default 2 s locally, 60 s on a cluster)"),
) -> None:
    """Roll the waiting challenger out with the spec's strategy (or resume the recorded rollout)."""
    from workloads.rollout.controller import RolloutError
    from workloads.rollout.service import local_controller, local_prometheus_url
    from workloads.spec import SpecError
    from workloads.training.cli import resolve_spec

    try:
        spec, _ = resolve_spec(model, stack, spec_file)
    except SpecError as error:
        errors.print(f"[red]invalid model spec[/]: {error}")
        raise typer.Exit(2)
    options = {} if settle is None else {"settle_s": settle}
    if kubeconfig is not None:
        _cluster_promote(spec, kubeconfig, stack, namespace, prometheus, mlflow, force, timeout, options)
        return
    root = _registry(registry)
    state = state_dir or _default_state_dir()

    from workloads.local.observability import remove_scrape_target, write_scrape_target
    from workloads.rollout.record import RolloutMetrics
    from workloads.rollout.service import serve_health

    metrics = RolloutMetrics(spec.team)
    exporter = serve_health(metrics, "127.0.0.1", 0)  # the local Prometheus scrapes the controller while it runs
    targets = Path(state) / "config" / "prometheus" / "targets"
    write_scrape_target(targets, f"rollout-{spec.name}", exporter.server_address[1], "/metrics")
    try:
        controller = local_controller(spec, root, state, prometheus or local_prometheus_url(state),
                                      actor=f"strata promote ({_user()})", metrics=metrics, on_decision=_show_decision,
                                      **options)
        _show_plan(spec)
        started = time.monotonic()
        final = controller.run(force=force, timeout_s=timeout)
    except RolloutError as error:
        errors.print(f"[red]rollout: {error}[/]")
        raise typer.Exit(2)
    finally:
        remove_scrape_target(targets, f"rollout-{spec.name}")
        exporter.shutdown()
    console.print(f"[bold]{final.phase.value}[/] after {time.monotonic() - started:.1f} s: {final.reason}")
    raise typer.Exit(0 if final.phase.value in ("promoted", "no_winner") or final.active else 1)


def _show_decision(decision) -> None:
    took = f" [bold]({decision.duration_s:.2f} s to 100% {'stable' if decision.outcome != 'promote' else 'new champion'})[/]" \
        if decision.duration_s is not None else ""
    console.print(f"{datetime.fromtimestamp(decision.at, timezone.utc):%H:%M:%S} step {decision.step} "
                  f"[{STYLE.get(decision.outcome, 'white')}]{decision.outcome.upper():9}[/] "
                  f"candidate {max(decision.weight, 0):3d}%  {decision.reason}{took}", highlight=False)


def _show_plan(spec) -> None:
    console.print(f"[bold]{spec.name}[/]: {spec.serving.rollout.strategy.value}, analysis window "
                  f"{spec.serving.rollout.analysis_window}, min {spec.serving.rollout.min_requests_per_step} "
                  "requests per arm")


def rollout_status_command(
    model: str = typer.Argument(..., help="Model name"),
    registry: Optional[Path] = typer.Option(None, "--registry", help="Registry export (default $STRATA_REGISTRY_DIR)"),
    last: int = typer.Option(20, "--last", help="How many decisions to show"),
    kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", envvar="STRATA_KUBECONFIG",
                                              help="Read it from this cluster (ConfigMap state, Events) instead of the registry export"),
    stack: Optional[str] = typer.Option(None, "--stack", help="With --kubeconfig: the stack (namespace prefix, the model's team)"),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="With --kubeconfig: the model's namespace"),
) -> None:
    """The model's rollout state and its decision history (who, when, metrics, outcome)."""
    from workloads.rollout.service import status

    if kubeconfig is not None:
        _cluster_status(model, kubeconfig, stack, namespace, last)
        return
    from workloads.serving.registry import read_aliases

    root = _registry(registry)
    state, history = status(root, model)
    aliases = read_aliases(root, model) if (root / model).is_dir() else {}
    console.print(f"[bold]{model}[/]: aliases {', '.join(f'{a}=v{v}' for a, v in sorted(aliases.items())) or 'none'}")
    if state is None:
        console.print("no rollout recorded")
    else:
        console.print(f"rollout of v{state.candidate_version} against v{state.stable_version} ({state.strategy.value}): "
                      f"[bold]{state.phase.value}[/] at step {state.step}, started "
                      f"{datetime.fromtimestamp(state.started_at, timezone.utc):%Y-%m-%d %H:%M:%S} UTC by {state.actor}")
        if state.reason:
            console.print(f"  {state.reason}", highlight=False)
    table = Table("#", "time (UTC)", "actor", "step", "candidate %", "outcome", "took", "reason")
    for item in history[-last:]:
        took = f"{item['duration_s']:.2f} s" if item.get("duration_s") is not None else ""
        table.add_row(str(item.get("seq")), item.get("at_iso", ""), item.get("actor", ""), str(item.get("step")),
                      str(item.get("weight")), f"[{STYLE.get(item['outcome'], 'white')}]{item['outcome']}[/]", took,
                      item.get("reason", ""))
    if history:
        console.print(table)


def _cluster_promote(spec, kubeconfig: Path, stack: Optional[str], namespace: Optional[str], prometheus: Optional[str],
                     mlflow: Optional[str], force: bool, timeout: Optional[float], options: dict) -> None:
    """The in-cluster controller's code, run from here against the cluster."""
    from workloads.rollout.controller import RolloutError
    from workloads.rollout.service import cluster_controller
    from workloads.traffic.cli import cluster_target

    missing = [flag for flag, value in (("--prometheus", prometheus), ("--mlflow", mlflow)) if not value]
    if missing:
        errors.print(f"[red]promote --kubeconfig needs {' and '.join(missing)}[/]: the cluster's Prometheus "
                     "(canary analysis) and MLflow (aliases), e.g. through `kubectl port-forward`")
        raise typer.Exit(2)
    target = cluster_target(spec.name, kubeconfig, stack, namespace)
    try:
        controller = cluster_controller(spec, target.namespace, prometheus, mlflow, kubeconfig=str(kubeconfig),
                                        actor=f"strata promote ({_user()})", on_decision=_show_decision, **options)
        _show_plan(spec)
        started = time.monotonic()
        final = controller.run(force=force, timeout_s=timeout)
    except RolloutError as error:
        errors.print(f"[red]rollout: {error}[/]")
        raise typer.Exit(2)
    console.print(f"[bold]{final.phase.value}[/] after {time.monotonic() - started:.1f} s: {final.reason}")
    raise typer.Exit(0 if final.phase.value in ("promoted", "no_winner") or final.active else 1)


def _cluster_status(model: str, kubeconfig: Path, stack: Optional[str], namespace: Optional[str], last: int) -> None:
    from workloads.rollout import cluster_ops
    from workloads.traffic.cli import cluster_target

    target = cluster_target(model, kubeconfig, stack, namespace)
    try:
        split, state, decisions = cluster_ops.status(model, target)
    except Exception as error:  # noqa: BLE001 - the API's refusal, named
        errors.print(f"[red]rollout-status {target.namespace}/{model}:[/] {error}")
        raise typer.Exit(2)
    console.print(f"[bold]{target.namespace}/{model}[/]: {split.describe()}")
    if state is None:
        console.print("no rollout recorded")
    else:
        console.print(f"rollout of v{state.candidate_version} against v{state.stable_version} ({state.strategy.value}): "
                      f"[bold]{state.phase.value}[/] at step {state.step}, by {state.actor}")
        if state.reason:
            console.print(f"  {state.reason}", highlight=False)
    table = Table("time (UTC)", "event", "source", "message")
    for item in decisions[-last:]:
        table.add_row(f"{item['at']:%Y-%m-%d %H:%M:%S}" if item["at"] else "", item["reason"], item["source"],
                      item["message"] or "")
    if decisions:
        console.print(table)


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _default_state_dir() -> Path:
    from workloads.local.supervisor import default_state_dir

    return default_state_dir()
