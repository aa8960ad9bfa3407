"""The REST worker class: gunicorn's gthread worker that records when a request starts
waiting for a thread (serving environment; `workloads.serving.app` selects it).

gthread keeps idle keep-alive connections in its poller and hands a connection to its
thread pool when a request arrives on it; beyond `threads` requests, the rest wait in the
pool's queue, invisible to the application. This worker stamps each hand-over and passes
the stamp to the app as `environ["strata.enqueued_at"]` (a `time.perf_counter()` value),
so the app can answer a request that waited past its queue budget at once (503 +
`Retry-After`) instead of serving it after its client has given up.
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

        def stamped(environ: dict, start_response: Any) -> Any:
            environ[ENVIRON_KEY] = getattr(_local, "enqueued_at", None)
            return app(environ, start_response)

        self.wsgi = stamped
