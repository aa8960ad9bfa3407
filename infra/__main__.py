"""Pulumi entry point of a directory `pulumi up`: see `infra.entrypoint`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # repo root: infra + workloads

from infra.entrypoint import main  # noqa: E402

main()
