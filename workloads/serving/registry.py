"""The local registry export: where a serving process finds a model version by alias.

Stdlib only (no MLflow, no numpy): the serving image, the stream worker and the training
harness all import it. The training harness *exports* each registered version here (the
same files it logs to MLflow); serving and streaming *read* it. On disk::

    <root>/<model>/
        aliases.json                      {"champion": "3", "challenger": "4"}  (atomic rewrite)
        versions/<version>/
            model.pt2                     torch.export program: float32 [n, width] raw features in
                                          schema order -> float32 class probabilities [n, C] (or [n])
                                          (versions exported before bundle version 2 have
                                          model.torchscript.pt instead: TorchScript, load only)
            feature_schema.json           workloads.data.schema.FeatureSchema.to_dict()
            reference_profile.json        workloads.data.profile.build_profile(...)
            version.json                  {"model", "version", "created", "metrics", "run_id", ...}

`<root>` is `$STRATA_REGISTRY_DIR` (default `<repo>/.strata/registry`). In the cloud the
same tree is synced from the MLflow registry into the pod (the registry-sync sidecar,
`workloads.serving.sync`), so the serving code never talks to MLflow. An alias moves by rewriting `aliases.json` with
`os.replace`, so a reader sees the old or the new mapping, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

ARTIFACT = "model.pt2"  # workloads.serving.artifact.EXPORTED
LEGACY_ARTIFACT = "model.torchscript.pt"  # bundle version 1 (TorchScript): still served, never written
ARTIFACTS = (ARTIFACT, LEGACY_ARTIFACT)
SCHEMA = "feature_schema.json"
PROFILE = "reference_profile.json"
MANIFEST = "strata_manifest.json"  # the serving bundle's manifest (workloads.training.artifacts)
VERSION_INFO = "version.json"
ALIASES = "aliases.json"
REQUIRED = (SCHEMA,)  # and one of ARTIFACTS
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
VERSION_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")


class RegistryError(LookupError):
    """A model, alias or version that is not in the export (the message says what is)."""


def find_bundle_dir(directory: Path | str) -> Path:
    """The folder holding a serving bundle's manifest: the given one, or anywhere below it
    (a downloaded MLflow model version keeps it in `extra_files/`)."""
    directory = Path(directory)
    if (directory / MANIFEST).is_file():
        return directory
    found = sorted(directory.rglob(MANIFEST))
    if not found:
        raise FileNotFoundError(f"no {MANIFEST} under {directory}: not a Strata model version")
    return found[0].parent


def artifact_in(directory: Path) -> Path:
    for name in ARTIFACTS:
        if (directory / name).is_file():
            return directory / name
    return directory / ARTIFACT


def default_root() -> Path:
    env = os.environ.get("STRATA_REGISTRY_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".strata" / "registry"


@dataclass(frozen=True)
class ModelVersion:
    """One resolved version directory."""

    model: str
    version: str
    path: Path
    alias: str | None = None

    @property
    def artifact(self) -> Path:
        """The model file: `model.pt2`, or a version-1 bundle's TorchScript file."""
        return artifact_in(self.path)

    @property
    def schema_path(self) -> Path:
        return self.path / SCHEMA

    @property
    def profile_path(self) -> Path:
        return self.path / PROFILE

    def info(self) -> dict[str, Any]:
        file = self.path / VERSION_INFO
        return json.loads(file.read_text()) if file.exists() else {}


def read_aliases(root: Path | str, model: str) -> dict[str, str]:
    file = Path(root) / model / ALIASES
    if not file.exists():
        return {}
    raw = json.loads(file.read_text())
    if not isinstance(raw, dict):
        raise RegistryError(f"{file}: must be a JSON object alias -> version")
    return {str(k): str(v) for k, v in raw.items()}


def resolve(root: Path | str, model: str, alias: str | None = None, version: str | None = None) -> ModelVersion:
    """The version directory for `alias` (or an explicit `version`), checked complete."""
    root = Path(root)
    if (alias is None) == (version is None):
        raise ValueError("give exactly one of alias or version")
    model_dir = root / model
    if not model_dir.is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise RegistryError(
            f"model {model!r} is not in the registry export {root} (models there: {', '.join(known) or 'none'})"
        )
    if alias is not None:
        aliases = read_aliases(root, model)
        if alias not in aliases:
            raise RegistryError(
                f"model {model!r} has no alias {alias!r} in {model_dir / ALIASES} "
                f"(aliases: {', '.join(f'{a}->{v}' for a, v in sorted(aliases.items())) or 'none'})"
            )
        version = aliases[alias]
    path = model_dir / "versions" / str(version)
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if not any((path / name).is_file() for name in ARTIFACTS):
        missing.insert(0, f"{ARTIFACT} (or a version-1 {LEGACY_ARTIFACT})")
    if missing:
        raise RegistryError(f"{model} version {version} at {path} is incomplete: missing {', '.join(missing)}")
    return ModelVersion(model=model, version=str(version), path=path, alias=alias)


def export_version(
    root: Path | str,
    model: str,
    version: str,
    artifact: Path | str,
    schema_json: Path | str,
    profile_json: Path | str | None = None,
    info: Mapping[str, Any] | None = None,
    aliases: tuple[str, ...] = (),
) -> ModelVersion:
    """Copy one version's files into the export, then point `aliases` at it.

    The version directory is written under a temporary name and renamed into place, so a
    reader never sees a half-written version."""
    root = Path(root)
    if not VERSION_PATTERN.match(str(version)):
        raise ValueError(f"version {version!r} must match {VERSION_PATTERN.pattern}")
    versions = root / model / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    final = versions / str(version)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=versions))
    try:
        # a version-1 bundle's TorchScript file keeps its name, so the loader knows its format
        name = LEGACY_ARTIFACT if Path(artifact).name == LEGACY_ARTIFACT else ARTIFACT
        shutil.copyfile(artifact, tmp / name)
        shutil.copyfile(schema_json, tmp / SCHEMA)
        if profile_json is not None:
            shutil.copyfile(profile_json, tmp / PROFILE)
        meta = {"model": model, "version": str(version), "created": time.time(), **dict(info or {})}
        (tmp / VERSION_INFO).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for alias in aliases:
        set_alias(root, model, alias, str(version))
    return ModelVersion(model, str(version), final)


def set_alias(root: Path | str, model: str, alias: str, version: str) -> None:
    """Point `alias` at `version` (atomic replace of aliases.json)."""
    if not ALIAS_PATTERN.match(alias):
        raise ValueError(f"alias {alias!r} must match {ALIAS_PATTERN.pattern}")
    model_dir = Path(root) / model
    if not (model_dir / "versions" / version).is_dir():
        raise RegistryError(f"{model} has no version {version} under {model_dir / 'versions'}")
    aliases = read_aliases(root, model)
    aliases[alias] = version
    fd, tmp = tempfile.mkstemp(prefix=".aliases.", dir=model_dir)
    with os.fdopen(fd, "w") as out:
        json.dump(dict(sorted(aliases.items())), out, indent=2)
        out.write("\n")
    os.replace(tmp, model_dir / ALIASES)
