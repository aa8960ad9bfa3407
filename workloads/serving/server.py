"""The Seldon Core (v1 python wrapper) model class: `workloads.serving.server.StrataModel`.

Run by Seldon's microservice under our server settings (`workloads.serving.app`; the
command is built by `workloads.serving.launch`). The class
once in its parent process, then calls `load()` in each worker it forks (the gunicorn REST
worker and the gRPC process), so torch is imported and the exported model loaded and
warmed up per worker, after the fork.

What it adds to Seldon's protocol:

* every request is validated against the version's feature schema and serving limits
  (`workloads.serving.contract`); a bad one is answered 4xx in Seldon's error contract
  ``{"status": {"code": 4xx, "info": "<what is wrong, naming the field>", "reason":
  "<reason>", "status": "FAILURE"}}`` (gRPC: the same `Status` in the returned
  SeldonMessage); it never reaches the model, never becomes a 5xx, never kills the worker;
* Flask-level errors Seldon would turn into 500 (wrong Content-Type, unknown path, wrong
  method, oversized body, undecodable JSON) are answered 4xx in the same contract;
* `GET /metrics` on the REST port: the contract's `strata_serving_*` metrics of all the
  server's processes (multiprocess mode); `GET /health/status`: readiness with the
  loaded model, version and alias; `GET /health/ping`: liveness (Seldon's).

Alias following: a server started by alias (not a pinned version) checks the registry's
`aliases.json` every `alias_poll_s` seconds (its mtime: one stat); when the alias points
at another version it loads and warms that version beside the old one, then swaps it in
with one assignment. Requests in flight finish on the version they started with; no
restart, no dropped request. This is how the `stable` slot starts serving a promoted
champion. Health, metadata, `meta.tags` and the metrics' `version` label follow.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import threading
import time
from typing import Any

import numpy as np

from workloads.data.schema import FeatureSchema
from workloads.serving import registry
from workloads.serving.contract import InputContract, InputError, ParsedRequest
from workloads.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

PREDICT_PATHS = frozenset({"/predict", "/api/v1.0/predictions", "/api/v0.1/predictions"})
UNCOUNTED_PATHS = frozenset({"/metrics", "/health/ping", "/health/status", "/api/v1.0/health/status",
                             "/metadata", "/api/v1.0/metadata", "/seldon.json"})
JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")  # Seldon's `json=` form field
ENQUEUED_AT = "strata.enqueued_at"  # workloads.serving.worker.ENVIRON_KEY (no gunicorn import here)
_HTTP_REASONS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                 415: "unsupported_media_type"}


def error_body(code: int, reason: str, info: str) -> dict[str, Any]:
    return {"status": {"code": code, "info": info, "reason": reason, "status": "FAILURE"}}


class StrataModel:
    """Seldon model class. Parameters (Seldon `--parameters`, all STRING/INT/FLOAT):

    model (required), alias ("champion") or version, registry (default
    $STRATA_REGISTRY_DIR), predictor (metrics label, default = alias), team ("unknown"),
    max_batch_rows (1024), max_payload_bytes (1048576), latency_target_ms (200),
    torch_threads (1), alias_poll_s (1.0; 0 turns alias following off), features (the model's
    `EnrichmentPlan` as JSON; empty: no online features) and feature_store_url (its Redis;
    `workloads.serving.enrichment`)."""

    def __init__(
        self,
        model: str,
        alias: str = "champion",
        version: str = "",
        registry_dir: str = "",
        predictor: str = "",
        team: str = "unknown",
        max_batch_rows: int = 1024,
        max_payload_bytes: int = 1_048_576,
        latency_target_ms: float = 200.0,
        torch_threads: int = 1,
        alias_poll_s: float = 1.0,
        features: str = "",
        feature_store_url: str = "",
    ):
        self.model_name = model
        self.alias = None if version else alias
        self.root = registry_dir or str(registry.default_root())
        # resolve and read the schema now (cheap, no torch): a missing version fails the
        # process at start, and Seldon's /metadata needs the schema before load()
        self.resolved = registry.resolve(self.root, model, alias=self.alias, version=version or None)
        self.schema = FeatureSchema.from_json(self.resolved.schema_path)
        self.predictor = predictor or (self.alias or f"v{self.resolved.version}")
        self.team = team
        self.max_batch_rows = int(max_batch_rows)
        self.max_payload_bytes = int(max_payload_bytes)
        self.latency_target_s = float(latency_target_ms) / 1000.0
        self.torch_threads = int(torch_threads)
        self.contract = InputContract(self.schema, self.max_batch_rows, self.max_payload_bytes)
        self.loaded = None
        self.metrics: ServingMetrics | None = None
        self._blueprint = None
        self.alias_poll_s = float(alias_poll_s)
        self._follower: threading.Thread | None = None
        self.enricher = None
        self._enrichment = _enrichment_plan(features, feature_store_url)  # a bad plan fails the start

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        """Called by Seldon in each worker process after the fork."""
        if self.loaded is not None:
            return
        from workloads.serving import model as model_mod

        _skip_empty_seldon_metric_updates()

        self.loaded = model_mod.load(
            self.root, self.model_name, alias=self.alias,
            version=None if self.alias else self.resolved.version,
            max_batch_rows=self.max_batch_rows, max_payload_bytes=self.max_payload_bytes,
            torch_threads=self.torch_threads,
        )
        self.contract = self.loaded.contract
        self.metrics = ServingMetrics(
            self.model_name, self.loaded.version.version, self.predictor, self.team,
            latency_targets_seconds=(self.latency_target_s,),
        )
        self.enricher = _connect_enricher(self._enrichment, self.schema.names, self.metrics.registry)
        self.metrics.mark_loaded()
        log.info("ready: %s v%s (%s) pid %d", self.model_name, self.loaded.version.version, self.alias, os.getpid())
        if self.alias and self.alias_poll_s > 0 and self._follower is None:
            self._follower = threading.Thread(target=self._follow_alias, name="strata-alias-follower", daemon=True)
            self._follower.start()

    def _follow_alias(self) -> None:
        """Background: swap in the version the alias points at whenever aliases.json changes."""
        aliases_file = os.path.join(self.root, self.model_name, registry.ALIASES)
        seen = None
        while True:
            time.sleep(self.alias_poll_s)
            try:
                stamp = os.stat(aliases_file).st_mtime_ns
                if stamp == seen:
                    continue
                seen = stamp
                self.follow_alias_once()
            except Exception:  # a half-written export or a bad version: keep serving what we have
                log.exception("alias %s of %s: could not follow; still serving v%s",
                              self.alias, self.model_name, self.loaded.version.version)

    def follow_alias_once(self) -> bool:
        """Load the version the alias points at now, if it is another one; True if swapped."""
        from workloads.serving import model as model_mod

        target = registry.resolve(self.root, self.model_name, alias=self.alias)
        current = self.loaded
        if current is None or target.version == current.version.version:
            return False
        loaded = model_mod.load(
            self.root, self.model_name, version=target.version,
            max_batch_rows=self.max_batch_rows, max_payload_bytes=self.max_payload_bytes,
            torch_threads=self.torch_threads,
        )  # loaded and warmed up before it takes any request
        metrics = ServingMetrics(
            self.model_name, loaded.version.version, self.predictor, self.team,
            latency_targets_seconds=(self.latency_target_s,),
        )
        self.resolved, self.schema = target, loaded.schema
        previous_metrics = self.metrics
        self.metrics, self.contract, self.loaded = metrics, loaded.contract, loaded  # the swap: `loaded` last
        metrics.mark_loaded()
        previous_metrics.mark_loaded(False)  # after the new one: a reader never sees this process serve nothing
        log.warning("alias %s of %s now v%s (was v%s): swapped in pid %d", self.alias, self.model_name,
                    loaded.version.version, current.version.version, os.getpid())
        return True

    def _tags(self, loaded: Any = None) -> dict[str, str]:
        loaded = loaded or self.loaded
        version = loaded.version.version if loaded else self.resolved.version
        return {"model": self.model_name, "version": version, "alias": self.alias or "", "predictor": self.predictor}

    def health_status_raw(self) -> dict[str, Any]:
        if self.loaded is None:
            from seldon_core.flask_utils import SeldonMicroserviceException

            raise SeldonMicroserviceException("model not loaded yet", status_code=503, reason="MODEL_NOT_READY")
        return {"jsonData": {"ready": True, **self._tags(), "pid": os.getpid(),
                             "loadSeconds": round(self.loaded.load_seconds, 3),
                             "warmupSeconds": round(self.loaded.warmup_seconds, 3)}}

    def init_metadata(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "versions": [self.resolved.version],
            "platform": "pytorch-export",
            "inputs": [{"messagetype": "tensor", "schema": {"names": self.schema.names, "shape": [self.schema.width]}}],
            "outputs": [{"messagetype": "tensor", "schema": {"shape": [len(self.schema.label_values)]}}],
            "custom": {"alias": self.alias or "", "predictor": self.predictor,
                       "maxBatchRows": str(self.max_batch_rows), "maxPayloadBytes": str(self.max_payload_bytes)},
        }

    # ------------------------------------------------------------------ prediction

    def predict_raw(self, request: Any) -> Any:
        """REST: a decoded JSON dict; gRPC: a SeldonMessage. Never raises for bad input."""
        if hasattr(request, "WhichOneof"):  # a SeldonMessage: gRPC
            return self._predict_grpc(request)
        return self._predict_rest(request)  # any decoded JSON value: REST

    def _score(self, parsed: ParsedRequest, loaded: Any) -> np.ndarray:
        outputs = loaded.predict(parsed.features)
        self.metrics.observe_predictions(outputs.shape[0], loaded.positive_scores(outputs))
        return outputs

    def _predict_rest(self, message: Any) -> dict[str, Any]:
        loaded = self.loaded  # one version for the whole request, even across an alias swap
        try:
            if self.enricher is not None:
                message = self.enricher.enrich_message(message)
            parsed = loaded.contract.parse_message(message)
        except InputError as error:
            _set_reason(error.reason)
            return error_body(error.status, error.reason, error.message)
        outputs = self._score(parsed, loaded)
        names = loaded.output_names
        if parsed.layout == "tensor":
            data: dict[str, Any] = {"names": names, "tensor": {"shape": list(outputs.shape), "values": outputs.ravel().tolist()}}
        else:
            data = {"names": names, "ndarray": outputs.tolist()}
        return {"data": data, "meta": {"tags": self._tags(loaded)}}

    def _predict_grpc(self, request: Any) -> Any:
        from seldon_core.proto import prediction_pb2

        timer = time.perf_counter()
        loaded = self.loaded
        metrics = self.metrics
        metrics.in_flight.inc()
        code, reason = 200, None
        try:
            try:
                parsed = self._parse_proto(request, loaded.contract)
            except InputError as error:
                code, reason = error.status, error.reason
                response = prediction_pb2.SeldonMessage()
                response.status.code = error.status
                response.status.info = error.message
                response.status.reason = error.reason
                response.status.status = prediction_pb2.Status.FAILURE
                return response
            try:
                outputs = self._score(parsed, loaded)
            except Exception:
                code = 500
                raise
            response = prediction_pb2.SeldonMessage()
            response.data.names.extend(loaded.output_names)
            if parsed.layout == "ndarray":
                from google.protobuf import json_format

                json_format.ParseDict(outputs.tolist(), response.data.ndarray)
            else:
                response.data.tensor.shape.extend(outputs.shape)
                response.data.tensor.values.extend(outputs.ravel().tolist())
            for key, value in self._tags(loaded).items():
                response.meta.tags[key].string_value = value
            return response
        finally:
            metrics.in_flight.dec()
            metrics.observe_request("grpc", code, time.perf_counter() - timer, reason)

    def _parse_proto(self, request: Any, contract: InputContract | None = None) -> ParsedRequest:
        contract = contract or self.contract
        contract.check_size(request.ByteSize())
        which = request.WhichOneof("data_oneof")
        if which == "data":
            data = request.data
            names = list(data.names) or None
            kind = data.WhichOneof("data_oneof")
            if kind == "tensor":
                values = np.asarray(data.tensor.values, dtype=np.float64)
                return ParsedRequest(contract.from_tensor(list(data.tensor.shape), values, names), "tensor")
            if kind == "ndarray":
                from google.protobuf import json_format

                rows = json_format.MessageToDict(data.ndarray)
                return ParsedRequest(contract.from_rows(rows, names), "ndarray")
            raise InputError("unsupported_format", f"data.{kind or '<empty>'} is not accepted; send data.tensor or data.ndarray", field="data")
        if which == "jsonData":
            from google.protobuf import json_format

            records = json_format.MessageToDict(request.jsonData)
            if self.enricher is not None:
                records = self.enricher.enrich_json_data(records)
            return ParsedRequest(contract.from_records(records), "tensor")
        raise InputError("unsupported_format", f"{which or 'an empty message'} is not accepted; send data.tensor, data.ndarray or jsonData")

    # ------------------------------------------------------------------ Flask hooks

    @property
    def model_error_handler(self) -> Any:
        """A blueprint Seldon registers on its REST app (its hook for custom handlers):
        request checks before Seldon parses, 4xx for Flask errors, metrics, /metrics."""
        if self._blueprint is None:
            self._blueprint = build_blueprint(self)
        return self._blueprint


def _enrichment_plan(features: str, feature_store_url: str) -> Any:
    """The `features` parameter as an EnrichmentPlan (None when empty); it needs a store URL."""
    if not features:
        return None
    from workloads.data.features.lookup import EnrichmentPlan

    if not feature_store_url:
        raise ValueError("parameter features is set but feature_store_url is empty: where is the online store?")
    return EnrichmentPlan.from_json(features), feature_store_url


def _connect_enricher(enrichment: Any, schema_names: list[str], metrics_registry: Any) -> Any:
    """One online-store client per worker process, made after the fork."""
    if enrichment is None:
        return None
    from workloads.serving.enrichment import Enricher

    plan, url = enrichment
    return Enricher.connect(plan, url, schema_names, metrics_registry)


def _skip_empty_seldon_metric_updates() -> None:
    """Seldon calls `SeldonMetrics.update([], ...)` after every prediction even when the
    model reports no custom metrics; each call is ~6 round trips to a multiprocessing
    Manager process (lock, read, lock, write) that only rewrite the same dict. Our
    metrics are prometheus-client collectors, so an empty update is skipped (the same
    result, without the IPC: a large share of the per-request cost on a busy core)."""
    from seldon_core import metrics as seldon_metrics

    original = seldon_metrics.SeldonMetrics.update
    if getattr(original, "_strata_skips_empty", False):
        return

    def update(self: Any, custom_metrics: Any, method: str) -> None:
        if custom_metrics:
            original(self, custom_metrics, method)

    update._strata_skips_empty = True  # type: ignore[attr-defined]
    seldon_metrics.SeldonMetrics.update = update


def _set_reason(reason: str) -> None:
    from flask import g

    g.strata_reason = reason


def _json_kind(value: Any) -> str:
    return {type(None): "null", list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def shed_answer(server: StrataModel, config: Any, path: str, waited_s: float) -> tuple[str, list, bytes] | None:
    """A prediction request that waited past the queue budget (`STRATA_QUEUE_BUDGET_S`,
    set by workloads.serving.app) for a thread: the WSGI answer to give it at once (503,
    `Retry-After`, the contract's error body), counted as reason=overloaded; else None.
    Decided before Flask, so a shed costs a small part of a served request."""
    budget = config.get("STRATA_QUEUE_BUDGET_S", 0.0)
    if not budget or waited_s <= budget or path not in PREDICT_PATHS:
        return None
    retry = config.get("STRATA_RETRY_AFTER_S", 1)
    body = json.dumps(error_body(503, "overloaded", f"overloaded: waited {waited_s * 1000:.0f} ms for a thread "
                                 f"(queue budget {budget * 1000:.0f} ms); retry after {retry}s")).encode()
    if server.metrics is not None:
        server.metrics.observe_request("rest", 503, waited_s, "overloaded")
    return "503 SERVICE UNAVAILABLE", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                       ("Retry-After", str(retry))], body


def build_blueprint(server: StrataModel) -> Any:
    from flask import Blueprint, Response, g, jsonify, request
    from werkzeug.exceptions import BadRequest, HTTPException

    bp = Blueprint("strata", __name__)

    @bp.record_once
    def _configure(state: Any) -> None:
        # werkzeug refuses to read a body over this (chunked uploads included): 413
        state.app.config["MAX_CONTENT_LENGTH"] = server.max_payload_bytes
        # the REST worker (workloads.serving.worker) asks this before Flask sees a request
        state.app.config["STRATA_SHED"] = functools.partial(shed_answer, server, state.app.config)

    def reply(code: int, reason: str, info: str) -> Any:
        g.strata_reason = reason
        response = jsonify(error_body(code, reason, info))
        response.status_code = code
        return response

    @bp.before_app_request
    def _before() -> Any:
        path = request.path
        if path in UNCOUNTED_PATHS:
            return None
        now = time.perf_counter()
        enqueued = request.environ.get(ENQUEUED_AT)  # workloads.serving.worker: waiting for a thread since
        g.strata_start = enqueued if enqueued is not None else now  # the latency a client sees includes the queue
        if server.metrics is not None:
            server.metrics.in_flight.inc()
            g.strata_in_flight = True
        if path not in PREDICT_PATHS:
            return None  # Flask answers 404/405; the handler below formats it
        length = request.content_length
        if length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            # no Content-Length: read at most the limit + 1 bytes ourselves (werkzeug would
            # hand an unterminated stream to the JSON parser as empty), then present the
            # body to Flask/Seldon as an ordinary sized one
            environ = request.environ
            body = environ["wsgi.input"].read(server.max_payload_bytes + 1)
            if len(body) > server.max_payload_bytes:
                return reply(413, "payload_too_large",
                             f"payload is over {server.max_payload_bytes} bytes (serving.realtime.maxPayloadBytes)")
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            length = len(body)
        if length is not None and length > server.max_payload_bytes:
            return reply(413, "payload_too_large",
                         f"payload is {length} bytes; the limit (serving.realtime.maxPayloadBytes) is {server.max_payload_bytes}")
        if request.method != "POST":
            return None  # Seldon's GET /predict?json=...
        ctype = (request.mimetype or "").lower()
        if ctype in FORM_TYPES:
            return None
        if ctype not in JSON_TYPES and not ctype.endswith("+json"):
            return reply(415, "unsupported_media_type",
                         f"Content-Type must be application/json, got {request.content_type or 'none'}")
        try:
            body = request.get_json()  # parsed once here; Flask caches it for Seldon's handler
        except BadRequest as error:
            if isinstance(error.__cause__ or error.__context__, RecursionError):
                return reply(400, "not_json", "the body is nested too deeply to be a prediction request")
            if error.code == 413:
                return reply(413, "payload_too_large", f"payload is over {server.max_payload_bytes} bytes")
            return reply(400, "not_json", "the body is not valid JSON (UTF-8, RFC 8259)")
        except RecursionError:
            return reply(400, "not_json", "the body is nested too deeply to be a prediction request")
        except HTTPException as error:
            code = error.code or 400
            return reply(code, _HTTP_REASONS.get(code, "bad_request"), error.description or error.name)
        if not isinstance(body, dict):
            return reply(400, "not_json", f"the body must be a JSON object (a Seldon message), got {_json_kind(body)}")
        return None

    @bp.app_errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        code = error.code or 500
        if code >= 500:
            return reply(code, "bad_request", error.name)  # pragma: no cover (no such raise here)
        return reply(code, _HTTP_REASONS.get(code, "bad_request"), f"{error.name}: {error.description}")

    @bp.app_errorhandler(InputError)
    def _input_error(error: InputError) -> Any:
        return reply(error.status, error.reason, error.message)

    @bp.app_errorhandler(RecursionError)
    def _too_deep(error: RecursionError) -> Any:
        return reply(400, "not_json", "the body is nested too deeply to be a prediction request")

    @bp.after_app_request
    def _after(response: Any) -> Any:
        start = g.pop("strata_start", None)
        if start is not None and server.metrics is not None:
            code = response.status_code
            reason = g.pop("strata_reason", None)
            if reason is None and 400 <= code < 500:
                reason = _HTTP_REASONS.get(code, "bad_request")
            counted = reason if 400 <= code < 500 or reason == "overloaded" else None
            server.metrics.observe_request("rest", code, time.perf_counter() - start, counted)
        return response

    @bp.teardown_app_request
    def _teardown(_exc: Any) -> None:
        if g.pop("strata_in_flight", False) and server.metrics is not None:
            server.metrics.in_flight.dec()

    @bp.route("/metrics", methods=["GET"])
    def _metrics() -> Any:
        if server.metrics is None:
            return Response("# model not loaded yet\n", mimetype="text/plain")
        body, content_type = server.metrics.exposition()
        return Response(body, content_type=content_type)

    return bp
