"""The stream worker with one fault injected (test code, never in the product):

    python -m tests.streaming.crashing_worker --crash-before-commit N <worker args>

It dies like kill -9 (exit 137, no clean-up) after its N-th batch was produced and
acknowledged, before that batch's offsets are committed.
"""

from __future__ import annotations

import logging
import os
import sys

from workloads.streaming import worker as worker_module


def crashing_worker(before_commit: int) -> type[worker_module.StreamWorker]:
    class CrashingWorker(worker_module.StreamWorker):
        def _commit(self, polled):  # noqa: ANN001
            if self.batches == before_commit:
                logging.getLogger(__name__).warning("fault injection: exiting before committing batch %d", self.batches)
                os._exit(137)
            super()._commit(polled)

    return CrashingWorker


if __name__ == "__main__":
    argv = sys.argv[1:]
    if len(argv) < 2 or argv[0] != "--crash-before-commit":
        raise SystemExit("usage: python -m tests.streaming.crashing_worker --crash-before-commit N <worker args>")
    sys.exit(worker_module.main(argv[2:], worker_class=crashing_worker(int(argv[1]))))
