"""`strata features ...`: apply the repository generated from the specs to the registry, and
materialize a view's gold table into the online store. The entry point reads where things are
(S3 from the AWS variables, `STRATA_REDIS_URL`, `STRATA_FEATURE_REGISTRY`, and for `init-registry`
`STRATA_FEATURE_REGISTRY_ADMIN`, the database server's admin URL); components get them.

    strata features init-registry               # the registry's own database and role (cluster set-up)
    strata features apply                       # every spec's views -> the SQL registry
    strata features materialize card_activity   # gold (latest or --version N) -> Redis, as of now
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

features_app = typer.Typer(help="The feature store: registry and online materialization.", no_args_is_help=True,
                           add_completion=False)


REGISTRY_ENV, REGISTRY_ADMIN_ENV = "STRATA_FEATURE_REGISTRY", "STRATA_FEATURE_REGISTRY_ADMIN"


def _repo(spec_files: list[Path] | None):
    from workloads.catalog import spec_files as example_specs
    from workloads.data.features.repo import build_repo
    from workloads.spec import load_model_spec_file

    return build_repo(load_model_spec_file(f) for f in (spec_files or example_specs()))


def _registry():
    from workloads.data.features.repo import Registry

    state = Path(os.environ.get("STRATA_STATE_DIR", ".strata"))
    url = os.environ.get(REGISTRY_ENV) or f"sqlite:///{(state / 'features').resolve()}/registry.db"
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return Registry(url)


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(2)


@features_app.command("init-registry")
def init_registry_command() -> None:
    """The registry's own role and database on the server of `STRATA_FEATURE_REGISTRY_ADMIN`
    (created or updated, idempotent), then its tables, created as that role."""
    from workloads.data.features.registry_database import provision
    from workloads.data.features.repo import RegistryError

    missing = [name for name in (REGISTRY_ENV, REGISTRY_ADMIN_ENV) if not os.environ.get(name)]
    if missing:
        _fail(RegistryError(f"init-registry needs {' and '.join(missing)} (the registry's URL and the "
                            "database server's admin URL)"))
    try:
        done = provision(os.environ[REGISTRY_ADMIN_ENV], os.environ[REGISTRY_ENV])
        done["registry"] = _registry().url
    except RegistryError as error:
        _fail(error)
    typer.echo(json.dumps(done, sort_keys=True))


@features_app.command("apply")
def apply_command(spec: Optional[list[Path]] = typer.Option(None, "--spec", help="Spec files (default: the examples).")
                  ) -> None:
    """The views of every spec -> the registry (created / updated / unchanged per view)."""
    from workloads.data.features.repo import FeatureRepoError, RegistryError
    from workloads.spec import SpecError

    try:
        changes = _registry().apply(_repo(spec))
    except (FeatureRepoError, RegistryError, SpecError) as error:
        _fail(error)
    typer.echo(json.dumps(changes, indent=2, sort_keys=True))


@features_app.command("materialize")
def materialize_command(view: str, version: Optional[int] = typer.Option(None, "--version", help="gold version"),
                        spec: Optional[list[Path]] = typer.Option(None, "--spec")) -> None:
    """A view's gold table (at a version) -> the online store, the values known now."""
    import redis

    from workloads.data.features.online import OnlineMetrics, OnlineStore, materialize
    from workloads.data.features.repo import FeatureRepoError, RegistryError
    from workloads.data.lake.tables import Lake, LakeError, read
    from workloads.data.storage import S3Settings, lake_buckets_from_env
    from workloads.local.ports import HOST, resolve_ports

    try:
        repo = _repo(spec)
        definition = repo.view(view)
        lake = Lake(S3Settings.from_env(), buckets=lake_buckets_from_env())  # the CronJob sets the stack's gold bucket
        table = lake.require("gold", definition.table, version)
        url = os.environ.get("STRATA_REDIS_URL") or f"redis://{HOST}:{resolve_ports()['redis']}/0"
        store = OnlineStore(redis.Redis.from_url(url), repo, OnlineMetrics())
        written = materialize(store, view, read(lake, "gold", definition.table, table.version()), table.version(),
                              registry=_registry())
    except (FeatureRepoError, RegistryError, LakeError, redis.RedisError) as error:
        _fail(error)
    typer.echo(json.dumps({"view": view, "goldVersion": table.version(), "entities": written}))
