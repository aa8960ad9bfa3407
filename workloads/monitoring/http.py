"""The small HTTP surface the monitoring services share (stdlib only)."""

from __future__ import annotations

import json
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler that answers JSON (or any body) and keeps the access log quiet:
    the services log what they do, not every scrape."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode())


def serve_collecting(server: ThreadingHTTPServer, collect: Callable[[], None], interval_s: float, name: str,
                     log: logging.Logger, *, collect_first: bool) -> None:
    """Serve `server` until SIGTERM while a daemon thread calls `collect` every `interval_s`
    (first at once if `collect_first`). A failed collection keeps the last values: the next
    one tries again."""
    stop = threading.Event()

    def loop() -> None:
        if not collect_first and stop.wait(interval_s):
            return
        while True:
            try:
                collect()
            except Exception as error:  # the source restarting or an API hiccup
                log.warning("collection failed: %s", error)
            if stop.wait(interval_s):
                return

    threading.Thread(target=loop, name=f"{name}-collect", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: (stop.set(), threading.Thread(target=server.shutdown).start()))
    host, port = server.server_address[:2]
    print(f"{name} on http://{host}:{port}", flush=True)
    server.serve_forever()
