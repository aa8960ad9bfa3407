"""Spec/entrypoint/search-space errors name the property path; gate logic (no Ray)."""

from __future__ import annotations

import math

import pytest

from workloads.spec import Baseline, SpecError
from workloads.training.cli import parse_overrides, resolve_spec
from workloads.training.gate import decide
from workloads.training.runner import apply_overrides, prepare, smoke_spec

PREFIX = "workloads/examples/fraud/model.yaml"


@pytest.fixture(scope="module")
def fraud():
    spec, prefix = resolve_spec("fraud")
    assert prefix == PREFIX
    return spec


def _paths(error: SpecError) -> list[str]:
    return [path for path, _ in error.problems]


def test_both_examples_resolve_and_their_hooks_match_their_specs():
    for name in ("fraud", "digits"):
        spec, prefix = resolve_spec(name)
        assert spec.name == name
        hooks = prepare(spec, prefix)
        assert hooks.feature_schema.width in (20, 64)


def test_unknown_model_lists_the_examples():
    with pytest.raises(SpecError, match="examples: digits, fraud"):
        resolve_spec("nope")


def test_stack_resolution_uses_the_models_map():
    spec, prefix = resolve_spec("digits", stack="quick")
    assert spec.name == "digits" and prefix == "strata:models.digits"
    with pytest.raises(SpecError) as caught:
        resolve_spec("nope", stack="quick")
    assert _paths(caught.value) == ["strata:models.nope"]


@pytest.mark.parametrize(
    "entrypoint, message",
    [
        ("workloads.examples.nothere:hooks", "cannot import module 'workloads.examples.nothere'"),
        ("workloads.examples.fraud.model:nothere", "has no attribute 'nothere'"),
        ("tests.training.fixture_hooks:not_hooks", "must return ModelHooks, got dict"),
    ],
)
def test_bad_entrypoint_names_the_property(fraud, entrypoint, message):
    spec = apply_overrides(fraud, {"training.entrypoint": entrypoint}, PREFIX)
    with pytest.raises(SpecError, match=message) as caught:
        prepare(spec, PREFIX)
    assert _paths(caught.value) == [f"{PREFIX}.training.entrypoint"]


def test_malformed_entrypoint_is_caught_by_the_spec_schema(fraud):
    with pytest.raises(SpecError) as caught:
        apply_overrides(fraud, {"training.entrypoint": "no colon here"}, PREFIX)
    assert _paths(caught.value) == [f"{PREFIX}.training.entrypoint"]


def test_unknown_hyperparameter_in_search_space(fraud):
    spec = apply_overrides(fraud, {"training.hpo.space.momentum": {"type": "uniform", "low": 0.1, "high": 0.9}}, PREFIX)
    with pytest.raises(SpecError, match="unknown hyperparameter; the model accepts: .*hidden") as caught:
        prepare(spec, PREFIX)
    assert _paths(caught.value) == [f"{PREFIX}.training.hpo.space.momentum"]


def test_search_space_value_that_breaks_the_model(fraud):
    spec = apply_overrides(fraud, {"training.hpo.space.hidden": {"type": "choice", "values": [32, "wide"]}}, PREFIX)
    with pytest.raises(SpecError, match="value 'wide' breaks the model") as caught:
        prepare(spec, PREFIX)
    assert _paths(caught.value) == [f"{PREFIX}.training.hpo.space.hidden"]


def test_search_space_bounds_are_checked_by_the_schema(fraud):
    with pytest.raises(SpecError) as caught:
        apply_overrides(fraud, {"training.hpo.space.lr": {"type": "loguniform", "low": 0, "high": 0.1}}, PREFIX)
    # pydantic adds the union tag (`.loguniform`) after the property path
    assert _paths(caught.value)[0].startswith(f"{PREFIX}.training.hpo.space.lr")


def test_metric_names_must_be_reported(fraud):
    spec = apply_overrides(fraud, {"training.hpo.metric": "val_f2", "training.baseline.primaryMetric": "val_f3"}, PREFIX)
    with pytest.raises(SpecError) as caught:
        prepare(spec, PREFIX)
    assert _paths(caught.value) == [f"{PREFIX}.training.hpo.metric", f"{PREFIX}.training.baseline.primaryMetric"]


def test_smoke_caps_rows_epochs_trials(fraud):
    spec = smoke_spec(fraud, PREFIX)
    assert spec.training.epochs == 2 and spec.training.hpo.trials == 2
    assert "rows=20000" in spec.training.data and "seed=7" in spec.training.data


def test_cli_overrides_parse_yaml_values():
    assert parse_overrides(["training.epochs=3", "training.hpo=null"]) == {"training.epochs": 3, "training.hpo": None}
    with pytest.raises(SpecError):
        parse_overrides(["training.epochs"])


MAX = Baseline(primary_metric="val_auc", direction="max", max_regression_pct=5, trivial="majority-class")
MIN = Baseline(primary_metric="val_loss", direction="min", max_regression_pct=5, trivial="majority-class")


def test_gate_passes_without_champion_when_better_than_trivial():
    d = decide(MAX, {"holdout_auc": 0.9}, {"holdout_auc": 0.5})
    assert d.passed and "no champion yet" in d.reason


def test_gate_fails_when_not_better_than_trivial():
    d = decide(MAX, {"holdout_auc": 0.5}, {"holdout_auc": 0.5})
    assert not d.passed and "not better than the trivial majority-class baseline" in d.reason


def test_gate_champion_regression_limit_both_directions():
    assert decide(MAX, {"holdout_auc": 0.86}, {"holdout_auc": 0.5}, {"holdout_auc": 0.9}, "3").passed
    failed = decide(MAX, {"holdout_auc": 0.85}, {"holdout_auc": 0.5}, {"holdout_auc": 0.9}, "3")
    assert not failed.passed and "more than 5% worse than champion v3" in failed.reason
    assert math.isclose(failed.threshold, 0.855)
    assert decide(MIN, {"holdout_loss": 0.104}, {"holdout_loss": 0.3}, {"holdout_loss": 0.1}, "1").passed
    assert not decide(MIN, {"holdout_loss": 0.106}, {"holdout_loss": 0.3}, {"holdout_loss": 0.1}, "1").passed


def test_gate_fails_on_nan_and_on_incomparable_champion():
    assert not decide(MAX, {"holdout_auc": float("nan")}, {"holdout_auc": 0.5}).passed
    d = decide(MAX, {"holdout_auc": 0.9}, {"holdout_auc": 0.5}, None, "2", "champion v2 has a different feature schema")
    assert not d.passed and "different feature schema" in d.reason
