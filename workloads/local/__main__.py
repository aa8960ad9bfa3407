"""`python -m workloads.local up|down|status|logs|ports` (the same app as `strata local`)."""

from workloads.local.cli import local_app

local_app(prog_name="strata local")
