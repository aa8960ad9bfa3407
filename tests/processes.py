"""Process-group helpers shared by the tests and benchmarks that start servers."""

from __future__ import annotations

import os
from pathlib import Path


def group_pids(pgid: int) -> list[int]:
    """Every live process in process group `pgid` (a server and the children it forked)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids
