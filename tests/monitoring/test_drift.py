"""Drift statistics against scipy and a reference PSI on known distributions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from workloads.monitoring.drift import (
    PSI_EPSILON, ReferenceProfile, WindowBuffer, column_drift, evaluate, load_profile, profile_column,
)


def reference_psi(reference: np.ndarray, live: np.ndarray, bins: int = 10) -> float:
    """A plain, loop-based PSI: decile edges of the reference, open outer bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    full = np.concatenate(([-np.inf], edges, [np.inf]))
    total = 0.0
    for low, high in zip(full[:-1], full[1:]):
        r = max(np.mean((reference >= low) & (reference < high)), PSI_EPSILON)
        l = max(np.mean((live >= low) & (live < high)), PSI_EPSILON)
        total += (l - r) * np.log(l / r)
    return total


@pytest.mark.parametrize("seed", range(40))
def test_ks_equals_scipy_ks_2samp(seed):
    rng = np.random.default_rng(seed)
    m, n = rng.integers(1, 400, size=2)
    kind = seed % 4
    if kind == 0:  # continuous, shifted
        ref, live = rng.normal(size=m), rng.normal(0.3, 1.2, size=n)
    elif kind == 1:  # heavy ties: small integer support
        ref, live = rng.integers(0, 5, size=m).astype(float), rng.integers(0, 7, size=n).astype(float)
    elif kind == 2:  # ties from rounding, values shared across samples
        ref, live = np.round(rng.normal(size=m), 1), np.round(rng.normal(0.2, 1, size=n), 1)
    else:  # disjoint supports
        ref, live = rng.uniform(0, 1, size=m), rng.uniform(2, 3, size=n)
    ours = column_drift(profile_column(ref), live).ks
    # method="asymp" returns the raw statistic; "exact" re-rounds it to h/lcm(m, n).
    assert ours == stats.ks_2samp(ref, live, method="asymp").statistic
    assert ours == pytest.approx(stats.ks_2samp(ref, live).statistic, rel=1e-12, abs=1e-15)


def test_ks_with_a_subsampled_reference_equals_scipy_on_that_sample():
    rng = np.random.default_rng(3)
    ref, live = rng.normal(size=50_000), rng.normal(0.05, 1, size=20_000)
    column = profile_column(ref, ks_sample=5_000, seed=1)
    sample = column.ks_sample()
    assert sample.size == 5_000
    assert column_drift(column, live).ks == stats.ks_2samp(sample, live, method="asymp").statistic


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_psi_matches_the_reference_implementation(shift):
    rng = np.random.default_rng(7)
    ref, live = rng.normal(size=30_000), rng.normal(shift, 1, size=30_000)
    assert column_drift(profile_column(ref), live).psi == pytest.approx(reference_psi(ref, live), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("shift, expected", [(0.0, 0.0), (0.5, None), (1.0, None)])
def test_psi_matches_the_analytic_value_for_a_normal_shift(shift, expected):
    """Reference deciles of N(0,1); live N(shift,1): bin shares from the normal CDF."""
    rng = np.random.default_rng(11)
    edges = stats.norm.ppf(np.linspace(0, 1, 11)[1:-1])
    live_share = np.diff(np.concatenate(([0.0], stats.norm.cdf(edges - shift), [1.0])))
    analytic = float(np.sum((live_share - 0.1) * np.log(live_share / 0.1)))
    ours = column_drift(profile_column(rng.normal(size=400_000)), rng.normal(shift, 1, size=400_000)).psi
    assert ours == pytest.approx(analytic, abs=0.005)
    if expected is not None:
        assert analytic == pytest.approx(expected, abs=1e-12)
    if shift == 1.0:
        assert ours > 0.2  # a one-sigma shift is "large" drift by the usual PSI reading


def test_categorical_columns_get_one_bin_per_value():
    rng = np.random.default_rng(2)
    ref = rng.choice([0.0, 1.0, 2.0], p=[0.7, 0.2, 0.1], size=10_000)
    column = profile_column(ref)
    assert list(column.counts.shape) == [3]
    same = column_drift(column, rng.choice([0.0, 1.0, 2.0], p=[0.7, 0.2, 0.1], size=10_000))
    moved = column_drift(column, rng.choice([0.0, 1.0, 2.0], p=[0.3, 0.3, 0.4], size=10_000))
    assert same.psi < 0.01 < 0.2 < moved.psi


def test_evaluate_all_features_prediction_drift_and_nan_rows():
    rng = np.random.default_rng(5)
    reference = rng.normal(size=(20_000, 3))
    profile = ReferenceProfile.build(reference, ["a", "b", "c"], predictions=rng.uniform(size=20_000))
    live = rng.normal(size=(10_000, 3))
    live[:, 1] += 1.0
    live[:5, 2] = np.nan
    report = evaluate(profile, np.asfortranarray(live), predictions=rng.uniform(size=10_000) ** 2)
    assert report.psi[1] > 0.2 > report.psi[0]
    assert report.ks[1] > 0.3 > 0.05 > report.ks[0]
    assert report.per_feature_rows.tolist() == [10_000, 10_000, 9_995]
    assert report.prediction_psi > 0.1 and report.prediction_ks > 0.1
    for j in range(3):
        finite = live[:, j][np.isfinite(live[:, j])]
        assert report.ks[j] == stats.ks_2samp(reference[:, j], finite, method="asymp").statistic
    assert evaluate(profile, live, workers=1).psi.tolist() == report.psi.tolist()
    by_name = evaluate(profile, {"a": live[:, 0], "b": live[:, 1], "c": live[:, 2]})
    assert by_name.ks.tolist() == report.ks.tolist()


def test_bad_windows_are_clear_errors():
    profile = ReferenceProfile.build(np.zeros((10, 2)) + np.arange(10)[:, None], ["x", "y"])
    with pytest.raises(ValueError, match=r"window must be \(rows, 2\)"):
        evaluate(profile, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="lacks features"):
        evaluate(profile, {"x": np.zeros(3)})
    with pytest.raises(ValueError, match="2-D"):
        ReferenceProfile.build(np.zeros(5))


def test_profile_round_trip_and_cache(tmp_path):
    rng = np.random.default_rng(1)
    profile = ReferenceProfile.build(rng.normal(size=(1000, 2)), ["x", "y"], predictions=rng.uniform(size=1000))
    path = tmp_path / "profile.npz"
    profile.save(path)
    loaded = load_profile(path)
    assert loaded is load_profile(path)  # computed once, cached
    assert loaded.features == ("x", "y") and loaded.rows == 1000
    assert loaded.fingerprint() == profile.fingerprint()
    live = rng.normal(size=(500, 2))
    assert evaluate(loaded, live).ks.tolist() == evaluate(profile, live).ks.tolist()
    assert loaded.prediction is not None


def test_window_buffer_keeps_the_latest_rows():
    buffer = WindowBuffer(2, capacity=5)
    buffer.append(np.arange(6).reshape(3, 2), np.array([0, 1, 2]))
    buffer.append(np.arange(6, 14).reshape(4, 2), np.array([3, 4, 5, 6]))
    rows, preds = buffer.snapshot()
    assert len(buffer) == 5
    assert sorted(rows[:, 0].tolist()) == [4, 6, 8, 10, 12]
    assert sorted(preds.tolist()) == [2, 3, 4, 5, 6]
    with pytest.raises(ValueError):
        buffer.append(np.zeros((2, 3)))


def test_the_profile_a_model_version_ships_drives_the_monitor(tmp_path):
    """Training writes reference_profile.json (workloads.data.profile); the drift monitor
    reads that very file: same bins for PSI, its KS sample for KS."""
    from workloads.data.profile import bin_index, build_profile, write_profile

    rng = np.random.default_rng(3)
    reference = rng.normal(size=(50_000, 2))
    shipped = build_profile(reference, ["amount", "age"], bins=10, ks_sample_size=2048, seed=0)
    path = write_profile(shipped, tmp_path / "reference_profile.json")
    profile = load_profile(path)
    assert profile.features == ("amount", "age") and profile.rows == 50_000
    assert load_profile(path) is profile  # cached like a saved profile

    live = rng.normal(size=(20_000, 2))
    live[:, 1] += 0.5
    report = evaluate(profile, live)
    for j, name in enumerate(("amount", "age")):
        feature = shipped["features"][name]
        edges = np.asarray(feature["innerEdges"])
        live_counts = np.bincount(bin_index(edges, live[:, j]), minlength=edges.size + 1)
        ref_share = np.maximum(np.asarray(feature["counts"]) / 50_000, PSI_EPSILON)
        live_share = np.maximum(live_counts / live.shape[0], PSI_EPSILON)
        assert report.psi[j] == pytest.approx(float(np.sum((live_share - ref_share) * np.log(live_share / ref_share))))
        assert report.ks[j] == stats.ks_2samp(np.asarray(feature["ksSample"]), live[:, j], method="asymp").statistic
    assert report.psi[1] > 0.1 > report.psi[0]


@pytest.mark.parametrize("seed", range(6))
def test_float32_windows_are_exact_for_the_values_given(seed):
    """The monitor keeps float32 windows; float32 values that tie with (or sit one ulp from)
    float64 reference values must compare exactly as scipy compares the same samples."""
    rng = np.random.default_rng(seed)
    top = float(np.finfo(np.float32).max)
    ref = np.concatenate([np.round(rng.normal(size=3000), 2), [1e39, -1e39, top, 1e-46]])  # beyond float32 too
    live = np.concatenate([ref[:500].astype(np.float32), np.round(rng.normal(0.1, 1, size=4000), 2).astype(np.float32),
                           np.nextafter(ref[:200].astype(np.float32), np.float32(np.inf)),
                           np.float32([top, -top, 0.0, 1e-45])])
    live[:3] = [np.nan, np.inf, -np.inf]
    column = profile_column(ref)
    finite = live[np.isfinite(live)]
    ours = column_drift(column, live)
    assert ours.rows == finite.size
    assert ours.ks == stats.ks_2samp(ref, finite.astype(np.float64), method="asymp").statistic
    assert ours.ks == column_drift(column, finite.astype(np.float64)).ks
    assert ours.psi == column_drift(column, finite.astype(np.float64)).psi


def test_the_window_buffer_keeps_the_models_float32():
    buffer = WindowBuffer(2, capacity=10)
    buffer.append(np.array([[0.1, 1e6 + 0.3]]))
    rows, _ = buffer.snapshot()
    assert rows.dtype == np.float32 and rows[0, 0] == np.float32(0.1)


def test_prediction_score_is_p_positive_for_binary_and_top_class_otherwise():
    from workloads.data.profile import prediction_score

    assert prediction_score(np.array([0.2, 0.9])).tolist() == [0.2, 0.9]
    assert prediction_score(np.array([[0.3], [0.6]])).tolist() == [0.3, 0.6]
    assert prediction_score(np.array([[0.8, 0.2], [0.1, 0.9]])).tolist() == [0.2, 0.9]
    assert prediction_score(np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])).tolist() == [0.7, 0.5]
    with pytest.raises(ValueError, match="shape"):
        prediction_score(np.zeros((2, 2, 2)))
