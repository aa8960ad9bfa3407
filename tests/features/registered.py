"""A model version registered in a real MLflow registry the way training registers one
(the training's bundle writer, `log_torch_model`, `register`), without running Ray Train:
a small seeded MLP over the fraud schema (`workloads.serving.testing.build_module`)."""

from __future__ import annotations

import os
from pathlib import Path


def register_fraud_version(tracking_uri: str, artifacts: Path, name: str = "fraud", seed: int = 0) -> str:
    import mlflow

    from workloads.data.profile import build_profile
    from workloads.serving.testing import build_module, fraud_schema, sample_rows
    from workloads.training import artifacts as bundle
    from workloads.training import tracking

    # The global URI (and the env var MLflow sets with it) is put back, so later tests in this
    # process reach the tracking server they name, not this one.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        schema = fraud_schema()
        experiment = mlflow.get_experiment_by_name("score-tests") or None
        experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(
            "score-tests", artifact_location=artifacts.as_uri())
        rows = sample_rows(schema, 256, seed=seed)
        with mlflow.start_run(experiment_id=experiment_id) as run:
            serving, files = bundle.write_bundle(artifacts / f"bundle-{run.info.run_id}", build_module(schema.width, seed=seed),
                                                 schema, build_profile(rows, list(schema.names), seed=seed), rows[:8], 2,
                                                 {"model": name, "runId": run.info.run_id})
            info = tracking.log_torch_model(serving, rows[:8], 2, files)
            version = tracking.register(name, info.model_uri, run.info.run_id, tags={"strata.gate": "passed"})
    finally:
        mlflow.set_tracking_uri(None)
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return str(version.version)
