"""`strata local cluster up|down|kubeconfig|status`: the local Kubernetes control plane."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from workloads.local.errors import LocalError

cluster_app = typer.Typer(help="A local Kubernetes control plane (etcd, kube-apiserver, controller-manager, "
                               "scheduler, kwok nodes) on 127.0.0.1.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)
STATE_OPT = typer.Option(None, "--state-dir", envvar="STRATA_CLUSTER_STATE_DIR",
                         help="The cluster's folder (PKI, etcd data, logs, kubeconfig); default <state dir>/cluster.")


def _cluster(state_dir: Optional[Path]):
    from workloads.local.cluster import LocalCluster
    from workloads.local.supervisor import default_state_dir

    return LocalCluster(state_dir or default_state_dir() / "cluster")


def _fail(error: LocalError) -> None:
    console.print(f"[red]strata local cluster:[/] {error}")
    raise typer.Exit(2)


@cluster_app.command("up")
def up_command(
    state_dir: Optional[Path] = STATE_OPT,
    crds: bool = typer.Option(True, "--crds/--no-crds", help="install the operators' CRDs"),
    timeout_s: float = typer.Option(60.0, "--timeout", help="seconds for the control plane to become ready"),
) -> None:
    """Start the control plane (a fresh one; a running one is kept) and print its kubeconfig path."""
    from workloads.local.cluster import operator_crds

    cluster = _cluster(state_dir)
    try:
        info = cluster.up(timeout_s=timeout_s)
        if crds:
            installed = cluster.install_crds(operator_crds())
            console.print(f"installed {len(installed)} CRDs")
    except LocalError as error:
        _fail(error)
    console.print(f"[green]cluster up[/] at {info.server} ({len(info.nodes)} kwok nodes"
                  + (f", ready in {info.started_s:.1f}s" if info.started_s else "") + ")")
    typer.echo(str(info.kubeconfig))


@cluster_app.command("down")
def down_command(state_dir: Optional[Path] = STATE_OPT) -> None:
    """Stop every component; no process or port is left."""
    try:
        stopped = _cluster(state_dir).down()
    except LocalError as error:
        _fail(error)
    console.print(f"stopped {', '.join(stopped) or 'nothing (no cluster was running)'}")


@cluster_app.command("kubeconfig")
def kubeconfig_command(state_dir: Optional[Path] = STATE_OPT) -> None:
    """Print the admin kubeconfig's path (the last line of output)."""
    cluster = _cluster(state_dir)
    if not cluster.running():
        _fail(LocalError(f"no local cluster is running in {cluster.state_dir}: run `strata local cluster up`"))
    typer.echo(str(cluster.kubeconfig))
