"""The serving bundle every registered model version carries, and its loader.

Files (inside the MLflow model directory, under `extra_files/`):

    strata_manifest.json     what the other files are, classes, run id, dataset digest
    model.torchscript.pt     TorchScript: float32 [n, features] raw features in schema
                             order -> float32 [n, classes] class probabilities
    feature_schema.json      names, dtypes, valid ranges (workloads.data.schema)
    reference_profile.json   drift reference: quantile bin edges + counts, KS sample

`load_bundle(directory)` needs only torch, numpy and json (plus this repository's
`workloads.data`), never MLflow: the Seldon image (old pins, no MLflow 3) downloads a
model version's artifacts and calls it. This module must not import mlflow or ray.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workloads.data.profile import read_profile
from workloads.data.schema import FeatureSchema
# The bundle's file names and its finder live with the registry export (stdlib only: the
# sync sidecar and the serving image use them without torch).
from workloads.serving.registry import ARTIFACT as TORCHSCRIPT
from workloads.serving.registry import MANIFEST, PROFILE, SCHEMA, find_bundle_dir

BUNDLE_VERSION = 1


@dataclass
class ServingBundle:
    model: Any  # torch.jit.ScriptModule: [n, d] float32 -> [n, k] probabilities
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
    if manifest.get("bundleVersion") != BUNDLE_VERSION:
        raise ValueError(f"{bundle_dir}: bundle version {manifest.get('bundleVersion')} unsupported (want {BUNDLE_VERSION})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream, still supported
        model = torch.jit.load(str(bundle_dir / manifest["files"]["model"]), map_location="cpu")
    model.eval()
    return ServingBundle(
        model=model,
        schema=FeatureSchema.from_json(bundle_dir / manifest["files"]["schema"]),
        profile=read_profile(bundle_dir / manifest["files"]["profile"]),
        manifest=manifest,
        directory=bundle_dir,
    )


# ----------------------------------------------------------------- building (training side)


def to_torchscript(module: nn.Module, example: np.ndarray, path: Path) -> Path:
    """Script the module (trace as a fallback for code TorchScript cannot compile) and
    check the saved file reproduces the eager outputs."""
    x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            scripted = torch.jit.script(module)
        except Exception:  # noqa: BLE001 - team code TorchScript cannot compile
            scripted = torch.jit.trace(module, x, check_trace=False)
        torch.jit.save(scripted, str(path))
        reloaded = torch.jit.load(str(path))
    with torch.no_grad():
        expected, got = module(x), reloaded(x)
    if not torch.allclose(expected, got, atol=1e-5):
        raise RuntimeError("TorchScript export does not reproduce the eager model's outputs")
    return path


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
    to_torchscript(module, example, directory / TORCHSCRIPT)
    schema.to_json(directory / SCHEMA)
    write_profile(profile, directory / PROFILE)
    manifest = {
        "bundleVersion": BUNDLE_VERSION,
        "files": {"model": TORCHSCRIPT, "schema": SCHEMA, "profile": PROFILE},
        "input": {"dtype": "float32", "shape": [-1, schema.width], "order": schema.names},
        "output": {"dtype": "float32", "shape": [-1, num_classes], "meaning": "class probabilities"},
        "classes": list(schema.label_values),
        **info,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return module, [directory / MANIFEST, directory / TORCHSCRIPT, directory / SCHEMA, directory / PROFILE]


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
