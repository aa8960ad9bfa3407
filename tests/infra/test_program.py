"""The program as a whole, under mocks: fan-out, targets, secrets, linear growth, the CLI."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from infra.cli import app
from infra.plan.cost import estimate
from infra.plan.harness import run_program
from tests.conftest import stack_config_with_models

runner = CliRunner()


def test_one_model_deployment_per_models_map_key(stack_plan):
    deployments = stack_plan.by_type("strata:models:ModelDeployment")
    assert sorted(d.name for d in deployments) == sorted(m.name for m in stack_plan.spec.models)
    for deployment in deployments:
        children = {(c.kind, c.name) for c in stack_plan.children_of(deployment.urn)}
        assert ("ServiceAccount", f"{deployment.name}-training-sa") in children
        assert ("ServiceAccount", f"{deployment.name}-serving-sa") in children
        assert ("ConfigMap", f"{deployment.name}-spec") in children


def test_model_resources_land_in_their_team_namespace(stack_plan):
    teams = {m.name: m.team for m in stack_plan.spec.models}
    for deployment in stack_plan.by_type("strata:models:ModelDeployment"):
        for child in stack_plan.children_of(deployment.urn):
            if child.is_kubernetes:
                assert child.inputs["metadata"]["namespace"].endswith(f"team-{teams[deployment.name]}")


def test_deployed_spec_records_what_the_mode_changed(plans):
    def deployed(stack, model):
        config_map = next(r for r in plans[stack].of_kind("ConfigMap") if r.name == f"{model}-spec")
        return json.loads(config_map.inputs["data"]["model.json"])

    assert deployed("quick", "fraud")["rolloutStrategy"] == "none"
    assert deployed("quick", "fraud")["streaming"] is False
    assert deployed("standard", "fraud")["rolloutStrategy"] == "canary"
    assert deployed("enterprise", "fraud")["streaming"] is True
    assert deployed("enterprise", "fraud")["trainingWorkers"] == 2
    assert deployed("enterprise", "digits")["rolloutStrategy"] == "blue-green"


def test_kubeconfig_target_creates_no_aws_resources_and_keeps_the_kubeconfig_secret():
    raw = stack_config_with_models("quick", 2)
    raw["strata:target"] = "kubeconfig"
    raw["strata:kubeconfig"] = {"secure": "v1:AAAA"}
    raw["strata:namespacePrefix"] = "pr-42-"
    plan = run_program("pr-42", raw)
    assert not [r for r in plan.resources if r.type.startswith("aws:")]
    provider = next(r for r in plan.resources if r.type == "pulumi:providers:kubernetes")
    assert "kubeconfig" in provider.secret_paths
    namespaces = [r.inputs["metadata"]["name"] for r in plan.of_kind("Namespace")]
    assert namespaces and all(name.startswith("pr-42-") for name in namespaces)


def test_monthly_cost_grows_linearly_with_models():
    # from 17 models on, both the vCPU and the GiB of the floors exceed the CPU spot group
    # (3 x m7i.xlarge): each further model adds its whole floor
    costs = {n: estimate(run_program("enterprise", stack_config_with_models("enterprise", n))).monthly_usd for n in (17, 20, 26)}
    per_model_small = (costs[20] - costs[17]) / 3
    per_model_large = (costs[26] - costs[20]) / 6
    assert per_model_small > 0
    assert per_model_large == pytest.approx(per_model_small, rel=1e-3)  # lines are rounded to cents


def test_cost_report_has_spot_share_and_a_price_table(plans):
    for stack, plan in plans.items():
        report = estimate(plan)
        assert report.price_table
        assert 0 < report.spot_share < 1, stack
        assert report.by_item()["EKS control plane"] == 73.0


def test_plan_json_lists_every_resource_with_full_inputs():
    result = runner.invoke(app, ["plan", "--stack", "quick", "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["mode"] == "quick"
    assert document["policies"]["enforcement"] == "advisory"
    assert document["cost"]["monthlyUsd"] > 0
    by_name = {r["name"]: r for r in document["resources"]}
    config_map = by_name["fraud-spec"]
    assert config_map["type"] == "kubernetes:core/v1:ConfigMap"
    assert config_map["parent"].endswith("strata:models:ModelDeployment::fraud")
    assert json.loads(config_map["inputs"]["data"]["model.json"])["spec"]["team"] == "payments-risk"
    assert sum(document["counts"].values()) == len(document["resources"])


def test_plan_table_prints_tree_counts_policies_and_cost():
    result = runner.invoke(app, ["plan", "--stack", "standard"])
    assert result.exit_code == 0, result.output
    for heading in ("stack standard", "Resources by type", "Estimated monthly cost", "spot share of compute"):
        assert heading in result.stdout


def test_invalid_stack_file_exits_non_zero_naming_the_property_path(tmp_path):
    stack_file = tmp_path / "Pulumi.broken.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {"aws:region": "eu-west-1", "strata:mode": "quick", "strata:environment": "dev", "strata:network": {"azCount": 9}}}))
    result = runner.invoke(app, ["plan", "--stack", "broken", "--stack-file", str(stack_file)])
    assert result.exit_code == 2
    assert "strata:network.azCount" in result.stderr
    assert "got 9" in result.stderr


def test_validate_checks_every_committed_stack():
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("✓") == 3


def test_alerts_link_the_runbooks_where_the_stack_says():
    raw = stack_config_with_models("standard", 1)
    raw["strata:runbookBaseUrl"] = "https://git.example.com/ml/strata/-/blob/main/runbooks/"
    plan = run_program("standard", raw)
    urls = [
        rule["annotations"]["runbook_url"]
        for resource in plan.of_kind("PrometheusRule")
        for group in resource.inputs["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert urls and all(url.startswith("https://git.example.com/ml/strata/-/blob/main/runbooks/") for url in urls)
