"""The contract between a model team and the training harness.

A model spec's `training.entrypoint` names `package.module:function`; calling the
function returns `ModelHooks`. The team writes the model, its data loader, loss and
metrics; the harness does Ray Train/Tune, checkpoints, MLflow, the gate and the
serving artifacts.

    def hooks() -> ModelHooks:
        return ModelHooks(
            build_model=lambda config: MyNet(hidden=config["hidden"]),   # returns logits
            load_data=lambda uri, seed: load_uri(uri, seed),
            feature_schema=MY_SCHEMA,
            num_classes=2,
            default_config={"lr": 1e-3, "hidden": 64},
        )

Models output logits: [n, num_classes] (or [n] / [n, 1] for binary). The harness
puts a standardisation layer in front (fitted on the training split) when
`standardize` is true, and a softmax behind for serving, so the exported artifact takes
raw features in schema order and returns class probabilities.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from workloads.data.dataset import Dataset
from workloads.data.schema import FeatureSchema
from workloads.spec import ModelSpec, SpecError
from workloads.training import metrics as metric_fns

if TYPE_CHECKING:
    import torch

BUILTIN_HPARAMS = ("lr", "weight_decay", "batch_size")  # read by the harness itself


def default_loss(num_classes: int) -> Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]:
    import torch.nn.functional as F

    def loss(logits: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
        if num_classes == 2 and (logits.ndim == 1 or logits.shape[-1] == 1):
            return F.binary_cross_entropy_with_logits(logits.reshape(-1), targets.float())
        return F.cross_entropy(logits, targets)

    return loss


@dataclass(frozen=True)
class ModelHooks:
    build_model: Callable[[Mapping[str, Any]], "torch.nn.Module"]
    load_data: Callable[[str, int], Dataset]
    feature_schema: FeatureSchema
    num_classes: int = 2
    default_config: Mapping[str, Any] = field(default_factory=lambda: {"lr": 1e-3})
    loss_fn: Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"] | None = None
    metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None
    standardize: bool = True
    # Called on every worker after each epoch's training step, before its checkpoint;
    # `info` has epoch, rank, world_size, attempt. Tests use it to inject faults.
    on_epoch_end: Callable[[int, Mapping[str, Any]], None] | None = None

    def loss(self) -> Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]:
        return self.loss_fn or default_loss(self.num_classes)

    def compute_metrics(self, probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        if self.metrics is not None:
            return dict(self.metrics(probs, labels))
        if self.num_classes == 2:
            return metric_fns.binary_metrics(probs, labels)
        return metric_fns.multiclass_metrics(probs, labels)

    def metric_names(self) -> list[str]:
        """Names reported per epoch (`val_loss` plus `val_<metric>`)."""
        rng = np.random.default_rng(0)
        labels = np.arange(8) % self.num_classes
        probs = rng.dirichlet(np.ones(self.num_classes), size=8)
        return ["val_loss"] + [f"val_{name}" for name in self.compute_metrics(probs, labels)]


def load_hooks(entrypoint: str, path: str = "training.entrypoint") -> ModelHooks:
    """Import `module:function` and call it. Errors name the spec property `path`."""
    module_name, _, function_name = entrypoint.partition(":")
    if not module_name or not function_name:
        raise SpecError([(path, f"must be 'package.module:function', got {entrypoint!r}")])
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SpecError([(path, f"cannot import module {module_name!r}: {error}")]) from None
    factory = getattr(module, function_name, None)
    if factory is None:
        raise SpecError([(path, f"module {module_name!r} has no attribute {function_name!r}")])
    if not callable(factory):
        raise SpecError([(path, f"{entrypoint} is not callable")])
    try:
        hooks = factory()
    except Exception as error:  # the team's code: report where it came from
        raise SpecError([(path, f"{entrypoint}() raised {type(error).__name__}: {error}")]) from error
    if not isinstance(hooks, ModelHooks):
        raise SpecError([(path, f"{entrypoint}() must return ModelHooks, got {type(hooks).__name__}")])
    return hooks


def check_spec_against_hooks(spec: ModelSpec, hooks: ModelHooks, prefix: str = "") -> None:
    """The parts of a spec only the model's code can check: hyperparameter names and
    metric names. Raises `SpecError` with property paths."""
    base = f"{prefix}." if prefix else ""
    problems: list[tuple[str, str]] = []
    known_params = sorted(set(hooks.default_config) | set(BUILTIN_HPARAMS))
    reported = hooks.metric_names()
    hpo = spec.training.hpo
    if hpo is not None:
        for key, param in hpo.space.items():
            if key not in known_params:
                problems.append(
                    (f"{base}training.hpo.space.{key}", f"unknown hyperparameter; the model accepts: {', '.join(known_params)}")
                )
            elif key == "batch_size" and param.type != "choice" and param.type != "randint":
                problems.append((f"{base}training.hpo.space.{key}", "batch_size must be searched with randint or choice"))
        if hpo.metric not in reported:
            problems.append((f"{base}training.hpo.metric", f"not reported by the model; reported: {', '.join(reported)}"))
        if hpo.trials < hpo.max_concurrent:
            pass  # fine: Tune simply runs fewer at once
    primary = spec.training.baseline.primary_metric
    if primary not in reported:
        problems.append((f"{base}training.baseline.primaryMetric", f"not reported by the model; reported: {', '.join(reported)}"))
    if hooks.feature_schema.task == "binary" and hooks.num_classes != 2:
        problems.append((f"{base}training.entrypoint", f"binary schema but num_classes={hooks.num_classes}"))
    if problems:
        raise SpecError(problems)
