"""Data-layer fixtures: the real local S3 (SeaweedFS, started once per session) and a lake
whose tables get names unique to each test (the buckets are shared)."""

from __future__ import annotations

import uuid

import pytest

from workloads.data.lake.tables import Lake
from workloads.data.storage import S3Settings
from workloads.local import s3 as local_s3


@pytest.fixture(scope="session")
def s3_settings(local_services) -> S3Settings:
    svc = local_services("s3")
    return S3Settings(endpoint_url=svc.url("s3"), access_key_id=local_s3.ACCESS_KEY,
                      secret_access_key=local_s3.SECRET_KEY)


@pytest.fixture
def lake(s3_settings: S3Settings) -> Lake:
    return Lake(s3_settings)


@pytest.fixture
def table_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"
