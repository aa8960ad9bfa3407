"""What CI builds into the stack's ECR repositories: one Dockerfile per image we run.

`infra.cloud.storage.DEFAULT_IMAGES` creates one immutable-tag repository per image; the tag
each one is deployed with is its pin in `infra.platform.charts.IMAGES`. After `pulumi up`
(the repositories exist), the deploy workflow runs

    python -m infra.cloud.images "$(pulumi stack output ecrRepositories --json)"

and builds + pushes every `<repository>:<tag>` that ECR does not hold yet (tags are
immutable: a pushed tag is never rebuilt; a changed image gets a new pin). An image with a
repository but no Dockerfile here, or the reverse, is an error, not a silent skip.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from infra.cloud.storage import DEFAULT_IMAGES
from infra.config import PROJECT_ROOT
from infra.platform.charts import IMAGES

# image key (ECR repository and IMAGES pin) -> its Dockerfile; every build's context is the repository root
DOCKERFILES: Mapping[str, str] = {
    "training": "workloads/training/Dockerfile",
    "serving": "workloads/serving/Dockerfile",
    "stream-worker": "workloads/streaming/Dockerfile",
    "rollout-controller": "workloads/rollout/Dockerfile",
    "drift-monitor": "workloads/monitoring/Dockerfile",
    "mlflow": "workloads/tracking/Dockerfile",
    "kafka-connect": "workloads/data/ingest/connect/Dockerfile",
}


@dataclass(frozen=True)
class ImageBuild:
    image: str
    repository: str  # <account>.dkr.ecr.<region>.amazonaws.com/<prefix>/<image>
    tag: str
    dockerfile: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def repository_name(self) -> str:
        """The name `aws ecr` takes: the URL without the registry host."""
        return self.repository.split("/", 1)[1]


def builds(repositories: Mapping[str, str], root: Path = PROJECT_ROOT) -> list[ImageBuild]:
    """One build per repository of the stack (`ecrRepositories`: image -> URL)."""
    unknown = sorted(set(repositories) - set(DOCKERFILES))
    if unknown:
        raise ValueError(f"ecrRepositories: no Dockerfile for {', '.join(unknown)} (infra.cloud.images.DOCKERFILES)")
    found = []
    for image in sorted(repositories):
        dockerfile = DOCKERFILES[image]
        if not (root / dockerfile).is_file():
            raise ValueError(f"DOCKERFILES[{image!r}]: {dockerfile} does not exist")
        if image not in IMAGES:
            raise ValueError(f"ecrRepositories.{image}: no tag pinned in infra.platform.charts.IMAGES")
        url = repositories[image]
        if "/" not in url:
            raise ValueError(f"ecrRepositories.{image}: {url!r} is not a repository URL")
        found.append(ImageBuild(image=image, repository=url, tag=IMAGES[image].tag, dockerfile=dockerfile))
    return found


def main(argv: list[str] | None = None) -> int:
    """Print `<repository name> <ref> <dockerfile>` per image, for the workflow's loop."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m infra.cloud.images '<ecrRepositories as JSON>'\n")
        return 2
    try:
        repositories = json.loads(args[0])
        if not isinstance(repositories, dict):
            raise ValueError("ecrRepositories: expected a JSON object (image -> repository URL)")
        for build in builds(repositories):
            print(build.repository_name, build.ref, build.dockerfile)
    except ValueError as error:  # json.JSONDecodeError is one
        sys.stderr.write(f"{error}\n")
        return 1
    return 0


if set(DEFAULT_IMAGES) - set(DOCKERFILES):  # checked at import, like charts.py's pins
    raise ValueError(f"DEFAULT_IMAGES without a Dockerfile: {sorted(set(DEFAULT_IMAGES) - set(DOCKERFILES))}")

if __name__ == "__main__":
    raise SystemExit(main())
