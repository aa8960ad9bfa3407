"""The S3 code paths on the real local S3 (SeaweedFS): buckets at start, MLflow artifacts
written by the client straight to S3 (`--no-serve-artifacts`), bundles up and down."""

from __future__ import annotations

import json

import pytest

from workloads.data.storage import S3Settings, download_dir, ensure_buckets, split_s3_uri, upload_dir
from workloads.local import s3 as local_s3


def test_buckets_exist_at_start_and_ensure_is_idempotent(s3_settings):
    names = {b["Name"] for b in s3_settings.client().list_buckets()["Buckets"]}
    assert set(local_s3.BUCKETS) <= names
    assert ensure_buckets(s3_settings, local_s3.BUCKETS) == []


def test_folder_round_trip(s3_settings, tmp_path, table_name):
    src = tmp_path / "bundle"
    (src / "nested").mkdir(parents=True)
    (src / "model.pt").write_bytes(b"\x00\x01" * 1000)
    (src / "nested" / "schema.json").write_text(json.dumps({"a": 1}))
    uri = f"s3://{local_s3.BUNDLES_BUCKET}/{table_name}/v1"
    assert upload_dir(s3_settings, src, uri) == 2
    out = tmp_path / "out"
    assert download_dir(s3_settings, uri, out) == 2
    assert (out / "model.pt").read_bytes() == (src / "model.pt").read_bytes()
    assert json.loads((out / "nested" / "schema.json").read_text()) == {"a": 1}


def test_split_s3_uri_names_a_bad_uri():
    assert split_s3_uri("s3://b/k/x") == ("b", "k/x")
    with pytest.raises(ValueError, match="not an s3://bucket/key"):
        split_s3_uri("file:///tmp/x")


def test_settings_from_env_round_trip():
    settings = S3Settings(endpoint_url="http://127.0.0.1:1", access_key_id="a", secret_access_key="b")
    env = settings.env()
    assert env["MLFLOW_S3_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    assert S3Settings.from_env(env) == settings
    assert "AWS_ENDPOINT_URL" not in S3Settings().env()  # on AWS: the default endpoint and credentials


def test_mlflow_artifacts_go_to_s3_without_the_server(local_services, s3_settings, monkeypatch, tmp_path):  # noqa: F811
    import mlflow

    svc = local_services("s3", "mlflow")
    for key, value in s3_settings.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", svc.mlflow_tracking_uri)
    mlflow.set_tracking_uri(svc.mlflow_tracking_uri)
    exp = mlflow.set_experiment("s3-artifacts-test")
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        mlflow.log_dict({"hello": "s3"}, "probe/hello.json")
    artifact_uri = run.info.artifact_uri
    assert artifact_uri.startswith(f"s3://{local_s3.ARTIFACTS_BUCKET}/mlflow/")
    bucket, prefix = split_s3_uri(artifact_uri)
    body = s3_settings.client().get_object(Bucket=bucket, Key=f"{prefix}/probe/hello.json")["Body"].read()
    assert json.loads(body) == {"hello": "s3"}
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="probe", dst_path=str(tmp_path))
    assert json.loads((tmp_path / "probe" / "hello.json").read_text()) == {"hello": "s3"} and local
