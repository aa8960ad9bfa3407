"""The persisted rollout state of one model, and where it is kept.

Nothing about a rollout lives only in memory: the controller writes this record before
every traffic change, so a controller killed at any point resumes at the recorded step
(re-applying that step's split is idempotent). Locally the record is
`<registry>/<model>/rollout.json` (atomic `os.replace`); on the cluster it is the
ConfigMap `<model>-rollout-state` (`workloads.rollout.kube.ConfigMapStateStore`).
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from workloads.spec import RolloutStrategyName

STATE_FILE = "rollout.json"
DECISIONS_FILE = "decisions.jsonl"


class Phase(str, enum.Enum):
    RUNNING = "running"  # holding a step / the window; analysis due at the end
    PROMOTING = "promoting"  # champion alias moving; stable reloading; traffic back to stable
    ROLLING_BACK = "rolling_back"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    DISCARDED = "discarded"  # shadow: candidate not good enough, nothing was ever live
    NO_WINNER = "no_winner"  # A/B: no significant difference; stable keeps all traffic

    @property
    def finished(self) -> bool:
        return self in (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.DISCARDED, Phase.NO_WINNER)


class RolloutState(BaseModel):
    """One rollout of `candidate_version` against `stable_version`."""

    model_config = ConfigDict(extra="forbid")

    model: str
    strategy: RolloutStrategyName
    candidate_version: str
    stable_version: str | None
    phase: Phase = Phase.RUNNING
    step: int = 0  # index into the strategy's plan
    step_started_at: float = Field(default_factory=time.time)
    quiet_windows: int = 0  # windows of this step that had too few requests to decide
    started_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    actor: str = "controller"
    reason: str = ""
    baseline: dict[str, Any] = Field(default_factory=dict)  # stable's last measured arm (for 100% steps)
    decisions: int = 0  # sequence number of the last recorded decision

    @property
    def active(self) -> bool:
        return not self.phase.finished

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


class StateStore(Protocol):
    def load(self, model: str) -> RolloutState | None: ...

    def save(self, state: RolloutState) -> None: ...


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class FileStateStore:
    """`<registry>/<model>/rollout.json`, beside the model's aliases.json."""

    def __init__(self, registry_root: Path | str):
        self.root = Path(registry_root)

    def path(self, model: str) -> Path:
        return self.root / model / STATE_FILE

    def load(self, model: str) -> RolloutState | None:
        path = self.path(model)
        if not path.is_file():
            return None
        try:
            return RolloutState.model_validate_json(path.read_text())
        except ValueError as error:
            raise ValueError(f"{path}: not a rollout state record ({error}); move it away to start over") from None

    def save(self, state: RolloutState) -> None:
        state.updated_at = time.time()
        atomic_write(self.path(state.model), state.to_json())
