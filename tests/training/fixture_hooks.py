"""Model-team hooks used only by the tests: a worker that dies once, a broken model."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from workloads.data.synthetic import FRAUD_SCHEMA
from workloads.examples.fraud import model as fraud
from workloads.training.hooks import ModelHooks

FAULT_MARKER_ENV = "STRATA_FAULT_MARKER"
FAULT_EPOCH = 2


def _kill_once(epoch: int, info: Mapping[str, Any]) -> None:
    """SIGKILL this Ray Train worker after epoch 2's training step, before its checkpoint
    (so the last checkpoint is epoch 1), once: the marker file guards the retry."""
    marker = Path(os.environ[FAULT_MARKER_ENV])
    if epoch == FAULT_EPOCH and info["rank"] == 0 and not marker.exists():
        marker.write_text(json.dumps(dict(info)))
        os.kill(os.getpid(), signal.SIGKILL)


def faulty_hooks() -> ModelHooks:
    return dataclasses.replace(fraud.hooks(), on_epoch_end=_kill_once)


class ConstantModel(nn.Module):
    """Deliberately broken: trainable weights, but the output ignores them and the input."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(FRAUD_SCHEMA.width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.linear(x) * 0.0).squeeze(-1)


def broken_hooks() -> ModelHooks:
    return dataclasses.replace(fraud.hooks(), build_model=lambda config: ConstantModel())


def not_hooks() -> dict:
    return {"build_model": None}
