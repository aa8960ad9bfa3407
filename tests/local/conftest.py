"""Local-mode fixtures: real services for the session (see workloads/local/testing.py)."""

from workloads.local.testing import local_services, local_supervisor  # noqa: F401
