"""Every rollout decision, recorded where people and machines look.

A `Decision` (who or what, when, the metrics of both arms, the outcome) goes to:
- a log line (always);
- `<registry>/<model>/decisions.jsonl` locally (append + fsync);
- MLflow model-version tags of the candidate when an MLflow tracking server is reachable
  (`rollout.decision.<seq>`, `rollout.outcome`);
- a Kubernetes Event on the model's SeldonDeployment on the cluster (`kube.EventSink`);
- the contract's rollout metrics (`strata_rollout_*`), for the per-model dashboard.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from workloads.monitoring import metrics as contract
from workloads.rollout.state import DECISIONS_FILE, RolloutState

log = logging.getLogger("workloads.rollout")

OUTCOMES = ("start", "resume", "advance", "hold", "promote", "rollback", "discard", "no_winner")


@dataclass(frozen=True)
class Decision:
    model: str
    strategy: str
    candidate_version: str
    stable_version: str | None
    step: int
    weight: int  # candidate weight in force when the decision was taken
    outcome: str
    reason: str
    actor: str
    at: float = field(default_factory=time.time)
    seq: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None  # rollback / promotion: decision -> traffic in place

    @property
    def at_iso(self) -> str:
        return datetime.fromtimestamp(self.at, timezone.utc).isoformat(timespec="seconds")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at_iso": self.at_iso}

    def line(self) -> str:
        took = f" in {self.duration_s:.2f}s" if self.duration_s is not None else ""
        return (f"rollout {self.model} v{self.candidate_version} ({self.strategy}) step {self.step} "
                f"weight {self.weight}%: {self.outcome.upper()}{took} by {self.actor}: {self.reason}")


class DecisionSink(Protocol):
    def record(self, decision: Decision) -> None: ...


class JsonlSink:
    """`<registry>/<model>/decisions.jsonl`: one JSON object per decision, appended."""

    def __init__(self, registry_root: Path | str):
        self.root = Path(registry_root)

    def path(self, model: str) -> Path:
        return self.root / model / DECISIONS_FILE

    def record(self, decision: Decision) -> None:
        path = self.path(decision.model)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as out:
            out.write(json.dumps(decision.to_dict(), sort_keys=True, default=str) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def history(self, model: str) -> list[dict[str, Any]]:
        path = self.path(model)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mlflow_reachable(uri: str | None, timeout_s: float = 1.0) -> bool:
    if not uri:
        return False
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
                return resp.status == 200
        except OSError:
            return False
    return False


def default_tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, else the local training harness's sqlite store
    (`$STRATA_STATE_DIR` or ./.strata, as workloads.training.tracking decides)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    state = Path(os.environ.get("STRATA_STATE_DIR", Path.cwd() / ".strata")).resolve()
    return f"sqlite:///{state / 'mlflow' / 'mlflow.db'}"


class MlflowTagSink:
    """Tags on the candidate's MLflow model version; skipped (logged once) when unreachable."""

    def __init__(self, tracking_uri: str | None = None):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self._usable: bool | None = None

    def usable(self) -> bool:
        if self._usable is None:
            self._usable = mlflow_reachable(self.tracking_uri)
            if not self._usable:
                log.info("MLflow not reachable (%s): decisions are not tagged on model versions", self.tracking_uri)
        return self._usable

    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def record(self, decision: Decision) -> None:
        if not self.usable():
            return
        try:
            client = self._client()
            value = json.dumps({k: v for k, v in decision.to_dict().items() if k != "metrics"}, default=str)
            client.set_model_version_tag(decision.model, decision.candidate_version, f"rollout.decision.{decision.seq:03d}", value[:5000])
            client.set_model_version_tag(decision.model, decision.candidate_version, "rollout.outcome", decision.outcome)
        except Exception as error:  # the registry is a record, not a gate: never stop a rollback for it
            log.warning("could not tag %s v%s in MLflow: %s", decision.model, decision.candidate_version, error)

    def set_alias(self, model: str, alias: str, version: str) -> bool:
        if not self.usable():
            return False
        try:
            self._client().set_registered_model_alias(model, alias, version)
            return True
        except Exception as error:
            log.warning("could not move MLflow alias %s of %s to v%s: %s", alias, model, version, error)
            return False


class RolloutMetrics:
    """The contract's `strata_rollout_*` collectors for one controller process."""

    def __init__(self, team: str, registry: Any = None):
        import prometheus_client as pc

        self.team = team
        self.registry = registry if registry is not None else pc.CollectorRegistry()
        self.c = contract.collectors(contract.Emitter.ROLLOUT, self.registry)

    def update(self, state: RolloutState, weight: int, outcome: str | None = None, rollback_s: float | None = None) -> None:
        labels = {"model": state.model, "team": self.team, "strategy": state.strategy.value}
        for known in OUTCOMES:  # every outcome exists from the start: increase() sees the first rollback
            self.c["strata_rollout_decisions_total"].labels(**labels, outcome=known)
        self.c["strata_rollout_active"].labels(**labels, candidate_version=state.candidate_version).set(1 if state.active else 0)
        self.c["strata_rollout_step"].labels(**labels).set(state.step)
        self.c["strata_rollout_candidate_weight_ratio"].labels(**labels).set(weight / 100)
        if outcome is not None:
            self.c["strata_rollout_decisions_total"].labels(**labels, outcome=outcome).inc()
            if outcome != "hold":
                self.c["strata_rollout_last_transition_timestamp_seconds"].labels(**labels).set(time.time())
        if rollback_s is not None:
            self.c["strata_rollout_rollback_duration_seconds"].labels(**labels).set(rollback_s)

    def exposition(self) -> bytes:
        import prometheus_client as pc

        return pc.generate_latest(self.registry)
