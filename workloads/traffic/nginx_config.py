"""The nginx configuration of the local proxy: a pure function of ports, upstreams and splits.

One ``location /<model>/`` per model on 127.0.0.1:<proxy port>; the rest of the path
goes to the predictor unchanged (``/fraud/api/v1.0/predictions`` ->
``stable:/api/v1.0/predictions``). Per model:

- ``upstream strata_<model>_stable`` / ``strata_<model>_candidate``: one server each,
  ``keepalive`` connections (HTTP/1.1, ``Connection: ""``), never marked down
  (``max_fails=0``: a single-server group has no other server to fail over to);
- weights: ``split_clients`` on a per-request key -> ``$strata_arm_<model>`` = stable |
  candidate, then ``proxy_pass http://strata_<model>_$strata_arm_<model>``. The key is
  ``$request_id`` (16 random bytes per request), so each request is an independent draw
  with P(candidate) = weight: the observed share is binomial around the weight, which
  is what canary analysis and an A/B test assume, at any weight, after any reload and
  for any number of workers. A client that sends ``X-Strata-Subject`` is hashed on it
  instead, so one subject stays in one arm (sticky A/B). Weighted round-robin was the
  alternative: exact shares per worker but interleaved (not random) assignment, state
  reset on every reload, and a failed connection to one arm retried on the other;
- shadow: ``mirror`` to an internal location proxying to the candidate, body included;
  nginx discards the mirror's answer, the client gets stable's. The mirror has short
  timeouts, because nginx keeps the client's keep-alive connection until it finishes;
- ``X-Strata-Predictor: stable|candidate`` on every answer (errors included);
- access log (JSON lines) with the arm, status and times; mirrored requests in their own log;
- no client keep-alive (``ProxyConfig.client_keepalive_s``): see there why. Upstream
  connections are kept alive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from workloads.traffic.split import CANDIDATE, STABLE, TrafficSplit

PREDICTOR_HEADER = "X-Strata-Predictor"
SUBJECT_HEADER = "X-Strata-Subject"
HEALTH_PATH = "/_strata/health"


@dataclass(frozen=True)
class ModelRoute:
    model: str
    stable: str  # host:port
    candidate: str | None
    split: TrafficSplit
    grpc_stable: str | None = None  # host:port of the predictors' gRPC servers, where registered
    grpc_candidate: str | None = None

    @property
    def grpc_routed(self) -> bool:
        """gRPC is routed only where each arm the split can draw has a gRPC server."""
        return self.grpc_stable is not None and (self.candidate is None or self.grpc_candidate is not None)

    @property
    def ident(self) -> str:
        return self.model.replace("-", "_")


@dataclass(frozen=True)
class ProxyLayout:
    """Every path nginx touches, all under the state dir."""

    prefix: Path  # <state>/data/proxy
    logs: Path  # <state>/logs

    @property
    def conf(self) -> Path:
        return self.prefix.parent.parent / "config" / "proxy" / "nginx.conf"

    @property
    def pid(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def temp(self) -> Path:
        return self.prefix / "temp"

    @property
    def error_log(self) -> Path:
        return self.logs / "proxy-error.log"

    @property
    def access_log(self) -> Path:
        return self.logs / "proxy-access.log"

    @property
    def shadow_log(self) -> Path:
        return self.logs / "proxy-shadow.log"


@dataclass(frozen=True)
class ProxyConfig:
    port: int
    layout: ProxyLayout
    routes: tuple[ModelRoute, ...]
    generation: int
    host: str = "127.0.0.1"
    grpc_port: int | None = None  # the HTTP/2 listener for gRPC (`seldon: <model>` metadata picks the model)
    worker_user: str | None = None  # set when nginx runs as root: workers must reach the state dir
    keepalive: int = 32  # idle upstream connections kept per predictor and worker
    upstream_idle_s: int = 1  # below gunicorn's 2 s keep-alive, so nginx never reuses a closed one
    mirror_timeout_s: int = 5
    # Client keep-alive off: a reload makes the old workers close their idle keep-alive
    # connections, and a client that sends on one at that moment loses the request. With a
    # new connection per request the listening socket (never closed) queues every request
    # for whichever worker runs the new config: reloads drop nothing, for any client.
    client_keepalive_s: int = 0


def _q(text: str) -> str:
    """An nginx string literal (single-quoted)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _split_block(route: ModelRoute) -> str:
    var = f"$strata_arm_{route.ident}"
    weight = route.split.candidate_weight if route.candidate else 0
    if weight == 0:
        return f"    map $strata_split_key {var} {{ default {STABLE}; }}\n"
    if weight == 100:
        return f"    map $strata_split_key {var} {{ default {CANDIDATE}; }}\n"
    return (
        f"    split_clients $strata_split_key {var} {{\n"
        f"        {weight}% {CANDIDATE};\n"
        f"        * {STABLE};\n"
        f"    }}\n"
    )


def _upstream(name: str, address: str, cfg: ProxyConfig) -> str:
    return (
        f"    upstream {name} {{\n"
        f"        server {address} max_fails=0;\n"
        f"        keepalive {cfg.keepalive};\n"
        f"        keepalive_timeout {cfg.upstream_idle_s}s;\n"
        f"    }}\n"
    )


def _location(route: ModelRoute, cfg: ProxyConfig) -> str:
    ident, arm = route.ident, f"$strata_arm_{route.ident}"
    shadow = route.split.shadow and route.candidate is not None
    lines = [
        f"        location /{route.model}/ {{",
        f"            set $strata_model {route.model};",
        f"            set $strata_arm {arm};",
        f"            add_header {PREDICTOR_HEADER} {arm} always;",
        f"            proxy_pass http://strata_{ident}_{arm}$strata_upstream_uri;",
    ]
    if shadow:
        lines += [f"            mirror /_strata_mirror/{route.model};", "            mirror_request_body on;"]
    lines.append("        }")
    lines.append(f"        location = /{route.model} {{ return 308 /{route.model}/; }}")
    if shadow:
        lines += [
            f"        location = /_strata_mirror/{route.model} {{",
            "            internal;",
            "            log_subrequest on;",
            f"            access_log {cfg.layout.shadow_log} strata_shadow;",
            "            proxy_connect_timeout 1s;",
            f"            proxy_send_timeout {cfg.mirror_timeout_s}s;",
            f"            proxy_read_timeout {cfg.mirror_timeout_s}s;",
            "            proxy_next_upstream off;",
            "            proxy_ignore_client_abort on;  # the client may leave once stable answered",
            f"            proxy_pass http://strata_{ident}_{CANDIDATE}$strata_upstream_uri;",
            "        }",
        ]
    return "\n".join(lines) + "\n"


def render(cfg: ProxyConfig) -> str:
    lay = cfg.layout
    health = json.dumps({"status": "ok", "generation": cfg.generation,
                         "models": {r.model: r.split.describe() for r in cfg.routes}}, sort_keys=True)
    not_found = json.dumps({"status": {"code": 404, "reason": "unknown_model", "status": "FAILURE",
                                       "info": "no model is routed at this path; routed: "
                                               + (", ".join(f"/{r.model}/" for r in cfg.routes) or "none")}})
    out = [
        f"# Generated by workloads.traffic.local_proxy (generation {cfg.generation}). Do not edit:",
        "# `strata rollout` / `strata rollback` rewrite it and reload nginx.",
        "daemon off;",
        "master_process on;",
        "worker_processes 1;",
        f"pid {lay.pid};",
        f"lock_file {lay.prefix / 'nginx.lock'};",
        f"error_log {lay.error_log} warn;",
    ]
    if cfg.worker_user:
        out.append(f"user {cfg.worker_user};")
    out += [
        "events { worker_connections 4096; }",
        "",
        "http {",
        "    server_tokens off;",
        "    default_type application/json;",
        f"    client_body_temp_path {lay.temp / 'client_body'};",
        f"    proxy_temp_path {lay.temp / 'proxy'};",
        f"    fastcgi_temp_path {lay.temp / 'fastcgi'};",
        f"    uwsgi_temp_path {lay.temp / 'uwsgi'};",
        f"    scgi_temp_path {lay.temp / 'scgi'};",
        "    # the model servers enforce their own payload limit (413 in Seldon's error contract);",
        "    # bodies stay in memory, which mirror needs",
        "    client_max_body_size 16m;",
        "    client_body_buffer_size 1m;",
        f"    keepalive_timeout {cfg.client_keepalive_s}s;  # 0: every answer says `Connection: close`",
        "",
        "    log_format strata escape=json '{\"time\":\"$time_iso8601\",\"model\":\"$strata_model\",'",
        "        '\"predictor\":\"$strata_arm\",\"status\":$status,\"upstream_status\":\"$upstream_status\",'",
        "        '\"request_time\":$request_time,\"upstream_time\":\"$upstream_response_time\",'",
        "        '\"upstream\":\"$upstream_addr\",\"uri\":\"$request_uri\",\"request_id\":\"$request_id\"}';",
        "    log_format strata_shadow escape=json '{\"time\":\"$time_iso8601\",\"predictor\":\"candidate\",'",
        "        '\"shadow\":true,\"status\":$status,\"upstream_status\":\"$upstream_status\",'",
        "        '\"upstream_time\":\"$upstream_response_time\",\"upstream\":\"$upstream_addr\",'",
        "        '\"uri\":\"$request_uri\",\"request_id\":\"$request_id\"}';",
        f"    access_log {lay.access_log} strata buffer=64k flush=1s;",
        "",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',
        "    proxy_set_header Host $host;",
        "    proxy_set_header X-Request-Id $request_id;",
        "    proxy_connect_timeout 2s;",
        "    proxy_send_timeout 60s;",
        "    proxy_read_timeout 60s;",
        "    # one retry on a broken (e.g. just-closed keep-alive) connection, POST included:",
        "    # a prediction has no side effect, so sending it twice is safe",
        "    proxy_next_upstream error timeout non_idempotent;",
        "    proxy_next_upstream_tries 2;",
        "",
        "    # /<model>/<rest> -> <rest> (raw, args included), for live and mirrored requests alike",
        '    map $request_uri $strata_upstream_uri { "~^/[^/]+(?<rest>/.*)$" $rest; default /; }',
        f"    map $http_{SUBJECT_HEADER.lower().replace('-', '_')} $strata_split_key {{ \"\" $request_id; default $http_{SUBJECT_HEADER.lower().replace('-', '_')}; }}",
        "",
    ]
    for route in cfg.routes:
        out.append(f"    # {route.split.describe()}")
        out.append(_upstream(f"strata_{route.ident}_{STABLE}", route.stable, cfg).rstrip("\n"))
        if route.candidate:
            out.append(_upstream(f"strata_{route.ident}_{CANDIDATE}", route.candidate, cfg).rstrip("\n"))
        out.append(_split_block(route).rstrip("\n"))
        out.append("")
    out += [
        "    server {",
        f"        listen {cfg.host}:{cfg.port};",
        f"        location = {HEALTH_PATH} {{ access_log off; return 200 {_q(health)}; }}",
        "        # nginx's own 502/504 (predictor down or too slow) in Seldon's error contract, still labelled",
        "        error_page 502 = @strata_502;",
        "        error_page 504 = @strata_504;",
        *(f"        location @strata_{code} {{ add_header {PREDICTOR_HEADER} $strata_arm always; return {code} "
          + _q(json.dumps({"status": {"code": code, "reason": reason, "status": "FAILURE",
                                      "info": f"{what}: predictor '$strata_arm' of model '$strata_model'"}}))
          + "; }"
          for code, reason, what in ((502, "predictor_unreachable", "the proxy could not reach the model server"),
                                     (504, "predictor_timeout", "the model server did not answer in time"))),
    ]
    for route in cfg.routes:
        out.append(_location(route, cfg).rstrip("\n"))
    out += [
        # no server-level `set`: a mirror subrequest runs the server rewrite phase again
        f"        location / {{ set $strata_model ''; set $strata_arm ''; return 404 {_q(not_found)}; }}",
        "    }",
    ]
    if cfg.grpc_port is not None:
        out += _grpc_server(cfg)
    out += ["}", ""]
    return "\n".join(out)


def _grpc_status_location(name: str, status: int, message: str) -> str:
    """A gRPC trailers-only answer (HTTP 200 is implied by the grpc-status header on a 204)."""
    return (f"        location @{name} {{ default_type application/grpc; add_header {PREDICTOR_HEADER} $strata_arm always; "
            f"add_header grpc-status {status} always; add_header grpc-message {_q(message)} always; return 204; }}")


def _grpc_server(cfg: ProxyConfig) -> list[str]:
    """gRPC (Seldon's `Predict` over HTTP/2) on its own port: the `seldon` metadata names the
    model, as it does at Seldon's Istio gateway; the same split variable as REST picks the arm."""
    routed = [r for r in cfg.routes if r.grpc_routed]
    out = ["", "    # gRPC: `seldon: <model>` metadata -> that model's arm (the REST split's draw)"]
    for route in routed:
        out.append(_upstream(f"strata_grpc_{route.ident}_{STABLE}", route.grpc_stable, cfg).rstrip("\n"))
        if route.candidate:
            out.append(_upstream(f"strata_grpc_{route.ident}_{CANDIDATE}", route.grpc_candidate, cfg).rstrip("\n"))
    out.append("    map $http_seldon $strata_grpc_upstream {")
    out += [f"        {route.model} strata_grpc_{route.ident}_$strata_arm_{route.ident};" for route in routed]
    out += ['        default "";', "    }", "    map $http_seldon $strata_grpc_arm {"]
    out += [f"        {route.model} $strata_arm_{route.ident};" for route in routed]
    out += ['        default "";', "    }"]
    known = ", ".join(r.model for r in routed) or "none"
    out += [
        "    server {",
        f"        listen {cfg.host}:{cfg.grpc_port} http2;",
        # HTTP/2 multiplexes a client's calls on one connection: the REST listener's "no
        # keep-alive" would close it after each call with the others in flight. A reload
        # sends GOAWAY instead, and gRPC clients reconnect without losing a call.
        "        keepalive_timeout 75s;",
        "        keepalive_requests 1000000;",
        "        grpc_connect_timeout 2s;",
        "        grpc_send_timeout 60s;",
        "        grpc_read_timeout 60s;",
        "        grpc_next_upstream error timeout non_idempotent;",
        "        grpc_next_upstream_tries 2;",
        "        grpc_set_header X-Request-Id $request_id;",
        "        error_page 418 = @strata_grpc_unknown_model;",
        "        error_page 502 = @strata_grpc_unreachable;",
        "        error_page 504 = @strata_grpc_timeout;",
        _grpc_status_location("strata_grpc_unknown_model", 5,
                              f"unknown_model: no model is routed for the seldon metadata; routed: {known}"),
        _grpc_status_location("strata_grpc_unreachable", 14, "predictor_unreachable: the proxy could not reach the model server"),
        _grpc_status_location("strata_grpc_timeout", 4, "predictor_timeout: the model server did not answer in time"),
        "        location / {",
        "            set $strata_model $http_seldon;",
        "            set $strata_arm $strata_grpc_arm;",
        '            if ($strata_grpc_upstream = "") { return 418; }',
        f"            add_header {PREDICTOR_HEADER} $strata_arm always;",
        "            grpc_pass grpc://$strata_grpc_upstream;",
        "        }",
        "    }",
    ]
    return out
