"""Issue 12 item 13: the README's cost table is what the plans say, and nothing is counted twice."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra.plan.cost import estimate
from infra.policy import evaluate
from tests.conftest import plan_of, stack_config_with_models
from infra.plan.harness import run_program

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_rows() -> dict[str, list[str]]:
    text = README.read_text()
    table = text.split("<!-- cost:begin -->", 1)[1].split("<!-- cost:end -->", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.strip().splitlines()[2:]]
    return {row[0]: row[1:] for row in rows}


@pytest.mark.parametrize("stack", ["quick", "standard", "enterprise"])
def test_readme_cost_table_is_the_plans(stack):
    plan = plan_of(stack)
    report = estimate(plan)
    violations = evaluate(plan.resources, plan.spec.capabilities.policy_enforcement)
    expected = [str(len(plan.resources)), f"{report.monthly_usd:,.2f}", f"{round(report.spot_share * 100)}%",
                str(len([v for v in violations if not getattr(v, "ok", False)]))]
    assert readme_rows()[stack] == expected


def test_the_serving_floor_is_not_counted_on_top_of_the_node_groups():
    """Two models fit on the CPU spot group: no extra line; many more models: the excess only."""
    report = estimate(plan_of("enterprise"))
    assert not [line for line in report.lines if line.item.startswith("model serving")]
    many = estimate(run_program("enterprise", stack_config_with_models("enterprise", 10)))
    extra = sum(line.monthly_usd for line in many.lines if line.item.startswith("model serving"))
    # 10 x fraud (2 x 1 vCPU + a 1-vCPU stream worker) = 30 vCPU on a 3 x 4-vCPU group: 18 vCPU beyond
    # (memory: 30 GiB of 48 GiB, nothing beyond), priced as elastic spot vCPU
    assert extra == pytest.approx(18 * 0.0175 * 730, rel=0.01)
