"""The policy pack over the real program's plan, per stack, at the stack's own enforcement level."""

from __future__ import annotations

import pytest

from infra.plan.harness import run_stack
from infra.policy import evaluate

STACKS = ("quick", "standard", "enterprise")


@pytest.fixture(scope="module")
def plans():
    return {stack: run_stack(stack) for stack in STACKS}


@pytest.mark.parametrize("stack", STACKS)
def test_evaluate_runs_over_the_plan(plans, stack):
    plan = plans[stack]
    results = evaluate(plan.resources, plan.spec.capabilities.policy_enforcement)
    urns = {r.urn for r in plan.resources}
    for result in results:
        assert result.urn in urns, result.format()
        assert result.enforcement is plan.spec.capabilities.policy_enforcement


@pytest.mark.parametrize("stack", STACKS)
def test_stack_has_no_policy_violations(plans, stack):
    plan = plans[stack]
    results = evaluate(plan.resources, plan.spec.capabilities.policy_enforcement)
    assert [r.format() for r in results] == []
