"""The local-mode supervisor: start, health-check, report and stop the local services.

    sup = Supervisor()                    # state in $STRATA_STATE_DIR or <repo>/.strata
    sup.up(["kafka", "prometheus"])       # + dependencies; idempotent
    sup.status()                          # running / unhealthy / dead / stopped
    sup.down()                            # every recorded service, process groups, by PID

State directory layout::

    <state>/run/<service>.json     PID file: pid, process group, start time, boot id, ports
    <state>/logs/<service>.log     stdout+stderr of the service
    <state>/data/<service>/        its data (Kafka log dirs, MLflow db + artifacts, TSDB, pages)
    <state>/config/<service>/      generated configuration
    <state>/supervisor.lock        serialises `up`/`down` across processes
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from workloads.local import observability
from workloads.local.errors import LocalError, MissingDependencyError, PortInUseError, ServiceFailedError
from workloads.local.health import Health
from workloads.local.ports import HOST, PORTS, resolve_ports
from workloads.local.process import ProcessRecord, new_record, start_detached, stop_group
from workloads.local.services import (
    DEFAULT_SERVICES,
    REPO_ROOT,
    LocalOptions,
    Registry,
    ServiceContext,
    ServiceSpec,
    default_registry,
    split_port_key,
)

PROMETHEUS = "prometheus"
# `down` waits at most this long for Prometheus to mark the stopped services' series stale
# (two 5 s scrape intervals when all is well) before it stops Prometheus.
FORGET_TIMEOUT_S = 30.0

# Children started by this Python process (any Supervisor instance), to reap their exit.
_CHILDREN: dict[int, subprocess.Popen] = {}

EventFn = Callable[[str, str, str], None]  # (service, phase, message)


def default_state_dir() -> Path:
    env = os.environ.get("STRATA_STATE_DIR")
    return Path(env) if env else REPO_ROOT / ".strata"


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            _CHILDREN.pop(pid, None)
            _EXIT_CODES[pid] = proc.returncode


_EXIT_CODES: dict[int, int] = {}


def port_free(port: int, host: str = HOST) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> str | None:
    """'pid 123 (java)' for the process listening on ``port``, from ``ss -ltnp``."""
    ss = shutil.which("ss")
    if not ss:
        return None
    try:
        out = subprocess.run([ss, "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'users:\(\("([^"]+)",pid=(\d+)', out)
    if m:
        return f"pid {m.group(2)} ({m.group(1)})"
    return "a process of another user" if out.strip() else None


def tail(path: Path | str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class _DependencyFailed(LocalError):
    def __init__(self, service: str, dep: str):
        super().__init__(f"service '{service}' not started: its dependency '{dep}' failed")


@dataclass
class ServiceStatus:
    name: str
    state: str  # "running" (healthy) | "unhealthy" | "dead" | "stopped"
    pid: int | None = None
    ports: dict[str, int] = field(default_factory=dict)
    url: str | None = None
    detail: str = ""
    log: str | None = None
    uptime_s: float | None = None

    @property
    def healthy(self) -> bool:
        return self.state == "running"

    @property
    def port(self) -> int | None:
        return next(iter(self.ports.values()), None)


class Supervisor:
    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        ports: Mapping[str, int] | None = None,
        options: LocalOptions | None = None,
        registry: Registry | None = None,
        on_event: EventFn | None = None,
    ):
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.state_dir = self.state_dir.resolve()
        self.ports = resolve_ports(ports)
        self.options = options or LocalOptions()
        self.registry = registry or default_registry()
        self.on_event: EventFn = on_event or (lambda service, phase, msg: None)
        for sub in ("run", "logs", "data", "config"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)

    # --- records --------------------------------------------------------------------------
    def _record_path(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.json"

    def record(self, name: str) -> ProcessRecord | None:
        return ProcessRecord.load(self._record_path(name))

    def _recorded_names(self) -> list[str]:
        return sorted(p.stem for p in (self.state_dir / "run").glob("*.json"))

    def _alive(self, rec: ProcessRecord) -> bool:
        _reap()
        return rec.leader_alive()

    def context(self, name: str, ports: Mapping[str, int] | None = None) -> ServiceContext:
        merged = dict(self.ports)
        merged.update(ports or {})
        return ServiceContext(
            name=name, state_dir=self.state_dir, ports=merged, options=self.options,
            log=lambda msg, _n=name: self.on_event(_n, "info", msg),
        )

    def _running_context(self, name: str) -> ServiceContext:
        rec = self.record(name)
        return self.context(name, rec.ports if rec else None)

    @contextmanager
    def _lock(self):
        with open(self.state_dir / "supervisor.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # --- up -------------------------------------------------------------------------------
    def up(self, names: Iterable[str] | None = None) -> list[ServiceStatus]:
        """Start ``names`` (default: DEFAULT_SERVICES) and their dependencies; idempotent.

        A service that is running and healthy is left alone (same PID). One whose process
        died is cleaned up and started again. Raises a ``LocalError`` with a clear message
        for a taken port, a missing binary/package or a service that does not get healthy.
        """
        self.options.check()
        order = self.registry.closure(list(names or DEFAULT_SERVICES))
        with self._lock():
            # Fail fast, naming every missing dependency, before starting anything.
            missing: list[MissingDependencyError] = []
            for name in order:
                rec = self.record(name)
                if not (rec and self._alive(rec)):
                    for req in self.registry[name].requires:
                        try:
                            req.require(name)
                        except MissingDependencyError as exc:
                            missing.append(exc)
            if missing:
                raise MissingDependencyError.combine(missing)
            self._start_in_waves(order)
        return self.status(order)

    def _start_in_waves(self, order: list[str]) -> None:
        """Start every service as soon as its own dependencies are ready, in parallel
        (Kafka, MLflow and the PagerDuty receiver boot together; Alertmanager follows the
        receiver without waiting for Kafka)."""
        futures: dict[str, Future] = {}

        def run(spec: ServiceSpec) -> None:
            for dep in spec.depends_on:
                if dep in futures:
                    try:
                        futures[dep].result()
                    except BaseException:
                        raise _DependencyFailed(spec.name, dep) from None
            self._up_one(spec)

        with ThreadPoolExecutor(max_workers=max(1, len(order)), thread_name_prefix="strata-up") as pool:
            for name in order:  # dependencies first, so a task only waits on submitted ones
                futures[name] = pool.submit(run, self.registry[name])
        errors = [(n, f.exception()) for n, f in futures.items()
                  if f.exception() is not None and not isinstance(f.exception(), _DependencyFailed)]
        for n, exc in errors[1:]:
            self.on_event(n, "error", str(exc))
        if errors:
            raise errors[0][1]

    def _up_one(self, spec: ServiceSpec) -> None:
        name = spec.name
        rec = self.record(name)
        if rec is not None:
            if self._alive(rec):
                ctx = self.context(name, rec.ports)
                health = self._wait_healthy(spec, ctx, rec)
                self.on_event(name, "already", f"already running (pid {rec.pid}): {health.detail}")
                self._register_target(spec, ctx)
                return
            self.on_event(name, "restart", f"recorded process {rec.pid} is dead; cleaning up and restarting")
            stop_group(rec, 5.0, _reap)
            self._record_path(name).unlink(missing_ok=True)

        ctx = self.context(name)
        for key in spec.ports:
            port = ctx.port(key)
            if not port_free(port):
                base_key = split_port_key(key)[0]
                raise PortInUseError(name, base_key, port, port_holder(port), PORTS[base_key].env_var)
        if spec.prepare:
            self.on_event(name, "prepare", "preparing")
            spec.prepare(ctx)
        command = spec.command(ctx)
        env = dict(os.environ)
        if spec.env:
            env.update(spec.env(ctx))
        ctx.data_dir().mkdir(parents=True, exist_ok=True)
        self.on_event(name, "start", " ".join(command))
        proc = start_detached(command, env=env, cwd=ctx.data_dir(), log_path=ctx.log_path)
        _CHILDREN[proc.pid] = proc
        rec = new_record(name, proc, command, {k: ctx.port(k) for k in spec.ports}, ctx.log_path)
        rec.save(self._record_path(name))
        try:
            health = self._wait_healthy(spec, ctx, rec)
        except BaseException:
            stop_group(rec, spec.stop_timeout_s, _reap)
            self._record_path(name).unlink(missing_ok=True)
            raise
        self._register_target(spec, ctx)
        self.on_event(name, "healthy", f"healthy (pid {rec.pid}): {health.detail}")

    def _register_target(self, spec: ServiceSpec, ctx: ServiceContext) -> None:
        if spec.metrics_path:
            observability.write_scrape_target(ctx.targets_dir, spec.name, ctx.port(spec.metrics_port or spec.ports[0]),
                                              spec.metrics_path, job=spec.metrics_job)

    def _wait_healthy(self, spec: ServiceSpec, ctx: ServiceContext, rec: ProcessRecord) -> Health:
        deadline = time.monotonic() + spec.start_timeout_s
        delay = 0.2
        health = Health(False, "not checked yet")
        self.on_event(spec.name, "wait", "waiting for readiness")
        while True:
            if not self._alive(rec):
                code = _EXIT_CODES.get(rec.pid)
                reason = f"process exited{f' with code {code}' if code is not None else ''} before it was ready"
                raise ServiceFailedError(spec.name, reason, rec.log, tail(rec.log, 15))
            health = spec.health(ctx)
            if health.ok:
                return health
            if time.monotonic() >= deadline:
                raise ServiceFailedError(
                    spec.name, f"not ready after {spec.start_timeout_s:.0f}s ({health.detail})", rec.log, tail(rec.log, 15)
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # --- down -----------------------------------------------------------------------------
    def down(self, names: Iterable[str] | None = None) -> list[str]:
        """Stop ``names`` (default: every service recorded in the state dir).

        SIGTERM to the process group, SIGKILL after the service's stop timeout; then waits
        (bounded) for its ports to close. Returns the names it stopped or cleaned up.
        """
        with self._lock():
            recorded = self._recorded_names()
            wanted = recorded if names is None else [n for n in names if n in recorded]
            known = [n for n in self.registry.closure([n for n in wanted if n in self.registry])]
            order = [n for n in wanted if n not in self.registry] + [n for n in reversed(known) if n in wanted]
            # Prometheus last: it must see the services it scrapes go (their series stale), see below
            order = [n for n in order if n != PROMETHEUS] + [n for n in order if n == PROMETHEUS]
            stopped, survivors, unscraped = [], [], []
            for name in order:
                if name == PROMETHEUS and unscraped:
                    self._wait_until_prometheus_forgets(unscraped)
                rec = self.record(name)
                if rec is None:
                    self._record_path(name).unlink(missing_ok=True)
                    continue
                spec = self.registry.services.get(name)
                timeout = spec.stop_timeout_s if spec else 15.0
                self.on_event(name, "stop", f"stopping process group {rec.pgid}")
                if stop_group(rec, timeout, _reap):
                    self._record_path(name).unlink(missing_ok=True)
                    if observability.remove_scrape_target(self.state_dir / "config" / "prometheus" / "targets", name):
                        unscraped.append(name)
                    stopped.append(name)
                    self._wait_ports_closed(name, rec.ports)
                    self.on_event(name, "stopped", "stopped")
                else:
                    survivors.append(f"{name} (group {rec.pgid}: pids {rec.live_members()})")
            if survivors:
                raise LocalError("could not stop: " + ", ".join(survivors) + " - check permissions, then kill those PIDs")
        return stopped

    def _wait_until_prometheus_forgets(self, services: Sequence[str], timeout: float = FORGET_TIMEOUT_S) -> None:
        """Before Prometheus stops: wait (bounded) until the series of the services just stopped are
        stale. Prometheus marks a dropped target's series stale about two scrape intervals after it
        drops the target; stopped sooner, their last samples (a drift gauge) stay within the query
        lookback of the next `up`, and the previous run's alerts fire again at once (issue 12)."""
        if self.record(PROMETHEUS) is None:
            return
        query = urllib.parse.urlencode({"query": f'count by (service) ({{service=~"{"|".join(services)}"}})'})
        url = f"{self.url(PROMETHEUS)}/api/v1/query?{query}"
        deadline, left = time.monotonic() + timeout, list(services)
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    left = sorted(r["metric"].get("service", "?") for r in json.loads(resp.read())["data"]["result"])
            except (OSError, ValueError, KeyError):
                return  # Prometheus is not answering: it holds nothing newer to forget
            if not left:
                return
            time.sleep(0.5)
        self.on_event(PROMETHEUS, "warning", f"stopping while the series of {', '.join(left)} are not stale yet "
                                             f"(after {timeout:.0f}s): their alerts may fire again at the next up")

    def _wait_ports_closed(self, name: str, ports: Mapping[str, int], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(port_free(p) for p in ports.values()):
                return
            time.sleep(0.1)
        busy = [f"{p} ({port_holder(p) or 'unknown'})" for p in ports.values() if not port_free(p)]
        if busy:
            self.on_event(name, "warning", f"port(s) still taken after stop: {', '.join(busy)}")

    # --- status / logs --------------------------------------------------------------------
    def status(self, names: Sequence[str] | None = None) -> list[ServiceStatus]:
        if names is None:
            names = self.registry.names() + [n for n in self._recorded_names() if n not in self.registry]
        return [self.service_status(n) for n in names]

    def service_status(self, name: str) -> ServiceStatus:
        spec = self.registry.services.get(name)
        rec = self.record(name)
        ctx = self.context(name, rec.ports if rec else None)
        ports = rec.ports if rec else ({k: ctx.port(k) for k in spec.ports} if spec else {})
        url = spec.url_for(ctx) if spec else None
        log = str(ctx.log_path)
        if rec is None:
            return ServiceStatus(name, "stopped", ports=ports, url=url, log=log)
        uptime = time.time() - rec.started_at
        if not self._alive(rec):
            code = _EXIT_CODES.get(rec.pid)
            last = tail(rec.log, 1).strip()
            detail = f"process {rec.pid} is gone" + (f" (exit code {code})" if code is not None else "")
            if rec.live_members():
                detail += f"; group members still running: {rec.live_members()}"
            if last:
                detail += f"; last log line: {last[:160]}"
            return ServiceStatus(name, "dead", rec.pid, ports, url, detail, log)
        if spec is None:
            return ServiceStatus(name, "running", rec.pid, ports, None, "not in the registry; health unknown", log, uptime)
        health = spec.health(ctx)
        return ServiceStatus(name, "running" if health.ok else "unhealthy", rec.pid, ports, url, health.detail, log, uptime)

    def logs(self, name: str, lines: int = 50) -> str:
        return tail(self.log_path(name), lines)

    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    # --- addresses ------------------------------------------------------------------------
    def port(self, key: str) -> int:
        for name in self._recorded_names():
            rec = self.record(name)
            if rec and key in rec.ports:
                return rec.ports[key]
        return self.ports[key]

    def url(self, name: str) -> str:
        return self.registry[name].url_for(self._running_context(name))

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.port('kafka')}"

    @property
    def pagerduty_events_file(self) -> Path:
        return self.state_dir / "data" / "pagerduty" / "events.jsonl"
