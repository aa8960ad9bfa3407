"""The feature registry's own database and role on a PostgreSQL server it shares.

On the cluster the registry lives on the MLflow database server (the in-cluster PostgreSQL in
quick, RDS in standard and enterprise): RDS creates one initial database (MLflow's), so this
step creates a second one, `feature_registry`, owned by a role of the same name that can log in
to nothing else of MLflow's (its tables belong to MLflow's role). A database, not a schema in
MLflow's: MLflow's migrations own that database, the registry's role owns all of its own (no
grants to keep in step), and dropping or restoring one never touches the other.

`provision(admin_url, registry_url)` runs as the server's admin role (MLflow's: the RDS master
user, which has CREATEROLE and CREATEDB but is no superuser, or the in-cluster superuser) and is
idempotent: the role is created or its password set to the one in the registry URL (so rotating
the Secret and re-running the step rotates the role), the database created when missing, and
CONNECT on it revoked from PUBLIC. Two runs at once serialise on an advisory lock.
"""

from __future__ import annotations

from typing import Any

from workloads.data.features.repo import RegistryError, registry_engine_url

_PROVISION_LOCK = 0x5354524150524F56  # pg_advisory_lock key ("STRAPROV")


def libpq_url(url: str) -> str:
    """`url` (SQLAlchemy's or libpq's form) as the URI psycopg connects with; query kept (sslmode)."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as error:
        raise RegistryError(f"database URL {url.split('@')[-1]!r} is not a PostgreSQL URL") from error
    if not parsed.drivername.startswith(("postgresql", "postgres")):
        raise RegistryError(f"database URL {parsed.render_as_string(hide_password=True)!r} is not PostgreSQL")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def provision(admin_url: str, registry_url: str) -> dict[str, Any]:
    """Create (or update) the registry's role and database; returns what changed, no password."""
    import psycopg
    from psycopg import sql

    registry = registry_engine_url(registry_url)
    if registry.get_backend_name() != "postgresql":
        raise RegistryError(f"feature registry URL {registry.render_as_string(hide_password=True)!r}: "
                            "only a PostgreSQL registry is provisioned (sqlite needs no set-up)")
    user, password, database = registry.username, registry.password, registry.database
    missing = [name for name, value in (("user", user), ("password", password), ("database", database)) if not value]
    if missing:
        raise RegistryError(f"feature registry URL {registry.render_as_string(hide_password=True)!r} names no "
                            f"{', '.join(missing)}")
    admin = registry_engine_url(admin_url)
    if (admin.host, admin.port or 5432) != (registry.host, registry.port or 5432):
        raise RegistryError(f"feature registry URL's server {registry.host}:{registry.port or 5432} is not the "
                            f"admin URL's {admin.host}:{admin.port or 5432}: the registry is provisioned on that server")
    if database == admin.database:
        raise RegistryError(f"feature registry database {database!r} is the admin's own database: give the "
                            "registry a database of its own")
    role, db = sql.Identifier(user), sql.Identifier(database)
    done: dict[str, Any] = {"role": user, "database": database}
    try:
        with psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_PROVISION_LOCK,))
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone():
                conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(role, sql.Literal(password)))
                done["roleChange"] = "password set"
            else:
                conn.execute(sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(role, sql.Literal(password)))
                done["roleChange"] = "created"
            # CREATE DATABASE ... OWNER needs the admin to be able to SET ROLE to the owner: a
            # non-superuser admin (RDS's master user) gets that by granting itself the role it created.
            if not conn.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (user,)).fetchone()[0]:
                conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                done["databaseChange"] = "exists"
            else:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, role))
                done["databaseChange"] = "created"
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
    except psycopg.OperationalError as error:
        raise RegistryError(f"feature registry: cannot reach the admin database "
                            f"{admin.render_as_string(hide_password=True)}: {_first_line(error)}") from error
    except psycopg.Error as error:  # e.g. an admin role without CREATEROLE / CREATEDB
        raise RegistryError(f"feature registry: the admin role {admin.username!r} could not provision role "
                            f"{user!r} and database {database!r}: {_first_line(error)}") from error
    return done


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)
