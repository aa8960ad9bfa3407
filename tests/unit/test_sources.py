"""Every Python file of the repository compiles without a warning (an invalid escape sequence
in a docstring warns in every run that imports it, and is an error in a later Python)."""

from __future__ import annotations

import subprocess
import warnings

from infra.config import PROJECT_ROOT


def test_every_tracked_python_file_compiles_without_warnings():
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    assert len(files) > 100, files  # the listing worked
    problems = []
    for name in files:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compile((PROJECT_ROOT / name).read_text(), name, "exec")
        problems += [f"{name}:{w.lineno}: {w.message}" for w in caught]
    assert not problems, problems
