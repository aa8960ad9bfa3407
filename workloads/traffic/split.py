"""The traffic-split contract shared by the local proxy, the cluster router and the rollout controller.

Every served model has two predictor slots, named the same locally (proxy upstreams, the
`predictor` metrics label, the `meta.predictor` of each answer) and on the cluster (the
SeldonDeployment's `spec.predictors[].name`):

- ``stable``: serves the ``champion`` alias;
- ``candidate``: serves the ``challenger`` alias while a rollout runs.

A strategy is only a shape of split: canary and A/B weight the candidate, shadow mirrors
to it (its answers are discarded), blue-green switches 0 -> 100 at once. Stdlib + pydantic
only: the serving environment and the controller both import it.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

STABLE = "stable"
CANDIDATE = "candidate"
PREDICTORS = (STABLE, CANDIDATE)
ALIAS_OF_PREDICTOR = {STABLE: "champion", CANDIDATE: "challenger"}
SHADOW_PREDICTOR = "shadow"  # the metrics label of a shadow candidate


def metrics_predictor(slot: str, strategy: object) -> str:
    """The `predictor` label a server in `slot` exports: the candidate of a shadow rollout is
    labelled `shadow`, so mirrored traffic never counts against the SLO (the rules select
    predictor!="shadow"); canary and A/B candidates answer users and do count. `strategy`
    is the spec's or the mode's strategy (an enum with a value, or its string)."""
    if slot == CANDIDATE and str(getattr(strategy, "value", strategy)) == "shadow":
        return SHADOW_PREDICTOR
    return slot


class TrafficSplit(BaseModel):
    """Where a model's live traffic goes. Weights are percentages of the non-shadow traffic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    candidate_weight: int = Field(0, ge=0, le=100)
    shadow: bool = False  # candidate gets a copy of every request; its answers are dropped

    @model_validator(mode="after")
    def _shadow_takes_no_live_traffic(self) -> "TrafficSplit":
        if self.shadow and self.candidate_weight:
            raise ValueError(
                f"a shadow candidate takes copies, not live traffic: candidate_weight must be 0, "
                f"got {self.candidate_weight}"
            )
        return self

    @property
    def stable_weight(self) -> int:
        return 100 - self.candidate_weight

    @property
    def weights(self) -> dict[str, int]:
        return {STABLE: self.stable_weight, CANDIDATE: self.candidate_weight}

    @property
    def candidate_active(self) -> bool:
        return self.shadow or self.candidate_weight > 0

    @classmethod
    def all_stable(cls, model: str) -> "TrafficSplit":
        return cls(model=model)

    @classmethod
    def weighted(cls, model: str, candidate_weight: int) -> "TrafficSplit":
        """Canary step or A/B split."""
        return cls(model=model, candidate_weight=candidate_weight)

    @classmethod
    def mirrored(cls, model: str) -> "TrafficSplit":
        return cls(model=model, shadow=True)

    @classmethod
    def all_candidate(cls, model: str) -> "TrafficSplit":
        """Blue-green switch (or the last canary step)."""
        return cls(model=model, candidate_weight=100)

    def describe(self) -> str:
        if self.shadow:
            return f"{self.model}: 100% {STABLE}, {CANDIDATE} mirrored (shadow)"
        return f"{self.model}: {self.stable_weight}% {STABLE} / {self.candidate_weight}% {CANDIDATE}"


class TrafficRouter(Protocol):
    """Applies a split without dropping requests: the local proxy or the SeldonDeployment."""

    def current(self, model: str) -> TrafficSplit:
        """The split in force now (``all_stable`` when none was ever applied)."""

    def apply(self, split: TrafficSplit) -> None:
        """Make ``split`` the one in force; returns once new requests follow it."""
