"""The lake benchmarks use the data layer's fixtures (the real local S3)."""

from tests.data.conftest import lake, s3_settings, table_name  # noqa: F401
from workloads.local.testing import local_services, local_supervisor  # noqa: F401
