"""Preview stacks without a cloud: names, config derived from quick (and planned under
mocks), TTL selection, teardown order, idempotent destroy, gc and the CLI on doubles."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from infra.config import SECRET_MARKER, parse_stack_config, read_stack_file
from infra.preview import cli as preview_cli
from infra.preview.stacks import (TAG_EXPIRES_AT, StackInfo, derive_preview_config, is_preview_stack,
                                  namespace_prefix, pr_number, preview_stack_name, select_expired)
from infra.preview.teardown import (KubeObject, TeardownError, collect_garbage, create_preview,
                                    destroy_preview)
from tests.cicd.doubles import FakeCluster, FakeStacks
from workloads.spec import SpecError

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)


# ------------------------------------------------------------------------------ naming


@pytest.mark.parametrize("pr, stack", [(1, "pr-1"), ("42", "pr-42"), (" 7 ", "pr-7"), (999_999_999_999, "pr-999999999999")])
def test_preview_stack_names(pr, stack):
    assert preview_stack_name(pr) == stack
    assert pr_number(stack) == int(str(pr))
    assert namespace_prefix(stack) == f"{stack}-"


@pytest.mark.parametrize("bad", [0, -3, "042", "4a", "", "pr-4", 1.5, 10**12])
def test_bad_pull_request_numbers_are_refused_naming_the_option(bad):
    with pytest.raises(SpecError) as caught:
        preview_stack_name(bad)
    assert caught.value.problems[0][0] == "--pr"


def test_only_pr_stacks_are_preview_stacks():
    assert is_preview_stack("org/strata/pr-12") and pr_number("org/strata/pr-12") == 12
    for other in ("quick", "enterprise", "pr-", "pr-0", "pr-12x", "pre-12", "my-pr-12"):
        assert not is_preview_stack(other), other


# ------------------------------------------------------------------------------ config from quick


def test_config_is_quick_retargeted_at_the_shared_cluster():
    quick = read_stack_file("quick")
    preview = derive_preview_config(42, NOW)
    config = preview.config
    assert preview.stack == "pr-42" and preview.namespace_prefix == "pr-42-"
    assert config["strata:mode"] == quick["strata:mode"] == "quick"
    assert config["strata:models"] == quick["strata:models"]  # the PR's models, as quick lists them
    assert config["aws:region"] == quick["aws:region"]
    assert config["strata:target"] == "kubeconfig"
    assert config["strata:environment"] == "pr-42"
    assert config["strata:clusterOperators"] == "shared"
    assert config["strata:teamQuota"]["requestsCpu"] == "4"
    assert "strata:kubeconfig" not in config  # a secret: set per stack by create, never in the file
    assert "endpointAllowlist" not in config.get("strata:cluster", {})
    assert config["strata:tags"]["cost-center"] == quick["strata:tags"]["cost-center"]
    assert preview.tags == {"strata:preview": "true", "strata:pr": "42", "strata:created-at": "2026-11-27T03:00:00Z",
                            "strata:expires-at": "2026-11-30T03:00:00Z"}
    assert preview.expires_at - preview.created_at == timedelta(hours=72)
    spec = parse_stack_config({**config, "strata:kubeconfig": SECRET_MARKER}, preview.stack)
    assert spec.config.namespace_prefix == "pr-42-" and spec.config.cluster_operators.value == "shared"


def test_an_invalid_base_fails_with_the_property_path():
    quick = read_stack_file("quick")
    with pytest.raises(SpecError) as caught:
        derive_preview_config(5, NOW, base={**quick, "strata:mode": "standard"})
    assert caught.value.problems[0][0] == "strata:clusterOperators"
    assert "istio" in caught.value.problems[0][1]
    with pytest.raises(SpecError) as caught:
        derive_preview_config(5, NOW, base={**quick, "strata:models": {"fraud": {"specFile": "nope.yaml"}}})
    assert caught.value.problems == [("strata:models.fraud.specFile", "file not found: nope.yaml")]
    with pytest.raises(SpecError, match="time to live"):
        derive_preview_config(5, NOW, ttl=timedelta(0))


def test_shared_operators_need_a_kubeconfig_target():
    quick = read_stack_file("quick")
    with pytest.raises(SpecError) as caught:
        parse_stack_config({**quick, "strata:clusterOperators": "shared"}, "quick")
    assert caught.value.problems[0][0] == "strata:clusterOperators"
    with pytest.raises(SpecError) as caught:
        parse_stack_config({**quick, "strata:clusterOperators": "sometimes"}, "quick")
    assert caught.value.problems[0][0] == "strata:clusterOperators"
    with pytest.raises(SpecError) as caught:
        parse_stack_config({**quick, "strata:teamQuota": {"requestsCpu": "lots"}}, "quick")
    assert caught.value.problems[0][0] == "strata:teamQuota.requestsCpu"


@pytest.fixture(scope="module")
def preview_plan():
    from infra.plan.harness import run_program

    preview = derive_preview_config(42, NOW)
    return run_program(preview.stack, {**preview.config, "strata:kubeconfig": {"secure": "AAE="}})


def test_preview_program_under_mocks_installs_no_cluster_wide_operator(preview_plan):
    plan = preview_plan
    releases = [r.inputs.get("chart") or r.name for r in plan.by_type("kubernetes:helm.sh/v3:Release")]
    assert releases == [], f"a preview must not install cluster-wide charts: {releases}"
    assert not plan.of_kind("CustomResourceDefinition")
    namespaces = sorted(r.inputs["metadata"]["name"] for r in plan.of_kind("Namespace"))
    assert namespaces and all(n.startswith("pr-42-") for n in namespaces), namespaces
    assert "pr-42-kuberay-system" not in namespaces and "pr-42-seldon-system" not in namespaces
    assert not plan.by_type("aws:eks/cluster:Cluster") and not any(r.type.startswith("aws:") for r in plan.resources)
    quotas = plan.of_kind("ResourceQuota")
    assert quotas and all(q.inputs["spec"]["hard"]["requests.cpu"] == "4" and q.inputs["spec"]["hard"]["pods"] == "40"
                          for q in quotas)


def test_preview_custom_resources_wait_for_the_shared_operators_crd(preview_plan):
    rayjobs = [r for r in preview_plan.resources if r.inputs.get("kind") == "RayJob"]
    assert rayjobs
    for job in rayjobs:
        crd_reads = [u for u in job.dependencies if "CustomResourceDefinition::" in u and u.endswith("-kuberay-crd")]
        assert crd_reads, f"{job.name} must depend on the shared KubeRay CRD: {job.dependencies}"


def test_team_namespaces_admit_the_shared_kuberay_operator(preview_plan):
    allows = [p for p in preview_plan.of_kind("NetworkPolicy")
              if p.inputs["metadata"]["name"] == "allow-explicit" and p.inputs["metadata"]["namespace"].startswith("pr-42-team-")]
    assert allows
    for policy in allows:
        selected = [value for rule in policy.inputs["spec"]["ingress"] for peer in rule.get("from", [])
                    for expr in peer.get("namespaceSelector", {}).get("matchExpressions", []) for value in expr["values"]]
        assert "kuberay-system" in selected and "pr-42-kuberay-system" not in selected


def test_committed_stacks_still_install_their_operators():
    from tests.conftest import plan_of

    releases = {r.name for r in plan_of("quick").by_type("kubernetes:helm.sh/v3:Release")}
    assert any("kuberay" in name for name in releases) and any("seldon" in name for name in releases)


# ------------------------------------------------------------------------------ TTL


def test_ttl_selection():
    stacks = [
        StackInfo("pr-1", {TAG_EXPIRES_AT: "2026-11-27T02:59:59Z"}),  # expired a second ago
        StackInfo("pr-2", {TAG_EXPIRES_AT: "2026-11-27T03:00:01Z"}),  # one second left
        StackInfo("pr-3", {}, last_update=NOW - timedelta(hours=73)),  # no tag, old
        StackInfo("pr-4", {}, last_update=NOW - timedelta(hours=1)),  # no tag, young
        StackInfo("pr-5", {}),  # half-created: neither tag nor update
        StackInfo("pr-6", {TAG_EXPIRES_AT: "someday"}, last_update=NOW - timedelta(days=9)),
        StackInfo("pr-7", {TAG_EXPIRES_AT: "2026-11-01T00:00:00Z"}, update_in_progress=True),  # busy: later
        StackInfo("quick", {TAG_EXPIRES_AT: "2000-01-01T00:00:00Z"}),  # never a non-preview stack
    ]
    selected = select_expired(stacks, NOW)
    assert [e.stack for e in selected] == ["pr-1", "pr-3", "pr-5", "pr-6"]
    reasons = {e.stack: e.reason for e in selected}
    assert "expires-at tag" in reasons["pr-1"] and "unreadable" in reasons["pr-6"] and "no update time" in reasons["pr-5"]


def test_closed_pull_requests_are_selected_whatever_their_ttl():
    stacks = [StackInfo("pr-8", {TAG_EXPIRES_AT: "2030-01-01T00:00:00Z"}), StackInfo("pr-9", {TAG_EXPIRES_AT: "2030-01-01T00:00:00Z"})]
    assert [(e.stack, e.reason) for e in select_expired(stacks, NOW, open_prs={9})] == [("pr-8", "pull request #8 is closed")]


# ------------------------------------------------------------------------------ create / teardown


def make_world(release_polls: int = 2):
    calls: list[str] = []
    cluster = FakeCluster(calls, release_polls)
    stacks = FakeStacks(cluster)
    stacks.calls = calls
    return stacks, cluster, calls


def no_sleep(seconds: float) -> None:
    pass


def test_create_sets_tags_before_anything_can_fail():
    stacks, _, calls = make_world()
    preview = derive_preview_config(12, NOW)
    outputs = create_preview(stacks, preview, "apiVersion: v1\nkind: Config\n")
    assert calls == ["select pr-12", "tags pr-12", "config pr-12", "up pr-12"]
    assert stacks.stacks["pr-12"].secrets == {"strata:kubeconfig": "apiVersion: v1\nkind: Config\n"}
    assert stacks.stacks["pr-12"].tags[TAG_EXPIRES_AT] == "2026-11-30T03:00:00Z"
    assert "pr-12-mlflow" in outputs["mlflowTrackingUri"]
    with pytest.raises(ValueError, match="kubeconfig"):
        create_preview(stacks, preview, "  ")


def test_teardown_releases_load_balancers_before_destroy_then_removes_the_stack():
    stacks, cluster, calls = make_world(release_polls=2)
    create_preview(stacks, derive_preview_config(12, NOW), "kubeconfig")
    service = cluster.add_load_balancer("Service", "pr-12-team-vision", "digits-predictor")
    ingress = cluster.add_load_balancer("Ingress", "pr-12-mlflow", "mlflow")
    other = cluster.add_load_balancer("Service", "pr-120-team-vision", "not-mine")  # pr-120 shares no prefix
    calls.clear()
    report = destroy_preview(stacks, cluster, "pr-12", sleep=no_sleep)
    first_destroy = calls.index("destroy pr-12")
    assert calls.index(f"delete {service}") < first_destroy and calls.index(f"delete {ingress}") < first_destroy
    polls = [i for i, c in enumerate(calls) if c == "list-lb pr-12-"]
    assert len(polls) >= 3 and polls[-1] < first_destroy  # waited until the finalizers let go
    assert calls[first_destroy + 1] == "rm pr-12"
    assert "pr-12" not in stacks.stacks
    assert other in cluster.objects and f"delete {other}" not in calls
    assert report.steps[-2:] == ["pulumi destroy pr-12", "pulumi stack rm pr-12"]


def test_load_balancers_that_never_go_stop_the_teardown_before_destroy():
    stacks, cluster, calls = make_world(release_polls=10**6)
    create_preview(stacks, derive_preview_config(3, NOW), "kubeconfig")
    cluster.add_load_balancer("Service", "pr-3-team-vision", "stuck")
    clock = iter(range(0, 10_000, 30))
    with pytest.raises(TeardownError, match="stuck"):
        destroy_preview(stacks, cluster, "pr-3", timeout=timedelta(minutes=5), sleep=no_sleep, clock=lambda: next(clock))
    assert "destroy pr-3" not in calls and "pr-3" in stacks.stacks


def test_destroy_of_a_half_created_stack_is_idempotent():
    stacks, cluster, calls = make_world()
    # An `up` killed mid-way: tags set, some resources and a pending create in the state,
    # one namespace already on the cluster; then a destroy that itself gets interrupted.
    stacks.create_or_select("pr-77")
    stacks.set_tags("pr-77", {"strata:pr": "77"})
    state = stacks.stacks["pr-77"]
    state.config = {"strata:namespacePrefix": "pr-77-"}
    state.resources = ["namespace", "network-policy", "mlflow"]
    state.pending_operations = ["creating rayjob"]
    cluster.namespaces_made.add("pr-77-team-vision")
    cluster.add_load_balancer("Service", "pr-77-team-vision", "half")
    stacks.fail_destroy_once.add("pr-77")

    with pytest.raises(RuntimeError, match="interrupted"):
        destroy_preview(stacks, cluster, "pr-77", sleep=no_sleep)
    assert "pr-77" in stacks.stacks and stacks.stacks["pr-77"].resources  # still there, half destroyed

    destroy_preview(stacks, cluster, "pr-77", sleep=no_sleep)  # the retry finishes it
    assert "pr-77" not in stacks.stacks and not cluster.objects and not cluster.namespaces("pr-77-")

    calls.clear()
    report = destroy_preview(stacks, cluster, "pr-77", sleep=no_sleep)  # and a third run is a no-op
    assert report.steps == ["no stack pr-77: nothing to destroy"]
    assert not any(c.startswith(("destroy", "rm", "delete")) for c in calls)


def test_namespaces_left_without_a_stack_are_deleted():
    stacks, cluster, calls = make_world()
    cluster.namespaces_made.update({"pr-5-mlflow", "pr-5-team-vision", "pr-50-mlflow"})  # state lost, cluster not
    report = destroy_preview(stacks, cluster, "pr-5", sleep=no_sleep)
    assert sorted(cluster.namespaces_made) == ["pr-50-mlflow"]
    assert report.steps[1:] == ["delete untracked Namespace pr-5-mlflow", "delete untracked Namespace pr-5-team-vision"]


def test_gc_destroys_expired_stacks_and_carries_on_after_a_failure():
    stacks, cluster, _ = make_world()
    for pr, hours in ((1, -1), (2, -5), (3, 10)):
        preview = derive_preview_config(pr, NOW + timedelta(hours=hours) - timedelta(hours=72))
        create_preview(stacks, preview, "kubeconfig")
    stacks.fail_destroy_once.add("pr-1")
    result = collect_garbage(stacks, cluster, NOW, sleep=no_sleep)
    assert [e.stack for e in result.destroyed] == ["pr-2"]
    assert [e.stack for e, _ in result.failed] == ["pr-1"] and "interrupted" in result.failed[0][1]
    assert result.kept == ["pr-3"]
    assert sorted(stacks.stacks) == ["pr-1", "pr-3"]
    again = collect_garbage(stacks, cluster, NOW, sleep=no_sleep)  # the next hourly run
    assert [e.stack for e in again.destroyed] == ["pr-1"] and not again.failed
    dry = collect_garbage(stacks, cluster, NOW + timedelta(days=30), dry_run=True)
    assert [e.stack for e in dry.destroyed] == ["pr-3"] and "pr-3" in stacks.stacks


# ------------------------------------------------------------------------------ CLI on the doubles


@pytest.fixture
def world(monkeypatch, tmp_path):
    stacks, cluster, calls = make_world(release_polls=0)
    monkeypatch.setattr(preview_cli, "make_backends", lambda kubeconfig: (stacks, cluster))
    monkeypatch.setattr(preview_cli, "_now", lambda: NOW)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    output = tmp_path / "github-output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    return stacks, cluster, calls, kubeconfig, output


def test_cli_create_destroy_gc(world):
    from infra.cli import app

    stacks, cluster, calls, kubeconfig, output = world
    runner = CliRunner()
    made = runner.invoke(app, ["preview", "create", "--pr", "31", "--kubeconfig", str(kubeconfig),
                               "--url-template", "https://{prefix}mlflow.preview.example.com"])
    assert made.exit_code == 0, made.output
    assert "url=https://pr-31-mlflow.preview.example.com" in output.read_text()
    assert "stack=pr-31" in output.read_text() and "expires-at=2026-11-30T03:00:00Z" in output.read_text()
    cluster.add_load_balancer("Service", "pr-31-team-vision", "lb")
    gone = runner.invoke(app, ["preview", "destroy", "--pr", "31", "--kubeconfig", str(kubeconfig)])
    assert gone.exit_code == 0, gone.output
    assert calls.index("delete Service pr-31-team-vision/lb") < calls.index("destroy pr-31") < calls.index("rm pr-31")
    again = runner.invoke(app, ["preview", "destroy", "--pr", "31", "--kubeconfig", str(kubeconfig)])
    assert again.exit_code == 0 and "nothing to destroy" in again.output

    runner.invoke(app, ["preview", "create", "--pr", "32", "--kubeconfig", str(kubeconfig), "--ttl-hours", "1"])
    runner.invoke(app, ["preview", "create", "--pr", "33", "--kubeconfig", str(kubeconfig)])
    preview_cli._now = lambda: NOW + timedelta(hours=2)  # monkeypatch restores the original afterwards
    swept = runner.invoke(app, ["preview", "gc", "--kubeconfig", str(kubeconfig), "--open-pr", "32", "--open-pr", "33"])
    assert swept.exit_code == 0, swept.output
    assert "destroyed pr-32" in swept.output and sorted(stacks.stacks) == ["pr-33"]


def test_cli_errors_name_the_option(world, tmp_path):
    from infra.cli import app

    *_, kubeconfig, _ = world
    runner = CliRunner()
    bad = runner.invoke(app, ["preview", "create", "--pr", "abc", "--kubeconfig", str(kubeconfig)])
    assert bad.exit_code == 2 and "--pr" in bad.output
    missing = runner.invoke(app, ["preview", "destroy", "--pr", "4", "--kubeconfig", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "--kubeconfig" in missing.output and "no such file" in missing.output
    ttl = runner.invoke(app, ["preview", "gc", "--kubeconfig", str(kubeconfig), "--ttl-hours", "0"])
    assert ttl.exit_code == 2 and "--ttl-hours" in ttl.output
    (tmp_path / "open.json").write_text('{"not": "a list"}')
    listed = runner.invoke(app, ["preview", "gc", "--kubeconfig", str(kubeconfig), "--open-prs-file", str(tmp_path / "open.json")])
    assert listed.exit_code == 2 and "--open-prs-file" in listed.output


def test_cli_config_prints_a_stack_file_the_plan_accepts(tmp_path, monkeypatch):
    import yaml

    from infra.cli import app

    monkeypatch.setattr(preview_cli, "_now", lambda: NOW)
    target = tmp_path / "Pulumi.pr-9.yaml"
    result = CliRunner().invoke(app, ["preview", "config", "--pr", "9", "--output", str(target)])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(target.read_text())["config"]
    assert config["strata:namespacePrefix"] == "pr-9-" and config["strata:kubeconfig"] == {"secure": "set by strata preview create"}
    planned = CliRunner().invoke(app, ["plan", "--stack", "pr-9", "--stack-file", str(target), "--format", "json",
                                       "--output", str(tmp_path / "plan.json")])
    assert planned.exit_code == 0, planned.output


# The real KubernetesCluster and AutomationStacks run against the local control plane: tests/cluster.
