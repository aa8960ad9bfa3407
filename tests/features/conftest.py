"""Feature-store fixtures: the real local Redis (started once per session by the supervisor)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="session")
def redis_url(local_services) -> str:
    return local_services("redis").url("redis")


@pytest.fixture
def redis_client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def view_name() -> str:
    return f"v{uuid.uuid4().hex[:10]}"  # views of each test are their own keys in the shared Redis
