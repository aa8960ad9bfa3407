"""A local PagerDuty Events API v2 receiver: records pages to a JSONL file.

Run: ``python -m workloads.local.pagerduty_receiver --port 19880 --events-file pages.jsonl``

- ``POST /v2/enqueue``: validates the event like PagerDuty (routing_key, event_action
  trigger|acknowledge|resolve; a trigger needs payload.summary, payload.source and
  payload.severity critical|error|warning|info; acknowledge/resolve need dedup_key),
  appends ``{"received_at": ..., "event": ...}`` to the events file and answers
  ``202 {"status": "success", "message": "Event processed", "dedup_key": ...}``.
  Invalid events get ``400 {"status": "invalid event", "errors": [...]}``; bodies over
  512 KB get 413 - never a 5xx.
- ``GET /events``: the recorded events as a JSON list (for tests and the demo summary).
- ``GET /health``: 200 when serving. ``GET /metrics``: Prometheus text format.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 512 * 1024
ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")


def validate_event(event: object) -> list[str]:
    if not isinstance(event, dict):
        return ["event must be a JSON object"]
    errors = []
    if not isinstance(event.get("routing_key"), str) or not event["routing_key"].strip():
        errors.append("'routing_key' is missing or empty")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append(f"'event_action' must be one of {', '.join(ACTIONS)}")
    if action in ("acknowledge", "resolve") and not event.get("dedup_key"):
        errors.append(f"'dedup_key' is required for event_action '{action}'")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or not an object")
        else:
            for key in ("summary", "source"):
                if not isinstance(payload.get(key), str) or not payload[key].strip():
                    errors.append(f"'payload.{key}' is missing or empty")
            if payload.get("severity") not in SEVERITIES:
                errors.append(f"'payload.severity' must be one of {', '.join(SEVERITIES)}")
    return errors


class Recorder:
    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.invalid = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def record(self, event: dict) -> None:
        line = json.dumps({"received_at": time.time(), "event": event}, sort_keys=True)
        with self.lock:
            with open(self.path, "a") as f:
                f.write(line + "\n")
            sev = (event.get("payload") or {}).get("severity", "")
            self.counts[(event["event_action"], sev)] += 1

    def events(self) -> list[dict]:
        with self.lock:
            lines = self.path.read_text().splitlines()
        return [json.loads(ln) for ln in lines if ln.strip()]


def make_handler(recorder: Recorder):
    class Handler(BaseHTTPRequestHandler):
        server_version = "strata-pagerduty-local/1"

        def log_message(self, fmt, *args):  # one line per request in the service log (not scrapes)
            if self.command == "GET" and self.path in ("/metrics", "/health"):
                return
            print(f"{self.address_string()} {fmt % args}", flush=True)

        def _send(self, code: int, body: object, ctype="application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/health":
                self._send(200, {"status": "ok"})
            elif path == "/events":
                self._send(200, recorder.events())
            elif path == "/metrics":
                lines = [
                    "# HELP strata_pagerduty_events_total Events v2 accepted by the local receiver.",
                    "# TYPE strata_pagerduty_events_total counter",
                ]
                with recorder.lock:
                    for (action, sev), n in sorted(recorder.counts.items()):
                        lines.append(f'strata_pagerduty_events_total{{action="{action}",severity="{sev}"}} {n}')
                    lines += [
                        "# HELP strata_pagerduty_invalid_events_total Rejected (400/413) requests.",
                        "# TYPE strata_pagerduty_invalid_events_total counter",
                        f"strata_pagerduty_invalid_events_total {recorder.invalid}",
                    ]
                self._send(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")
            else:
                self._send(404, {"status": "not found", "message": f"no route {path}"})

        def do_POST(self):
            path = self.path.split("?")[0]
            if path not in ("/v2/enqueue", "/enqueue"):
                self._send(404, {"status": "not found", "message": f"no route {path}; use /v2/enqueue"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                recorder.invalid += 1
                self._send(413, {"status": "invalid event", "message": "body must be 0-512KB with Content-Length"})
                self.close_connection = True
                return
            raw = self.rfile.read(length)
            try:
                event = json.loads(raw or b"null")
            except ValueError as exc:
                recorder.invalid += 1
                self._send(400, {"status": "invalid event", "message": "Event object is invalid",
                                 "errors": [f"body is not JSON: {exc}"]})
                return
            errors = validate_event(event)
            if errors:
                recorder.invalid += 1
                self._send(400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors})
                return
            if not event.get("dedup_key"):
                event["dedup_key"] = hashlib.sha1(raw).hexdigest()
            recorder.record(event)
            self._send(202, {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]})

    return Handler


def serve(host: str, port: int, events_file: Path) -> None:
    server = ThreadingHTTPServer((host, port), make_handler(Recorder(events_file)))
    server.daemon_threads = True

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"PagerDuty Events v2 receiver on http://{host}:{port}/v2/enqueue -> {events_file}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--events-file", type=Path, required=True)
    args = ap.parse_args(argv)
    serve(args.host, args.port, args.events_file)


if __name__ == "__main__":
    main()
