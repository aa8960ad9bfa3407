"""Training reads gold: `lake://gold/<table>` on the real local S3; the run records the gold
version and content digest, a rebuild of that version gives the same digest, and the
version traces back to the bronze versions it came from."""

from __future__ import annotations

import polars as pl

from tests.data.conftest import lake, s3_settings, table_name  # noqa: F401
from tests.data.test_lake import CONTRACT, fraud_frame
from workloads.data.lake.tables import append_bronze, lineage, publish, refine
from workloads.data.lake.versions import rebuild
from workloads.training.cli import train


def test_training_run_records_the_gold_version_it_read(platform, lake, table_name, monkeypatch):  # noqa: F811
    import mlflow

    frame: pl.DataFrame = fraud_frame(4000, seed=21)
    append_bronze(lake, table_name, frame, "test", list(range(frame.height)))
    refine(lake, table_name, CONTRACT, 0.01)
    publish(lake, table_name, CONTRACT)
    version = lake.require("gold", table_name).version()
    for key, value in lake.settings.env().items():
        monkeypatch.setenv(key, value)

    # one Train run, no sweep: what is checked here is the data's lineage on the run
    # (test_training_e2e covers the HPO sweep)
    outcome = train("fraud", smoke=True, tracking_uri=platform.tracking_uri, state_dir=platform.state_dir, quiet=True,
                    overrides={"training.data": f"lake://gold/{table_name}", "training.hpo": None})
    mlflow.set_tracking_uri(platform.tracking_uri)
    tags = mlflow.MlflowClient().get_run(outcome.run_id).data.tags
    assert tags["strata.lake.table"] == f"gold/{table_name}"
    assert tags["strata.lake.version"] == str(version)
    assert tags["strata.lake.digest"] == rebuild(lake, table_name, CONTRACT, version).meta["lake.digest"]
    trace = lineage(lake, "gold", table_name, version)
    assert trace[f"bronze/{table_name}"] == [1]  # version 0 is the empty table
