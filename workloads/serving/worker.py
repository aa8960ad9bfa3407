"""The REST worker class: gunicorn's gthread worker that records when a request starts
waiting for a thread (serving environment; `workloads.serving.app` selects it).

gthread keeps idle keep-alive connections in its poller and hands a connection to its
thread pool when a request arrives on it; beyond `threads` requests, the rest wait in the
pool's queue, invisible to the application. This worker stamps each hand-over and passes
the stamp to the app as `environ["strata.enqueued_at"]` (a `time.perf_counter()` value),
and, before the app sees a request, asks the app's `STRATA_SHED` hook (config set by
`workloads.serving.server`) whether it waited past its queue budget: if so the hook's
answer (503 + `Retry-After`, counted) goes out at once, without Flask, instead of a
response after its client has given up.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

ENVIRON_KEY = "strata.enqueued_at"
_local = threading.local()


class QueueTimedWorker(ThreadWorker):
    def enqueue_req(self, conn: Any) -> None:
        conn.strata_enqueued_at = time.perf_counter()
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        _local.enqueued_at = getattr(conn, "strata_enqueued_at", None)
        return super().handle(conn)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi
        shed = getattr(app, "config", {}).get("STRATA_SHED")

        def stamped(environ: dict, start_response: Any) -> Any:
            enqueued = environ[ENVIRON_KEY] = getattr(_local, "enqueued_at", None)
            if shed is not None and enqueued is not None:
                answer = shed(environ.get("PATH_INFO", ""), time.perf_counter() - enqueued)
                if answer is not None:
                    status, headers, body = answer
                    start_response(status, headers)
                    return [body]
            return app(environ, start_response)

        self.wsgi = stamped
