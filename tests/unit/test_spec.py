"""The model spec: examples validate, bad specs fail naming the property path."""

import json

import pytest

from infra.config import PROJECT_ROOT
from workloads.spec import SpecError, load_model_spec_file, model_spec_json_schema, parse_model_spec

EXAMPLES = sorted((PROJECT_ROOT / "workloads" / "examples").glob("*/model.yaml"))


def minimal(**overrides):
    spec = {
        "name": "churn",
        "team": "growth",
        "owner": "growth@example.com",
        "pagerduty": {"routingKeyName": "growth"},
        "training": {"entrypoint": "pkg.mod:hooks", "data": "file://data/churn.parquet"},
    }
    spec.update(overrides)
    return spec


@pytest.mark.parametrize("file", EXAMPLES, ids=lambda f: f.parent.name)
def test_example_specs_validate(file):
    spec = load_model_spec_file(file, path="")
    assert spec.training.entrypoint.startswith("workloads.examples.")


def test_defaults_are_stated_and_sane():
    spec = parse_model_spec(minimal())
    assert spec.serving.rollout.steps == [5, 25, 50, 100]
    assert spec.slos.availability_percent == 99.9
    assert spec.training.baseline.max_regression_pct == 5.0
    server = spec.serving.realtime.server  # the serving benchmark's best layout on one CPU
    assert (server.workers, server.threads, server.grpc_threads, server.queue_budget_ms) == (2, 2, 2, 100.0)


def errors_of(raw):
    with pytest.raises(SpecError) as caught:
        parse_model_spec(raw, "strata:models.churn")
    return dict(caught.value.problems)


@pytest.mark.parametrize(
    "overrides,path,fragment",
    [
        ({"name": "Churn_Model"}, "strata:models.churn.name", "should match pattern"),
        ({"owner": "nobody"}, "strata:models.churn.owner", "should match pattern"),
        ({"training": {"entrypoint": "no-colon", "data": "file://x"}}, "strata:models.churn.training.entrypoint", "pattern"),
        ({"training": {"entrypoint": "a.b:c", "data": "ftp://x"}}, "strata:models.churn.training.data", "scheme"),
        ({"training": {"entrypoint": "a.b:c", "data": "file://x", "hpo": {"space": {"lr": {"type": "loguniform", "low": 0, "high": 1}}}}},
         "strata:models.churn.training.hpo.space.lr.loguniform", "low > 0"),
        ({"training": {"entrypoint": "a.b:c", "data": "file://x", "hpo": {"space": {"lr": {"type": "gaussian", "low": 0, "high": 1}}}}},
         "strata:models.churn.training.hpo.space.lr", "does not match any of the expected tags"),
        ({"training": {"entrypoint": "a.b:c", "data": "file://x", "hpo": {"space": {}}}}, "strata:models.churn.training.hpo.space", "at least 1"),
        ({"serving": {"rollout": {"steps": [5, 50, 25, 100]}}}, "strata:models.churn.serving.rollout.steps", "strictly increase"),
        ({"serving": {"rollout": {"steps": [5, 50]}}}, "strata:models.churn.serving.rollout.steps", "last step must be 100"),
        ({"serving": {"rollout": {"strategy": "rainbow"}}}, "strata:models.churn.serving.rollout.strategy", "canary"),
        ({"serving": {"streaming": {"enabled": True, "partitions": 3, "maxReplicas": 6}}}, "strata:models.churn.serving.streaming", "<= partitions"),
        ({"serving": {"realtime": {"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}}}, "strata:models.churn.serving.realtime.autoscaling", "must be >= minReplicas"),
        ({"serving": {"realtime": {"server": {"threads": 0}}}}, "strata:models.churn.serving.realtime.server.threads", "greater than or equal to 1"),
        ({"serving": {"realtime": {"server": {"queueBudgetMs": -5}}}}, "strata:models.churn.serving.realtime.server.queueBudgetMs", "greater than or equal to 0"),
        ({"serving": {"realtime": {"server": {"gunicornThreads": 8}}}}, "strata:models.churn.serving.realtime.server.gunicornThreads", "unknown property"),
        ({"slos": {"availabilityPercent": 100}}, "strata:models.churn.slos.availabilityPercent", "less than 100"),
        ({"drift": {"window": "15 minutes"}}, "strata:models.churn.drift.window", "pattern"),
        ({"colour": "blue"}, "strata:models.churn.colour", "unknown property"),
    ],
)
def test_bad_specs_name_the_property_path(overrides, path, fragment):
    problems = errors_of(minimal(**overrides))
    assert path in problems, problems
    assert fragment in problems[path]


def test_missing_required_fields_are_all_reported_at_once():
    problems = errors_of({"name": "x"})
    assert {"strata:models.churn.team", "strata:models.churn.owner", "strata:models.churn.training", "strata:models.churn.pagerduty"} <= set(problems)


def test_committed_json_schema_is_current():
    committed = json.loads((PROJECT_ROOT / "workloads" / "model-spec.schema.json").read_text())
    assert committed == json.loads(json.dumps(model_spec_json_schema())), "run `strata schema`"
    assert "training" in committed["required"]


def test_init_seed_defaults_to_the_split_seed_and_can_be_set_apart_from_it():
    training = {"entrypoint": "pkg.mod:hooks", "data": "file://data/churn.parquet", "seed": 7}
    assert parse_model_spec(minimal(training=training)).training.weights_seed == 7
    other = parse_model_spec(minimal(training={**training, "initSeed": 8})).training
    assert (other.seed, other.weights_seed) == (7, 8)  # same split, other initial weights
