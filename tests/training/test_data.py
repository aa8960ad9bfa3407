"""Synthetic generator, digits loader, validation, profile, schema (no Ray, no MLflow)."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.data.dataset import Dataset, load_uri, split
from workloads.data.digits import DIGITS_SCHEMA
from workloads.data.profile import bin_index, build_profile, read_profile, write_profile
from workloads.data.schema import FeatureSchema
from workloads.data.synthetic import FRAUD_NAMES, FRAUD_SCHEMA, FraudConfig, generate_fraud
from workloads.data.validation import DataValidationError, validate


def test_fraud_generator_is_deterministic_per_seed():
    a = load_uri("synthetic://fraud?rows=5000&seed=3")
    b = load_uri("synthetic://fraud?rows=5000&seed=3")
    c = load_uri("synthetic://fraud?rows=5000&seed=4")
    assert a.digest() == b.digest()
    assert a.digest() != c.digest()
    assert a.features.shape == (5000, 20) and a.features.dtype == np.float32
    assert a.names == list(FRAUD_NAMES)


def test_fraud_generator_scales_to_a_million_rows_within_schema():
    x, y = generate_fraud(FraudConfig(rows=1_000_000, seed=1))
    assert x.shape == (1_000_000, 20)
    assert 0.02 < y.mean() < 0.04  # fraud_rate 3%
    low, high = FRAUD_SCHEMA.bounds()
    assert np.all(x >= low) and np.all(x <= high) and np.isfinite(x).all()


def test_drift_moves_the_feature_and_keeps_it_valid():
    base, _ = generate_fraud(FraudConfig(rows=50_000, seed=1))
    drifted, y = generate_fraud(FraudConfig(rows=50_000, seed=1, drift=(("amount", 1.0, 1.5),)))
    amount = FRAUD_NAMES.index("amount")
    assert np.median(drifted[:, amount]) > 2 * np.median(base[:, amount])
    assert np.array_equal(base[:, 5], drifted[:, 5])  # other features untouched
    low, high = FRAUD_SCHEMA.bounds()
    assert np.all(drifted >= low) and np.all(drifted <= high)


def test_label_noise_flips_the_requested_fraction():
    _, clean = generate_fraud(FraudConfig(rows=100_000, seed=2))
    _, noisy = generate_fraud(FraudConfig(rows=100_000, seed=2, label_noise=0.1))
    assert abs(np.mean(clean != noisy) - 0.1) < 0.01


def test_uri_parameters_are_checked():
    with pytest.raises(ValueError, match="unknown synthetic://fraud parameters: bogus"):
        load_uri("synthetic://fraud?rows=10&bogus=1")
    with pytest.raises(ValueError, match="unknown feature 'nope'"):
        load_uri("synthetic://fraud?rows=10&drift=nope:1")


def test_digits_are_real_and_valid():
    data = load_uri("sklearn://digits")
    assert data.features.shape == (1797, 64)
    result = validate(data, DIGITS_SCHEMA, 0.001)
    assert result.report.invalid_rows == 0


def test_validation_quarantines_with_reasons_below_threshold(tmp_path):
    data = load_uri("synthetic://fraud?rows=100000&seed=1&corrupt=0.0008")
    result = validate(data, FRAUD_SCHEMA, 0.001)
    report = result.report
    assert report.invalid_rows == 80
    assert report.reasons == {"null": 20, "non_finite": 0, "below_range": 20, "above_range": 0, "bad_label": 20, "duplicate": 20}
    assert report.by_feature["amount"]["below_range"] >= 20
    assert len(result.clean) == 100_000 - 80 and result.clean.features.dtype == np.float32
    assert np.isfinite(result.clean.features).all()
    written = result.write(tmp_path)
    assert {p.name for p in written} == {"validation_report.json", "quarantine.npz"}
    with np.load(tmp_path / "quarantine.npz") as quarantine:
        assert quarantine["features"].shape == (80, 20)
        assert set(",".join(quarantine["reasons"]).split(",")) == {"null", "below_range", "bad_label", "duplicate"}


def test_validation_refuses_over_threshold_with_a_report():
    data = load_uri("synthetic://fraud?rows=20000&seed=1&corrupt=0.01")
    with pytest.raises(DataValidationError, match=r"refusing to train.*200 of 20000 rows invalid") as caught:
        validate(data, FRAUD_SCHEMA, 0.001)
    report = caught.value.report
    assert report.refused and report.invalid_rows == 200 and report.reasons["duplicate"] == 50
    assert report.examples and report.examples[0]["reasons"]


def test_validation_rejects_schema_mismatch():
    data = load_uri("synthetic://fraud?rows=100&seed=1")
    renamed = Dataset(data.features, data.labels, ["x" + n for n in data.names], "test")
    with pytest.raises(DataValidationError, match="schema mismatch: missing columns: amount"):
        validate(renamed, FRAUD_SCHEMA, 0.001)


def test_file_uri_csv_with_garbage_cells_is_quarantined_not_crashed(tmp_path):
    data = load_uri("synthetic://fraud?rows=2000&seed=5")
    import pandas as pd

    frame = pd.DataFrame(data.features, columns=data.names)
    frame["is_fraud"] = data.labels
    frame = frame.astype({"amount": object})
    frame.loc[3, "amount"] = "not-a-number"
    path = tmp_path / "tx.csv"
    frame.to_csv(path, index=False)
    result = validate(load_uri(f"file://{path}", schema=FRAUD_SCHEMA), FRAUD_SCHEMA, 0.01)
    assert result.report.reasons["null"] == 1


def test_split_is_seeded_and_disjoint():
    data = load_uri("synthetic://fraud?rows=1000&seed=1")
    a, b = split(data, 7), split(data, 7)
    assert np.array_equal(a.test.features, b.test.features)
    assert len(a.train) + len(a.val) + len(a.test) == 1000


def test_profile_round_trips_and_counts_match_the_bin_rule(tmp_path):
    data = load_uri("synthetic://fraud?rows=20000&seed=1")
    profile = build_profile(data.features, data.names, ks_sample_size=500)
    loaded = read_profile(write_profile(profile, tmp_path / "p.json"))
    amount = loaded["features"]["amount"]
    assert amount["counts"].sum() == 20_000
    recount = np.bincount(bin_index(amount["innerEdges"], data.features[:, 0]), minlength=amount["counts"].size)
    assert np.array_equal(recount, amount["counts"])
    assert amount["ksSample"].size == 500 and np.all(np.diff(amount["ksSample"]) >= 0)
    # a binary feature gets fewer, de-duplicated edges
    assert loaded["features"]["card_present"]["innerEdges"].size <= 2


def test_schema_json_round_trip(tmp_path):
    path = FRAUD_SCHEMA.to_json(tmp_path / "s.json")
    assert FeatureSchema.from_json(path) == FRAUD_SCHEMA
