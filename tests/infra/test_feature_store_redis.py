"""The in-cluster Redis's config, as quick mode's plan renders it, run by a real `redis-server`
(Debian's, `.ci/redis-setup`): auth is on, a client without the token is refused, and the URL
the team Secret carries connects and writes. Only the listening address and data dir are
moved to loopback and a temp dir (those lines are replaced: Redis applies `dir` as it reads it)."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from infra.platform.features import REDIS_APP, SECRET_NAME
from tests.infra.test_feature_store import TEAM_NS, featured_plan, named


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def rendered_redis(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run .ci/redis-setup")  # set-up installs it: never skip
    plan = featured_plan("quick")
    conf = base64.b64decode(named(plan, "Secret", REDIS_APP, "features").inputs["data"]["redis.conf"]).decode()
    url = named(plan, "Secret", SECRET_NAME, TEAM_NS).inputs["stringData"]["url"]
    port = free_port()
    (tmp_path / "data").mkdir()
    config = tmp_path / "redis.conf"
    local = {"bind": "bind 127.0.0.1", "port": f"port {port}", "dir": f"dir {tmp_path / 'data'}"}
    lines = [local.get(line.split(" ", 1)[0], line) for line in conf.splitlines()]
    assert sum(line in local.values() for line in lines) == len(local), conf.replace(conf.split()[1], "<token>")
    config.write_text("\n".join([*lines, "daemonize no", ""]))
    log = tmp_path / "redis.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, str(config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"redis-server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        parts = urlsplit(url)
        local = urlunsplit(parts._replace(netloc=f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{port}"))
        yield port, local
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_the_rendered_config_requires_the_token_and_the_team_url_connects(rendered_redis):
    port, url = rendered_redis
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, password="not-the-token").ping()
    client = redis.Redis.from_url(url)
    assert client.ping()
    client.hset("strata:fv:card_activity:1", mapping={"f0": "2.0"})
    assert client.hget("strata:fv:card_activity:1", "f0") == b"2.0"
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.config_get("maxmemory") == {"maxmemory": str(768 * 1024 * 1024)}
