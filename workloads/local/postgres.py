"""The local PostgreSQL (Debian's `postgresql`): own data dir, 127.0.0.1, logical decoding on.

The CDC source of local mode: `wal_level=logical` so Debezium's connector streams changes
through the built-in `pgoutput` plugin. PostgreSQL refuses to run as root, so when the
supervisor runs as root the server runs as the `postgres` user with its data directory in
a folder that user owns (`/tmp/strata-postgres-<hash of the state dir>`); otherwise it is
under the state dir like every other service's data.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from workloads.local.errors import MissingDependencyError, ServiceFailedError
from workloads.local.health import Health
from workloads.local.ports import HOST

if TYPE_CHECKING:
    from workloads.local.services import ServiceContext

FIX = "apt-get update && apt-get install -y --no-install-recommends postgresql"
USER, PASSWORD, DATABASE = "strata", "strata-local", "strata"
SETTINGS = {"wal_level": "logical", "max_wal_senders": "8", "max_replication_slots": "8",
            "fsync": "on", "synchronous_commit": "on", "shared_buffers": "64MB", "max_connections": "50"}


def binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    raise MissingDependencyError("postgres", f"PostgreSQL's `{name}`", FIX)


def _as_root() -> bool:
    return os.geteuid() == 0


def base_dir(ctx: "ServiceContext") -> Path:
    if not _as_root():
        return ctx.data_dir()
    digest = hashlib.sha256(str(ctx.state_dir.resolve()).encode()).hexdigest()[:12]
    return Path(f"/tmp/strata-postgres-{digest}")


def data_dir(ctx: "ServiceContext") -> Path:
    return base_dir(ctx) / "pgdata"


def _run_as() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if _as_root() else []


def prepare(ctx: "ServiceContext") -> None:
    pgdata, base = data_dir(ctx), base_dir(ctx)
    if not (pgdata / "PG_VERSION").exists():
        shutil.rmtree(pgdata, ignore_errors=True)  # a half-initialised one
        base.mkdir(parents=True, exist_ok=True)
        if _as_root():
            pw = pwd.getpwnam("postgres")
            os.chown(base, pw.pw_uid, pw.pw_gid)
            os.chmod(base, 0o700)
        pwfile = base / "initdb.pw"
        pwfile.write_text(PASSWORD + "\n")
        if _as_root():
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        res = subprocess.run([*_run_as(), binary("initdb"), "-D", str(pgdata), "-U", USER, "--auth-host=scram-sha-256",
                              "--auth-local=trust", f"--pwfile={pwfile}", "-E", "UTF8"], capture_output=True, text=True)
        pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise ServiceFailedError("postgres", f"initdb {pgdata} failed:\n{res.stderr[-2000:]}")
    conf = "\n".join(f"{k} = '{v}'" for k, v in SETTINGS.items())
    (pgdata / "postgresql.auto.conf").write_text(
        f"# written by strata local (workloads/local/postgres.py)\n{conf}\n"
        f"listen_addresses = '{HOST}'\nport = {ctx.port('postgres')}\nunix_socket_directories = '{pgdata}'\n")
    hba = pgdata / "pg_hba.conf"
    rules = f"host all all {HOST}/32 scram-sha-256\nhost replication all {HOST}/32 scram-sha-256\n"
    if rules not in hba.read_text():
        hba.write_text(hba.read_text() + rules)
    if _as_root():
        pw = pwd.getpwnam("postgres")
        for path in (pgdata / "postgresql.auto.conf", hba):
            os.chown(path, pw.pw_uid, pw.pw_gid)


def command(ctx: "ServiceContext") -> list[str]:
    return [*_run_as(), binary("postgres"), "-D", str(data_dir(ctx))]


def dsn(ctx: "ServiceContext", database: str = DATABASE) -> str:
    return f"postgresql://{USER}:{PASSWORD}@{HOST}:{ctx.port('postgres')}/{database}"


def health(ctx: "ServiceContext") -> Health:
    """Ready when a real connection works and the `strata` database exists (created here once)."""
    try:
        import psycopg
    except ImportError:
        return Health(False, "psycopg is not installed")
    try:
        with psycopg.connect(dsn(ctx, "postgres"), connect_timeout=2, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
            level = conn.execute("SHOW wal_level").fetchone()[0]
        return Health(level == "logical", f"wal_level={level}")
    except Exception as error:  # noqa: BLE001 - not accepting connections yet
        return Health(False, str(error).strip().splitlines()[0] if str(error).strip() else repr(error))
