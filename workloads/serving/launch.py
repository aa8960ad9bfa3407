"""Start the Seldon model server for one model version (stdlib only).

Runs from the main environment (`strata serve`, tests, the local supervisor) and starts
Seldon's microservice under our server settings (`workloads.serving.app`) from the serving
environment (.venv-serving) in its own process group: a gunicorn master + REST worker(s),
a gRPC process and Seldon's metrics process, every port bound to `host` (127.0.0.1 here),
so stopping it means signalling the whole group.

    python -m workloads.serving.launch --model fraud --alias champion --http-port 19100

Ports: REST `--http-port`, gRPC `--grpc-port` (default REST+1000), Seldon's own metrics
`--metrics-port` (default REST+2000). The contract metrics are at REST `/metrics`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INTERFACE = "workloads.serving.server.StrataModel"


def serving_venv() -> Path:
    return Path(os.environ.get("STRATA_SERVING_VENV", REPO_ROOT / ".venv-serving"))


def serving_python() -> Path:
    return serving_venv() / "bin" / "python"


@dataclass
class ServerConfig:
    model: str
    alias: str = "champion"
    version: str = ""
    registry_dir: str = ""
    http_port: int = 19100
    grpc_port: int | None = None
    metrics_port: int | None = None
    predictor: str = ""
    team: str = "unknown"
    max_batch_rows: int = 1024
    max_payload_bytes: int = 1_048_576
    latency_target_ms: float = 200.0
    torch_threads: int = 1
    host: str = "127.0.0.1"  # every port binds here; only a pod binds 0.0.0.0
    workers: int = 2  # gunicorn REST worker processes
    threads: int = 2  # threads per REST worker (benchmark: serving.realtime.server in the spec)
    grpc_threads: int = 2
    queue_budget_ms: float = 100.0  # a request waiting longer for a thread is shed (503 / UNAVAILABLE)
    features: str = ""  # the model's EnrichmentPlan JSON (workloads.serving.enrichment); empty: none
    feature_store_url: str = ""  # its online store (redis:// or rediss://)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def grpc(self) -> int:
        return self.grpc_port or self.http_port + 1000

    @property
    def metrics(self) -> int:
        return self.metrics_port or self.http_port + 2000

    def parameters(self) -> list[dict[str, str]]:
        def p(name: str, value: object, kind: str = "STRING") -> dict[str, str]:
            return {"name": name, "value": str(value), "type": kind}

        params = [p("model", self.model), p("team", self.team),
                  p("max_batch_rows", self.max_batch_rows, "INT"),
                  p("max_payload_bytes", self.max_payload_bytes, "INT"),
                  p("latency_target_ms", self.latency_target_ms, "FLOAT"),
                  p("torch_threads", self.torch_threads, "INT")]
        if self.version:
            params.append(p("version", self.version))
        else:
            params.append(p("alias", self.alias))
        if self.registry_dir:
            params.append(p("registry_dir", self.registry_dir))
        if self.predictor:
            params.append(p("predictor", self.predictor))
        if self.features:
            params += [p("features", self.features), p("feature_store_url", self.feature_store_url)]
        return params

    def command(self, python: Path | None = None) -> list[str]:
        python = python or serving_python()
        return [
            str(python), "-m", "workloads.serving.app", INTERFACE,
            "--host", self.host,
            "--parameters", json.dumps(self.parameters()),
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc),
            "--metrics-port", str(self.metrics),
            "--workers", str(self.workers), "--threads", str(self.threads),
            "--grpc-threads", str(self.grpc_threads), "--queue-budget-ms", str(self.queue_budget_ms),
            "--log-level", os.environ.get("STRATA_SERVING_LOG_LEVEL", "WARNING"),
        ]


class ModelServer:
    """A running server process group; a context manager that always stops it."""

    def __init__(self, config: ServerConfig, log_path: Path | str | None = None, python: Path | None = None):
        self.config = config
        self.python = Path(python) if python else serving_python()
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self.metrics_dir: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.config.grpc}"

    def start(self, timeout: float = 120.0) -> "ModelServer":
        if not self.python.exists():
            raise FileNotFoundError(
                f"{self.python} not found: create the serving environment with workloads/serving/setup-env.sh"
            )
        self.metrics_dir = tempfile.mkdtemp(prefix="strata-serving-metrics-")
        env = dict(os.environ)
        env.update({
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")])),
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            "PREDICTIVE_UNIT_ID": self.config.model,
            "PREDICTOR_ID": self.config.predictor or self.config.alias,
            "PYTHONUNBUFFERED": "1",
            **self.config.extra_env,
        })
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                self.config.command(self.python), cwd=str(REPO_ROOT), env=env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"model server exited with {self.proc.returncode} before ready; {self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health/status", timeout=2) as resp:
                    if resp.status == 200 and _grpc_port_open(self.config.grpc):
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.25)
        raise TimeoutError(f"model server not ready after {timeout:.0f}s ({last}); {self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_path and self.log_path.exists():
            return "log tail:\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-25:])
        return "no log"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left."""
        if self.proc is not None:
            pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and _group_alive(pgid):
                    try:
                        self.proc.wait(timeout=0.1)
                    except subprocess.TimeoutExpired:
                        pass
                if not _group_alive(pgid):
                    break
            self.proc = None
        if self.metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None

    def __enter__(self) -> "ModelServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True


def _grpc_port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--version", default="")
    parser.add_argument("--registry", default="", help="registry export root (default $STRATA_REGISTRY_DIR)")
    parser.add_argument("--http-port", type=int, default=19100)
    parser.add_argument("--grpc-port", type=int)
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--predictor", default="")
    parser.add_argument("--team", default="unknown")
    parser.add_argument("--max-batch-rows", type=int, default=1024)
    parser.add_argument("--max-payload-bytes", type=int, default=1_048_576)
    parser.add_argument("--latency-target-ms", type=float, default=200.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--queue-budget-ms", type=float, default=100.0)
    parser.add_argument("--print-command", action="store_true", help="print the Seldon command and exit")
    args = parser.parse_args(argv)
    config = ServerConfig(
        model=args.model, alias=args.alias, version=args.version, registry_dir=args.registry,
        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
        predictor=args.predictor, team=args.team, max_batch_rows=args.max_batch_rows,
        max_payload_bytes=args.max_payload_bytes, latency_target_ms=args.latency_target_ms,
        threads=args.threads, grpc_threads=args.threads, queue_budget_ms=args.queue_budget_ms,
    )
    if args.print_command:
        print(" ".join(config.command()))
        return 0
    server = ModelServer(config)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    server.start()
    print(f"serving {args.model} ({args.version or args.alias}): REST {server.url}  gRPC {server.grpc_target}", flush=True)
    try:
        while not stop["now"] and server.proc is not None and server.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
