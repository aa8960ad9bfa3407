"""Local-mode fixtures: real services for the session (see tests/local_services.py)."""

from tests.local_services import local_services, local_supervisor  # noqa: F401
