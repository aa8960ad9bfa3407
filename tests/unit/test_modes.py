"""The mode table is the single source of truth: complete, ordered, and sane."""

import pytest

from infra.modes import (
    MODE_TABLE_ROWS,
    MODES,
    Capabilities,
    EndpointAccess,
    Mode,
    MtlsMode,
    NatStrategy,
    PolicyEnforcement,
    RolloutStrategy,
    capabilities,
)


def test_table_has_a_row_for_every_capability_and_a_column_per_mode():
    fields = set(Capabilities.model_fields) - {"mode"}
    assert set(MODE_TABLE_ROWS) == fields
    assert all(len(values) == len(Mode) for values in MODE_TABLE_ROWS.values())


def test_quick_is_the_cheap_profile():
    quick = MODES[Mode.QUICK]
    assert (quick.az_count, quick.nat_strategy) == (2, NatStrategy.SINGLE)
    assert not (quick.istio or quick.kafka or quick.keda or quick.gpu_spot_pool or quick.monitoring)
    assert quick.rollout_strategies == frozenset({RolloutStrategy.NONE})
    assert quick.policy_enforcement is PolicyEnforcement.ADVISORY


def test_enterprise_is_the_hardened_profile():
    ent = MODES[Mode.ENTERPRISE]
    assert ent.endpoint_access is EndpointAccess.PRIVATE
    assert ent.nat_strategy is NatStrategy.ONE_PER_AZ
    assert ent.mtls is MtlsMode.STRICT and ent.istio
    assert ent.gpu_spot_pool and ent.training_gpu and ent.gpu_spot_max > 0
    assert ent.kafka and ent.keda and ent.monitoring_ha
    assert ent.rollout_strategies == frozenset(RolloutStrategy)
    assert ent.policy_enforcement is PolicyEnforcement.MANDATORY


@pytest.mark.parametrize("lower,higher", [(Mode.QUICK, Mode.STANDARD), (Mode.STANDARD, Mode.ENTERPRISE)])
def test_each_mode_enables_at_least_what_the_one_below_does(lower, higher):
    low, high = MODES[lower], MODES[higher]
    for field, value in low.model_dump().items():
        if isinstance(value, bool) and value:
            assert getattr(high, field), f"{higher.value} drops {field}"
    assert low.rollout_strategies <= high.rollout_strategies
    assert high.az_count >= low.az_count


def test_capabilities_accepts_names_and_rejects_unknown_modes():
    assert capabilities("standard") == MODES[Mode.STANDARD]
    with pytest.raises(ValueError):
        capabilities("turbo")


def test_capabilities_are_frozen():
    with pytest.raises(Exception):
        MODES[Mode.QUICK].istio = True


def test_readme_shows_exactly_the_mode_table_in_code():
    from infra.config import PROJECT_ROOT
    from infra.modes import modes_markdown

    readme = (PROJECT_ROOT / "README.md").read_text()
    block = readme.split("<!-- modes:begin -->\n", 1)[1].split("\n<!-- modes:end -->", 1)[0]
    assert block == modes_markdown()
