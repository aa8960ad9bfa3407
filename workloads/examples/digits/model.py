"""Model-team code for `digits`: a small CNN on scikit-learn's 8x8 digit images."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from workloads.data.dataset import Dataset
from workloads.data.digits import DIGITS_SCHEMA, load_digits_dataset
from workloads.training.hooks import ModelHooks

DEFAULT_CONFIG = {"lr": 2e-3, "weight_decay": 1e-4, "channels": 16, "dropout": 0.1}


class DigitsCNN(nn.Module):
    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels * 2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels * 2 * 16, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # flat pixels (the serving contract) -> [n, 1, 8, 8]; intensities 0..16 -> 0..1
        return self.head(self.features(x.reshape(-1, 1, 8, 8) / 16.0))


def build_model(config: Mapping[str, Any]) -> nn.Module:
    return DigitsCNN(channels=int(config["channels"]), dropout=float(config["dropout"]))


def load_data(uri: str, seed: int) -> Dataset:
    return load_digits_dataset(uri)


def hooks() -> ModelHooks:
    return ModelHooks(
        build_model=build_model,
        load_data=load_data,
        feature_schema=DIGITS_SCHEMA,
        num_classes=10,
        default_config=DEFAULT_CONFIG,
        standardize=False,  # the model scales pixels itself
    )
