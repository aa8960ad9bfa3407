"""`strata rollout`, `strata rollback`, `strata upstream`: the local traffic split, by hand.

    strata upstream fraud --stable-port 19100 --candidate-port 19101   # where the servers listen
    strata local up proxy
    strata rollout fraud --strategy canary --weight 20                 # 80% stable / 20% candidate
    strata rollout fraud --strategy shadow                             # candidate gets copies
    strata rollout fraud --strategy blue-green                         # 100% candidate at once
    strata rollback fraud                                              # 100% stable, time printed

They drive the same ``LocalProxyRouter`` the rollout controller uses; the controller adds
the metric gates. Exit codes: 0 done, 2 bad input or the proxy cannot do it.
"""

from __future__ import annotations

import os
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from workloads.local.errors import LocalError
from workloads.spec import SpecError
from workloads.traffic.local_proxy import LocalProxyRouter
from workloads.traffic.split import CANDIDATE, STABLE, TrafficSplit
from workloads.traffic.state import (check_model_name, read_grpc_upstreams, read_splits, register_upstream,
                                     unregister_upstream)

console = Console()
err = Console(stderr=True)

STATE_OPT = typer.Option(None, "--state-dir", envvar="STRATA_STATE_DIR",
                         help="State directory of `strata local` (default: <repo>/.strata).")


class Strategy(str, Enum):
    CANARY = "canary"
    SHADOW = "shadow"
    AB = "ab"
    BLUE_GREEN = "blue-green"


WEIGHT_RANGE = {Strategy.CANARY: (1, 100), Strategy.AB: (1, 99)}  # as the model spec's steps / abWeight


def _fail(message: str, title: str = "error") -> None:
    err.print(Panel(message, title=f"strata {title}", border_style="red", expand=False))
    raise typer.Exit(2)


def _default_weight(model: str, strategy: Strategy, stack: Optional[str]) -> int:
    from workloads.training.cli import resolve_spec

    try:
        spec, _ = resolve_spec(model, stack)
    except SpecError as exc:
        problems = "\n".join(f"  {path}: {message}" for path, message in exc.problems)
        _fail(f"--weight not given and no model spec to take it from:\n{problems}\n"
              f"  Fix: pass --weight N (or --stack STACK)", "rollout")
    rollout = spec.serving.rollout
    return rollout.steps[0] if strategy is Strategy.CANARY else rollout.ab_weight


def split_for(model: str, strategy: Strategy, weight: Optional[int]) -> TrafficSplit:
    """The split a strategy asks for; ``weight`` already resolved for canary and A/B."""
    if strategy in WEIGHT_RANGE:
        low, high = WEIGHT_RANGE[strategy]
        if weight is None or not low <= weight <= high:
            raise LocalError(f"--weight {weight}: out of range for {strategy.value}, expected {low}-{high} "
                             f"(% of live traffic to the candidate)")
        return TrafficSplit.weighted(model, weight)
    if weight is not None:
        raise LocalError(f"--weight applies to canary and ab only; {strategy.value} "
                         + ("mirrors every request to the candidate" if strategy is Strategy.SHADOW
                            else "switches 100% to the candidate at once"))
    return TrafficSplit.mirrored(model) if strategy is Strategy.SHADOW else TrafficSplit.all_candidate(model)


def rollout_command(
    model: str = typer.Argument(..., help="Model name (as registered with the proxy)."),
    strategy: Strategy = typer.Option(..., "--strategy", "-s", help="canary | shadow | ab | blue-green"),
    weight: Optional[int] = typer.Option(None, "--weight", "-w",
                                         help="% of live traffic to the candidate (canary 1-100, ab 1-99). "
                                              "Default: the spec's first canary step / abWeight."),
    stack: Optional[str] = typer.Option(None, "--stack", help="Read the model spec (default weight) from this stack."),
    state_dir: Optional[Path] = STATE_OPT,
) -> None:
    """Apply a rollout split by hand through the local proxy (no metric gate: see the rollout controller)."""
    try:
        router = LocalProxyRouter(state_dir)
        before = router.current(model)  # unknown model: say so before anything else
        if strategy in WEIGHT_RANGE and weight is None:
            weight = _default_weight(model, strategy, stack)
        split = split_for(model, strategy, weight)
        router.apply(split)
    except LocalError as exc:
        _fail(str(exc), "rollout")
    console.print(f"[green]{strategy.value}[/]: {split.describe()}  (was: {before.describe()}; "
                  f"reload took {router.last_switch_s * 1000:.0f} ms)", highlight=False)


def rollback_command(
    model: str = typer.Argument(..., help="Model name (as registered with the proxy)."),
    state_dir: Optional[Path] = STATE_OPT,
    kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", envvar="STRATA_KUBECONFIG",
                                              help="Act on this cluster (the model's SeldonDeployment) instead of the local proxy."),
    stack: Optional[str] = typer.Option(None, "--stack", help="With --kubeconfig: the stack (namespace prefix, the model's team)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="With --kubeconfig: the model's namespace."),
) -> None:
    """Send 100% of the traffic back to stable (champion) now; prints how long it took."""
    from workloads.rollout.service import record_manual_rollback

    if kubeconfig is not None:
        _cluster_rollback(model, kubeconfig, stack, namespace)
        return
    t0 = time.monotonic()
    try:
        router = LocalProxyRouter(state_dir)
        before = router.current(model)
        # End a recorded rollout first: a running controller sees it before its next step
        # and stops, instead of re-applying its split after ours.
        registry_root = Path(os.environ.get("STRATA_REGISTRY_DIR") or router.state_dir / "registry")
        ended = record_manual_rollback(registry_root, model)
        router.apply(TrafficSplit.all_stable(model))
    except LocalError as exc:
        _fail(str(exc), "rollback")
    took_ms = (time.monotonic() - t0) * 1000
    console.print(f"[green]rolled back[/] {model}: 100% {STABLE} (was: {before.describe()}) "
                  f"in {took_ms:.0f} ms", highlight=False)
    if ended is not None:
        console.print(f"ended the {getattr(ended.strategy, 'value', ended.strategy)} rollout of version {ended.candidate_version} "
                      "(recorded in the model's decisions)", highlight=False)


def _cluster_rollback(model: str, kubeconfig: Path, stack: Optional[str], namespace: Optional[str]) -> None:
    from workloads.rollout import cluster_ops

    target = cluster_target(model, kubeconfig, stack, namespace)
    try:
        result = cluster_ops.rollback(model, target)
    except Exception as exc:  # noqa: BLE001 - the API's refusal, named
        _fail(f"{target.namespace}/{model} on {kubeconfig}: {getattr(exc, 'reason', '')} {exc}".strip(), "rollback")
    console.print(f"[green]rolled back[/] {target.namespace}/{model}: 100% {STABLE} (was: {result.before.describe()}) "
                  f"in {result.seconds_to_stable * 1000:.0f} ms", highlight=False)
    if result.ended is not None:
        console.print(f"ended the {result.ended.strategy.value} rollout of version {result.ended.candidate_version} "
                      "(recorded in its ConfigMap and an Event)", highlight=False)


def cluster_target(model: str, kubeconfig: Path, stack: Optional[str], namespace: Optional[str]):
    """The cluster and namespace `--kubeconfig/--stack/--namespace` name (exit 2 on bad input)."""
    from workloads.rollout.cluster_ops import ClusterTarget, team_namespace
    from workloads.spec import SpecError
    from workloads.training.cli import resolve_spec

    if not kubeconfig.is_file():
        _fail(f"--kubeconfig {kubeconfig}: no such file", "cluster")
    if namespace is None:
        try:
            spec, _ = resolve_spec(model, stack)
            namespace = team_namespace(spec, stack)
        except SpecError as error:
            _fail(f"cannot tell {model}'s namespace: {error} (pass --namespace)", "cluster")
    return ClusterTarget(kubeconfig, namespace)


def upstream_command(
    model: Optional[str] = typer.Argument(None, help="Model name; omit to list every registered model."),
    stable_port: Optional[int] = typer.Option(None, "--stable-port", help="REST port of the champion's server."),
    candidate_port: Optional[int] = typer.Option(None, "--candidate-port", help="REST port of the challenger's server."),
    stable_grpc_port: Optional[int] = typer.Option(None, "--stable-grpc-port", help="gRPC port of the champion's server."),
    candidate_grpc_port: Optional[int] = typer.Option(None, "--candidate-grpc-port",
                                                      help="gRPC port of the challenger's server."),
    remove_candidate: bool = typer.Option(False, "--remove-candidate", help="Forget the candidate server."),
    state_dir: Optional[Path] = STATE_OPT,
) -> None:
    """Register where a model's stable/candidate servers listen (the proxy reloads if running), or list them."""
    try:
        router = LocalProxyRouter(state_dir)
        if model is not None:
            check_model_name(model)
            for predictor, port, grpc_port in ((STABLE, stable_port, stable_grpc_port),
                                               (CANDIDATE, candidate_port, candidate_grpc_port)):
                if grpc_port is not None and port is None:
                    raise LocalError(f"--{predictor}-grpc-port needs --{predictor}-port (the same server's REST port)")
                if port is not None:
                    for flag, value in ((f"--{predictor}-port", port), (f"--{predictor}-grpc-port", grpc_port)):
                        if value is not None and not 1024 <= value <= 65535:
                            raise LocalError(f"{flag} {value}: outside 1024-65535")
                    register_upstream(router.state_dir, model, predictor, port, grpc_port=grpc_port)
            if remove_candidate:
                if read_splits(router.state_dir).get(model, TrafficSplit.all_stable(model)).candidate_active:
                    raise LocalError(f"{model}'s candidate takes traffic now: `strata rollback {model}` first")
                unregister_upstream(router.state_dir, model, CANDIDATE)
            if stable_port or candidate_port or remove_candidate:
                reloaded = router.refresh()
                console.print(f"registered; proxy {'reloaded' if reloaded else 'not running (it reads them at start)'}")
        table = Table(title=f"proxy upstreams  (state: {router.state_dir})", title_justify="left")
        for column in ("model", STABLE, CANDIDATE, "gRPC", "split"):
            table.add_column(column)
        grpc = read_grpc_upstreams(router.state_dir)
        for name, slots in sorted(router.models().items()):
            if model is None or name == model:
                split = router.current(name).describe() if STABLE in slots else "(no stable server: not routed)"
                grpc_slots = grpc.get(name, {})
                grpc_text = " / ".join(grpc_slots.get(p, "-") for p in (STABLE, CANDIDATE)) if grpc_slots else "-"
                table.add_row(name, slots.get(STABLE, "-"), slots.get(CANDIDATE, "-"), grpc_text, split)
        console.print(table)
    except LocalError as exc:
        _fail(str(exc), "upstream")
