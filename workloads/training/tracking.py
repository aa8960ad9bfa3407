"""MLflow: tracking URI/experiments, run metadata, plots, model logging, registry.

Locally MLflow uses a sqlite backend and a local artifact root under the state dir
(`.strata/mlflow`); `MLFLOW_TRACKING_URI` points it at the platform's server instead.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from workloads.training.ray_jobs import REPO_ROOT  # noqa: E402

CHALLENGER = "challenger"
CHAMPION = "champion"


def default_state_dir() -> Path:
    return Path(os.environ.get("STRATA_STATE_DIR", Path.cwd() / ".strata")).resolve()


def default_tracking_uri(state_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}"


def setup_tracking(tracking_uri: str, state_dir: Path) -> None:
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


def experiment_id(name: str, tracking_uri: str, state_dir: Path) -> str:
    """One experiment per model; local backends keep artifacts under the state dir
    (MLflow's default would be ./mlruns in whatever directory you ran from)."""
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri:
        location = (state_dir / "mlflow" / "artifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created concurrently
        return client.get_experiment_by_name(name).experiment_id


def git_info() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = os.environ.get("STRATA_GIT_COMMIT") or git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"mlflow.source.git.commit": commit, "strata.git_dirty": str(bool(dirty)).lower()}


def library_versions() -> dict[str, str]:
    import numpy
    import optuna
    import ray
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "mlflow": mlflow.__version__,
        "numpy": numpy.__version__,
        "optuna": optuna.__version__,
    }


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    metric_keys = sorted({k for h in history for k in h if k.startswith("val_") and k != "val_loss"})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o", label="train_loss")
    axes[0].plot(epochs, [h.get("val_loss") for h in history], marker="o", label="val_loss")
    axes[0].set_xlabel("epoch")
    axes[0].set_title("loss")
    axes[0].legend()
    for key in metric_keys:
        axes[1].plot(epochs, [h.get(key) for h in history], marker="o", label=key)
    axes[1].set_xlabel("epoch")
    axes[1].set_title("validation metrics")
    if metric_keys:
        axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def log_torch_model(serving_module: Any, example: Any, num_classes: int, extra_files: list[Path]) -> Any:
    """Log the eager serving module (pt2 export; needs the input example and a tensor
    signature in MLflow 3) with the serving bundle as extra files."""
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    width = example.shape[1]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, width))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )
    return mlflow.pytorch.log_model(
        serving_module,
        name="model",
        signature=signature,
        input_example=np.ascontiguousarray(example, dtype=np.float32),
        serialization_format="pt2",
        extra_files=[str(p) for p in extra_files],
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
    )


def existing_version_for_run(name: str, run_id: str) -> Any | None:
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except MlflowException:
        return None
    return versions[0] if versions else None


def champion_version(name: str) -> Any | None:
    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def register(name: str, model_uri: str, run_id: str, tags: dict[str, str], description: str = "") -> Any:
    """Register once per run (a retried driver finds its earlier version)."""
    client = MlflowClient()
    existing = existing_version_for_run(name, run_id)
    if existing is not None:
        return existing
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description)
    version = mlflow.register_model(model_uri, name, tags=tags)
    return version


def set_alias(name: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(name, alias, version)


def download_version(name: str, alias_or_version: str, destination: Path) -> Path:
    uri = f"models:/{name}@{alias_or_version}" if not alias_or_version.isdigit() else f"models:/{name}/{alias_or_version}"
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination)))
