"""Traffic fixtures: the session's real nginx proxy (tests.local_services's supervisor, own
ports and state dir) in front of real HTTP upstream servers, one fresh model name per test."""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from workloads.traffic.local_proxy import LocalProxyRouter
from workloads.traffic.split import CANDIDATE, STABLE
from workloads.traffic.state import register_upstream, unregister_upstream

PREDICT_PATH = "/api/v1.0/predictions"


class Upstream:
    """A stdlib HTTP/1.1 keep-alive server standing in for one predictor: answers
    ``{"predictor": <name>, "echo": <request body>}`` (or ``status``) and records every request."""

    def __init__(self, name: str, status: int = 200, delay_s: float = 0.0):
        self.name, self.status, self.delay_s = name, status, delay_s
        self.requests: list[tuple[str, bytes]] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with upstream._lock:
                    upstream._connections.add(self.request)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with upstream._lock:
                    upstream.requests.append((self.path, body))
                if upstream.delay_s:
                    time.sleep(upstream.delay_s)
                out = json.dumps({"predictor": upstream.name, "path": self.path,
                                  "echo": body.decode("utf-8", "replace")}).encode()
                self.send_response(upstream.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # socketserver's 5 overflows on a busy box: SYN dropped, retried after 1 s

            def handle_error(self, request, client_address) -> None:
                pass  # nginx resetting an idle keep-alive connection is not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"upstream-{name}", daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def close(self) -> None:
        """Down like a dead process: stop listening and cut the kept-alive connections too."""
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@dataclass
class Result:
    status: int | None
    predictor: str | None
    body: dict | None
    error: str | None = None


class Client:
    """One keep-alive connection to the proxy (reconnects after the server closes it)."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, payload: dict, headers: dict | None = None) -> Result:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            self.conn.request("POST", path, body=json.dumps(payload),
                              headers={"Content-Type": "application/json", **(headers or {})})
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Result(None, None, None, f"{type(exc).__name__}: {exc}")
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"raw": raw.decode("utf-8", "replace")}
        return Result(resp.status, resp.getheader("X-Strata-Predictor"), body)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Load:
    """Clients posting in a loop until stopped (bounded by ``max_requests``)."""

    port: int
    path: str
    clients: int = 4
    max_requests: int = 20_000
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]

    def _run(self) -> None:
        client = Client(self.port)
        try:
            while not self._stop.is_set():
                n = next(self._seq)
                if n >= self.max_requests:
                    return
                result = client.post(self.path, {"n": n})
                with self._lock:
                    self.results.append(result)
        finally:
            client.close()

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.results) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


@dataclass
class RoutedModel:
    """A model name routed by the session's proxy to two live upstreams."""

    name: str
    router: LocalProxyRouter
    port: int
    stable: Upstream
    candidate: Upstream | None

    @property
    def path(self) -> str:
        return f"/{self.name}{PREDICT_PATH}"

    def post(self, payload: dict | None = None, headers: dict | None = None) -> Result:
        client = Client(self.port)
        try:
            return client.post(self.path, payload or {}, headers)
        finally:
            client.close()

    def fire(self, count: int, clients: int = 4) -> list[Result]:
        with Load(self.port, self.path, clients=clients, max_requests=count) as load:
            load.wait_for(count, timeout=120)
        return load.results


_names = itertools.count()


@pytest.fixture
def proxy(local_services):
    """The session's proxy (started once); returns its router."""
    local_services("proxy")
    return LocalProxyRouter(local_services.state_dir)


@pytest.fixture
def routed_model(proxy) -> Callable[..., RoutedModel]:
    """``routed_model(candidate=True, name=None, **candidate_kwargs)``: a fresh model name routed to new
    upstreams; everything is stopped and unregistered afterwards."""
    made: list[RoutedModel] = []

    def make(candidate: bool = True, name: str | None = None, **candidate_kwargs) -> RoutedModel:
        name = name or f"m{next(_names)}-{int(time.time() * 1000) % 100000}"
        stable = Upstream(STABLE)
        cand = Upstream(CANDIDATE, **candidate_kwargs) if candidate else None
        model = RoutedModel(name, proxy, proxy.running()[1], stable, cand)
        made.append(model)
        register_upstream(proxy.state_dir, name, STABLE, stable.port)
        if cand:
            register_upstream(proxy.state_dir, name, CANDIDATE, cand.port)
        proxy.refresh()
        return model

    try:
        yield make
    finally:
        for model in made:
            unregister_upstream(proxy.state_dir, model.name)
            model.stable.close()
            if model.candidate:
                model.candidate.close()
        if made:
            proxy.refresh()

