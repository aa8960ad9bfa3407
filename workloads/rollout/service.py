"""Wiring: a `Controller` for local mode or for the cluster, and the long-running service.

    python -m workloads.rollout --model fraud [--spec-file F] [--registry DIR] [--state-dir DIR]
    python -m workloads.rollout --model fraud --cluster --spec-file /etc/strata/spec/model.yaml

Local: registry export + local proxy + the local Prometheus; runs the waiting challenger's
rollout to its end (or resumes the recorded one) and exits. Cluster (`--cluster`): the
SeldonDeployment router, the ConfigMap store, Events, MLflow aliases; watches for a new
challenger forever. Both serve `GET /healthz` and `GET /metrics` (the contract's
`strata_rollout_*`) on `--health-port` / `$STRATA_HEALTH_PORT`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from workloads.rollout.analysis import Prometheus
from workloads.rollout.controller import Controller, RolloutError
from workloads.rollout.record import Decision, JsonlSink, MlflowTagSink, RolloutMetrics
from workloads.rollout.state import FileStateStore, RolloutState
from workloads.spec import ModelSpec

log = logging.getLogger("workloads.rollout")


def local_prometheus_url(state_dir: Path | str | None) -> str:
    env = os.environ.get("STRATA_PROMETHEUS_URL")
    if env:
        return env
    from workloads.local.supervisor import Supervisor

    try:
        return Supervisor(state_dir).url("prometheus")
    except Exception as error:
        raise RolloutError(f"no Prometheus to analyse with: start it (`strata local up prometheus`) or pass "
                           f"--prometheus / $STRATA_PROMETHEUS_URL ({error})") from None


def local_controller(spec: ModelSpec, registry_root: Path | str, state_dir: Path | str, prometheus_url: str,
                     *, actor: str = "controller", metrics: RolloutMetrics | None = None,
                     on_decision: Callable[[Decision], None] | None = None, **options: Any) -> Controller:
    from workloads.rollout.local import HttpStablePredictor, LocalRegistry, PrometheusArms, http_smoke_check
    from workloads.traffic.local_proxy import LocalProxyRouter

    mlflow = MlflowTagSink()
    return Controller(
        spec=spec, router=LocalProxyRouter(state_dir), store=FileStateStore(registry_root),
        source=PrometheusArms(Prometheus(prometheus_url)), registry=LocalRegistry(registry_root, mlflow),
        stable=HttpStablePredictor(state_dir), sinks=[JsonlSink(registry_root), mlflow],
        metrics=metrics or RolloutMetrics(spec.team), smoke=http_smoke_check(state_dir, registry_root),
        actor=actor, on_decision=on_decision, **options)


def cluster_controller(spec: ModelSpec, namespace: str, prometheus_url: str, tracking_uri: str,
                       metrics: RolloutMetrics | None = None, kubeconfig: str | None = None, **options: Any) -> Controller:
    from workloads.rollout import kube

    kube.load_config(kubeconfig)
    router = kube.KubernetesTrafficRouter(namespace)
    prometheus = Prometheus(prometheus_url)
    from workloads.rollout.local import PrometheusArms

    return Controller(
        spec=spec, router=router, store=kube.ConfigMapStateStore(namespace), source=PrometheusArms(prometheus),
        registry=kube.MlflowRegistry(tracking_uri), stable=kube.KubernetesStablePredictor(router, prometheus),
        sinks=[kube.EventSink(namespace), MlflowTagSink(tracking_uri)], metrics=metrics or RolloutMetrics(spec.team),
        smoke=None, settle_s=options.pop("settle_s", 60.0), promote_timeout_s=options.pop("promote_timeout_s", 300.0),
        **options)


def serve_health(metrics: RolloutMetrics, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/metrics":
                body, ctype = metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8"
            elif self.path == "/healthz":
                body, ctype = b'{"status": "ok"}', "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="rollout-health").start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Strata rollout controller (one model)")
    parser.add_argument("--model", required=True)
    from workloads.spec import SPEC_FILE_ENV

    parser.add_argument("--spec-file", default=os.environ.get(SPEC_FILE_ENV) or None,
                        help=f"the model spec (default ${SPEC_FILE_ENV}, else the example/onboarded spec of --model)")
    parser.add_argument("--cluster", action="store_true", help="drive the SeldonDeployment; state in a ConfigMap")
    parser.add_argument("--namespace", default=os.environ.get("STRATA_NAMESPACE", "default"))
    parser.add_argument("--registry", default="", help="local registry export (default $STRATA_REGISTRY_DIR)")
    parser.add_argument("--state-dir", default=None, help="local state dir (proxy, Prometheus)")
    parser.add_argument("--prometheus", default=None, help="Prometheus URL (default: $STRATA_PROMETHEUS_URL / local)")
    parser.add_argument("--health-host", default=None, help="default 127.0.0.1 locally, 0.0.0.0 with --cluster")
    parser.add_argument("--health-port", type=int, default=int(os.environ.get("STRATA_HEALTH_PORT", "0")))
    parser.add_argument("--settle", type=float, default=None, help="seconds after a window before analysing it")
    parser.add_argument("--watch-interval", type=float, default=30.0, help="cluster: seconds between challenger checks")
    parser.add_argument("--force", action="store_true", help="roll out a version that already finished a rollout")
    parser.add_argument("--actor", default="controller")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)

    from workloads.spec import SpecError
    from workloads.training.cli import resolve_spec

    try:
        spec, _ = resolve_spec(args.model, None, args.spec_file)
    except SpecError as error:
        print(f"invalid model spec: {error}", file=sys.stderr)
        return 2
    metrics = RolloutMetrics(spec.team)
    host = args.health_host or ("0.0.0.0" if args.cluster else "127.0.0.1")
    health = serve_health(metrics, host, args.health_port) if args.health_port else None
    options = {} if args.settle is None else {"settle_s": args.settle}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if args.cluster:
            prometheus = args.prometheus or os.environ.get("STRATA_PROMETHEUS_URL")
            tracking = os.environ.get("MLFLOW_TRACKING_URI")
            if not prometheus or not tracking:
                print("--cluster needs STRATA_PROMETHEUS_URL (or --prometheus) and MLFLOW_TRACKING_URI", file=sys.stderr)
                return 2
            controller = cluster_controller(spec, args.namespace, prometheus, tracking, metrics, actor=args.actor, **options)
            while not stop.is_set():
                try:
                    controller.run(force=args.force)
                except RolloutError as error:
                    log.info("%s", error)  # nothing waiting: check again later
                stop.wait(args.watch_interval)
            return 0
        from workloads.serving.registry import default_root

        registry_root = Path(args.registry) if args.registry else default_root()
        controller = local_controller(spec, registry_root, args.state_dir or _default_state_dir(),
                                      args.prometheus or local_prometheus_url(args.state_dir),
                                      actor=args.actor, metrics=metrics, **options)
        state = controller.run(force=args.force)
        print(json.dumps({"model": state.model, "phase": state.phase.value, "step": state.step,
                          "candidate_version": state.candidate_version, "reason": state.reason}))
        return 0 if state.phase.value in ("promoted", "no_winner") else 1
    except RolloutError as error:
        print(f"rollout: {error}", file=sys.stderr)
        return 2
    finally:
        if health is not None:
            health.shutdown()


def _default_state_dir() -> Path:
    from workloads.local.supervisor import default_state_dir

    return default_state_dir()


def record_manual_rollback(registry_root: Path | str, model: str, actor: str = "strata rollback",
                           duration_s: float | None = None) -> RolloutState | None:
    """For `strata rollback MODEL`, called BEFORE it moves the traffic: end the recorded
    rollout (a running controller sees it before its next step and stops instead of
    re-applying that step; none resumes it) and record who did it. Returns the ended
    state, None when no rollout was active."""
    from workloads.rollout.controller import record_decision
    from workloads.rollout.state import Phase

    store = FileStateStore(registry_root)
    state = store.load(model)
    if state is None or not state.active:
        return None
    state.phase, state.reason = Phase.ROLLED_BACK, f"rolled back by {actor}"
    record_decision(state, store, [JsonlSink(registry_root), MlflowTagSink()], "rollback", state.reason, actor,
                    0, duration_s=duration_s)
    return state


def status(registry_root: Path | str, model: str) -> tuple[RolloutState | None, list[dict[str, Any]]]:
    return FileStateStore(registry_root).load(model), JsonlSink(registry_root).history(model)
