"""The per-worker training function Ray Train runs (module level, importable by tests).

Each worker: builds the team's model, wraps it for DDP (`prepare_model`: gloo on CPU,
nccl on GPU), trains on its shard of the training split, evaluates on the validation
split (rank 0), and reports metrics with a checkpoint every epoch. On a restart
(a worker died; `FailureConfig.max_failures` allows it) the latest checkpoint is loaded
and training continues from the epoch after it, with the same data order and random
streams it would have had without the failure.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

STATE_FILE = "state.pt"


class Standardize(nn.Module):
    """(x - mean) / std with the training split's statistics baked in."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.where(std > 0, std, 1.0), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TrainModule(nn.Module):
    """The team's network behind an optional standardisation layer; returns logits."""

    def __init__(self, net: nn.Module, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        super().__init__()
        self.scale = Standardize(mean, std) if mean is not None and std is not None else nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.scale(x))


def build_train_module(hooks: Any, hparams: Mapping[str, Any], stats: Mapping[str, np.ndarray] | None) -> TrainModule:
    net = hooks.build_model(hparams)
    if hooks.standardize and stats is not None:
        return TrainModule(net, stats["mean"], stats["std"])
    return TrainModule(net)


def logits_to_probs(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    if num_classes == 2 and (logits.ndim == 1 or logits.shape[-1] == 1):
        p = torch.sigmoid(logits.reshape(-1))
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


@torch.no_grad()
def predict_probs(module: nn.Module, features: np.ndarray, num_classes: int, batch: int = 65_536) -> np.ndarray:
    module.eval()
    out = []
    for start in range(0, features.shape[0], batch):
        x = torch.from_numpy(np.ascontiguousarray(features[start : start + batch], dtype=np.float32))
        out.append(logits_to_probs(module(x), num_classes).numpy())
    return np.concatenate(out) if out else np.zeros((0, num_classes), dtype=np.float32)


@torch.no_grad()
def evaluate(module: nn.Module, hooks: Any, features: np.ndarray, labels: np.ndarray, loss_fn: Any) -> dict[str, float]:
    """val_loss (the team's loss on logits) + val_<metric> (the team's metrics on probs)."""
    module.eval()
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(labels)
    logits = module(x)
    probs = logits_to_probs(logits, hooks.num_classes).numpy()
    result = {"val_loss": float(loss_fn(logits, y))}
    result.update({f"val_{k}": float(v) for k, v in hooks.compute_metrics(probs, labels).items()})
    return result


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**31 - 1)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker function. `config` comes from the harness (see `runner.py`);
    a Tune trial overlays its sampled hyperparameters on `config["hparams"]`."""
    import ray
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from workloads.training.hooks import load_hooks

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    hooks = load_hooks(config["entrypoint"])
    hparams = dict(config["hparams"])
    for key in config.get("searched", ()):  # Tune's sampled values (top-level keys)
        hparams[key] = config[key]
    seed = int(config["seed"])
    epochs = int(config["epochs"])
    batch_size = int(hparams.get("batch_size", config["batch_size"]))
    torch.set_num_threads(max(1, int(config.get("threads", 1))))

    data = config["data"]
    if isinstance(data, ray.ObjectRef):
        data = ray.get(data)
    train_x = torch.from_numpy(data["train_x"])
    train_y = torch.from_numpy(data["train_y"])

    torch.manual_seed(seed)  # identical initial weights on every rank (DDP broadcasts rank 0's anyway)
    module = build_train_module(hooks, hparams, data.get("stats"))
    model = ray.train.torch.prepare_model(module)
    device = ray.train.torch.get_device()
    loss_fn = hooks.loss()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(hparams.get("lr", 1e-3)), weight_decay=float(hparams.get("weight_decay", 0.0))
    )

    start_epoch, history, resume_source = 1, [], "none"
    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
        resume_source = "ray"
    # Ray's controller learns of a checkpoint by polling the workers (every 2 s); a worker
    # killed right after persisting one can die before it was registered. Storage is the
    # truth: resume from the newest complete checkpoint there if it is newer.
    scanned = latest_persisted_state(config.get("checkpoint_root"), config.get("checkpoint_filesystem"))
    if scanned is not None and (state is None or scanned["epoch"] > state["epoch"]):
        state, resume_source = scanned, "storage"
    if state is not None:
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = int(state["epoch"]) + 1, list(state["history"])
    resumed_from = start_epoch

    shard = train_x.shape[0] // world  # equal shards: DDP needs the same number of steps on every rank
    report_seconds = 0.0  # time the previous epoch's ray.train.report took (upload + hand-off)
    for epoch in range(start_epoch, epochs + 1):
        started_at = time.time()
        started = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch, rank))  # dropout etc.: same stream after a resume
        order = np.random.default_rng([seed, epoch]).permutation(train_x.shape[0])[rank::world][:shard]
        train_loss = train_epoch(model, optimizer, loss_fn, train_x, train_y, torch.from_numpy(order), batch_size, device)
        train_seconds = time.perf_counter() - started

        info = {"epoch": epoch, "rank": rank, "world_size": world, "resumed_from": resumed_from, "pid": os.getpid()}
        if hooks.on_epoch_end is not None:
            hooks.on_epoch_end(epoch, info)

        metrics: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_seconds": train_seconds,
            "resumed_from": resumed_from,
            "resume_source": resume_source,
            "worker_pid": os.getpid(),
            "world_size": world,
            "prev_report_seconds": report_seconds,
        }
        if rank == 0:
            t = time.perf_counter()
            metrics.update(evaluate(_unwrap(model), hooks, data["val_x"], data["val_y"], loss_fn))
            metrics["eval_seconds"] = time.perf_counter() - t
            metrics["epoch_seconds"] = time.perf_counter() - started  # train + evaluation
            history.append(dict(metrics))
            with tempfile.TemporaryDirectory() as directory:
                t = time.perf_counter()
                save_state(Path(directory), model, optimizer, epoch, history, hparams)
                metrics["checkpoint_seconds"] = time.perf_counter() - t
                metrics["epoch_started_at"] = started_at  # worker clock: the benchmark's steady-state gaps
                t = time.perf_counter()
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory))
                report_seconds = time.perf_counter() - t
        else:
            metrics["epoch_started_at"] = started_at
            t = time.perf_counter()
            ray.train.report(metrics)
            report_seconds = time.perf_counter() - t


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Any,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> float:
    """One pass over `order` (row indices into the train tensors) in mini-batches;
    returns the mean training loss. Shared by the Ray worker and the plain-torch
    benchmark baseline, so both do exactly the same work per step."""
    model.train()
    on_cpu = torch.device(device).type == "cpu"
    total = torch.zeros((), dtype=torch.float64, device=device)  # tensor-side: no host sync per step
    batches = 0
    for begin in range(0, order.numel(), batch_size):
        batch = order[begin : begin + batch_size]
        if batch.numel() < 2 and begin > 0:
            break  # a 1-row remainder would break BatchNorm; same on every rank (equal shards)
        x, y = train_x[batch], train_y[batch]
        if not on_cpu:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        batches += 1
    return float(total) / max(batches, 1)


def save_state(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, history: list[dict[str, Any]], hparams: Mapping[str, Any]
) -> Path:
    """Write the resumable training state (one file) into `directory`."""
    path = Path(directory) / STATE_FILE
    torch.save(
        {
            "model": _unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "history": history,
            "hparams": dict(hparams),
        },
        path,
    )
    return path


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def latest_persisted_state(root: str | None, filesystem: Any = None) -> dict[str, Any] | None:
    """The newest checkpoint under `root` (this run's folder in the checkpoint storage: a
    path on `filesystem`, a local path, or a pyarrow-supported URI such as s3://) whose
    state file loads; partially written ones are skipped. None if there is none."""
    if not root:
        return None
    import io

    import pyarrow.fs as pafs

    if filesystem is not None:
        base = root
    elif "://" in root:
        filesystem, base = pafs.FileSystem.from_uri(root)
    else:
        filesystem, base = pafs.LocalFileSystem(), str(Path(root).resolve())
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except OSError:
        return None
    candidates = sorted(
        (i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")),
        reverse=True,  # names carry a timestamp: newest first
    )
    for path in candidates:
        try:
            with filesystem.open_input_stream(f"{path}/{STATE_FILE}") as stream:
                return torch.load(io.BytesIO(stream.read()), map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - missing or half-written: try an older one
            continue
    return None


def load_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    return torch.load(Path(checkpoint_dir) / STATE_FILE, map_location="cpu", weights_only=False)
