"""Stack files: the committed ones resolve; a suite of bad ones fail with the property path."""

import copy

import pytest

from infra.config import SpecError, load_stack, parse_stack_config, read_stack_file
from infra.modes import MODES, Mode

STACKS = ["quick", "standard", "enterprise"]


@pytest.mark.parametrize("stack", STACKS)
def test_committed_stacks_resolve_to_their_mode(stack):
    spec = load_stack(stack)
    assert spec.mode is Mode(stack)
    assert [m.name for m in spec.models] == ["digits", "fraud"]
    assert spec.tags["strata:mode"] == stack


def test_listed_overrides_apply_on_top_of_the_mode():
    raw = read_stack_file("standard")
    raw["strata:network"] = {"azCount": 4}
    raw["strata:cluster"] = {**raw["strata:cluster"], "cpuSpotPoolSize": 7}
    caps = parse_stack_config(raw, "standard").capabilities
    assert (caps.az_count, caps.cpu_spot_pool_size) == (4, 7)
    assert caps.nat_strategy == MODES[Mode.STANDARD].nat_strategy  # untouched rows stay the mode's


def test_stack_model_overrides_merge_into_the_spec_file():
    spec = load_stack("enterprise")
    fraud = next(m for m in spec.models if m.name == "fraud")
    assert fraud.training.workers == 2  # from the stack
    assert fraud.training.epochs == 5  # from the spec file


def problems_for(stack, change):
    raw = copy.deepcopy(read_stack_file(stack))
    change(raw)
    with pytest.raises(SpecError) as caught:
        parse_stack_config(raw, stack)
    return dict(caught.value.problems)


def _set(key, value):
    def change(raw):
        raw[key] = value
    return change


def _drop(key):
    return lambda raw: raw.pop(key)


def _model(key, **fields):
    def change(raw):
        raw["strata:models"][key] = {**raw["strata:models"][key], **fields}
    return change


BAD_STACKS = [
    ("quick", _set("strata:network", {"azCount": 9}), "strata:network.azCount", "less than or equal to 6, got 9"),
    ("quick", _set("strata:network", {"azCount": "three"}), "strata:network.azCount", "valid integer"),
    ("quick", _set("strata:network", {"vpcCidr": "10.0.0.0/33"}), "strata:network.vpcCidr", "not a valid CIDR"),
    ("quick", _set("strata:network", {"vpcCidr": "10.0.0.0/24"}), "strata:network.vpcCidr", "/16../20"),
    ("quick", _set("strata:network", {"natStrategy": "one-per-az"}), "strata:network", "decided by the execution mode"),
    ("quick", _set("strata:mode", "turbo"), "strata:mode", "'quick', 'standard' or 'enterprise'"),
    ("quick", _drop("strata:mode"), "strata:mode", "Field required"),
    ("quick", _drop("aws:region"), "aws:region", "required"),
    ("quick", _set("strata:environment", "Prod_1"), "strata:environment", "pattern"),
    ("quick", _set("strata:cluster", {"kubernetesVersion": "1.20", "endpointAllowlist": ["10.0.0.0/8"]}), "strata:cluster.kubernetesVersion", "must be one of"),
    ("quick", _set("strata:cluster", {"endpointAllowlist": ["0.0.0.0/0"]}), "strata:cluster.endpointAllowlist", "whole internet"),
    ("quick", _set("strata:cluster", {"endpointAllowlist": ["10.1.2.3/8"]}), "strata:cluster.endpointAllowlist", "entry 0 is not a valid CIDR"),
    ("quick", _set("strata:cluster", {}), "strata:cluster.endpointAllowlist", "list the CIDRs"),
    ("quick", _set("strata:cluster", {"endpointAllowlist": ["10.0.0.0/8"], "gpuSpotMax": 2}), "strata:cluster.gpuSpotMax", "no GPU pool"),
    ("quick", _set("strata:cluster", {"endpointAllowlist": ["10.0.0.0/8"], "cpuSpotInstanceTypes": []}), "strata:cluster.cpuSpotInstanceTypes", "at least one"),
    ("quick", _set("strata:colour", "blue"), "strata:colour", "unknown property"),
    ("quick", _set("strata:runbookBaseUrl", "runbooks"), "strata:runbookBaseUrl", "pattern"),
    ("quick", _set("strata:target", "kubeconfig"), "strata:kubeconfig", "needs a kubeconfig"),
    ("quick", _model("fraud", specFile="workloads/examples/nope/model.yaml"), "strata:models.fraud.specFile", "file not found"),
    ("quick", _model("fraud", name="other"), "strata:models.fraud.name", "must equal its key"),
    ("quick", _model("fraud", training={"workers": 0}), "strata:models.fraud.training.workers", "greater than or equal to 1"),
    ("quick", _model("fraud", training={"entrypoint": "not an entrypoint"}), "strata:models.fraud.training.entrypoint", "pattern"),
    ("quick", _model("fraud", training={"hpo": {"space": {"lr": {"type": "uniform", "low": 2, "high": 1}}}}), "strata:models.fraud.training.hpo.space.lr.uniform", "low must be < high"),
    ("quick", _model("fraud", training={"resources": {"gpu": 1}}), "strata:models.fraud.training.resources.gpu", "no GPU nodes"),
    ("enterprise", _model("fraud", serving={"streaming": {"replicationFactor": 5}}), "strata:models.fraud.serving.streaming.replicationFactor", "3 brokers"),
    ("enterprise", _model("digits", slos={"latencyP99Ms": -1}), "strata:models.digits.slos.latencyP99Ms", "greater than 0"),
]


@pytest.mark.parametrize("stack,change,path,fragment", BAD_STACKS, ids=[case[2] + ":" + case[3][:20] for case in BAD_STACKS])
def test_bad_stack_files_fail_with_the_property_path(stack, change, path, fragment):
    problems = problems_for(stack, change)
    assert path in problems, problems
    assert fragment in problems[path], problems[path]


def test_every_problem_in_one_file_is_reported_together():
    def change(raw):
        raw["strata:models"]["fraud"] = {**raw["strata:models"]["fraud"], "owner": "x"}
        raw["strata:models"]["digits"] = {**raw["strata:models"]["digits"], "team": "Bad Team"}
    problems = problems_for("quick", change)
    assert {"strata:models.fraud.owner", "strata:models.digits.team"} <= set(problems)


def test_missing_stack_file_lists_the_stacks():
    with pytest.raises(SpecError) as caught:
        load_stack("nosuch")
    assert "enterprise, quick, standard" in str(caught.value)
