"""The feature registry on a real PostgreSQL (the local one the CDC tests use), as on the cluster:
its own role and database provisioned by an admin that is no superuser (like RDS's master user),
idempotent `apply`, and concurrent writers that neither fail nor duplicate records."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timezone
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from tests.features.specs import model_spec
from workloads.data.features.registry_database import provision
from workloads.data.features.repo import Registry, RegistryError, build_repo
from workloads.local import postgres

# characters a URL and a SQL literal both have to quote
AWKWARD_PASSWORD = "p@ss/w'rd%:x;\"--"


@pytest.fixture(scope="module")
def server(local_services):
    """(superuser DSN, host, port) of the session's PostgreSQL."""
    sup = local_services("postgres").supervisor
    return postgres.dsn(sup.context("postgres")), postgres.HOST, sup.port("postgres")


@pytest.fixture
def admin(server):
    """An admin like RDS's master user: CREATEROLE and CREATEDB, its own database, no superuser."""
    superuser, host, port = server
    name = f"admin_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(superuser, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB PASSWORD {}").format(
            sql.Identifier(name), sql.Literal("admin-pw")))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(name)))
    admin_url = f"postgresql://{name}:admin-pw@{host}:{port}/{name}?sslmode=disable"
    registry = f"reg_{uuid.uuid4().hex[:8]}"
    registry_url = (f"postgresql+psycopg://{registry}:{quote(AWKWARD_PASSWORD, safe='')}@{host}:{port}/{registry}"
                    "?sslmode=disable")
    yield admin_url, registry_url, registry
    with psycopg.connect(superuser, autocommit=True) as conn:
        for database in (registry, name):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        for role in (registry, name):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_provision_is_idempotent_and_the_role_reaches_only_its_own_database(admin, server):
    admin_url, registry_url, registry = admin
    first = provision(admin_url, registry_url)
    assert first == {"role": registry, "database": registry, "roleChange": "created", "databaseChange": "created"}
    again = provision(admin_url, registry_url)
    assert again["databaseChange"] == "exists" and again["roleChange"] == "password set"

    reg = Registry(registry_url)
    repo = build_repo([model_spec("a")])
    assert reg.apply(repo) == {"card_activity": "created"}
    assert Registry(registry_url).apply(repo) == {"card_activity": "unchanged"}  # a second run's tables are kept
    assert reg.apply(build_repo([model_spec("a", ttl="3h")])) == {"card_activity": "updated"}
    as_of = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert reg.record_materialization("card_activity", 4, as_of, 10)
    assert not reg.record_materialization("card_activity", 4, as_of, 10)  # a retried run: one record
    reg.record_materialization("card_activity", 5, datetime(2026, 1, 2, tzinfo=timezone.utc), 11)
    last = reg.last_materialization("card_activity")
    assert (last["source_version"], last["entities"]) == (5, 11) and last["as_of"].tzinfo is not None
    assert [r["source_version"] for r in reg.materializations_of("card_activity")] == [5, 4]

    # the registry's role cannot read MLflow's (the admin's) tables, and no other role may connect to the registry
    superuser, host, port = server
    admin_db = admin_url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(admin_url) as conn:
        conn.execute("CREATE TABLE experiments (id int)")
        conn.commit()
    with psycopg.connect(f"postgresql://{registry}:{quote(AWKWARD_PASSWORD, safe='')}@{host}:{port}/{admin_db}") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM experiments")
    other = f"other_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(superuser, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'o'").format(sql.Identifier(other)))
    try:
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(f"postgresql://{other}:o@{host}:{port}/{registry}").close()
    finally:
        with psycopg.connect(superuser, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(other)))


def test_racing_writers_give_one_row_per_view_and_one_record_per_run(admin):
    admin_url, registry_url, _ = admin
    provision(admin_url, registry_url)
    repo = build_repo([model_spec("a"), model_spec("b", view="card_velocity")])
    writers = 8
    barrier = threading.Barrier(writers, timeout=60)
    as_of = datetime(2026, 3, 1, tzinfo=timezone.utc)
    results: list = [None] * writers
    errors: list = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            reg = Registry(registry_url)  # all create the (missing) tables at once
            barrier.wait()
            changes = reg.apply(repo)  # all insert the same (new) views at once
            barrier.wait()
            same_run = reg.record_materialization("card_activity", 1, as_of, 3)
            own_run = reg.record_materialization("card_velocity", 1, as_of.replace(minute=i), 3)
            results[i] = (changes, same_run, own_run)
        except Exception as error:  # noqa: BLE001 - reported below with its writer
            errors.append((i, repr(error)))
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    for view in ("card_activity", "card_velocity"):
        outcomes = sorted(changes[view] for changes, _, _ in results)
        assert outcomes == ["created"] + ["unchanged"] * (writers - 1), (view, outcomes)
    assert sum(same for _, same, _ in results) == 1 and all(own for _, _, own in results)
    reg = Registry(registry_url)
    assert sorted(reg.stored_views()) == ["card_activity", "card_velocity"]
    assert len(reg.materializations_of("card_activity")) == 1
    assert len(reg.materializations_of("card_velocity")) == writers


def test_cli_init_registry_then_apply_on_postgres(admin, monkeypatch, tmp_path):
    import yaml

    from infra.cli import app

    admin_url, registry_url, registry = admin
    runner = CliRunner()
    monkeypatch.delenv("STRATA_FEATURE_REGISTRY_ADMIN", raising=False)
    monkeypatch.setenv("STRATA_FEATURE_REGISTRY", registry_url)
    refused = runner.invoke(app, ["features", "init-registry"])
    assert refused.exit_code == 2 and "STRATA_FEATURE_REGISTRY_ADMIN" in refused.output

    monkeypatch.setenv("STRATA_FEATURE_REGISTRY_ADMIN", admin_url)
    # the Secret's libpq form (`postgresql://`) is driven by psycopg 3 as well
    monkeypatch.setenv("STRATA_FEATURE_REGISTRY", registry_url.replace("postgresql+psycopg://", "postgresql://"))
    for _ in range(2):
        done = runner.invoke(app, ["features", "init-registry"])
        assert done.exit_code == 0, done.output
        out = json.loads(done.output)
        assert out["database"] == registry and quote(AWKWARD_PASSWORD, safe="") not in done.output
        assert out["registry"].startswith("postgresql+psycopg://") and "***" in out["registry"]
    spec_file = tmp_path / "model.yaml"
    spec_file.write_text(yaml.safe_dump(model_spec("a").model_dump(mode="json", by_alias=True, exclude_none=True)))
    applied = runner.invoke(app, ["features", "apply", "--spec", str(spec_file)])
    assert applied.exit_code == 0 and json.loads(applied.output) == {"card_activity": "created"}, applied.output

    monkeypatch.setenv("STRATA_FEATURE_REGISTRY", registry_url.replace(quote(AWKWARD_PASSWORD, safe=""), "wrong"))
    denied = runner.invoke(app, ["features", "apply", "--spec", str(spec_file)])
    assert denied.exit_code == 2 and "cannot connect" in denied.output and "wrong" not in denied.output


def test_bad_registry_urls_are_named():
    with pytest.raises(RegistryError, match="not a database URL"):
        Registry("not a url")
    with pytest.raises(RegistryError, match="driver 'mysql' is not supported"):
        Registry("mysql://u:p@h/db")
    with pytest.raises(RegistryError, match="only a PostgreSQL registry"):
        provision("postgresql://a:b@h/db", "sqlite:///x.db")
    with pytest.raises(RegistryError, match="is not the admin URL's"):
        provision("postgresql://a:b@h1/mlflow", "postgresql://r:p@h2/feature_registry")
    with pytest.raises(RegistryError, match="admin's own database"):
        provision("postgresql://a:b@h/mlflow", "postgresql://r:p@h/mlflow")


def test_the_clusters_tls_parameters_reach_the_driver():
    """The URLs the cluster's Secrets carry (RDS: verify-full against the CA bundle): both the admin's
    (libpq form, psycopg) and the registry's (SQLAlchemy) hand psycopg the same TLS settings."""
    import psycopg.conninfo
    import sqlalchemy as sa

    from workloads.data.features.registry_database import libpq_url

    tls = "sslmode=verify-full&sslrootcert=/etc/ssl/certs/rds-global-bundle.pem"
    admin = psycopg.conninfo.conninfo_to_dict(libpq_url(f"postgresql://mlflow:p%40w@db.rds:5432/mlflow?{tls}"))
    assert (admin["password"], admin["sslmode"], admin["sslrootcert"]) == (
        "p@w", "verify-full", "/etc/ssl/certs/rds-global-bundle.pem")
    url = f"postgresql+psycopg://feature_registry:a%2Fb@db.rds:5432/feature_registry?{tls}"
    _, kwargs = sa.create_engine(url).dialect.create_connect_args(sa.engine.make_url(url))
    assert (kwargs["password"], kwargs["sslmode"], kwargs["sslrootcert"]) == (
        "a/b", "verify-full", "/etc/ssl/certs/rds-global-bundle.pem")
