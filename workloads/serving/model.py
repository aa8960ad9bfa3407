"""A loaded model version: model file (torch.export) + feature schema + input contract.

Shared by the Seldon wrapper (serving env) and the stream worker (main env). torch is
imported in `load()`, not at module import, so a process can fork before loading it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workloads.data.schema import FeatureSchema
from workloads.serving import registry
from workloads.serving.artifact import load_module, scoring_callable
from workloads.serving.contract import InputContract, impute_values

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """Everything needed to score a validated float32 batch."""

    version: registry.ModelVersion
    schema: FeatureSchema
    contract: InputContract
    module: Any  # the exported program's module (workloads.serving.artifact.load_module)
    output_names: list[str]
    load_seconds: float
    warmup_seconds: float
    profile: dict[str, Any] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _score: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._score = scoring_callable(self.module)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """float32 [n, width] (already validated) -> float32 [n, C]."""
        import torch

        with torch.inference_mode():
            out = self._score(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        result = out.detach().cpu().numpy()
        if result.ndim == 1:
            result = result[:, None]
        return result

    def positive_scores(self, outputs: np.ndarray) -> np.ndarray:
        """The score whose distribution is watched: P(last class) for binary/one column,
        the top probability for multiclass."""
        if outputs.shape[1] <= 2:
            return outputs[:, -1]
        return outputs.max(axis=1)


def output_names(schema: FeatureSchema, columns: int) -> list[str]:
    if columns == len(schema.label_values):
        return [f"proba_{value}" for value in schema.label_values]
    if columns == 1:
        return ["score"]
    return [f"output_{i}" for i in range(columns)]


def load(
    root: Path | str,
    model: str,
    alias: str | None = None,
    version: str | None = None,
    max_batch_rows: int = 1024,
    max_payload_bytes: int = 1_048_576,
    torch_threads: int | None = None,
    warmup_rounds: int = 20,
) -> LoadedModel:
    """Resolve, load and warm up one version. Raises `registry.RegistryError` when the
    version is missing or incomplete, `ValueError` when the artifact disagrees with the schema."""
    import torch

    start = time.perf_counter()
    resolved = registry.resolve(root, model, alias=alias, version=version)
    schema = FeatureSchema.from_json(resolved.schema_path)
    profile = json.loads(resolved.profile_path.read_text()) if resolved.profile_path.exists() else None
    threads = torch_threads or int(os.environ.get("STRATA_TORCH_THREADS", "1"))
    torch.set_num_threads(threads)
    module = load_module(resolved.artifact, what=f"{model} v{resolved.version}")
    loaded_at = time.perf_counter()
    contract = InputContract(schema, max_batch_rows, max_payload_bytes, impute_values(profile, schema))

    # warm-up: a batch of mid-range rows, then single rows; checks the output shape too
    low, high = schema.bounds()
    mid = np.where(np.isfinite(low) & np.isfinite(high), (low + high) / 2, np.where(np.isfinite(low), low, 0.0))
    probe = np.tile(mid.astype(np.float32), (min(max_batch_rows, 64), 1))
    with torch.inference_mode():
        sample = module(torch.from_numpy(probe)).detach().cpu().numpy()
        if sample.ndim not in (1, 2) or sample.shape[0] != probe.shape[0]:
            raise ValueError(
                f"{resolved.artifact}: output shape {tuple(sample.shape)} for input {tuple(probe.shape)}; "
                "expected [n, classes] or [n]"
            )
        for _ in range(warmup_rounds):
            module(torch.from_numpy(probe[:1]))
    columns = 1 if sample.ndim == 1 else sample.shape[1]
    done = time.perf_counter()
    log.info(
        "loaded %s version %s (alias %s) from %s in %.2fs, warm-up %.3fs",
        model, resolved.version, alias, resolved.path, loaded_at - start, done - loaded_at,
    )
    return LoadedModel(
        version=resolved,
        schema=schema,
        contract=contract,
        module=module,
        output_names=output_names(schema, columns),
        load_seconds=loaded_at - start,
        warmup_seconds=done - loaded_at,
        profile=profile,
    )
