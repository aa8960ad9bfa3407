"""The local Redis (Debian's `redis-server`): the online feature store, own data dir, 127.0.0.1.

Started by the supervisor in the foreground (`--daemonize no`) with every setting on the
command line, so no file of the Debian package is read. Persistence is an append-only file
under the state dir: materialised features survive `strata local down` / `up`.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from workloads.local.errors import MissingDependencyError
from workloads.local.health import Health
from workloads.local.ports import HOST

if TYPE_CHECKING:
    from workloads.local.services import ServiceContext

FIX = ".ci/redis-setup  (apt-get install -y --no-install-recommends redis-server)"


def binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise MissingDependencyError("redis", "`redis-server`", FIX)
    return found


def prepare(ctx: "ServiceContext") -> None:
    ctx.data_dir().mkdir(parents=True, exist_ok=True)


def command(ctx: "ServiceContext") -> list[str]:
    return [
        binary(), "--bind", HOST, "--port", str(ctx.port("redis")), "--daemonize", "no",
        "--dir", str(ctx.data_dir()), "--appendonly", "yes", "--save", "",
        "--protected-mode", "yes", "--maxmemory-policy", "noeviction", "--logfile", "",
    ]


def url(ctx: "ServiceContext") -> str:
    return f"redis://{HOST}:{ctx.port('redis')}/0"


def health(ctx: "ServiceContext") -> Health:
    """Ready when PING answers and the append-only file is loaded (`loading:0`)."""
    import redis

    try:
        client = redis.Redis(host=HOST, port=ctx.port("redis"), socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        loading = client.info("persistence").get("loading", 0)
        return Health(not loading, "ready" if not loading else "loading the append-only file")
    except redis.RedisError as error:
        return Health(False, str(error) or repr(error))
