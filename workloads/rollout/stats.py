"""Pure statistics for rollout decisions (numpy + scipy, no I/O).

An *arm* is what one predictor did in the analysis window: requests, 5xx errors, p99
latency and the cumulative served-score histogram, all read from Prometheus. Verdicts:

- canary / blue-green / shadow (`compare`): the candidate fails when its error ratio is
  worse than stable's by more than the tolerance AND significantly so (one-sided
  two-proportion z-test), when its p99 breaks the SLO target or is much slower than
  stable's, or when its score distribution shifted (PSI between the arms above the spec's
  drift threshold plus the PSI that sampling noise alone produces). Too few requests in
  either arm is `insufficient`: a quiet window never passes.
- A/B (`ab_test`): success ratio (non-5xx share) per arm with Wilson intervals, the
  difference with its normal-approximation interval and a two-sided p-value; a winner
  only when p < alpha.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class Arm:
    """One predictor's window. `score_cdf`: (upper bound, cumulative count) sorted by bound."""

    requests: float
    errors: float
    p99_s: float | None = None
    score_cdf: tuple[tuple[float, float], ...] = ()

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0

    @property
    def rows(self) -> float:
        return self.score_cdf[-1][1] if self.score_cdf else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["score_cdf"] = [list(pair) for pair in self.score_cdf]
        out["error_ratio"] = round(self.error_ratio, 6)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Arm":
        return cls(float(raw.get("requests", 0)), float(raw.get("errors", 0)), raw.get("p99_s"),
                   tuple((float(a), float(b)) for a, b in raw.get("score_cdf", ())))


@dataclass(frozen=True)
class Criteria:
    """What a candidate must meet. Defaults are stated; the spec supplies the rest."""

    min_requests: int = 200  # serving.rollout.minRequestsPerStep, per arm
    latency_slo_s: float = 0.2  # slos.latencyP99Ms
    psi_threshold: float = 0.2  # drift.psiThreshold
    max_error_ratio_increase: float = 0.01  # absolute, candidate minus stable
    max_latency_ratio: float = 1.5  # candidate p99 may not exceed stable p99 x this ...
    latency_slack_s: float = 0.1  # ... by more than this (coarse buckets, noisy neighbours)
    alpha: float = 0.05


class Outcome(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    INSUFFICIENT = "insufficient"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reasons: tuple[str, ...]
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


# ------------------------------------------------------------------ building blocks


def two_proportion_z(k1: float, n1: float, k2: float, n2: float) -> tuple[float, float]:
    """z statistic and two-sided p-value for p2 - p1 (pooled). Degenerate inputs: (0, 1)."""
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    pooled = (k1 + k2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 0.0, 1.0
    z = (k2 / n2 - k1 / n1) / math.sqrt(var)
    return z, float(2 * sps.norm.sf(abs(z)))


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    k = int(round(min(max(successes, 0), n)))
    ci = sps.binomtest(k, int(round(n))).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bucket_counts(cdf: Sequence[tuple[float, float]]) -> np.ndarray:
    """Per-bucket counts from a cumulative histogram (Prometheus `le` buckets)."""
    cumulative = np.maximum.accumulate(np.asarray([c for _, c in cdf], dtype=np.float64)) if cdf else np.zeros(0)
    return np.diff(np.concatenate([[0.0], cumulative]))


def psi_between(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]], epsilon: float = 1e-4) -> float:
    """Population stability index between two histograms over the same buckets."""
    bounds_a = [round(x, 9) for x, _ in a]
    bounds_b = [round(x, 9) for x, _ in b]
    if bounds_a != bounds_b:
        raise ValueError(f"histograms have different buckets: {bounds_a} vs {bounds_b}")
    ca, cb = bucket_counts(a), bucket_counts(b)
    if ca.sum() <= 0 or cb.sum() <= 0:
        return 0.0
    pa = np.clip(ca / ca.sum(), epsilon, None)
    pb = np.clip(cb / cb.sum(), epsilon, None)
    return float(np.sum((pb - pa) * np.log(pb / pa)))


def psi_noise(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    """PSI two samples of the SAME distribution show on average: (k - 1)(1/n_a + 1/n_b),
    k the occupied buckets (PSI is a symmetrised chi-square divided by n)."""
    ca, cb = bucket_counts(a), bucket_counts(b)
    na, nb = ca.sum(), cb.sum()
    if na <= 0 or nb <= 0:
        return math.inf
    occupied = int(np.count_nonzero(ca + cb))
    return max(occupied - 1, 0) * (1 / na + 1 / nb)


# ------------------------------------------------------------------ verdicts


def compare(stable: Arm | None, candidate: Arm, criteria: Criteria) -> Verdict:
    """Candidate vs stable for one canary step, the shadow window or a blue-green window.
    `stable` None: judge the candidate on the absolute criteria only."""
    checks: dict[str, Any] = {"candidate": candidate.to_dict(), "stable": stable.to_dict() if stable else None}
    short = []
    if candidate.requests < criteria.min_requests:
        short.append(f"candidate had {candidate.requests:.0f} requests (< {criteria.min_requests})")
    if stable is not None and stable.requests < criteria.min_requests:
        short.append(f"stable had {stable.requests:.0f} requests (< {criteria.min_requests})")
    if short:
        return Verdict(Outcome.INSUFFICIENT, tuple(short), checks)

    failures, passes = [], []
    base_ratio = stable.error_ratio if stable else 0.0
    increase = candidate.error_ratio - base_ratio
    if stable is not None:
        z, p_two = two_proportion_z(stable.errors, stable.requests, candidate.errors, candidate.requests)
        p_worse = p_two / 2 if z > 0 else 1 - p_two / 2
    else:
        p_worse = 0.0 if candidate.errors > 0 else 1.0
    checks["error_ratio_increase"], checks["error_p_value"] = round(increase, 6), round(p_worse, 6)
    if increase > criteria.max_error_ratio_increase and p_worse < criteria.alpha:
        failures.append(f"error ratio {candidate.error_ratio:.2%} vs stable {base_ratio:.2%} "
                        f"(+{increase:.2%} > {criteria.max_error_ratio_increase:.2%}, p={p_worse:.3g})")
    else:
        passes.append(f"error ratio {candidate.error_ratio:.2%} vs stable {base_ratio:.2%}")

    if candidate.p99_s is not None and math.isfinite(candidate.p99_s):
        limit = criteria.latency_slo_s
        if stable is not None and stable.p99_s is not None and math.isfinite(stable.p99_s):
            limit = min(limit, max(stable.p99_s * criteria.max_latency_ratio, stable.p99_s + criteria.latency_slack_s))
        checks["p99_limit_s"] = round(limit, 6)
        if candidate.p99_s > limit:
            failures.append(f"p99 {candidate.p99_s * 1000:.0f} ms > limit {limit * 1000:.0f} ms "
                            f"(stable {stable.p99_s * 1000 if stable and stable.p99_s else float('nan'):.0f} ms, "
                            f"SLO {criteria.latency_slo_s * 1000:.0f} ms)")
        else:
            passes.append(f"p99 {candidate.p99_s * 1000:.0f} ms <= {limit * 1000:.0f} ms")

    if stable is not None and stable.score_cdf and candidate.score_cdf:
        psi = psi_between(stable.score_cdf, candidate.score_cdf)
        noise = psi_noise(stable.score_cdf, candidate.score_cdf)
        limit = criteria.psi_threshold + noise
        checks["score_psi"], checks["score_psi_limit"] = round(psi, 6), round(limit, 6)
        if psi > limit:
            failures.append(f"prediction distribution shifted: PSI {psi:.3f} > {limit:.3f}")
        else:
            passes.append(f"score PSI {psi:.3f} <= {limit:.3f}")
    if failures:
        return Verdict(Outcome.FAIL, tuple(failures), checks)
    return Verdict(Outcome.PASS, tuple(passes), checks)


class AbWinner(str, enum.Enum):
    CANDIDATE = "candidate"
    STABLE = "stable"
    NONE = "none"


@dataclass(frozen=True)
class AbResult:
    """Primary metric (success ratio = non-5xx share) per arm, with intervals."""

    winner: AbWinner
    sufficient: bool
    stable_ratio: float
    stable_ci: tuple[float, float]
    candidate_ratio: float
    candidate_ci: tuple[float, float]
    difference: float  # candidate - stable
    difference_ci: tuple[float, float]
    p_value: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["winner"] = self.winner.value
        return out

    def describe(self) -> str:
        pct = lambda x: f"{x:.2%}"  # noqa: E731
        return (f"success ratio stable {pct(self.stable_ratio)} [{pct(self.stable_ci[0])}, {pct(self.stable_ci[1])}], "
                f"candidate {pct(self.candidate_ratio)} [{pct(self.candidate_ci[0])}, {pct(self.candidate_ci[1])}]; "
                f"difference {self.difference:+.2%} [{self.difference_ci[0]:+.2%}, {self.difference_ci[1]:+.2%}] "
                f"({self.confidence:.0%} CI), p={self.p_value:.3g}")


def ab_test(stable: Arm, candidate: Arm, criteria: Criteria) -> AbResult:
    confidence = 1 - criteria.alpha
    s_ok, c_ok = stable.requests - stable.errors, candidate.requests - candidate.errors
    s_ratio = s_ok / stable.requests if stable.requests > 0 else 0.0
    c_ratio = c_ok / candidate.requests if candidate.requests > 0 else 0.0
    diff = c_ratio - s_ratio
    if stable.requests > 0 and candidate.requests > 0:
        se = math.sqrt(s_ratio * (1 - s_ratio) / stable.requests + c_ratio * (1 - c_ratio) / candidate.requests)
    else:
        se = math.inf
    half = float(sps.norm.ppf(1 - criteria.alpha / 2)) * se
    _, p_value = two_proportion_z(s_ok, stable.requests, c_ok, candidate.requests)
    sufficient = min(stable.requests, candidate.requests) >= criteria.min_requests
    winner = AbWinner.NONE
    if sufficient and p_value < criteria.alpha:
        winner = AbWinner.CANDIDATE if diff > 0 else AbWinner.STABLE
    return AbResult(winner, sufficient, s_ratio, wilson_interval(s_ok, stable.requests, confidence), c_ratio,
                    wilson_interval(c_ok, candidate.requests, confidence), diff, (diff - half, diff + half),
                    p_value, confidence)
