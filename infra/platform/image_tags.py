"""Each image tag we build is tied to what the image holds.

The contents of an image built from this repository are its Dockerfile plus every file its
`COPY`/`ADD` lines take from the build context (a multi-stage `COPY --from=` takes none).
`contents_digest` hashes them (paths and bytes, in path order; git's list of tracked and
not-ignored files, so caches and virtual environments never count). `image-tags.json` next to
this module records, per image, the digest each tag was built from: a tag names one content,
so changing an image's files means a new tag (tests/infra/test_image_tags.py fails until then).

    python -m infra.platform.image_tags           # what changed, and what to bump
    python -m infra.platform.image_tags --record  # record the current tags' digests (new tags only)
    python -m infra.platform.image_tags --bump    # next tag for each changed image, then --record
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from infra.platform.charts import IMAGES

REPO_ROOT = Path(__file__).resolve().parents[2]
RECORD = Path(__file__).with_name("image-tags.json")

#: IMAGES key -> the Dockerfile it is built from (relative to the repository root).
DOCKERFILES: Mapping[str, str] = {
    "mlflow": "workloads/tracking/Dockerfile",
    "drift-monitor": "workloads/monitoring/Dockerfile",
    "training": "workloads/training/Dockerfile",
    "serving": "workloads/serving/Dockerfile",
    "stream-worker": "workloads/streaming/Dockerfile",
    "rollout-controller": "workloads/rollout/Dockerfile",
    "kafka-connect": "workloads/data/ingest/connect/Dockerfile",
}


def context_sources(dockerfile: Path) -> list[str]:
    """The build-context paths the Dockerfile's COPY/ADD lines take (no URLs, no other stages)."""
    sources: list[str] = []
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        words = line.split()
        if not words or words[0] not in ("COPY", "ADD"):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from=") for w in words[1:]):
            continue
        for source in args[:-1]:
            if "://" not in source:
                sources.append(source)
    return sources


def _files(paths: list[str]) -> list[str]:
    if not paths:
        return []
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z", "--", *paths], cwd=REPO_ROOT,
                                capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise RuntimeError(f"listing the build context needs git in a checkout of this repository: {error}") from None
    # the record of tags is about the images, not in what a tag names (the training image copies infra/)
    record = str(RECORD.relative_to(Path(__file__).resolve().parents[2]))
    return sorted({p for p in listed.decode().split("\0") if p and p != record and (REPO_ROOT / p).is_file()})


def contents_digest(dockerfile: str | Path) -> str:
    """sha256 over the Dockerfile and every context file it copies (path + bytes, in order)."""
    dockerfile = REPO_ROOT / dockerfile
    sources = context_sources(dockerfile)
    files = _files(sources)
    for source in sources:
        if not (REPO_ROOT / source).exists():
            raise FileNotFoundError(f"{dockerfile.relative_to(REPO_ROOT)}: COPY/ADD source {source} does not exist")
    digest = hashlib.sha256()
    for path in [str(dockerfile.relative_to(REPO_ROOT)), *files]:
        digest.update(path.encode() + b"\0" + (REPO_ROOT / path).read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


def recorded() -> dict[str, dict[str, str]]:
    return json.loads(RECORD.read_text()) if RECORD.is_file() else {}


def stale(tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """image -> why its tag does not name its current contents (empty: every tag is right)."""
    record = recorded()
    tags = tags or {image: IMAGES[image].tag for image in DOCKERFILES}
    problems = {}
    for image, dockerfile in sorted(DOCKERFILES.items()):
        tag, now = tags[image], contents_digest(dockerfile)
        was = record.get(image, {}).get(tag)
        if was is None:
            problems[image] = f"tag {tag} has no recorded contents (run `python -m infra.platform.image_tags --record`)"
        elif was != now:
            problems[image] = (f"its files ({dockerfile} and what it copies) changed since tag {tag} was recorded: "
                               f"bump its tag (`python -m infra.platform.image_tags --bump`, or by hand in "
                               f"infra/platform/charts.py IMAGES, then `--record`)")
    return problems


def record_current() -> list[str]:
    """Record each image's current tag -> digest; a tag already recorded with other contents is refused."""
    record = recorded()
    added, refused = [], []
    for image, dockerfile in sorted(DOCKERFILES.items()):
        tag, now = IMAGES[image].tag, contents_digest(dockerfile)
        tags = record.setdefault(image, {})
        if tags.get(tag) not in (None, now):
            refused.append(f"{image}: tag {tag} already names other contents; bump it in infra/platform/charts.py")
        elif tag not in tags:
            tags[tag] = now
            added.append(f"{image}:{tag}")
    if refused:
        raise SystemExit("\n".join(refused))
    RECORD.write_text(json.dumps({k: dict(sorted(v.items())) for k, v in sorted(record.items())}, indent=2) + "\n")
    return added


#: Images whose tag is the upstream version they package (`strata/mlflow:3.17.2`): a rebuild
#: of the same upstream version gets a build suffix (3.17.2-1, 3.17.2-2, ...).
UPSTREAM_VERSIONED = frozenset({"mlflow"})
CHARTS_FILE = Path(__file__).with_name("charts.py")


def next_tag(image: str, tag: str) -> str:
    """0.1.0 -> 0.1.1; 3.17.2 -> 3.17.2-1 (upstream-versioned); 3.17.2-1 -> 3.17.2-2."""
    base, _, build = tag.partition("-")
    if build.isdigit():
        return f"{base}-{int(build) + 1}"
    if image in UPSTREAM_VERSIONED:
        return f"{tag}-1"
    major, minor, patch = tag.split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def bump_stale() -> dict[str, str]:
    """Give every image whose recorded tag now names other contents its next tag (in charts.py);
    returns image -> new tag. Repeats until no recorded tag is wrong: charts.py is itself in the
    training image, so one bump can make that image's contents change too."""
    tags = {image: IMAGES[image].tag for image in DOCKERFILES}
    bumped: dict[str, str] = {}
    while True:
        record = recorded()
        wrong = [image for image in stale(tags) if tags[image] in record.get(image, {})]
        if not wrong:
            return bumped
        text = CHARTS_FILE.read_text()
        for image in wrong:
            repository = IMAGES[image].repository
            old = f'ImagePin("{repository}", "{tags[image]}")'
            if text.count(old) != 1:
                raise SystemExit(f"{image}: cannot find {old} exactly once in {CHARTS_FILE}; bump it by hand")
            tags[image] = bumped[image] = next_tag(image, tags[image])
            text = text.replace(old, f'ImagePin("{repository}", "{tags[image]}")')
        CHARTS_FILE.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Image tags tied to image contents")
    parser.add_argument("--record", action="store_true", help="record the current tags' contents (new tags only)")
    parser.add_argument("--bump", action="store_true",
                        help="give each changed image its next tag in charts.py, then record (run it in a fresh process after)")
    args = parser.parse_args(argv)
    if args.bump:
        bumped = bump_stale()
        print("bumped: " + (", ".join(f"{k} -> {v}" for k, v in bumped.items()) if bumped else "nothing"))
        if bumped:  # IMAGES of this process still holds the old tags: record in a fresh one
            return subprocess.run([sys.executable, "-m", "infra.platform.image_tags", "--record"], cwd=REPO_ROOT).returncode
    if args.record:
        added = record_current()
        print("recorded: " + (", ".join(added) if added else "nothing new"))
    problems = stale()
    for image, problem in problems.items():
        print(f"{image}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
