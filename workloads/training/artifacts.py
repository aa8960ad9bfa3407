"""The serving bundle every registered model version carries, and its loader.

Files (inside the MLflow model directory, under `extra_files/`):

    strata_manifest.json     what the other files are, classes, run id, dataset digest
    model.pt2                torch.export program: float32 [n, features] raw features in
                             schema order -> float32 [n, classes] class probabilities
                             (bundle version 1 had model.torchscript.pt: still loads)
    feature_schema.json      names, dtypes, valid ranges (workloads.data.schema)
    reference_profile.json   drift reference: quantile bin edges + counts, KS sample

`load_bundle(directory)` needs only torch, numpy and json (plus this repository's
`workloads.data`), never MLflow: the Seldon image (old pins, no MLflow 3) downloads a
model version's artifacts and calls it. This module must not import mlflow or ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workloads.data.profile import read_profile
from workloads.data.schema import FeatureSchema
from workloads.serving.artifact import load_module, save_module
# The bundle's file names and its finder live with the registry export (stdlib only: the
# sync sidecar and the serving image use them without torch).
from workloads.serving.registry import ARTIFACT as MODEL_FILE
from workloads.serving.registry import MANIFEST, PROFILE, SCHEMA, find_bundle_dir

BUNDLE_VERSION = 2  # 2: torch.export (model.pt2); 1: TorchScript (model.torchscript.pt), load only
LOADABLE_BUNDLE_VERSIONS = (1, 2)


@dataclass
class ServingBundle:
    model: Any  # the exported program's module: [n, d] float32 -> [n, k] probabilities
    schema: FeatureSchema
    profile: dict[str, Any]
    manifest: dict[str, Any]
    directory: Path

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        with torch.no_grad():
            return self.model(x).numpy()


def load_bundle(directory: Path | str) -> ServingBundle:
    bundle_dir = find_bundle_dir(directory)
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    if manifest.get("bundleVersion") not in LOADABLE_BUNDLE_VERSIONS:
        raise ValueError(f"{bundle_dir}: bundle version {manifest.get('bundleVersion')} is not one this code loads "
                         f"({', '.join(map(str, LOADABLE_BUNDLE_VERSIONS))}); retrain the model version to write "
                         f"bundle version {BUNDLE_VERSION}")
    what = f"run {manifest.get('runId') or manifest.get('run_id') or bundle_dir}"
    model = load_module(bundle_dir / manifest["files"]["model"], what=what)
    return ServingBundle(
        model=model,
        schema=FeatureSchema.from_json(bundle_dir / manifest["files"]["schema"]),
        profile=read_profile(bundle_dir / manifest["files"]["profile"]),
        manifest=manifest,
        directory=bundle_dir,
    )


# ----------------------------------------------------------------- building (training side)


def write_bundle(
    directory: Path,
    train_module: Any,
    schema: FeatureSchema,
    profile: dict[str, Any],
    example: np.ndarray,
    num_classes: int,
    info: dict[str, Any],
) -> tuple[Any, list[Path]]:
    """Write the four files; return (the eager serving module, the file paths)."""
    from workloads.data.profile import write_profile

    directory.mkdir(parents=True, exist_ok=True)
    module = serving_module_for(train_module, num_classes, schema.width)
    save_module(module, example, directory / MODEL_FILE)
    schema.to_json(directory / SCHEMA)
    write_profile(profile, directory / PROFILE)
    manifest = {
        "bundleVersion": BUNDLE_VERSION,
        "files": {"model": MODEL_FILE, "schema": SCHEMA, "profile": PROFILE},
        "input": {"dtype": "float32", "shape": [-1, schema.width], "order": schema.names},
        "output": {"dtype": "float32", "shape": [-1, num_classes], "meaning": "class probabilities"},
        "classes": list(schema.label_values),
        **info,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return module, [directory / MANIFEST, directory / MODEL_FILE, directory / SCHEMA, directory / PROFILE]


def serving_module_for(train_module: nn.Module, num_classes: int, width: int) -> nn.Module:
    binary = False
    if num_classes == 2:
        with torch.no_grad():
            probe = train_module.eval()(torch.zeros(2, width, dtype=torch.float32))
        binary = probe.ndim == 1 or probe.shape[-1] == 1
    return Probabilities(train_module, binary).eval()


class Probabilities(nn.Module):
    """Logits -> class probabilities [n, k] (a binary single logit -> [1 - p, p])."""

    def __init__(self, inner: nn.Module, binary: bool):
        super().__init__()
        self.inner = inner
        self.binary = binary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        if self.binary:
            p = torch.sigmoid(logits.reshape(-1))
            return torch.stack([1 - p, p], dim=1)
        return torch.softmax(logits, dim=1)
