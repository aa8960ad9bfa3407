"""The lake benchmarks use the data layer's fixtures (the real local S3)."""

from tests.data.conftest import lake, s3_settings, table_name  # noqa: F401
