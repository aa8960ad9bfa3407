"""Batch scoring on real local services: a model version registered in MLflow (sqlite registry,
as the training tests use) scores a gold table on the local S3 through Ray Data (local Ray); the predictions
table records model and input versions; a re-run of the same versions gives the same digest
and replaces its partition (no duplicate rows); the scores equal the bundle's own."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tests.data.conftest import lake, s3_settings, table_name  # noqa: F401
from tests.data.test_lake import CONTRACT, fraud_frame
from tests.features.registered import register_fraud_version
from workloads.data.lake.tables import append_bronze, lineage, publish, read, refine
from workloads.data.scoring import ScoringError, parse_input, partition, score


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from workloads.training import ray_jobs

    ray_jobs.ensure_ray(num_cpus=2, dashboard=False)
    yield
    ray.shutdown()


def test_score_records_versions_and_reruns_give_the_same_digest(local_ray, lake, table_name, monkeypatch,  # noqa: F811
                                                                 tmp_path):
    from workloads.training.artifacts import load_bundle
    from workloads.training.tracking import download_version

    frame = fraud_frame(3000, seed=5)
    append_bronze(lake, table_name, frame, "test", list(range(frame.height)))
    refine(lake, table_name, CONTRACT, 0.01)
    publish(lake, table_name, CONTRACT)
    for key, value in lake.settings.env().items():
        monkeypatch.setenv(key, value)
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    version = register_fraud_version(tracking_uri, tmp_path / "artifacts")

    gold_version = lake.require("gold", table_name).version()
    first = score(lake, "fraud", str(version), table_name, gold_version, batch_rows=700)
    assert (first.model_version, first.input_version, first.rows) == (str(version), gold_version, 3000)
    again = score(lake, "fraud", str(version), table_name, gold_version, batch_rows=700)
    assert again.digest == first.digest and again.output_version == first.output_version + 1

    rows = partition(lake, "fraud", str(version), gold_version)
    assert rows.height == 3000 and rows["txn_id"].n_unique() == 3000  # replaced, not appended
    assert set(rows["model_version"]) == {str(version)} and set(rows["input_version"]) == {gold_version}
    trace = lineage(lake, "gold", "fraud_predictions", again.output_version)
    assert trace[f"gold/{table_name}"] == [gold_version]

    bundle = load_bundle(download_version("fraud", str(version), tmp_path / "check"))  # the scores are the model's
    gold = read(lake, "gold", table_name, gold_version, key="txn_id")
    want = bundle.predict_proba(gold.select(bundle.schema.names).to_numpy().astype(np.float32))[:, -1]
    got = gold.select("txn_id").join(rows.select("txn_id", "score"), on="txn_id", how="left")["score"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    with pytest.raises(ScoringError, match="no version 999"):
        score(lake, "fraud", "999", table_name, gold_version)


def test_input_argument_is_checked():
    assert parse_input("fraud@3") == ("fraud", 3) and parse_input("gold/fraud") == ("fraud", None)
    with pytest.raises(ScoringError, match="must be a number"):
        parse_input("fraud@latest")


def test_score_cli_says_what_is_missing(monkeypatch):
    from typer.testing import CliRunner

    from infra.cli import app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(app, ["score", "fraud", "--input", "fraud@2"])
    assert result.exit_code == 2 and "MLFLOW_TRACKING_URI is not set" in result.output
    result = CliRunner().invoke(app, ["score", "fraud", "--input", "fraud@x"])
    assert result.exit_code == 2 and "must be a number" in result.output
