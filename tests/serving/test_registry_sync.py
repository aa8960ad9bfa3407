"""The registry-sync sidecar against a real MLflow server: versions named by aliases land in
the export once, aliases follow promotions, and an unset alias is skipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from workloads.serving import registry
from workloads.serving.sync import MlflowRegistry, main, sync_once

MODEL = "sync-fraud"


def _log_version(client, source_version_dir: Path, tmp: Path) -> str:
    """Log a version the way the trainer does (the serving bundle under extra_files/) and register it."""
    import mlflow

    bundle = tmp / "model" / "extra_files"
    bundle.mkdir(parents=True)
    for name in (registry.ARTIFACT, registry.SCHEMA, registry.PROFILE):
        shutil.copyfile(source_version_dir / name, bundle / name)
    (bundle / "strata_manifest.json").write_text(json.dumps({"files": [registry.ARTIFACT]}))
    experiment = client.get_experiment_by_name("sync-test") or client.get_experiment(
        client.create_experiment("sync-test"))
    run = client.create_run(experiment.experiment_id)
    client.log_artifacts(run.info.run_id, str(tmp / "model"), "model")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(MODEL)
    except mlflow.exceptions.MlflowException:
        pass
    return client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id).version


@pytest.fixture(scope="module")
def mlflow_uri(local_services) -> str:
    return local_services("mlflow").mlflow_tracking_uri


def test_sync_follows_aliases_from_mlflow(mlflow_uri, registry_root, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    v1 = _log_version(client, registry_root / "fraud" / "versions" / "1", tmp_path / "a")
    v2 = _log_version(client, registry_root / "fraud" / "versions" / "2", tmp_path / "b")
    client.set_registered_model_alias(MODEL, "champion", v1)
    export = tmp_path / "export"
    source = MlflowRegistry(mlflow_uri)

    [champion, challenger] = sync_once(source, MODEL, ["champion", "challenger"], export)
    assert (champion.version, champion.downloaded, champion.moved) == (v1, True, True)
    assert challenger.version is None  # no challenger yet: skipped, not an error
    resolved = registry.resolve(export, MODEL, alias="champion")
    assert resolved.version == v1
    assert (resolved.path / registry.ARTIFACT).read_bytes() == (
        registry_root / "fraud" / "versions" / "1" / registry.ARTIFACT).read_bytes()

    # a second pass downloads nothing; a promotion moves the alias to a newly downloaded version
    [again, _] = sync_once(source, MODEL, ["champion", "challenger"], export)
    assert not again.downloaded and not again.moved
    client.set_registered_model_alias(MODEL, "champion", v2)
    [promoted, _] = sync_once(source, MODEL, ["champion", "challenger"], export)
    assert (promoted.version, promoted.downloaded, promoted.moved) == (v2, True, True)
    assert registry.read_aliases(export, MODEL) == {"champion": v2}

    # the command line, once: exit 0 when an alias synced, 1 with a reason when none is set
    assert main(["--model", MODEL, "--alias", "champion", "--root", str(export), "--once"]) == 0
    assert main(["--model", MODEL, "--alias", "nightly", "--root", str(export), "--once"]) == 1
    with pytest.raises(SystemExit):
        main(["--model", MODEL, "--alias", "Bad Alias", "--root", str(export), "--once"])
