"""Shared fixtures: each stack's plan is computed once per test session."""

import functools
import os
import sys

import pytest

pytest_plugins = ["tests.local_services"]  # real local services (Kafka, MLflow, Prometheus, ...) per session

STACKS = ("quick", "standard", "enterprise")
MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


@pytest.fixture(autouse=True)
def mlflow_uris_put_back():
    """Training in-process sets MLflow's process-wide tracking and registry URIs and its
    active experiment (and exports them as env vars, which child processes inherit): each
    test gets back what it started with, so none reaches the previous test's server or asks
    another server for that server's experiment id."""
    before = {name: os.environ.get(name) for name in MLFLOW_URI_VARIABLES}
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        fluent = sys.modules.get("mlflow.tracking.fluent")
        if fluent is not None:
            fluent._active_experiment_id = None
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@functools.lru_cache(maxsize=None)
def plan_of(stack: str):
    from infra.plan.harness import run_stack

    return run_stack(stack)


@pytest.fixture(scope="session", params=STACKS)
def stack_plan(request):
    """The plan of every committed stack, one test per stack."""
    return plan_of(request.param)


@pytest.fixture(scope="session")
def plans():
    """All three plans by stack name."""
    return {stack: plan_of(stack) for stack in STACKS}


def stack_config_with_models(stack: str, count: int) -> dict:
    """The committed stack's config with `count` onboarded models (fraud's spec, 4 teams)."""
    from infra.config import read_stack_file

    raw = read_stack_file(stack)
    raw["strata:models"] = {
        f"model-{index:02d}": {"specFile": "workloads/examples/fraud/model.yaml", "team": f"team-{index % 4}"}
        for index in range(count)
    }
    for pipeline in raw.get("strata:cdc", {}).values():  # the stack's CDC sinks move to a team that exists
        pipeline["team"] = "team-0"
    return raw
