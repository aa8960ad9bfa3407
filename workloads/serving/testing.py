"""A real registered-version layout for tests and benchmarks (main env: needs torch).

`make_registry()` trains nothing: it builds a small torch MLP with the shape the
training harness exports (raw features in schema order -> class probabilities),
exports it with `workloads.serving.artifact.save_module` (torch.export) with the fraud feature schema and a reference profile built
from the seeded synthetic data, and exports it under `<root>/<model>/` with the
`champion` and `challenger` aliases (two versions with different weights). When the
training harness has exported a real version, tests can point at that root instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from workloads.data.profile import build_profile, write_profile
from workloads.data.schema import FeatureSchema
from workloads.serving import registry


def fraud_schema() -> FeatureSchema:
    from workloads.data.synthetic import FRAUD_SCHEMA

    return FRAUD_SCHEMA


def sample_rows(schema: FeatureSchema, rows: int, seed: int = 0) -> np.ndarray:
    """Valid float32 rows (inside every feature's bounds), exactly representable in JSON."""
    rng = np.random.default_rng(seed)
    low, high = schema.bounds()
    low = np.where(np.isfinite(low), low, -1e3)
    high = np.where(np.isfinite(high), high, 1e3)
    high = np.minimum(high, low + 1e4)  # keep magnitudes tame
    values = low + rng.random((rows, schema.width)) * (high - low)
    return np.round(values, 3).astype(np.float32)


def build_module(width: int, classes: int = 2, hidden: int = 32, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class Scored(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.sign(x) * torch.log1p(torch.abs(x))
            return torch.softmax(self.net(x), dim=-1)

    return Scored().eval()


def save_test_module(directory: Path, schema: FeatureSchema, seed: int = 0) -> Path:
    """`build_module` exported the way the trainer exports (the one writer), in `directory`."""
    from workloads.serving.artifact import save_module

    example = sample_rows(schema, 8, seed=99)
    return save_module(build_module(schema.width, len(schema.label_values), seed=seed), example,
                       Path(directory) / registry.ARTIFACT)


def make_registry(root: Path | str, model: str = "fraud", versions: tuple[str, ...] = ("1", "2")) -> Path:
    """Export `versions` (first = champion, second = challenger) of a small MLP."""
    root = Path(root)
    schema = fraud_schema()
    data = sample_rows(schema, 4096, seed=123)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        schema.to_json(tmp / registry.SCHEMA)
        write_profile(build_profile(data, schema.names), tmp / registry.PROFILE)
        for index, version in enumerate(versions):
            save_test_module(tmp, schema, seed=index)
            aliases = ("champion",) if index == 0 else ("challenger",) if index == 1 else ()
            registry.export_version(
                root, model, version, tmp / registry.ARTIFACT, tmp / registry.SCHEMA, tmp / registry.PROFILE,
                info={"source": "workloads.serving.testing"}, aliases=aliases,
            )
    return root


def reference_outputs(root: Path | str, model: str, alias: str, rows: np.ndarray) -> np.ndarray:
    """What the artifact itself answers for `rows` (the ground truth for the servers)."""
    import torch

    from workloads.serving.artifact import load_module

    version = registry.resolve(root, model, alias=alias)
    module = load_module(version.artifact)
    with torch.inference_mode():
        return module(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))).numpy()
