"""One Pulumi stack of an inline program (the Automation API), created for a test module and
destroyed and removed after it, whatever the tests did."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def inline_stack(name: str, program: Callable[[], None], work_dir: Path) -> Iterator[object]:
    from infra.preview.automation import AutomationStacks

    stacks = AutomationStacks(work_dir=work_dir, program=program)
    stacks.create_or_select(name)
    try:
        yield stacks
    finally:
        stacks.destroy(name)
        stacks.remove(name)
