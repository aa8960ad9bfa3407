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


def descendants(root: int) -> list[int]:
    """Every live descendant of `root`, whatever its process group (the Pulumi CLI starts its
    plugins in groups of their own; Ray starts its workers under its raylet)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
