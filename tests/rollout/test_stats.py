"""The pure statistics behind rollout decisions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from workloads.rollout import stats

CRITERIA = stats.Criteria(min_requests=200, latency_slo_s=0.2, psi_threshold=0.2)
EDGES = tuple(round(0.05 * i, 2) for i in range(1, 21))


def cdf(values: np.ndarray) -> tuple[tuple[float, float], ...]:
    return tuple((edge, float(np.sum(values <= edge))) for edge in EDGES)


def arm(requests=1000, errors=0, p99=0.02, scores=None) -> stats.Arm:
    rng = np.random.default_rng(requests + errors)
    scores = rng.beta(2, 5, 4000) if scores is None else scores
    return stats.Arm(requests, errors, p99, cdf(scores))


def test_two_proportion_z_matches_a_chi_square_test():
    z, p = stats.two_proportion_z(30, 1000, 55, 1000)
    chi2, p_chi, _, _ = sps.chi2_contingency([[30, 970], [55, 945]], correction=False)
    assert z > 0 and p == pytest.approx(p_chi, rel=1e-9) and z ** 2 == pytest.approx(chi2, rel=1e-9)
    assert stats.two_proportion_z(0, 100, 0, 100) == (0.0, 1.0)  # degenerate: no evidence


def test_psi_is_zero_for_equal_histograms_and_grows_with_shift():
    rng = np.random.default_rng(0)
    base = rng.beta(2, 5, 20000)
    assert stats.psi_between(cdf(base), cdf(base)) == pytest.approx(0.0, abs=1e-12)
    assert stats.psi_between(cdf(base), cdf(rng.beta(5, 2, 20000))) > 1.0
    noise = stats.psi_noise(cdf(base[:2000]), cdf(base[2000:4000]))
    assert stats.psi_between(cdf(base[:2000]), cdf(base[2000:4000])) < 3 * noise
    with pytest.raises(ValueError, match="different buckets"):
        stats.psi_between(cdf(base), cdf(base)[:-1])


def test_a_healthy_candidate_passes():
    verdict = stats.compare(arm(5000, 5), arm(300, 0), CRITERIA)
    assert verdict.outcome is stats.Outcome.PASS, verdict.reasons


def test_injected_errors_fail():
    verdict = stats.compare(arm(5000, 5), arm(300, 60), CRITERIA)
    assert verdict.outcome is stats.Outcome.FAIL and "error ratio" in verdict.summary


def test_a_few_more_errors_in_a_small_sample_are_not_significant():
    verdict = stats.compare(arm(5000, 25), arm(200, 3), CRITERIA)  # 1.5% vs 0.5%: p ~ 0.07
    assert verdict.outcome is stats.Outcome.PASS, verdict.reasons


def test_added_latency_fails():
    verdict = stats.compare(arm(5000, 0, p99=0.02), arm(300, 0, p99=0.31), CRITERIA)
    assert verdict.outcome is stats.Outcome.FAIL and "p99" in verdict.summary


def test_prediction_shift_fails():
    rng = np.random.default_rng(1)
    verdict = stats.compare(arm(5000, scores=rng.beta(2, 5, 4000)), arm(300, scores=rng.beta(5, 2, 2400)), CRITERIA)
    assert verdict.outcome is stats.Outcome.FAIL and "PSI" in verdict.summary


def test_a_quiet_window_is_insufficient_even_when_everything_looks_fine():
    assert stats.compare(arm(5000), arm(199), CRITERIA).outcome is stats.Outcome.INSUFFICIENT
    assert stats.compare(arm(150), arm(5000), CRITERIA).outcome is stats.Outcome.INSUFFICIENT
    assert stats.compare(None, arm(0), CRITERIA).outcome is stats.Outcome.INSUFFICIENT


def test_ab_finds_a_real_difference_with_its_interval():
    result = stats.ab_test(arm(2000, 200), arm(2000, 40), CRITERIA)  # 90% vs 98% success
    assert result.winner is stats.AbWinner.CANDIDATE and result.p_value < 1e-6
    assert result.difference == pytest.approx(0.08)
    low, high = result.difference_ci
    assert 0 < low < 0.08 < high
    assert result.candidate_ci[0] < 0.98 < result.candidate_ci[1]
    assert stats.ab_test(arm(2000, 40), arm(2000, 200), CRITERIA).winner is stats.AbWinner.STABLE


def test_ab_equal_arms_have_no_winner():
    rng = np.random.default_rng(7)
    winners = []
    for _ in range(200):  # same 3% error rate in both arms: a false winner at most ~alpha of the time
        s, c = rng.binomial(1000, 0.03), rng.binomial(1000, 0.03)
        winners.append(stats.ab_test(arm(1000, s), arm(1000, c), CRITERIA).winner)
    assert winners.count(stats.AbWinner.NONE) >= 180
    assert stats.ab_test(arm(1000, 0), arm(1000, 0), CRITERIA).winner is stats.AbWinner.NONE


def test_ab_needs_the_minimum_sample_in_both_arms():
    result = stats.ab_test(arm(150, 100), arm(150, 0), CRITERIA)
    assert not result.sufficient and result.winner is stats.AbWinner.NONE


def test_wilson_interval_is_scipys():
    low, high = stats.wilson_interval(90, 100)
    ci = sps.binomtest(90, 100).proportion_ci(method="wilson")
    assert (low, high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert math.isclose(stats.wilson_interval(0, 0)[1], 1.0)
