"""CI's image builds (`infra.cloud.images`, `.github/actions/push-images`): every ECR
repository the cloud layer creates — `kafka-connect` (the CDC pipelines' Connect) among
them — has a Dockerfile and a pinned tag, the stack reports its repositories, and both deploy
jobs push the missing images before and after `pulumi up`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from infra.cloud.images import DOCKERFILES, builds, main
from infra.cloud.storage import DEFAULT_IMAGES
from infra.config import PROJECT_ROOT
from infra.platform.charts import IMAGES
from tests.cicd.test_workflows import GITHUB, load, steps, workflow

REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"


def repositories(*images: str) -> dict[str, str]:
    return {image: f"{REGISTRY}/strata-enterprise-prod/{image}" for image in images}


def test_every_repository_builds_from_an_existing_dockerfile_at_its_pinned_tag():
    assert "kafka-connect" in DEFAULT_IMAGES
    found = builds(repositories(*DEFAULT_IMAGES))
    assert [b.image for b in found] == sorted(DEFAULT_IMAGES)
    for build in found:
        assert (PROJECT_ROOT / build.dockerfile).is_file()
        assert build.ref == f"{REGISTRY}/strata-enterprise-prod/{build.image}:{IMAGES[build.image].tag}"
        assert build.repository_name == f"strata-enterprise-prod/{build.image}"
    (connect,) = [b for b in found if b.image == "kafka-connect"]
    assert connect.dockerfile == "workloads/data/ingest/connect/Dockerfile"


def test_an_unknown_or_malformed_repository_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"no Dockerfile for extra"):
        builds({**repositories("training"), "extra": f"{REGISTRY}/x/extra"})
    with pytest.raises(ValueError, match=r"ecrRepositories.training: 'not-a-url'"):
        builds({"training": "not-a-url"})
    with pytest.raises(ValueError, match=r"DOCKERFILES\['training'\]: workloads/training/Dockerfile does not exist"):
        builds(repositories("training"), root=tmp_path)


def test_the_workflow_script_reads_the_stack_output(capsys):
    assert main([json.dumps(repositories("kafka-connect"))]) == 0
    assert capsys.readouterr().out.split() == [
        "strata-enterprise-prod/kafka-connect", f"{REGISTRY}/strata-enterprise-prod/kafka-connect:"
        f"{IMAGES['kafka-connect'].tag}", DOCKERFILES["kafka-connect"]]
    assert main(["[]"]) == 1 and "expected a JSON object" in capsys.readouterr().err
    assert main(["{"]) == 1
    result = subprocess.run([sys.executable, "-m", "infra.cloud.images"], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode == 2 and "usage" in result.stderr


def test_aws_stacks_export_their_repositories(plans):
    for stack, plan in plans.items():
        assert set(plan.outputs["ecrRepositories"]) == set(DEFAULT_IMAGES), stack


def test_both_deploy_jobs_push_missing_images_before_and_after_up():
    action = load(GITHUB / "actions" / "push-images" / "action.yml")
    script = "\n".join(s.get("run", "") for s in action["runs"]["steps"])
    assert "pulumi stack output ecrRepositories --json" in script and "python -m infra.cloud.images" in script
    assert "aws ecr describe-images" in script  # immutable tags: a pushed tag is skipped
    assert "docker build --file" in script and "docker push" in script
    jobs = workflow("deploy.yml")["jobs"]
    for stack in ("standard", "enterprise"):
        order = [("push" if s.get("uses") == "./.github/actions/push-images" else
                  "up" if "pulumi up" in s.get("run", "") else None) for s in steps(jobs[stack])]
        order = [o for o in order if o]
        assert order == ["push", "up", "push"], (stack, order)
        pushes = [s for s in steps(jobs[stack]) if s.get("uses") == "./.github/actions/push-images"]
        assert all(s["with"]["stack"] == stack for s in pushes)
