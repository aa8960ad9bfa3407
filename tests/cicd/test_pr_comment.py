"""The pull-request comment, rendered from REAL offline plans (`build_report` + `to_json`)
of the quick stack: head = the committed file, base = the same stack with one model
fewer, so the resource-count diff is a real one."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml
from typer.testing import CliRunner

from infra.config import PROJECT_ROOT, read_stack_file
from infra.plan.report import build_report, to_json
from infra.preview.comment import MARKER, count_diff, render_comment, resource_total


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plans")
    head = to_json(build_report("quick"))
    base_config = read_stack_file("quick")
    base_config["strata:models"] = {"fraud": base_config["strata:models"]["fraud"]}  # base: digits not onboarded yet
    base_file = folder / "Pulumi.quick.yaml"
    base_file.write_text(yaml.safe_dump({"config": base_config}))
    base = to_json(build_report("quick", base_file))
    return json.loads(json.dumps(head, default=str)), json.loads(json.dumps(base, default=str))


def test_count_diff_is_the_difference_of_the_real_plans(plans):
    head, base = plans
    rows = count_diff(base, head)
    assert rows, "adding a model must change some resource counts"
    head_counts, base_counts = Counter(r["type"] for r in head["resources"]), Counter(r["type"] for r in base["resources"])
    for type_token, before, after in rows:
        assert (before, after) == (base_counts[type_token], head_counts[type_token])
    assert sum(after - before for _, before, after in rows) == resource_total(head) - resource_total(base) > 0
    assert any(t == "strata:models:ModelDeployment" and (b, a) == (1, 2) for t, b, a in rows)
    assert count_diff(head, head) == []


def test_comment_has_summary_policies_cost_and_diff(plans):
    head, base = plans
    text = render_comment({"quick": head}, {"quick": base}, head_ref="feature/digits", base_ref="main",
                          preview_notice="**`pulumi preview --diff` skipped**: no cloud credentials")
    assert text.startswith(MARKER + "\n")
    total, base_total = resource_total(head), resource_total(base)
    row = next(line for line in text.splitlines() if line.startswith("| quick |"))
    assert f"| {base_total} → {total} | +{total - base_total} |" in row
    usd, base_usd = head["cost"]["monthlyUsd"], base["cost"]["monthlyUsd"]
    assert f"{base_usd:,.2f} → {usd:,.2f}" in row
    if usd != base_usd:
        assert f"{usd - base_usd:+,.2f}" in row
    assert f"{head['cost']['spotShare']:.0%}" in row
    violations = head["policies"]["violations"]
    if violations:
        assert "### Policy violations" in text
    else:
        assert f"no violations ({head['policies']['enforcement']})" in row
    assert "### Resource counts that changed" in text
    assert "| quick | `strata:models:ModelDeployment` | 1 | 2 | +1 |" in text
    for note in head["notes"]:
        assert note in text
    assert "pulumi preview --diff` skipped" in text


def test_a_new_stack_and_a_failed_plan_are_said_out_loud(plans):
    head, _ = plans
    text = render_comment({"quick": head}, {"quick": None}, failures={"enterprise": "no plan (see the job log)"})
    assert f"| quick | quick | new → {resource_total(head)} |" in text
    assert "| enterprise | - | plan failed |" in text and "**enterprise**: plan failed" in text


def test_violations_are_listed_with_their_level():
    head = {"mode": "enterprise", "counts": {"aws:s3/bucket:Bucket": 1}, "resources": [{}],
            "cost": {"monthlyUsd": 1.0, "spotShare": 0.0}, "notes": [],
            "policies": {"enforcement": "mandatory", "violations": [
                {"policy": "s3-encryption", "resource": "urn:pulumi:e::strata::aws:s3/bucket:Bucket::lake",
                 "message": "bucket lake is not encrypted", "level": "mandatory"},
                {"policy": "pinned-images", "resource": "", "message": "image a|b is not pinned", "level": "advisory"}]}}
    text = render_comment({"enterprise": head}, {"enterprise": head})
    assert ":x: 1 mandatory, 1 advisory (mandatory)" in text
    assert "| enterprise | advisory | pinned-images | `(stack)` | image a\\|b is not pinned |" in text
    assert "| enterprise | mandatory | s3-encryption | `lake` | bucket lake is not encrypted |" in text
    assert "No resource count changed against the base branch." in text


def test_cli_renders_the_comment_from_plan_files(plans, tmp_path):
    from infra.cli import app

    head, base = plans
    (tmp_path / "head").mkdir()
    (tmp_path / "base").mkdir()
    (tmp_path / "head" / "quick.json").write_text(json.dumps(head))
    (tmp_path / "base" / "quick.json").write_text(json.dumps(base))
    (tmp_path / "head" / "standard.json").write_text('{"stack": "standard", "partial')  # a plan cut short
    (tmp_path / "head" / "notes.json").write_text('["not", "a", "plan"]')
    out = tmp_path / "comment.md"
    result = CliRunner().invoke(app, ["pr-comment", "--head", str(tmp_path / "head"), "--base", str(tmp_path / "base"),
                                      "--stack", "quick", "--stack", "standard", "--output", str(out),
                                      "--notice", "preview skipped"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith(MARKER) and "| standard | - | plan failed |" in text and "preview skipped" in text
    assert "| quick | `strata:models:ModelDeployment` | 1 | 2 | +1 |" in text
    empty = CliRunner().invoke(app, ["pr-comment", "--head", str(tmp_path / "nothing"), "--output", str(out)])
    assert empty.exit_code == 2 and "--head" in empty.output


def test_plan_json_written_by_the_cli_feeds_the_comment(tmp_path):
    """The exact path the workflow takes: `strata plan --format json --output` -> `strata pr-comment`."""
    from infra.cli import app

    (tmp_path / "head").mkdir()
    result = CliRunner().invoke(app, ["plan", "--stack", "quick", "--format", "json", "--output", str(tmp_path / "head" / "quick.json")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "comment.md"
    result = CliRunner().invoke(app, ["pr-comment", "--head", str(tmp_path / "head"), "--base", str(tmp_path / "head"),
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "No resource count changed against the base branch." in out.read_text()
    assert (PROJECT_ROOT / "stacks" / "Pulumi.quick.yaml").is_file()
