"""Decisions recorded as MLflow model-version tags and the champion alias moved in MLflow
(a real sqlite-backed MLflow registry), and skipped cleanly when MLflow is unreachable."""

from __future__ import annotations

import json

from workloads.rollout.record import Decision, MlflowTagSink, mlflow_reachable


def test_decisions_become_model_version_tags_and_the_alias_moves(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("fraud")
    for _ in range(2):
        client.create_model_version("fraud", source=(tmp_path / "artifacts").as_uri())
    sink = MlflowTagSink(uri)
    assert sink.usable()
    decision = Decision(model="fraud", strategy="canary", candidate_version="2", stable_version="1", step=3, weight=100,
                        outcome="promote", reason="all steps passed", actor="pytest", seq=7,
                        metrics={"candidate": {"requests": 300}})
    sink.record(decision)
    assert sink.set_alias("fraud", "champion", "2")
    version = client.get_model_version("fraud", "2")
    assert version.tags["rollout.outcome"] == "promote"
    tagged = json.loads(version.tags["rollout.decision.007"])
    assert tagged["actor"] == "pytest" and tagged["step"] == 3 and tagged["at_iso"]
    assert str(client.get_model_version_by_alias("fraud", "champion").version) == "2"


def test_an_unreachable_mlflow_is_skipped(tmp_path):
    assert not mlflow_reachable(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not mlflow_reachable("http://127.0.0.1:9")
    sink = MlflowTagSink("http://127.0.0.1:9")
    sink.record(Decision(model="fraud", strategy="canary", candidate_version="2", stable_version="1", step=0,
                         weight=5, outcome="start", reason="", actor="pytest"))  # no error, nothing to tag
    assert not sink.set_alias("fraud", "champion", "2")
