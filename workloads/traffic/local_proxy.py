"""The local traffic layer: a real nginx playing Istio's part, and ``LocalProxyRouter``.

Locally there is no Istio and no SeldonDeployment: a model's two predictor slots are two
model server processes (see ``workloads.traffic.split``), and nginx (Debian package
``nginx``) in front of them splits, mirrors and labels the traffic. It runs as a plain
supervised process (``strata local up proxy``): ``daemon off``, its prefix, pid, temp and
log files under the state dir, listening on 127.0.0.1:<ports table ``proxy``>::

    POST http://127.0.0.1:19080/<model>/api/v1.0/predictions   ->  stable or candidate
    GET  http://127.0.0.1:19080/_strata/health                  ->  {"generation": ..., "models": ...}

Every answer carries ``X-Strata-Predictor: stable|candidate``. See ``nginx_config`` for the
configuration and why weights are drawn with ``split_clients``, and ``state`` for the
files in the state dir (``upstreams.json``: where the servers listen; ``splits.json``:
the split in force, so a restarted proxy keeps it).

Changing a split (``LocalProxyRouter.apply``): render the whole config, ``nginx -t`` it,
swap it in with ``os.replace``, SIGHUP the master. nginx starts new workers on the new
config and lets the old ones finish what they accepted; the listening socket never
closes, so no connection is refused and no request is dropped. ``apply`` returns once
only new workers hold the listening socket and the proxy answers with the new generation.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from workloads.local.errors import LocalError
from workloads.local.ports import HOST
from workloads.local.process import ProcessRecord
from workloads.local.services import HttpHealth, Requirement, ServiceContext, ServiceSpec
from workloads.traffic.nginx_config import HEALTH_PATH, ModelRoute, ProxyConfig, ProxyLayout, render
from workloads.traffic.split import CANDIDATE, STABLE, TrafficSplit
from workloads.traffic.state import (
    SERVICE,
    NoCandidateError,
    TrafficError,
    UnknownModelError,
    check_model_name,
    locked,
    proxy_config_dir,
    proxy_data_dir,
    read_splits,
    read_grpc_upstreams,
    read_upstreams,
    upstreams_file,
    write_splits,
)

GRPC_PORT = "proxy-grpc"  # the ports table's key of the gRPC listener

NGINX_FIX = (
    "apt-get update && apt-get install -y --no-install-recommends nginx "
    "(the package's own service is not needed: Strata runs nginx itself)"
)
NGINX_BINARIES = ("nginx", "/usr/sbin/nginx")  # /usr/sbin is not on every user's PATH
RELOAD_TIMEOUT_S = 15.0


class ProxyNotRunningError(TrafficError):
    def __init__(self, state_dir: Path, detail: str):
        super().__init__(
            f"the local proxy is not running ({detail}; state dir {state_dir}).\n"
            f"  Fix: `strata local up proxy --state-dir {state_dir}`"
        )


class ProxyConfigError(TrafficError):
    """nginx rejected a generated config, or did not take it."""


def nginx_binary() -> str:
    found = next(filter(None, (shutil.which(b) for b in NGINX_BINARIES)), None)
    if not found:
        raise LocalError(f"the local proxy needs nginx, which is not installed.\n  Fix: {NGINX_FIX}")
    return found


def layout(state_dir: Path | str) -> ProxyLayout:
    return ProxyLayout(prefix=proxy_data_dir(state_dir), logs=Path(state_dir) / "logs")


def _worker_user(state_dir: Path) -> str | None:
    """nginx started as root drops its workers to `nobody`, who cannot enter a 0700 state dir
    (pytest's temp dirs are): run them as the state dir's owner instead."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwuid(state_dir.stat().st_uid).pw_name


def effective_routes(state_dir: Path, splits: dict[str, TrafficSplit] | None = None) -> tuple[ModelRoute, ...]:
    """One route per model with a registered stable server; a split whose candidate is not
    registered (any more) routes everything to stable."""
    upstreams = read_upstreams(state_dir)
    grpc = read_grpc_upstreams(state_dir)
    splits = read_splits(state_dir) if splits is None else splits
    routes = []
    for model in sorted(upstreams):
        slots = upstreams[model]
        if STABLE not in slots:
            continue
        candidate = slots.get(CANDIDATE)
        split = splits.get(model, TrafficSplit.all_stable(model))
        if not candidate and split.candidate_active:
            split = TrafficSplit.all_stable(model)
        grpc_slots = grpc.get(model, {})
        routes.append(ModelRoute(model, slots[STABLE], candidate, split, grpc_slots.get(STABLE),
                                 grpc_slots.get(CANDIDATE) if candidate else None))
    return tuple(routes)


def write_config(state_dir: Path, port: int, splits: dict[str, TrafficSplit] | None = None,
                 grpc_port: int | None = None) -> tuple[Path, int]:
    """Render, ``nginx -t``, then atomically install the config. Returns (path, generation)."""
    lay = layout(state_dir)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (lay.temp / sub).mkdir(parents=True, exist_ok=True)
    lay.logs.mkdir(parents=True, exist_ok=True)
    lay.conf.parent.mkdir(parents=True, exist_ok=True)
    generation = time.time_ns() // 1000
    text = render(ProxyConfig(port=port, layout=lay, routes=effective_routes(state_dir, splits),
                              generation=generation, worker_user=_worker_user(state_dir), grpc_port=grpc_port))
    candidate = lay.conf.with_name(f".nginx.conf.{os.getpid()}.tmp")
    candidate.write_text(text)
    try:
        check = subprocess.run(
            [nginx_binary(), "-t", "-q", "-p", str(lay.prefix), "-c", str(candidate), "-e", str(lay.error_log)],
            capture_output=True, text=True, timeout=30,
        )
    except BaseException:
        candidate.unlink(missing_ok=True)
        raise
    if check.returncode != 0:
        raise ProxyConfigError(
            f"nginx rejected the generated config (the one in force is kept; rejected copy: {candidate}):\n"
            + (check.stderr or check.stdout).strip()
        )
    os.replace(candidate, lay.conf)
    return lay.conf, generation


# --- the supervised service ---------------------------------------------------------------------
def _prepare(ctx: ServiceContext) -> None:
    write_config(ctx.state_dir, ctx.port(SERVICE), grpc_port=ctx.port(GRPC_PORT))


def _command(ctx: ServiceContext) -> list[str]:
    lay = layout(ctx.state_dir)
    return [nginx_binary(), "-p", str(lay.prefix), "-c", str(lay.conf), "-e", str(lay.error_log)]


def proxy_service() -> ServiceSpec:
    """``strata local up proxy``: nginx in front of every registered model server."""
    return ServiceSpec(
        name=SERVICE,
        description="traffic proxy (nginx): canary/A-B weights, shadow mirror, blue-green switch",
        ports=(SERVICE, GRPC_PORT),
        command=_command,
        health=HttpHealth(SERVICE, HEALTH_PATH),
        requires=(Requirement("`nginx`", NGINX_FIX, binaries=NGINX_BINARIES),),
        prepare=_prepare,
        start_timeout_s=30.0,
        stop_timeout_s=10.0,  # SIGTERM = nginx fast shutdown
    )


# --- nginx processes, from /proc ------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                raw = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rfind(")") + 2:].split()
            if len(fields) > 1 and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
                out.append(int(entry.name))
    return out


def _listen_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:port (state 0A in /proc/net/tcp)."""
    wanted = f"0100007F:{port:04X}"
    inodes = set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return inodes
    for line in lines:
        cols = line.split()
        if len(cols) > 9 and cols[1] == wanted and cols[3] == "0A":
            inodes.add(cols[9])
    return inodes


def _holds(pid: int, inodes: set[str]) -> bool:
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(fd.path)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    except OSError:
        return False
    return False


def accepting_workers(master: int, port: int) -> list[int]:
    """The master's worker processes that can still accept connections on ``port``."""
    inodes = _listen_inodes(port)
    return [pid for pid in _children(master) if _holds(pid, inodes)]


# --- the router ------------------------------------------------------------------------------------
class LocalProxyRouter:
    """``TrafficRouter`` over the local nginx proxy of one state dir.

    ``apply`` persists the split and returns once every new connection is served by the
    reloaded workers; ``last_switch_s`` is how long that took.
    """

    def __init__(self, state_dir: Path | str | None = None, reload_timeout_s: float = RELOAD_TIMEOUT_S):
        if state_dir is None:
            from workloads.local.supervisor import default_state_dir

            state_dir = default_state_dir()
        self.state_dir = Path(state_dir).resolve()
        self.reload_timeout_s = reload_timeout_s
        self.last_switch_s: float | None = None

    # -- what is registered and in force -----------------------------------------------------------
    def models(self) -> dict[str, dict[str, str]]:
        return read_upstreams(self.state_dir)

    def _known(self, model: str) -> dict[str, str]:
        check_model_name(model)
        upstreams = self.models()
        if STABLE not in upstreams.get(model, {}):
            raise UnknownModelError(model, [m for m, s in upstreams.items() if STABLE in s], upstreams_file(self.state_dir))
        return upstreams[model]

    def current(self, model: str) -> TrafficSplit:
        slots = self._known(model)
        split = read_splits(self.state_dir).get(model, TrafficSplit.all_stable(model))
        if split.candidate_active and CANDIDATE not in slots:
            return TrafficSplit.all_stable(model)
        return split

    def url(self, model: str | None = None) -> str:
        base = f"http://{HOST}:{self.running()[1]}"
        return f"{base}/{model}/" if model else base

    # -- the running nginx ---------------------------------------------------------------------------
    def running(self) -> tuple[int, int]:
        """(master pid, port) of the proxy recorded by the supervisor; raises if it is not running."""
        record = ProcessRecord.load(self.state_dir / "run" / f"{SERVICE}.json")
        if record is None:
            raise ProxyNotRunningError(self.state_dir, "no proxy was started in this state dir")
        if not record.leader_alive():
            raise ProxyNotRunningError(self.state_dir, f"its recorded process {record.pid} is gone")
        return record.pid, int(record.ports[SERVICE])

    def grpc_port(self) -> int | None:
        """The proxy's gRPC (HTTP/2) port; None for a proxy started without one."""
        self.running()
        record = ProcessRecord.load(self.state_dir / "run" / f"{SERVICE}.json")
        port = record.ports.get(GRPC_PORT) if record is not None else None
        return int(port) if port else None

    def served_generation(self, port: int) -> int | None:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}{HEALTH_PATH}", timeout=2) as resp:
                return int(json.loads(resp.read())["generation"])
        except (OSError, ValueError, KeyError, urllib.error.URLError):
            return None

    # -- changing the split -----------------------------------------------------------------------------
    def apply(self, split: TrafficSplit) -> None:
        slots = self._known(split.model)
        if split.candidate_active and CANDIDATE not in slots:
            raise NoCandidateError(split.model, split)
        with locked(proxy_config_dir(self.state_dir) / "apply"):
            splits = read_splits(self.state_dir)
            splits[split.model] = split
            self._reload(splits)
            write_splits(self.state_dir, splits)  # only once nginx follows it

    def refresh(self) -> bool:
        """Reload with the registered upstreams (after ``register_upstream``). False if not running."""
        try:
            self.running()
        except ProxyNotRunningError:
            return False
        with locked(proxy_config_dir(self.state_dir) / "apply"):
            self._reload(read_splits(self.state_dir))
        return True

    def _reload(self, splits: dict[str, TrafficSplit]) -> None:
        t0 = time.monotonic()
        master, port = self.running()
        old_workers = set(_children(master))
        _, generation = write_config(self.state_dir, port, splits, grpc_port=self.grpc_port())
        os.kill(master, signal.SIGHUP)
        deadline = t0 + self.reload_timeout_s
        while True:
            try:
                self.running()
            except ProxyNotRunningError as exc:
                raise ProxyConfigError(f"nginx exited during the reload: {exc}\n{self._error_tail()}") from None
            accepting = accepting_workers(master, port)
            if accepting and not set(accepting) & old_workers and self.served_generation(port) == generation:
                break
            if time.monotonic() > deadline:
                raise ProxyConfigError(
                    f"nginx did not take the new config within {self.reload_timeout_s:.0f}s "
                    f"(workers accepting: {accepting}, old: {sorted(old_workers)}).\n{self._error_tail()}"
                )
            time.sleep(0.01)
        self.last_switch_s = time.monotonic() - t0

    def _error_tail(self, lines: int = 10) -> str:
        from workloads.local.supervisor import tail

        text = tail(layout(self.state_dir).error_log, lines)
        return f"last lines of {layout(self.state_dir).error_log}:\n{text}" if text else "nginx error log is empty"
