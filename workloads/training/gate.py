"""The evaluation gate: may a candidate become `challenger`? Pure logic, no MLflow.

All three contenders are scored on the same held-out split (never used for training,
early stopping or HPO):

* the candidate;
* the trivial baseline (`majority-class` / `mean`: the training split's class prior
  for every row), unless `trivial: none`;
* the current `champion` version, if the registry has one.

The candidate passes when it is strictly better than the trivial baseline and no more
than `maxRegressionPct` worse than the champion on the primary metric. Metric names
in the spec use the per-epoch names (`val_auc`); the gate compares `holdout_auc`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from workloads.spec import Baseline, Direction


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    metric: str  # holdout metric compared
    direction: str
    candidate: float
    trivial: float | None = None
    champion: float | None = None
    champion_version: str | None = None
    threshold: float | None = None  # the worst value the champion rule allowed
    checks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def holdout_name(primary_metric: str) -> str:
    return "holdout_" + primary_metric.removeprefix("val_")


def _better(a: float, b: float, direction: Direction) -> bool:
    return a > b if direction is Direction.MAX else a < b


def decide(
    baseline: Baseline,
    candidate: dict[str, float],
    trivial: dict[str, float] | None,
    champion: dict[str, float] | None = None,
    champion_version: str | None = None,
    champion_problem: str | None = None,
) -> GateDecision:
    """`candidate`/`trivial`/`champion` map holdout metric names to values."""
    metric = holdout_name(baseline.primary_metric)
    direction = baseline.direction
    value = candidate.get(metric, math.nan)
    checks: list[str] = []
    common = dict(metric=metric, direction=direction.value, candidate=value, champion_version=champion_version)
    trivial_value = trivial.get(metric) if trivial else None
    champion_value = champion.get(metric) if champion else None
    common.update(trivial=trivial_value, champion=champion_value)

    if not math.isfinite(value):
        return GateDecision(False, f"candidate {metric} is not a finite number ({value})", checks=checks, **common)
    if trivial_value is not None:
        if not _better(value, trivial_value, direction):
            reason = (
                f"not better than the trivial {baseline.trivial} baseline on {metric}: "
                f"{value:.6g} vs {trivial_value:.6g} ({direction.value} is better)"
            )
            return GateDecision(False, reason, checks=checks, **common)
        checks.append(f"beats trivial baseline: {value:.6g} vs {trivial_value:.6g}")
    if champion_problem:
        return GateDecision(False, champion_problem, checks=checks, **common)
    threshold = None
    if champion_value is not None:
        slack = abs(champion_value) * baseline.max_regression_pct / 100.0
        threshold = champion_value - slack if direction is Direction.MAX else champion_value + slack
        within = value >= threshold if direction is Direction.MAX else value <= threshold
        if not within:
            reason = (
                f"more than {baseline.max_regression_pct:g}% worse than champion v{champion_version} on {metric}: "
                f"{value:.6g} vs {champion_value:.6g} (limit {threshold:.6g})"
            )
            return GateDecision(False, reason, threshold=threshold, checks=checks, **common)
        checks.append(f"within {baseline.max_regression_pct:g}% of champion v{champion_version}: {value:.6g} vs {champion_value:.6g}")
    else:
        checks.append("no champion yet")
    return GateDecision(True, "; ".join(checks), threshold=threshold, checks=checks, **common)
