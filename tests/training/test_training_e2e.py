"""Both examples train end to end on a real local Ray runtime, tracked and registered
in a real MLflow (sqlite); fault recovery, the gate and refusals on the same stack.

Small settings (`smoke`: <=2 epochs, <=20k synthetic rows, <=2 HPO trials). Models are
registered in one session-wide registry; tests that depend on registry state say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.training.fixture_hooks import FAULT_EPOCH, FAULT_MARKER_ENV
from workloads.data.validation import DataValidationError
from workloads.training.cli import train

REPO = Path(__file__).resolve().parents[2]
REPRODUCIBILITY_TOLERANCE = 1e-6  # same seed, same data, same worker count, CPU


def _train(platform, model, **kwargs):
    return train(
        model, smoke=True, tracking_uri=platform.tracking_uri, state_dir=platform.state_dir, quiet=True, **kwargs
    )


def _client(platform):
    import mlflow

    mlflow.set_tracking_uri(platform.tracking_uri)
    mlflow.set_registry_uri(platform.tracking_uri)
    return mlflow.MlflowClient()


def _versions_for_run(client, name, run_id):
    return client.search_model_versions(f"name='{name}' and run_id='{run_id}'")


def _load_bundle_without_mlflow(directory: Path, features: np.ndarray) -> dict:
    """Load the serving bundle in a fresh interpreter that never imports MLflow or Ray."""
    np.save(directory / "probe.npy", features)
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        from workloads.training.artifacts import load_bundle
        bundle = load_bundle({str(directory)!r})
        probs = bundle.predict_proba(np.load({str(directory / "probe.npy")!r}))
        print(json.dumps({{
            "probs": probs.tolist(),
            "names": bundle.schema.names,
            "ranges": [[f.low, f.high] for f in bundle.schema.features],
            "profile_features": len(bundle.profile["features"]),
            "ks_sample": int(bundle.profile["features"][bundle.schema.names[0]]["ksSample"].size),
            "prediction_bins": len((bundle.profile.get("prediction") or {{}}).get("counts", [])),
            "mlflow_imported": "mlflow" in sys.modules,
            "ray_imported": "ray" in sys.modules,
        }}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fraud_hpo_trains_registers_and_serves_without_mlflow(platform, tmp_path):
    import mlflow
    import torch

    outcome = _train(platform, "fraud")
    client = _client(platform)

    # HPO: two Optuna trials under ASHA, the best one's config recorded
    assert len(outcome.trials) == 2
    assert set(outcome.hparams) >= {"lr", "hidden"}
    # gate + registry
    assert outcome.gate.passed, outcome.gate.reason
    assert outcome.holdout["candidate"]["holdout_auc"] > 0.75 > outcome.holdout["trivial"]["holdout_auc"]
    assert outcome.alias == "challenger"
    version = client.get_model_version_by_alias("fraud", "challenger")
    assert str(version.version) == outcome.registered_version and version.run_id == outcome.run_id

    # ...and exported for the serving/streaming processes (no MLflow there)
    from workloads.serving import registry

    export_root = Path(os.environ.get("STRATA_REGISTRY_DIR") or platform.state_dir / "registry")
    exported = registry.resolve(export_root, "fraud", alias="challenger")
    assert exported.version == outcome.registered_version and exported.info()["run_id"] == outcome.run_id

    # the tracked run carries what the issue lists
    run = client.get_run(outcome.run_id)
    assert run.data.params["dataset_digest"] == outcome.dataset_digest
    assert run.data.params["seed"] == "7" and run.data.params["data_seed"] == "7"
    assert len(run.data.tags["mlflow.source.git.commit"]) >= 7
    assert run.data.tags["strata.version.torch"].startswith("2.")
    assert run.data.tags["strata.gate"] == "passed"
    assert [m.step for m in client.get_metric_history(outcome.run_id, "val_auc")] == [1, 2]
    artifacts = {a.path for prefix in ("plots", "evaluation", "data", "train", "hpo") for a in client.list_artifacts(outcome.run_id, prefix)}
    assert {"plots/curves.png", "evaluation/evaluation_report.json", "data/validation_report.json", "hpo/trials.json"} <= artifacts
    assert len(client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{outcome.run_id}'")) == 2

    # models:/fraud@challenger loads through MLflow (pt2 with signature + input example)
    model = mlflow.pytorch.load_model("models:/fraud@challenger")
    probe = np.asarray(json.loads((outcome.run_dir / "bundle" / "strata_manifest.json").read_text())["input"]["order"])
    assert probe.size == 20
    from workloads.data.dataset import load_uri

    features = load_uri("synthetic://fraud?rows=64&seed=99").features
    with torch.no_grad():
        via_mlflow = model(torch.from_numpy(features)).numpy()
    assert via_mlflow.shape == (64, 2)

    # ...and its serving bundle loads in a process without MLflow, giving the same answers
    directory = Path(mlflow.artifacts.download_artifacts("models:/fraud@challenger", dst_path=str(tmp_path)))
    loaded = _load_bundle_without_mlflow(directory, features)
    assert not loaded["mlflow_imported"] and not loaded["ray_imported"]
    assert np.allclose(np.asarray(loaded["probs"]), via_mlflow, atol=1e-5)
    assert loaded["names"][0] == "amount" and loaded["ranges"][0] == [0.0, 100000.0]
    assert loaded["profile_features"] == 20 and loaded["ks_sample"] == 2048
    assert loaded["prediction_bins"] > 0  # the reference for prediction drift ships with the version


def test_digits_trains_registers_and_is_reproducible(platform):
    first = _train(platform, "digits")
    second = _train(platform, "digits")
    assert first.gate.passed and second.gate.passed
    assert first.registered_version != second.registered_version  # two runs, two versions
    assert first.dataset_digest == second.dataset_digest
    assert [h["epoch"] for h in first.history] == [1, 2]
    for a, b in zip(first.history, second.history):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert abs(a[key] - b[key]) <= REPRODUCIBILITY_TOLERANCE, (key, a[key], b[key])
    for key, value in first.holdout["candidate"].items():
        assert abs(value - second.holdout["candidate"][key]) <= REPRODUCIBILITY_TOLERANCE, key
    assert first.holdout["candidate"]["holdout_accuracy"] > 0.5


def test_killed_worker_resumes_from_last_checkpoint(platform):
    marker = Path(os.environ[FAULT_MARKER_ENV])
    assert not marker.exists()
    outcome = _train(
        platform,
        "fraud",
        overrides={
            "training.entrypoint": "tests.training.fixture_hooks:faulty_hooks",
            "training.hpo": None,
            "training.epochs": 3,
            "training.data": "synthetic://fraud?rows=8000&seed=7",
        },
    )
    assert marker.exists(), "the fault hook never fired"
    killed = json.loads(marker.read_text())
    history = outcome.history
    assert [h["epoch"] for h in history] == [1, 2, 3]  # every epoch once, none repeated
    assert history[0]["resumed_from"] == 1 and history[0]["worker_pid"] == killed["pid"]
    # the restarted worker is a new process that started at the killed epoch, not at 1
    assert {h["resumed_from"] for h in history[1:]} == {FAULT_EPOCH}
    assert all(h["worker_pid"] != killed["pid"] for h in history[1:])
    assert history[1]["resume_source"] in ("ray", "storage")  # storage: killed before Ray registered it
    assert any(e["event"] == "worker_failure" for e in outcome.events)
    client = _client(platform)
    run = client.get_run(outcome.run_id)
    assert run.data.tags["strata.attempts"] == "2"
    assert len(_versions_for_run(client, "fraud", outcome.run_id)) == (1 if outcome.gate.passed else 0)
    assert outcome.gate.passed, outcome.gate.reason


def test_broken_model_is_not_promoted_and_the_reason_is_recorded(platform):
    client = _client(platform)
    before = {v.version for v in client.search_model_versions("name='fraud'")}
    outcome = _train(
        platform,
        "fraud",
        overrides={
            "training.entrypoint": "tests.training.fixture_hooks:broken_hooks",
            "training.hpo": None,
            "training.epochs": 1,
            "training.data": "synthetic://fraud?rows=5000&seed=7",
        },
    )
    assert not outcome.gate.passed
    assert "not better than the trivial majority-class baseline" in outcome.gate.reason
    assert outcome.registered_version is None and outcome.alias is None
    tags = client.get_run(outcome.run_id).data.tags
    assert tags["strata.gate"] == "failed" and "trivial" in tags["strata.gate_reason"]
    assert {v.version for v in client.search_model_versions("name='fraud'")} == before
    assert not _versions_for_run(client, "fraud", outcome.run_id)


def test_data_over_the_invalid_threshold_is_refused_with_a_report(platform):
    with pytest.raises(DataValidationError, match=r"refusing to train .* 50 of 5000 rows invalid") as caught:
        _train(platform, "fraud", overrides={"training.data": "synthetic://fraud?rows=5000&seed=7&corrupt=0.01"})
    report = caught.value.report
    assert report.refused and report.reasons["null"] > 0 and report.reasons["bad_label"] > 0
    client = _client(platform)
    experiment = client.get_experiment_by_name("fraud")
    refused = client.search_runs([experiment.experiment_id], "tags.`strata.status` = 'refused'")
    assert refused and "maxInvalidRowFraction" in refused[0].data.tags["strata.refusal_reason"]
    assert refused[0].info.status == "FAILED"
    assert "data/validation_report.json" in {a.path for a in client.list_artifacts(refused[0].info.run_id, "data")}
