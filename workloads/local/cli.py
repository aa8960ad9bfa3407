"""`strata local up|down|status|logs|ports`: the local services (typer sub-app ``local_app``).

Mount it in the main CLI with ``app.add_typer(local_app, name="local")``; standalone it
runs as ``python -m workloads.local``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from workloads.local.cluster_cli import cluster_app
from workloads.local.errors import LocalError
from workloads.local.ports import PORTS, parse_port_overrides, resolve_ports
from workloads.local.services import DEFAULT_SERVICES, LocalOptions
from workloads.local.supervisor import ServiceStatus, Supervisor, default_state_dir

local_app = typer.Typer(
    name="local",
    help="Run Strata's local services (Kafka, MLflow, Prometheus, Alertmanager, PagerDuty receiver, proxy, "
         "workloads) on 127.0.0.1; `up --demo` runs the whole pipeline.",
    no_args_is_help=True,
    add_completion=False,
)
local_app.add_typer(cluster_app, name="cluster")
console = Console(stderr=False)
err = Console(stderr=True)

STATE_OPT = typer.Option(None, "--state-dir", envvar="STRATA_STATE_DIR",
                         help="State/logs directory (default: <repo>/.strata).")
PORT_OPT = typer.Option(None, "--port", "-p", metavar="KEY=PORT",
                        help="Override a port of the ports table (repeatable), e.g. --port kafka=29092.")
STYLE = {"running": "green", "unhealthy": "yellow", "dead": "bold red", "stopped": "dim"}
PHASE_STYLE = {"healthy": "green", "already": "cyan", "restart": "yellow", "warning": "yellow",
               "stopped": "green", "info": "blue"}


def _fail(exc: LocalError) -> None:
    err.print(Panel(str(exc), title="strata local: error", border_style="red", expand=False))
    raise typer.Exit(2)


def _supervisor(state_dir: Optional[Path], ports: Optional[List[str]] = None, options: LocalOptions | None = None,
                verbose: bool = True) -> Supervisor:
    def on_event(service: str, phase: str, msg: str) -> None:
        if phase == "wait" or (phase in ("start", "prepare") and not verbose):
            return
        style = PHASE_STYLE.get(phase, "white")
        if phase == "start":
            msg = msg if len(msg) < 100 else msg[:97] + "..."
        console.print(f"[bold]{service:>12}[/] [{style}]{phase:<8}[/] {msg}", highlight=False)

    return Supervisor(state_dir, ports=parse_port_overrides(ports), options=options, on_event=on_event)


def _table(statuses: list[ServiceStatus], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("service", "state", "pid", "port", "url", "uptime", "detail"):
        t.add_column(col, overflow="fold")
    for s in statuses:
        up = f"{s.uptime_s:.0f}s" if s.uptime_s is not None else ""
        t.add_row(s.name, f"[{STYLE.get(s.state, 'white')}]{s.state}[/]", str(s.pid or ""),
                  ",".join(str(p) for p in s.ports.values()), s.url or "", up, s.detail)
    return t


@local_app.command()
def up(
    services: Optional[List[str]] = typer.Argument(None, help=f"Services (default: {' '.join(DEFAULT_SERVICES)})."),
    state_dir: Optional[Path] = STATE_OPT,
    port: Optional[List[str]] = PORT_OPT,
    prometheus_config: Optional[Path] = typer.Option(None, help="Use this prometheus.yml instead of the generated one."),
    rule_file: Optional[List[str]] = typer.Option(None, help="Rule file for the generated prometheus.yml (repeatable; default: the generated rules)."),
    alertmanager_config: Optional[Path] = typer.Option(None, help="Use this alertmanager.yml (default: the generated routing, PagerDuty and retrain webhook on loopback)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only report results."),
    demo: bool = typer.Option(False, "--demo", help="Run the whole pipeline: train, serve, stream, traffic, "
                              "canary, drift -> page -> retrain, then a summary and an HTML report."),
    demo_model: Optional[List[str]] = typer.Option(None, "--demo-model", help="Demo only these example models "
                                                   "(repeatable; default: all of workloads/examples)."),
) -> None:
    """Start services (and their dependencies) and wait until each is ready. Idempotent."""
    if demo:
        _demo(services, state_dir, port, demo_model, prometheus_config, rule_file, alertmanager_config)
        return
    if demo_model:
        _fail(LocalError("--demo-model only applies with --demo"))
    options = LocalOptions(prometheus_config=prometheus_config, rule_files=tuple(Path(r) for r in rule_file or ()),
                           alertmanager_config=alertmanager_config)
    t0 = time.monotonic()
    try:
        sup = _supervisor(state_dir, port, options, verbose=not quiet)
        statuses = sup.up(services or None)
    except LocalError as exc:
        _fail(exc)
    console.print(_table(statuses, f"strata local: up in {time.monotonic() - t0:.1f}s  (state: {sup.state_dir})"))


def _demo(services, state_dir, port, models, prometheus_config, rule_file, alertmanager_config) -> None:
    from workloads.local.demo import Demo, DemoSettings, demo_options, print_summary

    given = [flag for flag, value in (("SERVICE names", services), ("--prometheus-config", prometheus_config),
                                      ("--rule-file", rule_file), ("--alertmanager-config", alertmanager_config)) if value]
    if given:
        _fail(LocalError(f"--demo runs its own set of services and configuration: drop {', '.join(given)}"))
    try:
        sup = Supervisor(state_dir, ports=parse_port_overrides(port), options=demo_options())
        runner = Demo(sup, DemoSettings(models=tuple(models or ())), console)
    except LocalError as exc:
        _fail(exc)
    console.rule(f"strata local up --demo  (state: {sup.state_dir})")
    outcome = runner.run()
    print_summary(console, outcome)
    if not outcome.ok:
        failed = next((s for s in outcome.stages if not s.ok), None)
        err.print(Panel(f"stage '{failed.name if failed else '?'}' failed: {failed.detail if failed else 'stopped'}\n\n"
                        f"The services are still running for inspection: `strata local status --state-dir {sup.state_dir}`, "
                        f"`strata local logs SERVICE`; stop them with `strata local down --state-dir {sup.state_dir}`.",
                        title="strata local up --demo: failed", border_style="red", expand=False))
        raise typer.Exit(1)
    console.print(f"[green]demo complete[/] in {outcome.wall_s:.0f}s; report: {outcome.report}\n"
                  f"stop everything with: strata local down --state-dir {sup.state_dir}")


@local_app.command()
def down(
    services: Optional[List[str]] = typer.Argument(None, help="Services to stop (default: all that run)."),
    state_dir: Optional[Path] = STATE_OPT,
) -> None:
    """Stop services: SIGTERM to each process group, SIGKILL after a bounded wait."""
    try:
        sup = _supervisor(state_dir)
        stopped = sup.down(services or None)
    except LocalError as exc:
        _fail(exc)
    console.print(f"[green]stopped:[/] {', '.join(stopped) if stopped else 'nothing was running'}")


@local_app.command()
def status(
    services: Optional[List[str]] = typer.Argument(None),
    state_dir: Optional[Path] = STATE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Report every service: running (healthy), unhealthy, dead or stopped. Exit 1 if any is dead/unhealthy."""
    try:
        sup = _supervisor(state_dir)
        statuses = sup.status(services or None)
    except LocalError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps([s.__dict__ for s in statuses], indent=2))
    else:
        console.print(_table(statuses, f"strata local: status  (state: {sup.state_dir})"))
        for s in statuses:
            if s.state == "dead":
                console.print(f"[bold red]{s.name} died[/]: {s.detail}\n  log: {s.log}\n"
                              f"  restart it: strata local up {s.name}")
    if any(s.state in ("dead", "unhealthy") for s in statuses):
        raise typer.Exit(1)


@local_app.command()
def logs(
    service: Optional[str] = typer.Argument(None, help="A service (default: the last lines of each)."),
    lines: int = typer.Option(50, "--lines", "-n"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (Ctrl-C stops)."),
    state_dir: Optional[Path] = STATE_OPT,
) -> None:
    """Show a service's log (stdout+stderr) from the state directory."""
    sup = _supervisor(state_dir)
    names = [service] if service else [n for n in sup.registry.names() if sup.log_path(n).exists()]
    if service and service not in sup.registry and not sup.log_path(service).exists():
        _fail(LocalError(f"no service or log named {service!r}; known: {', '.join(sup.registry.names())}"))
    for name in names:
        path = sup.log_path(name)
        if not service:
            console.rule(f"{name}  ({path})")
        text = sup.logs(name, lines)
        sys.stdout.write(text + ("\n" if text else ""))
    if follow and service:
        path = sup.log_path(service)
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            try:
                while True:
                    chunk = f.read()
                    if chunk:
                        sys.stdout.write(chunk.decode("utf-8", "replace"))
                        sys.stdout.flush()
                    else:
                        time.sleep(0.3)
            except KeyboardInterrupt:
                pass


@local_app.command()
def ports(port: Optional[List[str]] = PORT_OPT) -> None:
    """The loopback ports table: defaults, overrides and what each port is for."""
    try:
        resolved = resolve_ports(parse_port_overrides(port))
    except LocalError as exc:
        _fail(exc)
    t = Table(title="strata local ports (127.0.0.1)", title_justify="left")
    for col in ("key", "port", "default", "env var", "what"):
        t.add_column(col)
    for key, spec in PORTS.items():
        mark = "" if resolved[key] == spec.default else " *"
        t.add_row(key, f"{resolved[key]}{mark}", str(spec.default), spec.env_var, spec.description)
    console.print(t)
    console.print(f"state dir: {default_state_dir()}  (STRATA_STATE_DIR)")
