"""Model-team code for `fraud`: a torch MLP on the synthetic transactions.

This file and `model.yaml` are all the team writes; the harness does the rest.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from workloads.data.dataset import Dataset, load_uri
from workloads.data.synthetic import FRAUD_SCHEMA
from workloads.training.hooks import ModelHooks

DEFAULT_CONFIG = {"lr": 3e-3, "weight_decay": 1e-5, "hidden": 64, "depth": 2, "dropout": 0.1}


class FraudMLP(nn.Module):
    def __init__(self, features: int, hidden: int, depth: int, dropout: float):
        super().__init__()
        self.norm = nn.BatchNorm1d(features)  # learns the scale of the log-transformed inputs
        layers: list[nn.Module] = []
        width = features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # heavy-tailed amounts/counts: a signed log keeps the standardised inputs tame
        x = torch.sign(x) * torch.log1p(torch.abs(x))
        return self.net(self.norm(x)).squeeze(-1)  # one logit per row


def build_model(config: Mapping[str, Any]) -> nn.Module:
    return FraudMLP(
        FRAUD_SCHEMA.width,
        hidden=int(config["hidden"]),
        depth=int(config["depth"]),
        dropout=float(config["dropout"]),
    )


def load_data(uri: str, seed: int) -> Dataset:
    return load_uri(uri, seed, FRAUD_SCHEMA)


def hooks() -> ModelHooks:
    return ModelHooks(
        build_model=build_model,
        load_data=load_data,
        feature_schema=FRAUD_SCHEMA,
        num_classes=2,
        default_config=DEFAULT_CONFIG,
        standardize=False,  # the model log-transforms, then normalises (BatchNorm) itself
    )
