"""The model file of a serving bundle: the one writer and the one loader (torch, imported lazily).

A bundle's model is a `torch.export` program (`model.pt2`, bundle version 2): float32
[rows, features] raw features in schema order -> float32 [rows, classes] probabilities,
with the row count dynamic. TorchScript (`model.torchscript.pt`, bundle version 1) is
deprecated in torch and no longer written; version-1 files still load, with a warning that
names the model version to retrain.

The trainer (`workloads.training.artifacts`), the test registry (`workloads.serving.testing`),
the Seldon wrapper and the stream worker (`workloads.serving.model`) all go through
`save_module` / `load_module`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EXPORTED = "model.pt2"  # torch.export (bundle version 2)
LEGACY_TORCHSCRIPT = "model.torchscript.pt"  # TorchScript (bundle version 1): load only
MAX_ROWS = 1_000_000  # the dynamic row dimension's upper bound (serving limits are far below)


class ArtifactError(ValueError):
    """A model file that cannot be exported, loaded or trusted (the message says what to do)."""


def save_module(module: Any, example: np.ndarray, path: Path | str) -> Path:
    """Export `module` (eval mode) with a dynamic row count to `path` (`model.pt2`) and
    check that the saved program reproduces the eager outputs for one row and for many."""
    import torch

    path = Path(path)
    if path.name != EXPORTED:
        raise ArtifactError(f"{path}: a serving model file is named {EXPORTED}")
    module = module.eval()
    x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
    if x.ndim != 2 or x.shape[0] < 2:
        raise ArtifactError(f"the export example must be [rows >= 2, features], got {tuple(x.shape)}")
    rows = torch.export.Dim("rows", min=1, max=MAX_ROWS)
    try:
        with torch.no_grad():
            program = torch.export.export(module, (x,), dynamic_shapes=({0: rows},))
    except Exception as error:  # noqa: BLE001 - team code torch.export cannot trace: say why
        raise ArtifactError(
            f"torch.export could not export the serving module ({type(error).__name__}: {str(error)[:500]}); "
            "the forward pass must be traceable for any row count (no data-dependent Python control flow)"
        ) from error
    torch.export.save(program, str(path))
    reloaded = load_module(path)
    with torch.no_grad():
        for probe in (x[:1], x):
            expected, got = module(probe), reloaded(probe)
            if expected.shape != got.shape or not torch.allclose(expected, got, atol=1e-5):
                raise ArtifactError(f"{path}: the exported program does not reproduce the eager outputs "
                                    f"for {probe.shape[0]} row(s)")
    return path


def load_module(path: Path | str, what: str = "") -> Any:
    """The callable model of a bundle's file: `model.pt2` (torch.export) or a version-1
    `model.torchscript.pt`. `what` names the model version in messages (e.g. "fraud v3")."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such model file")
    if path.name == LEGACY_TORCHSCRIPT:
        log.warning("%s: bundle version 1 (TorchScript, deprecated in torch) at %s: it still loads, but retrain "
                    "%s so that its bundle is version 2 (torch.export, %s) before torch drops TorchScript",
                    what or "a model version", path, what or "that version", EXPORTED)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # said once, above, with what to do
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        return module.eval()
    if path.name != EXPORTED:
        raise ArtifactError(f"{path}: unknown model file (a serving bundle has {EXPORTED}, "
                            f"or {LEGACY_TORCHSCRIPT} from bundle version 1)")
    try:
        program = torch.export.load(str(path))
    except Exception as error:  # noqa: BLE001
        raise ArtifactError(f"{path}: not a torch.export program this torch ({torch.__version__}) can load "
                            f"({type(error).__name__}: {str(error)[:300]}); retrain {what or 'the model version'}"
                            ) from error
    return program.module()


def scoring_callable(module: Any) -> Any:
    """What a server calls per request: an exported module's `forward` itself. Its
    nn.Module hooks re-check dtype and shape constraints on every call (most of the cost of
    a small model's call); the input contract has already made every batch float32
    [rows, features], which is what they check."""
    import torch

    if isinstance(module, torch.fx.GraphModule):
        return module.forward
    return module
