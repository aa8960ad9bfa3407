"""The drift and model-quality exporter of one model version.

    python -m workloads.monitoring.drift_service --model fraud --version 3 \
        --team payments-risk --profile reference_profile.json --port 9108 [--baseline auc=0.97]

Endpoints (JSON in and out; bad input is a 400 with a reason, never a 5xx):
- `POST /v1/observe`  {"rows": [[...], ...], "predictions": [...]?, "ids": [...]?, "stage": "serving"}
  appends live rows (the server's logged requests or a stream consumer's batch) to the
  window; non-finite rows are counted as invalid (data quality) and kept out of it.
- `POST /v1/labels`   {"ids": [...], "labels": [...]}: delayed labels -> model quality.
- `POST /v1/evaluate` evaluate now (otherwise every `--interval` seconds) -> the report.
- `GET /metrics`      Prometheus exposition (names from the metrics contract).
- `GET /healthz`
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping

import numpy as np
import prometheus_client as pc

from workloads.monitoring import metrics as contract
from workloads.monitoring.drift import ReferenceProfile, WindowBuffer, evaluate, load_profile
from workloads.monitoring.quality import QualityTracker
from workloads.monitoring.http import JsonHandler

MAX_BODY_BYTES = 64 * 1024 * 1024


class BadRequest(ValueError):
    pass


class DriftMonitor:
    """Window + reference profile + quality tracker, exported through the contract."""

    def __init__(self, model: str, version: str, team: str, profile: ReferenceProfile,
                 window_rows: int = 200_000, min_rows: int = 500,
                 baseline: Mapping[str, float] | None = None, registry: Any = None):
        self.model, self.version, self.team = model, version, team
        self.profile = profile
        self.min_rows = min_rows
        self.window = WindowBuffer(len(profile.features), window_rows)
        self.quality = QualityTracker(baseline)
        self.registry = registry if registry is not None else pc.CollectorRegistry()
        self.m = contract.collectors(contract.Emitter.DRIFT, self.registry)
        self._evaluate_lock = threading.Lock()
        self.last_report: dict | None = None
        ids = {"model": model, "version": version, "team": team}
        for name, value in (baseline or {}).items():
            self.m["strata_model_quality_baseline_ratio"].labels(**ids, metric=name).set(value)

    @property
    def _ids(self) -> dict[str, str]:
        return {"model": self.model, "version": self.version, "team": self.team}

    def observe(self, body: Mapping[str, Any]) -> dict:
        rows = body.get("rows")
        if not isinstance(rows, list) or not rows:
            raise BadRequest("`rows` must be a non-empty list of feature rows")
        stage = body.get("stage", "serving")
        if stage not in ("serving", "streaming", "training"):
            raise BadRequest("`stage` must be serving, streaming or training")
        try:
            data = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            raise BadRequest("`rows` must hold numbers only") from None
        width = len(self.profile.features)
        if data.ndim != 2 or data.shape[1] != width:
            raise BadRequest(f"each row needs {width} values ({', '.join(self.profile.features)})")
        predictions = body.get("predictions")
        preds = None
        if predictions is not None:
            try:
                preds = np.asarray(predictions, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise BadRequest("`predictions` must be numbers") from None
            if preds.shape[0] != data.shape[0]:
                raise BadRequest(f"{preds.shape[0]} predictions for {data.shape[0]} rows")
        ids = body.get("ids")
        if ids is not None and (not isinstance(ids, list) or len(ids) != data.shape[0]):
            raise BadRequest("`ids` must be a list with one id per row")
        finite = np.all(np.isfinite(data), axis=1)
        invalid = int(data.shape[0] - finite.sum())
        self.m["strata_data_rows_total"].labels(model=self.model, team=self.team, stage=stage).inc(data.shape[0])
        if invalid:
            self.m["strata_data_invalid_rows_total"].labels(
                model=self.model, team=self.team, stage=stage, reason="nan").inc(invalid)
        self.window.append(data[finite], None if preds is None else preds[finite])
        if ids is not None and preds is not None:
            self.quality.observe_predictions([i for i, ok in zip(ids, finite) if ok], preds[finite])
        return {"accepted": int(finite.sum()), "invalid": invalid}

    def labels(self, body: Mapping[str, Any]) -> dict:
        ids, labels = body.get("ids"), body.get("labels")
        if not isinstance(ids, list) or not isinstance(labels, list) or len(ids) != len(labels):
            raise BadRequest("`ids` and `labels` must be lists of the same length")
        joined, delays = self.quality.observe_labels(ids, labels)
        self.m["strata_model_quality_labeled_predictions_total"].labels(**self._ids).inc(joined)
        histogram = self.m["strata_model_quality_label_delay_seconds"].labels(model=self.model, team=self.team)
        for delay in delays:
            histogram.observe(delay)
        self._export_quality()
        return {"joined": joined}

    def _export_quality(self) -> None:
        snapshot = self.quality.snapshot()
        for name, value in snapshot.metrics.items():
            self.m["strata_model_quality_ratio"].labels(**self._ids, metric=name).set(value)
        for name, value in snapshot.degradation.items():
            self.m["strata_model_quality_degradation_ratio"].labels(**self._ids, metric=name).set(value)

    def evaluate(self) -> dict | None:
        with self._evaluate_lock:
            if len(self.window) < self.min_rows:
                return None
            started = time.perf_counter()
            rows, preds = self.window.snapshot()
            has_preds = self.profile.prediction is not None and np.isfinite(preds).any()
            report = evaluate(self.profile, rows, preds[np.isfinite(preds)] if has_preds else None)
            elapsed = time.perf_counter() - started
            for name, p, k in zip(report.features, report.psi, report.ks):
                self.m["strata_drift_feature_psi"].labels(**self._ids, feature=name).set(p)
                self.m["strata_drift_feature_ks_statistic"].labels(**self._ids, feature=name).set(k)
            if report.prediction_psi is not None:
                self.m["strata_drift_prediction_psi"].labels(**self._ids).set(report.prediction_psi)
                self.m["strata_drift_prediction_ks_statistic"].labels(**self._ids).set(report.prediction_ks)
            self.m["strata_drift_window_rows"].labels(**self._ids).set(report.rows)
            self.m["strata_drift_evaluations_total"].labels(**self._ids).inc()
            self.m["strata_drift_evaluation_duration_seconds"].labels(model=self.model, team=self.team).observe(elapsed)
            self.m["strata_drift_last_evaluation_timestamp_seconds"].labels(**self._ids).set(time.time())
            self.last_report = report.as_dict()
            return self.last_report

    def reset_window(self) -> None:
        self.window.clear()


def make_handler(monitor: DriftMonitor) -> type[BaseHTTPRequestHandler]:
    routes = {"/v1/observe": monitor.observe, "/v1/labels": monitor.labels}

    class Handler(JsonHandler):
        protocol_version = "HTTP/1.1"



        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/metrics":
                self._send(200, pc.generate_latest(monitor.registry), pc.CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._json(200, {"status": "ok", "model": monitor.model, "version": monitor.version})
            else:
                self._json(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._json(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
                return
            raw = self.rfile.read(length) if length else b""
            if self.path == "/v1/evaluate":
                self._json(200, {"report": monitor.evaluate()})
                return
            if self.path == "/v1/reset":
                monitor.reset_window()
                self._json(200, {"reset": True})
                return
            handler = routes.get(self.path)
            if handler is None:
                self._json(404, {"error": f"no route {self.path}"})
                return
            try:
                body = json.loads(raw or b"null")
                if not isinstance(body, dict):
                    raise BadRequest("body must be a JSON object")
                self._json(200, handler(body))
            except json.JSONDecodeError as error:
                self._json(400, {"error": f"invalid JSON: {error.msg}"})
            except BadRequest as error:
                self._json(400, {"error": str(error)})

    return Handler


def serve(monitor: DriftMonitor, host: str, port: int, interval: float) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(monitor))
    server.daemon_threads = True
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            monitor.evaluate()

    threading.Thread(target=loop, name="drift-evaluate", daemon=True).start()
    server.stop_event = stop  # type: ignore[attr-defined]
    return server


def _baseline(text: str | None) -> dict[str, float]:
    result = {}
    for part in filter(None, (text or "").split(",")):
        name, _, value = part.partition("=")
        result[name.strip()] = float(value)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--team", required=True)
    parser.add_argument("--profile", required=True, help="reference profile of this version: the reference_profile.json it ships, or a saved .npz")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9108)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between evaluations")
    parser.add_argument("--window-rows", type=int, default=200_000)
    parser.add_argument("--min-rows", type=int, default=500)
    parser.add_argument("--baseline", help="offline evaluation, e.g. accuracy=0.95,auc=0.97")
    args = parser.parse_args(argv)
    monitor = DriftMonitor(args.model, args.version, args.team, load_profile(args.profile),
                           args.window_rows, args.min_rows, _baseline(args.baseline))
    server = serve(monitor, args.host, args.port, args.interval)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"drift monitor for {args.model}@{args.version} on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
