"""Run Seldon's model microservice under Strata's server settings (serving environment).

    python -m workloads.serving.app workloads.serving.server.StrataModel --host 127.0.0.1 \\
        --http-port 9000 --grpc-port 5000 --metrics-port 6000 --parameters '[...]'

The same pieces as `seldon-core-microservice` (Seldon's Flask app with its routes, health
and metadata; Seldon's gRPC servicer; Seldon's metrics app; the model class constructed
once, `load()` after each fork), started with what Seldon's command line cannot set:

* `--host`: the address every port binds (Seldon hard-codes 0.0.0.0). Local mode binds
  127.0.0.1; the container entrypoint passes 0.0.0.0 (the pod IP);
* the REST worker class `workloads.serving.worker.QueueTimedWorker` (gunicorn's gthread
  worker that stamps when a request starts waiting for a thread), workers, threads;
* load shedding (`--queue-budget-ms`): a request that waited longer than the budget for a
  thread is answered at once, REST `503` with `Retry-After`, gRPC `UNAVAILABLE` with a
  `retry-after` trailer, counted in `strata_serving_rejected_requests_total{reason="overloaded"}`,
  instead of being served after its client has given up;
* a gRPC interceptor that gives the REST contract's answers gRPC status codes: a malformed
  message (or bytes that are not a SeldonMessage at all) is `INVALID_ARGUMENT` with the
  reason and the field in the details and `strata-reason` in the trailers, never
  `UNKNOWN`/`INTERNAL`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent import futures
from typing import Any

log = logging.getLogger("workloads.serving.app")

RETRY_AFTER_S = 1  # what a shed client is told to wait; one second is the smallest Retry-After
WORKER_CLASS = "workloads.serving.worker.QueueTimedWorker"
# HTTP status of the contract -> gRPC status code
GRPC_CODES = {400: "INVALID_ARGUMENT", 413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT", 503: "UNAVAILABLE"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("interface", nargs="?", default="workloads.serving.server.StrataModel",
                        help="the model class, module.Class")
    parser.add_argument("--host", default=env.get("STRATA_SERVING_HOST", "127.0.0.1"),
                        help="address every port binds (0.0.0.0 in a pod)")
    parser.add_argument("--parameters", default=env.get("PREDICTIVE_UNIT_PARAMETERS", "[]"),
                        help="Seldon's parameter list (JSON)")
    parser.add_argument("--http-port", type=int, default=int(env.get("PREDICTIVE_UNIT_HTTP_SERVICE_PORT", "9000")))
    parser.add_argument("--grpc-port", type=int, default=int(env.get("PREDICTIVE_UNIT_GRPC_SERVICE_PORT", "5000")))
    parser.add_argument("--metrics-port", type=int, default=int(env.get("PREDICTIVE_UNIT_METRICS_SERVICE_PORT", "6000")))
    parser.add_argument("--workers", type=int, default=int(env.get("STRATA_SERVING_WORKERS", "2")),
                        help="REST worker processes")
    parser.add_argument("--threads", type=int, default=int(env.get("STRATA_SERVING_THREADS", "2")),
                        help="threads per REST worker")
    parser.add_argument("--grpc-threads", type=int, default=int(env.get("STRATA_SERVING_GRPC_THREADS", "2")))
    parser.add_argument("--queue-budget-ms", type=float, default=float(env.get("STRATA_SERVING_QUEUE_BUDGET_MS", "100")),
                        help="longest a request may wait for a thread before it is shed (0: never shed)")
    parser.add_argument("--keepalive", type=int, default=30, help="seconds an idle keep-alive connection stays open")
    parser.add_argument("--no-grpc", action="store_true", help="REST only")
    parser.add_argument("--log-level", default=env.get("STRATA_SERVING_LOG_LEVEL", "WARNING"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def build_user_object(interface: str, parameters: str) -> Any:
    from seldon_core.microservice import parse_parameters

    module_name, _, class_name = interface.rpartition(".")
    user_class = getattr(importlib.import_module(module_name), class_name)
    return user_class(**parse_parameters(json.loads(parameters)))


# ---------------------------------------------------------------- REST (gunicorn)


def _worker_exit(_server: Any, worker: Any, seldon_metrics: Any) -> None:
    """Seldon's worker_exit (clear the dying worker's custom metrics), quiet when the
    metrics manager process has already gone (the whole group stops at once); the dead
    worker's live gauges (in flight, loaded version) leave the exposition."""
    from prometheus_client import multiprocess

    from workloads.serving.metrics import multiprocess_dir

    if multiprocess_dir():
        multiprocess.mark_process_dead(worker.pid)
    try:
        seldon_metrics.clear()
    except (OSError, EOFError):
        pass


def rest_options(args: argparse.Namespace, user_object: Any, seldon_metrics: Any) -> dict[str, Any]:
    from functools import partial

    from seldon_core.gunicorn_utils import post_worker_init

    return {
        "bind": f"{args.host}:{args.http_port}",
        "worker_class": WORKER_CLASS,
        "workers": args.workers,
        "threads": args.threads,
        # connections kept open between requests live in the worker's poller, not a thread
        "worker_connections": 4096,
        "keepalive": args.keepalive,
        "backlog": 2048,
        "timeout": 30,
        "graceful_timeout": 10,
        "accesslog": None,
        "loglevel": args.log_level.lower(),
        "post_worker_init": post_worker_init,
        "worker_exit": partial(_worker_exit, seldon_metrics=seldon_metrics),
    }


def run_rest(args: argparse.Namespace, user_object: Any, seldon_metrics: Any) -> None:
    from seldon_core import wrapper
    from seldon_core.gunicorn_utils import UserModelApplication

    app = wrapper.get_rest_microservice(user_object, seldon_metrics)
    app.config["STRATA_QUEUE_BUDGET_S"] = args.queue_budget_ms / 1000.0
    app.config["STRATA_RETRY_AFTER_S"] = RETRY_AFTER_S
    UserModelApplication(app, user_object, False, None, args.interface,
                         options=rest_options(args, user_object, seldon_metrics)).run()


def run_metrics(args: argparse.Namespace, seldon_metrics: Any) -> None:
    from seldon_core import wrapper
    from seldon_core.gunicorn_utils import StandaloneApplication, post_worker_init

    app = wrapper.get_metrics_microservice(seldon_metrics)
    StandaloneApplication(app, options={
        "bind": f"{args.host}:{args.metrics_port}", "workers": 1, "threads": 1, "accesslog": None,
        "loglevel": args.log_level.lower(), "timeout": 30, "post_worker_init": post_worker_init,
    }).run()


# ---------------------------------------------------------------- gRPC


class Undecodable:
    """What the request deserializer returns for bytes that are not a SeldonMessage."""

    def __init__(self, error: str):
        self.error = error


def grpc_interceptor(user_object: Any, queue_budget_s: float) -> Any:
    import grpc

    class ContractInterceptor(grpc.ServerInterceptor):
        """Predict calls: undecodable bytes, a shed request and a contract rejection become
        status codes (the reason in the details and the `strata-reason` trailer)."""

        def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = continuation(details)
            if handler is None or handler.unary_unary is None or not details.method.endswith("/Predict"):
                return handler
            queued_at = time.perf_counter()  # the server's poll thread: the request starts waiting here
            inner, decode = handler.unary_unary, handler.request_deserializer

            def safe_decode(raw: bytes) -> Any:
                try:
                    return decode(raw)
                except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and friends
                    return Undecodable(f"{type(error).__name__}: {error}")

            def predict(request: Any, context: Any) -> Any:
                metrics = getattr(user_object, "metrics", None)
                waited = time.perf_counter() - queued_at
                if isinstance(request, Undecodable):
                    _observe(metrics, 400, waited, "bad_request")
                    _abort(context, 400, "bad_request", f"the request is not a SeldonMessage ({request.error})")
                if queue_budget_s > 0 and waited > queue_budget_s:
                    _observe(metrics, 503, waited, "overloaded")
                    context.set_trailing_metadata((("retry-after", str(RETRY_AFTER_S)), ("strata-reason", "overloaded")))
                    context.abort(grpc.StatusCode.UNAVAILABLE,
                                  f"overloaded: waited {waited * 1000:.0f} ms for a thread (queue budget "
                                  f"{queue_budget_s * 1000:.0f} ms); retry after {RETRY_AFTER_S}s")
                response = inner(request, context)
                status = response.status
                if status.code >= 400:
                    _abort(context, status.code, status.reason, status.info)
                return response

            def _abort(context: Any, code: int, reason: str, info: str) -> None:
                name = GRPC_CODES.get(code, "INVALID_ARGUMENT" if code < 500 else "UNAVAILABLE")
                context.set_trailing_metadata((("strata-reason", reason), ("strata-code", str(code))))
                context.abort(getattr(grpc.StatusCode, name), f"{reason}: {info}")

            return grpc.unary_unary_rpc_method_handler(
                predict, request_deserializer=safe_decode, response_serializer=handler.response_serializer)

    return ContractInterceptor()


def _observe(metrics: Any, code: int, seconds: float, reason: str) -> None:
    if metrics is not None:
        metrics.observe_request("grpc", code, seconds, reason)


def grpc_server(args: argparse.Namespace, user_object: Any, seldon_metrics: Any) -> Any:
    import grpc
    from grpc_reflection.v1alpha import reflection
    from seldon_core import wrapper
    from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

    servicer = wrapper.SeldonModelGRPC(user_object, seldon_metrics)
    limit = 64 * 1024 * 1024
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.grpc_threads, thread_name_prefix="strata-grpc"),
        interceptors=[grpc_interceptor(user_object, args.queue_budget_ms / 1000.0)],
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", limit),
                 ("grpc.max_send_message_length", limit)],
    )
    prediction_pb2_grpc.add_ModelServicer_to_server(servicer, server)
    prediction_pb2_grpc.add_SeldonServicer_to_server(servicer, server)
    prediction_pb2_grpc.add_GenericServicer_to_server(servicer, server)
    names = [prediction_pb2.DESCRIPTOR.services_by_name[n].full_name for n in ("Model", "Seldon", "Generic")]
    reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), server)
    if server.add_insecure_port(f"{args.host}:{args.grpc_port}") == 0:
        raise SystemExit(f"gRPC: cannot bind {args.host}:{args.grpc_port}")
    return server


def run_grpc(args: argparse.Namespace, user_object: Any, seldon_metrics: Any) -> None:
    user_object.load()  # after the fork: torch and the model live in this process
    server = grpc_server(args, user_object, seldon_metrics)
    server.start()
    server.wait_for_termination()


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.path.append(os.getcwd())
    from seldon_core.metrics import SeldonMetrics

    user_object = build_user_object(args.interface, args.parameters)
    seldon_metrics = SeldonMetrics(worker_id_func=os.getpid)
    context = multiprocessing.get_context("fork")  # children inherit the constructed model class
    children = [context.Process(target=run_metrics, args=(args, seldon_metrics), daemon=True, name="seldon-metrics")]
    if not args.no_grpc:
        children.append(context.Process(target=run_grpc, args=(args, user_object, seldon_metrics), daemon=True,
                                        name="strata-grpc"))
    for child in children:
        child.start()
    log.info("REST %s:%d gRPC %s metrics %s:%d", args.host, args.http_port,
             "off" if args.no_grpc else f"{args.host}:{args.grpc_port}", args.host, args.metrics_port)
    run_rest(args, user_object, seldon_metrics)  # returns when gunicorn's arbiter stops
    for child in children:
        child.terminate()
        child.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
