"""Drift benchmark: PSI + KS over 1e6 rows x 20 features against a cached reference
profile, beside scipy.stats.ks_2samp per feature on the same data, in the same run.

Target: under 1 s and >= 10x scipy. Run with `make bench`
(pytest tests/benchmarks --benchmark-enable -m benchmark_suite -s).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import stats

from workloads.monitoring.drift import ReferenceProfile, evaluate

ROWS, FEATURES, REFERENCE_ROWS = 1_000_000, 20, 100_000

pytestmark = pytest.mark.benchmark_suite


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    reference = rng.normal(size=(REFERENCE_ROWS, FEATURES))
    # The live window as the drift monitor keeps it: column-major (features contiguous).
    window = np.asfortranarray(rng.normal(0.05, 1.0, size=(ROWS, FEATURES)))
    window[:, :3] += 0.5  # three drifted features
    started = time.perf_counter()
    profile = ReferenceProfile.build(reference, [f"f{i}" for i in range(FEATURES)])
    build_s = time.perf_counter() - started
    return reference, window, profile, build_s


def test_drift_psi_ks_1e6_x_20(benchmark, data):
    reference, window, profile, build_s = data

    report = benchmark.pedantic(evaluate, args=(profile, window), rounds=5, iterations=1, warmup_rounds=1)
    ours_s = benchmark.stats.stats.median if benchmark.stats else _time(lambda: evaluate(profile, window), 1)

    started = time.perf_counter()
    scipy_ks = [stats.ks_2samp(reference[:, j], window[:, j], method="asymp").statistic for j in range(FEATURES)]
    scipy_s = time.perf_counter() - started

    assert report.ks.tolist() == scipy_ks  # same statistic, computed faster
    assert (report.psi[:3] > 0.2).all() and (report.psi[3:] < 0.1).all()
    ratio = scipy_s / ours_s
    print(f"\ndrift PSI+KS {ROWS:.0e} rows x {FEATURES} features: {ours_s:.3f} s (median of 5); "
          f"scipy ks_2samp per feature (KS only): {scipy_s:.3f} s; ratio {ratio:.1f}x; "
          f"profile build (once per version, {REFERENCE_ROWS} rows): {build_s:.2f} s")
    benchmark.extra_info.update({"scipy_s": scipy_s, "ratio": ratio, "profile_build_s": build_s})


def _time(fn, repeats: int = 3) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return float(np.median(samples))
