"""Every image we build has a tag that names its contents (issue 12: the drift-monitor image
changed without a new tag). The Dockerfile plus what it copies is digested; the digest each
tag was built from is recorded in infra/platform/image-tags.json. A change to an image's files
without a new tag fails here, naming the image and the command that bumps it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from infra.platform import image_tags
from infra.platform.charts import IMAGES

REPO = Path(__file__).resolve().parents[2]


def test_every_dockerfile_of_the_repository_has_a_pinned_image():
    built = {str(p.relative_to(REPO)) for p in REPO.glob("workloads/**/Dockerfile")}
    assert built == set(image_tags.DOCKERFILES.values()), built ^ set(image_tags.DOCKERFILES.values())
    assert set(image_tags.DOCKERFILES) <= set(IMAGES)


def test_every_images_tag_names_its_current_contents():
    assert image_tags.stale() == {}


def test_a_tag_is_never_recorded_for_two_contents_nor_two_tags_for_one_content():
    for image, tags in image_tags.recorded().items():
        assert image in image_tags.DOCKERFILES, image
        assert len(set(tags.values())) == len(tags), f"{image}: two tags recorded for the same contents: {tags}"


def test_the_digest_covers_the_dockerfile_and_every_copied_file(tmp_path, monkeypatch):
    """Changing a copied file, the Dockerfile, or adding a file under a copied folder changes
    the digest; a cache file (ignored by git) does not."""
    sources = image_tags.context_sources(REPO / image_tags.DOCKERFILES["drift-monitor"])
    assert "workloads/monitoring" in sources and "requirements/monitoring.lock" in sources
    repo = tmp_path / "repo"
    for path in ["workloads/monitoring/Dockerfile", ".gitignore", *sources]:
        src, dst = REPO / path, repo / path
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            shutil.copyfile(src, dst)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    monkeypatch.setattr(image_tags, "REPO_ROOT", repo)
    dockerfile = "workloads/monitoring/Dockerfile"
    before = image_tags.contents_digest(dockerfile)
    assert before == image_tags.contents_digest(dockerfile)  # deterministic
    (repo / "workloads/monitoring/__pycache__").mkdir(exist_ok=True)
    (repo / "workloads/monitoring/__pycache__/x.cpython-311.pyc").write_bytes(b"cache")
    assert image_tags.contents_digest(dockerfile) == before
    changed = []
    for edit in (lambda: (repo / "workloads/monitoring/drift.py").write_text("# changed\n", "utf-8"),
                 lambda: (repo / "workloads/monitoring/new_module.py").write_text("x = 1\n"),
                 lambda: (repo / "requirements/monitoring.lock").write_text("numpy==0.0.1\n"),
                 lambda: (repo / dockerfile).write_text((repo / dockerfile).read_text() + "# a comment\n")):
        edit()
        changed.append(image_tags.contents_digest(dockerfile))
    assert len({before, *changed}) == 5, "an edit left the digest unchanged"


@pytest.mark.parametrize(("image", "tag", "expected"), [
    ("drift-monitor", "0.1.0", "0.1.1"), ("mlflow", "3.17.2", "3.17.2-1"), ("mlflow", "3.17.2-1", "3.17.2-2")])
def test_the_next_tag(image, tag, expected):
    assert image_tags.next_tag(image, tag) == expected
