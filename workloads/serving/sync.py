"""Keep a pod's registry export in step with the MLflow registry (the cluster's model delivery).

Serving and stream pods read model versions from a local export (`workloads.serving.registry`,
`/mnt/models`), never from MLflow (the Seldon environment cannot import MLflow 3). This sidecar
fills that export: for each alias it asks the registry which version the alias names,
downloads that version's serving bundle once (`extra_files/` of the logged model: the
model file (torch.export), feature schema and reference profile), exports it under
`versions/<v>/` and moves the alias atomically. The model server follows its alias
(`aliases.json`), so a promotion in MLflow reaches the pods without a restart.

    python -m workloads.serving.sync --model fraud --alias champion --root /mnt/models [--once]

MLflow client only (mlflow-skinny), no torch: it runs in the monitoring image.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from workloads.serving import registry

log = logging.getLogger("strata.sync")


class ModelRegistry(Protocol):
    """The two registry calls the sync needs (MLflow's client, or a test's own registry)."""

    def version_for(self, model: str, alias: str) -> tuple[str, str] | None:
        """(version, run id) the alias names, or None when the alias is not set."""

    def download(self, model: str, version: str, destination: Path) -> Path:
        """Download the version's artifacts into `destination`; returns the folder."""


class MlflowRegistry:
    def __init__(self, tracking_uri: str | None = None):
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        # The registry is the tracking server named here, not whatever registry URI the process set.
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def version_for(self, model: str, alias: str) -> tuple[str, str] | None:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version_by_alias(model, alias)
        except MlflowException as error:
            if getattr(error, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return str(found.version), found.run_id or ""

    def download(self, model: str, version: str, destination: Path) -> Path:
        from mlflow.artifacts import download_artifacts

        location = self.client.get_model_version_download_uri(model, version)
        return Path(download_artifacts(artifact_uri=location, dst_path=str(destination), tracking_uri=self.tracking_uri))


@dataclass
class SyncResult:
    alias: str
    version: str | None
    downloaded: bool = False
    moved: bool = False


def sync_once(source: ModelRegistry, model: str, aliases: list[str], root: Path) -> list[SyncResult]:
    """One pass: every alias's version present in the export and the alias pointing at it."""
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for alias in aliases:
        found = source.version_for(model, alias)
        if found is None:
            results.append(SyncResult(alias, None))
            continue
        version, run_id = found
        result = SyncResult(alias, version)
        if not registry.artifact_in(root / model / "versions" / version).is_file():
            scratch = Path(tempfile.mkdtemp(prefix=f".sync-{model}-{version}-", dir=root))
            try:
                bundle = registry.find_bundle_dir(source.download(model, version, scratch))
                profile = bundle / registry.PROFILE
                registry.export_version(root, model, version, artifact=registry.artifact_in(bundle),
                                        schema_json=bundle / registry.SCHEMA,
                                        profile_json=profile if profile.is_file() else None,
                                        info={"run_id": run_id, "synced_from": "mlflow"})
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            result.downloaded = True
        if registry.read_aliases(root, model).get(alias) != version:
            registry.set_alias(root, model, alias, version)
            result.moved = True
            log.info("%s@%s -> version %s", model, alias, version)
        results.append(result)
    return results


def run(source: ModelRegistry, model: str, aliases: list[str], root: Path, interval_s: float,
        once: bool = False, stop: Any = None) -> int:
    """Sync until stopped; errors (MLflow unreachable) are logged and retried next interval."""
    root.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            results = sync_once(source, model, aliases, root)
            if once:
                missing = [r.alias for r in results if r.version is None]
                if len(missing) == len(results):
                    print(f"{model}: none of {', '.join(aliases)} is set in the registry", file=sys.stderr)
                    return 1
                return 0
        except Exception as error:  # noqa: BLE001 - a sidecar keeps going; the next pass retries
            log.warning("sync of %s failed: %s", model, error)
            if once:
                print(f"sync of {model} failed: {error}", file=sys.stderr)
                return 1
        if stop is not None and stop():
            return 0
        time.sleep(interval_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sync model versions by alias from MLflow into a registry export")
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", action="append", required=True, help="repeatable: champion, challenger")
    parser.add_argument("--root", default=str(registry.default_root()))
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between passes")
    parser.add_argument("--once", action="store_true", help="one pass; exit 1 if nothing could be synced")
    args = parser.parse_args(argv)
    for alias in args.alias:
        if not registry.ALIAS_PATTERN.match(alias):
            parser.error(f"--alias {alias!r} must match {registry.ALIAS_PATTERN.pattern}")
    logging.basicConfig(level=os.environ.get("STRATA_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run(MlflowRegistry(os.environ.get("MLFLOW_TRACKING_URI")), args.model, args.alias, Path(args.root),
               args.interval, once=args.once)


if __name__ == "__main__":
    sys.exit(main())
