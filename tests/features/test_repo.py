"""The spec's `features` section (validation, clear errors) and the repository built from specs."""

from __future__ import annotations

import pytest

from tests.features.specs import features_section, model_spec
from workloads.data.features.repo import FeatureRepoError, Registry, build_repo
from workloads.spec import SpecError, parse_model_spec


def spec_with(features: dict, name: str = "m"):
    return parse_model_spec({
        "name": name, "team": "t", "owner": "o@example.com", "pagerduty": {"routingKeyName": "t"},
        "training": {"entrypoint": "a.b:c", "data": "lake://gold/x"}, "features": features}, "strata:models.m")


def problems(features: dict) -> str:
    with pytest.raises(SpecError) as info:
        spec_with(features)
    return str(info.value)


def test_invalid_sections_name_the_problem():
    good = features_section()
    view = good["views"][0]
    assert "unknown entit" in problems({**good, "views": [{**view, "entities": ["merchant"]}]})
    assert "declared twice" in problems({**good, "views": [{**view, "features": [view["features"][0]] * 2}]})
    assert "not a int64" in problems({**good, "views": [{**view, "features": [{"name": "n", "dtype": "int64",
                                                                               "default": "x"}]}]})
    assert "strata:models.m.features.views[0].ttl" in problems({**good, "views": [{**view, "ttl": "forever"}]})
    assert "also join keys" in problems({**good, "views": [{**view, "features": [{"name": "card_id"}]}]})
    assert "source" in problems({**good, "views": [{**view, "source": "silver/x"}]})


def test_repo_from_specs_shares_identical_views_and_refuses_conflicts():
    a, b = model_spec("a"), model_spec("b")
    repo = build_repo([a, b])
    v = repo.view("card_activity")
    assert v.models == ("a", "b") and v.join_keys == ("card_id",) and v.owner == "risk-ml@example.com"
    assert v.view.ttl_seconds == 7200 and v.defaults == {"f0": -1.0, "f1": -1.0, "f2": -1.0}
    with pytest.raises(FeatureRepoError, match="declared differently by models a"):
        build_repo([a, model_spec("c", ttl="3h")])
    with pytest.raises(FeatureRepoError, match="no feature view 'nope'"):
        repo.view("nope")


def test_registry_apply_is_idempotent_and_records_materializations(tmp_path):
    from datetime import datetime, timezone

    registry = Registry(f"sqlite:///{tmp_path}/registry.db")
    repo = build_repo([model_spec("a")])
    assert registry.apply(repo) == {"card_activity": "created"}
    assert registry.apply(repo) == {"card_activity": "unchanged"}
    assert registry.apply(build_repo([model_spec("a", ttl="3h")])) == {"card_activity": "updated"}
    assert registry.stored_views()["card_activity"]["view"]["ttl"] == "3h"
    registry.record_materialization("card_activity", 4, datetime(2026, 1, 1, tzinfo=timezone.utc), 10)
    assert registry.last_materialization("card_activity")["source_version"] == 4
