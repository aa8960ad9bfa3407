"""The GitHub Actions workflows: actionlint passes, and the properties that keep CI safe
hold (pinned actions, least-privilege tokens, OIDC instead of keys, no secrets or
expressions in scripts, concurrency per PR, approval environments), and every `strata`
command and option a workflow calls exists."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.config import PROJECT_ROOT

ACTIONLINT_VERSION = "1.7.12"
INSTALL_HINT = (f"GOBIN=~/.cache/strata/bin go install github.com/rhysd/actionlint/cmd/actionlint@v{ACTIONLINT_VERSION} "
                "(what .ci/setup does; needs Go 1.24+)")
GITHUB = PROJECT_ROOT / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
ACTIONS = sorted((GITHUB / "actions").glob("*/action.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def actionlint() -> str:
    cached = Path(os.environ.get("STRATA_CACHE_HOME", Path.home() / ".cache" / "strata")) / "bin" / "actionlint"
    path = str(cached) if cached.is_file() else shutil.which("actionlint")
    problem = None
    if path is None:
        problem = "actionlint not found"
    else:
        version = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
        if version != f"v{ACTIONLINT_VERSION}":
            problem = f"actionlint {version or '?'} at {path}, want v{ACTIONLINT_VERSION}"
    if problem:
        if os.environ.get("STRATA_REQUIRE_MONITORING_BINARIES"):
            pytest.fail(f"{problem}: {INSTALL_HINT}")
        pytest.skip(f"{problem}: {INSTALL_HINT}")
    return path


def load(file: Path) -> dict:
    document = yaml.safe_load(file.read_text())
    if True in document:  # YAML 1.1 reads the key `on` as a boolean
        document["on"] = document.pop(True)
    return document


def workflow(name: str) -> dict:
    return load(GITHUB / "workflows" / name)


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def uses(job: dict, action: str) -> list[dict]:
    return [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]


def scripts(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in steps(job))


def test_there_are_the_four_workflows():
    assert [f.name for f in WORKFLOWS] == ["deploy.yml", "pr.yml", "preview-gc.yml", "preview.yml"]


def test_actionlint_passes_on_every_workflow():
    result = subprocess.run([actionlint(), "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True,
                            timeout=120, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                      "      - run: echo ${{ github.event.pull_request.nmber }}\n        timeout-minutes: often\n")
    result = subprocess.run([actionlint(), "-no-color", str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "timeout-minutes" in result.stdout


def test_every_action_is_pinned_to_a_commit():
    for file in [*WORKFLOWS, *ACTIONS]:
        for number, line in enumerate(file.read_text().splitlines(), 1):
            match = re.match(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
            if not match or match.group(1).startswith("./"):
                continue
            assert PINNED.match(match.group(1)), f"{file.name}:{number}: {match.group(1)} is not pinned to a full commit SHA"
            assert re.search(r"#\s*v\d", match.group(2)), f"{file.name}:{number}: say which version the SHA is"


def test_tokens_are_least_privilege():
    for file in WORKFLOWS:
        document = load(file)
        assert document["permissions"] == {"contents": "read"}, f"{file.name}: the default token is read-only"
        for name, job in document["jobs"].items():
            granted = job.get("permissions", {})
            if any("configure-aws-credentials" in s.get("uses", "") for s in steps(job)):
                assert granted.get("id-token") == "write", f"{file.name}:{name} assumes a role: needs id-token: write"
            elif granted.get("id-token"):
                pytest.fail(f"{file.name}:{name} asks for an OIDC token it never uses")


def test_aws_access_only_through_oidc_roles():
    found = 0
    for file in WORKFLOWS:
        for name, job in load(file)["jobs"].items():
            for step in uses(job, "aws-actions/configure-aws-credentials"):
                found += 1
                given = step.get("with", {})
                assert given.get("role-to-assume", "").startswith("${{ vars."), f"{file.name}:{name}"
                assert not {"aws-access-key-id", "aws-secret-access-key", "aws-session-token"} & set(given), \
                    f"{file.name}:{name}: long-lived keys"
    assert found >= 5  # pr (preview), preview (up, down), gc, deploy (standard, enterprise)


def test_no_secret_in_plain_text_and_no_expression_in_scripts():
    secret_like = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|aws_secret_access_key|xox[bp]-|ghp_[0-9A-Za-z]{20}")
    for file in [*WORKFLOWS, *ACTIONS]:
        text = file.read_text()
        assert not secret_like.search(text), f"{file.name} holds something that looks like a credential"
        for reference in re.findall(r"secrets\.\w+", text):
            assert re.search(r"\$\{\{\s*" + re.escape(reference) + r"\s*\}\}", text), f"{file.name}: {reference}"
    for file in WORKFLOWS:
        for name, job in load(file)["jobs"].items():
            for step in steps(job):
                # Values reach scripts through env: an expression inside `run` is script injection.
                assert "${{" not in step.get("run", ""), f"{file.name}:{name}:{step.get('name')}: use env, not ${{{{ }}}}"
                for key, value in (step.get("env") or {}).items():
                    if "secrets." in str(value):
                        assert re.fullmatch(r"\$\{\{\s*secrets\.\w+\s*\}\}", str(value)), f"{file.name}:{name}:{key}"


def test_pull_request_workflow():
    flow = workflow("pr.yml")
    assert "pull_request" in flow["on"]
    assert "github.event.pull_request.number" in flow["concurrency"]["group"]
    jobs = flow["jobs"]
    assert ".ci/run" in scripts(jobs["test"]) or "make test" in scripts(jobs["test"])
    plan = scripts(jobs["plan"])
    assert "find stacks -maxdepth 1 -name 'Pulumi.*.yaml'" in plan  # every stack, not a fixed list
    assert 'strata plan --stack "$stack" --format json' in plan
    assert "git worktree add" in plan and 'origin/$BASE_REF' in plan
    assert "strata pr-comment" in plan and "strata preview config" in plan
    assert jobs["plan"]["permissions"]["pull-requests"] == "write"
    assert any(s.get("uses") == "./.github/actions/upsert-comment" for s in steps(jobs["plan"]))
    assert jobs["pulumi-preview"]["if"].startswith("vars.AWS_PREVIEW_ROLE_ARN != '' && ")
    assert "pulumi preview --diff" in scripts(jobs["pulumi-preview"])
    assert set(jobs["pulumi-preview"]["strategy"]["matrix"]["stack"]) == {"quick", "standard", "enterprise"}
    assert jobs["pulumi-preview-skipped"]["if"].startswith("vars.AWS_PREVIEW_ROLE_ARN == '' || ")
    assert "::notice" in scripts(jobs["pulumi-preview-skipped"])


def test_preview_workflow_never_races_on_one_stack():
    flow = workflow("preview.yml")
    assert set(flow["on"]["pull_request"]["types"]) >= {"opened", "reopened", "synchronize", "closed"}
    assert flow["concurrency"] == {"group": "preview-pr-${{ github.event.pull_request.number }}", "cancel-in-progress": False}
    up, down = flow["jobs"]["up"], flow["jobs"]["down"]
    assert "github.event.action != 'closed'" in up["if"] and "strata preview create" in scripts(up)
    assert "github.event.action == 'closed'" in down["if"] and "strata preview destroy" in scripts(down)
    assert "strata preview destroy" not in scripts(up) and "strata preview create" not in scripts(down)
    assert any(s.get("uses") == "./.github/actions/upsert-comment" for s in steps(up))


def test_gc_runs_on_a_schedule_and_alone():
    flow = workflow("preview-gc.yml")
    assert flow["on"]["schedule"][0]["cron"]
    assert flow["concurrency"]["cancel-in-progress"] is False
    assert "strata preview gc" in scripts(flow["jobs"]["gc"])


def test_deploy_goes_standard_then_enterprise_behind_approval():
    flow = workflow("deploy.yml")
    assert flow["on"]["push"]["branches"] == ["main"]
    assert flow["concurrency"]["cancel-in-progress"] is False
    standard, enterprise = flow["jobs"]["standard"], flow["jobs"]["enterprise"]
    assert standard["environment"]["name"] == "standard" and enterprise["environment"]["name"] == "enterprise"
    assert enterprise["needs"] == "standard"
    assert "pulumi up --yes --non-interactive --stack standard" in scripts(standard)
    assert "pulumi up --yes --non-interactive --stack enterprise" in scripts(enterprise)
    assert "infra/policy/enterprise.json" in scripts(enterprise)
    assert "commit-to-prod-seconds" in enterprise["outputs"]
    timing = scripts(enterprise)
    assert "git show -s --format=%ct" in timing and "GITHUB_STEP_SUMMARY" in timing
    order = [s.get("run", "") for s in steps(enterprise)]
    assert next(i for i, r in enumerate(order) if "pulumi up" in r) < next(i for i, r in enumerate(order) if "%ct" in r)


def _strata_calls() -> list[tuple[str, list[str]]]:
    calls = []
    for file in WORKFLOWS:
        for job in load(file)["jobs"].values():
            text = scripts(job).replace("\\\n", " ")
            for line in text.splitlines():
                for fragment in re.findall(r"(?:^|[;&|]\s*|\s)strata ([^;&|]+)", line):
                    words = shlex.split(fragment.split(">")[0], comments=True)
                    calls.append((file.name, words))
    return calls


def test_every_strata_command_and_option_a_workflow_calls_exists():
    from infra.cli import app

    runner = CliRunner()
    calls = [(file, [w for w in words[:2] if not w.startswith("-")][: 2 if words[0] == "preview" else 1], words)
             for file, words in _strata_calls()]
    assert {" ".join(command) for _, command, _ in calls} == {
        "validate", "codeowners", "plan", "pr-comment", "preview config", "preview create", "preview destroy", "preview gc"}
    for file, command, words in calls:
        help_text = runner.invoke(app, [*command, "--help"], terminal_width=200)
        assert help_text.exit_code == 0, f"{file}: strata {' '.join(command)} does not exist"
        for flag in (w for w in words if w.startswith("--")):
            assert flag in help_text.output, f"{file}: strata {' '.join(command)} has no option {flag}"
