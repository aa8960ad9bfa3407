"""The retraining trigger: an Alertmanager webhook receiver that starts training.

    python -m workloads.monitoring.retrain --port 8080 \
        --command 'strata train {model} --trigger retrain --reason {reason}'

Alertmanager's `retrain-webhook` receiver gets every alert labelled `retrain="true"`
(sustained feature drift above the spec's PSI threshold, quality degraded more than the
spec's percentage). For each firing alert's `model` the trigger starts ONE retrain:
while a retrain of that model runs, or within `--cooldown` seconds of the last start,
further notifications (Alertmanager repeats, more features drifting) are acknowledged
and skipped. Idempotency is per model, not per alert.

The action is injectable: a command template (local mode: a local training run; cluster:
a command that creates a RayJob) or any callable (tests, embedding). Webhook replies are
2xx for everything well-formed (Alertmanager retries non-2xx), 400 for malformed bodies.

Endpoints: `POST /v1/alertmanager`, `GET /v1/retrains`, `GET /metrics`, `GET /healthz`.

The loop (`RolloutHandoff`, `--rollout-registry`): after a retrain that succeeded AND
registered a new `challenger` in the registry export, the model's spec decides: with
`serving.rollout.autoPromote` the rollout controller is started for it
(`python -m workloads.rollout --model M --actor retrain-trigger`); otherwise the decision
"waits for `strata promote M`" is recorded (decisions.jsonl + log line).
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import re
import logging
import shlex
import sys
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

import prometheus_client as pc

from workloads.monitoring import metrics as contract
from workloads.monitoring.http import JsonHandler

log = logging.getLogger(__name__)


MODEL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # model names are DNS labels (the spec's rule)


def safe_name(model: str) -> str:
    """A model name fit for a file name: a DNS label, or refused (never `../`, `/`, ...)."""
    if not MODEL_NAME.match(model):
        raise ValueError(f"model {model[:64]!r} is not a DNS label")
    return model


@dataclass(frozen=True)
class RetrainRequest:
    model: str
    team: str
    reason: str  # the alert names, comma-separated
    alerts: tuple[Mapping[str, Any], ...] = ()


class Action(Protocol):
    def __call__(self, request: RetrainRequest) -> int:
        """Run the retrain to completion (called on a worker thread); returns an exit code."""


class CommandAction:
    """Runs a command per retrain; `{model}`, `{team}`, `{reason}` are substituted."""

    def __init__(self, template: str | list[str], log_dir: str | Path | None = None):
        self.template = shlex.split(template) if isinstance(template, str) else list(template)
        self.log_dir = Path(log_dir) if log_dir else None

    def argv(self, request: RetrainRequest) -> list[str]:
        values = {"model": request.model, "team": request.team, "reason": request.reason}
        return [part.format(**values) for part in self.template]

    def __call__(self, request: RetrainRequest) -> int:
        out: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{safe_name(request.model)}-{int(time.time())}.log", "ab")
        try:
            return subprocess.run(self.argv(request), stdout=out, stderr=subprocess.STDOUT, check=False).returncode
        finally:
            if out is not subprocess.DEVNULL:
                out.close()


@dataclass
class ModelState:
    running: bool = False
    started: int = 0
    last_started_at: float | None = None
    last_finished_at: float | None = None
    last_exit_code: int | None = None
    last_reason: str = ""
    last_rollout: str = ""  # what the handoff did with the retrain's challenger
    history: list[dict] = field(default_factory=list)


class RolloutHandoff:
    """What happens to the challenger a successful retrain registered (the closed loop)."""

    def __init__(self, registry_root: str | Path, spec_for: Callable[[str], Any] | None = None,
                 command: str | list[str] | None = None, log_dir: str | Path | None = None):
        self.registry_root = Path(registry_root)
        self.spec_for = spec_for or _example_spec
        default = [sys.executable, "-m", "workloads.rollout", "--model", "{model}", "--registry",
                   str(self.registry_root), "--actor", "retrain-trigger"]
        self.command = shlex.split(command) if isinstance(command, str) else list(command or default)
        self.log_dir = Path(log_dir) if log_dir else None
        self.started: list[subprocess.Popen] = []

    def challenger(self, model: str) -> str | None:
        from workloads.serving.registry import read_aliases

        aliases = read_aliases(self.registry_root, model)
        challenger = aliases.get("challenger")
        return challenger if challenger and challenger != aliases.get("champion") else None

    def __call__(self, request: RetrainRequest, challenger_before: str | None) -> str:
        """Returns what was done: no_new_challenger | rollout_started | waiting_for_promote."""
        from workloads.rollout.record import Decision, JsonlSink

        challenger = self.challenger(request.model)
        if challenger is None or challenger == challenger_before:
            log.info("retrain of %s registered no new challenger: nothing to roll out", request.model)
            return "no_new_challenger"
        spec = self.spec_for(request.model)
        rollout = spec.serving.rollout
        if rollout.auto_promote:
            argv = [part.format(model=request.model) for part in self.command]
            out: Any = subprocess.DEVNULL
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                out = open(self.log_dir / f"rollout-{safe_name(request.model)}-{int(time.time())}.log", "ab")
            try:
                # the trigger's own process group: stopping the trigger stops its rollout too
                # (the controller's state file lets the next one resume at the same step)
                self.started.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
            finally:
                if out is not subprocess.DEVNULL:
                    out.close()
            outcome, reason = "rollout_started", f"autoPromote: {rollout.strategy.value} rollout started ({' '.join(argv)})"
        else:
            outcome, reason = "waiting_for_promote", f"autoPromote is false: v{challenger} waits for `strata promote {request.model}`"
        JsonlSink(self.registry_root).record(Decision(
            model=request.model, strategy=rollout.strategy.value, candidate_version=challenger, stable_version=None,
            step=0, weight=0, outcome=outcome, reason=f"retrain ({request.reason}) registered v{challenger}; {reason}",
            actor="retrain-trigger"))
        log.info("%s: %s", request.model, reason)
        return outcome


def _example_spec(model: str) -> Any:
    """The spec `strata train` and the controller read too: `$STRATA_MODEL_SPEC_FILE`, else the example's."""
    from workloads.spec import SPEC_FILE_ENV
    from workloads.training.cli import resolve_spec

    return resolve_spec(model, None, os.environ.get(SPEC_FILE_ENV) or None)[0]


class RetrainTrigger:
    """At most one retrain per model at a time, and none within `cooldown_s` of the last."""

    def __init__(self, action: Callable[[RetrainRequest], int], cooldown_s: float = 6 * 3600,
                 registry: Any = None, state_file: str | Path | None = None,
                 clock: Callable[[], float] = time.time, handoff: RolloutHandoff | None = None,
                 known_models: Iterable[str] | None = None):
        self.handoff = handoff
        # Only these models are retrained (None: any); an alert for another one is acknowledged
        # and counted, never acted on, and its label never reaches a command or a file name.
        self.known_models = frozenset(known_models) if known_models is not None else None
        self.action = action
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.registry = registry if registry is not None else pc.CollectorRegistry()
        self.m = contract.collectors(contract.Emitter.RETRAIN, self.registry)
        self.state_file = Path(state_file) if state_file else None
        if self.state_file is not None:  # a first start: saving must not fail mid-request
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.models: dict[str, ModelState] = {}
        if self.state_file and self.state_file.is_file():
            for model, saved in json.loads(self.state_file.read_text()).items():
                self.models[model] = ModelState(
                    started=saved.get("started", 0), last_started_at=saved.get("last_started_at"))

    def _save(self) -> None:
        if self.state_file:
            data = {m: {"started": s.started, "last_started_at": s.last_started_at} for m, s in self.models.items()}
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, sort_keys=True))
            tmp.replace(self.state_file)

    def request(self, request: RetrainRequest) -> str:
        """Start a retrain unless one runs or ran recently. Returns the outcome."""
        with self._lock:
            state = self.models.setdefault(request.model, ModelState())
            now = self.clock()
            if state.running:
                outcome = "already_running"
            elif state.last_started_at is not None and now - state.last_started_at < self.cooldown_s:
                outcome = "cooldown"
            else:
                outcome = "started"
                state.running = True
                state.started += 1
                state.last_started_at = now
                state.last_reason = request.reason
                self._save()
            self.m["strata_retrain_triggers_total"].labels(
                model=request.model, team=request.team, outcome=outcome).inc()
            if outcome != "started":
                return outcome
            self.m["strata_retrain_runs_in_progress"].labels(model=request.model, team=request.team).inc()
            thread = threading.Thread(target=self._run, args=(request, state), daemon=True,
                                      name=f"retrain-{request.model}")
            self._threads.append(thread)
            thread.start()
            return outcome

    def _run(self, request: RetrainRequest, state: ModelState) -> None:
        code = -1
        before = self.handoff.challenger(request.model) if self.handoff is not None else None
        try:
            code = int(self.action(request) or 0)
            if code == 0 and self.handoff is not None:
                state.last_rollout = self.handoff(request, before)
        except Exception as error:  # the action failed to start: record, don't crash the service
            code = code if code == 0 else -1
            state.history.append({"error": repr(error)})
        finally:
            with self._lock:
                state.running = False
                state.last_finished_at = self.clock()
                state.last_exit_code = code
                state.history.append({"reason": request.reason, "exit_code": code})
                del state.history[:-20]
                self.m["strata_retrain_runs_in_progress"].labels(model=request.model, team=request.team).dec()
                if code != 0:
                    self.m["strata_retrain_triggers_total"].labels(
                        model=request.model, team=request.team, outcome="failed").inc()

    def handle_alertmanager(self, payload: Any) -> dict:
        """One Alertmanager webhook (version 4) -> outcome per model."""
        if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
            raise ValueError("not an Alertmanager webhook payload: needs an `alerts` list")
        by_model: dict[str, list[Mapping[str, Any]]] = {}
        ignored = 0
        unknown: set[str] = set()
        for alert in payload["alerts"]:
            labels = alert.get("labels") if isinstance(alert, dict) else None
            if not isinstance(labels, dict):
                raise ValueError("every alert needs a `labels` object")
            if alert.get("status") != "firing" or labels.get("retrain") != "true" or not labels.get("model"):
                ignored += 1
                continue
            model = str(labels["model"])
            if self.known_models is not None and model not in self.known_models:
                unknown.add(model)
                continue
            by_model.setdefault(model, []).append(alert)
        outcomes: dict[str, str] = {}
        for model in sorted(unknown):
            self.m["strata_retrain_triggers_total"].labels(model="unknown", team="unknown", outcome="unknown_model").inc()
            log.warning("retrain requested for a model this trigger does not know: %r (ignored)", model[:64])
        for model, alerts in sorted(by_model.items()):
            team = str(alerts[0]["labels"].get("team", "unknown"))
            reason = ",".join(sorted({str(a["labels"].get("alertname", "?")) for a in alerts}))
            outcomes[model] = self.request(RetrainRequest(model, team, reason, tuple(alerts)))
        return {"models": outcomes, "ignored": ignored, "unknown_models": len(unknown)}

    def status(self) -> dict:
        with self._lock:
            return {
                model: {
                    "running": s.running, "started": s.started, "last_started_at": s.last_started_at,
                    "last_finished_at": s.last_finished_at, "last_exit_code": s.last_exit_code,
                    "last_reason": s.last_reason, "last_rollout": s.last_rollout,
                }
                for model, s in sorted(self.models.items())
            }

    def join(self, timeout: float | None = None) -> None:
        for thread in list(self._threads):
            thread.join(timeout)


def make_handler(trigger: RetrainTrigger, token: str | None = None) -> type[BaseHTTPRequestHandler]:
    expected = f"Bearer {token}".encode() if token else None

    class Handler(JsonHandler):
        protocol_version = "HTTP/1.1"

        def _authorized(self) -> bool:
            """POSTs carry Alertmanager's bearer token (its webhook `http_config`)."""
            if expected is None:
                return True
            given = (self.headers.get("Authorization") or "").encode()
            return hmac.compare_digest(given, expected)


        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/metrics":
                self._send(200, pc.generate_latest(trigger.registry), pc.CONTENT_TYPE_LATEST)
            elif self.path == "/v1/retrains":
                self._send(200, json.dumps(trigger.status()).encode())
            elif self.path == "/healthz":
                self._send(200, b'{"status": "ok"}')
            else:
                self._send(404, json.dumps({"error": f"no route {self.path}"}).encode())

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path != "/v1/alertmanager":
                self._send(404, json.dumps({"error": f"no route {self.path}"}).encode())
                return
            if not self._authorized():
                self._send(401, json.dumps({"error": "missing or wrong bearer token"}).encode())
                return
            try:
                result = trigger.handle_alertmanager(json.loads(raw or b"null"))
            except json.JSONDecodeError as error:
                self._send(400, json.dumps({"error": f"invalid JSON: {error.msg}"}).encode())
                return
            except ValueError as error:
                self._send(400, json.dumps({"error": str(error)}).encode())
                return
            self._send(200, json.dumps(result).encode())

    return Handler


def serve(trigger: RetrainTrigger, host: str = "127.0.0.1", port: int = 8080,
          token: str | None = None) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(trigger, token))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Strata retraining trigger (Alertmanager webhook)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--command", required=True,
                        help="retrain command template; {model}, {team}, {reason} are substituted")
    parser.add_argument("--cooldown", type=float, default=6 * 3600, help="seconds between retrains of a model")
    parser.add_argument("--state-file", help="remembers last start times across restarts")
    parser.add_argument("--log-dir", help="one log file per retrain run")
    parser.add_argument("--rollout-registry", help="registry export: hand a new challenger to the rollout controller")
    parser.add_argument("--rollout-command", help="controller command template ({model}); default python -m workloads.rollout")
    parser.add_argument("--models", required=True, help="comma-separated models this trigger may retrain (others are ignored)")
    args = parser.parse_args(argv)
    token = os.environ.get("STRATA_RETRAIN_TOKEN", "").strip()
    if not token:
        parser.error("STRATA_RETRAIN_TOKEN is not set: the webhook authenticates Alertmanager with this bearer token")
    models = [m for m in args.models.split(",") if m]
    for model in models:
        try:
            safe_name(model)
        except ValueError as error:
            parser.error(f"--models: {error}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handoff = RolloutHandoff(args.rollout_registry, command=args.rollout_command, log_dir=args.log_dir) \
        if args.rollout_registry else None
    trigger = RetrainTrigger(CommandAction(args.command, args.log_dir), args.cooldown, state_file=args.state_file,
                             handoff=handoff, known_models=models)
    server = serve(trigger, args.host, args.port, token=token)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"retrain trigger on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
