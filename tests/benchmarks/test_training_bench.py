"""Training benchmarks: ratios measured side by side in one run (`make bench`).

    pytest tests/benchmarks/test_training_bench.py -m benchmark_suite -s --benchmark-enable

Prints, on this machine:
* Ray Train (1 worker) vs a plain torch loop on the same data, model, batch size,
  threads and epochs: steady-state seconds per epoch ratio (target <= 1.10) and Ray's
  start-up seconds (fit() to first epoch start) reported separately;
* 2 workers (DDP, gloo) vs 1 worker: steady-state epoch time ratio;
* Ray Tune (Optuna + ASHA) trials per minute.
Environment knobs: BENCH_ROWS (default 200000), BENCH_EPOCHS (default 4).
No timing assertions: only that every configuration ran.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.benchmark_suite

ROWS = int(os.environ.get("BENCH_ROWS", 200_000))
EPOCHS = int(os.environ.get("BENCH_EPOCHS", 4))
BATCH = 512
SEED = 7


def _payload():
    from workloads.data.dataset import load_uri, split
    from workloads.data.synthetic import FRAUD_SCHEMA
    from workloads.data.validation import validate

    data = validate(load_uri(f"synthetic://fraud?rows={ROWS}&seed={SEED}"), FRAUD_SCHEMA, 0.001).clean
    splits = split(data, SEED)
    return {
        "train_x": np.ascontiguousarray(splits.train.features, dtype=np.float32),
        "train_y": splits.train.labels.astype(np.int64),
        "val_x": np.ascontiguousarray(splits.val.features, dtype=np.float32),
        "val_y": splits.val.labels.astype(np.int64),
        "stats": None,
    }


def plain_torch_loop(payload, epochs: int) -> list[float]:
    """The same work as `train_loop_per_worker` (train + rank-0 evaluation), no Ray."""
    import torch

    from workloads.examples.fraud.model import hooks as fraud_hooks
    from workloads.training.loop import build_train_module, epoch_seed, evaluate

    hooks = fraud_hooks()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    module = build_train_module(hooks, hooks.default_config, None)
    loss_fn = hooks.loss()
    optimizer = torch.optim.AdamW(module.parameters(), lr=hooks.default_config["lr"], weight_decay=hooks.default_config["weight_decay"])
    x, y = torch.from_numpy(payload["train_x"]), torch.from_numpy(payload["train_y"])
    seconds = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        module.train()
        torch.manual_seed(epoch_seed(SEED, epoch, 0))
        index = torch.from_numpy(np.random.default_rng([SEED, epoch]).permutation(x.shape[0]))
        for begin in range(0, x.shape[0], BATCH):
            batch = index[begin : begin + BATCH]
            if batch.numel() < 2 and begin > 0:
                break
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(module(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
        evaluate(module, hooks, payload["val_x"], payload["val_y"], loss_fn)
        seconds.append(time.perf_counter() - started)
    return seconds


def ray_train(payload, epochs: int, workers: int, storage: Path, name: str) -> dict:
    """Steady-state epoch time = gaps between consecutive epoch reports seen by the
    Train controller (training + evaluation + checkpoint + report); start-up = fit()
    call to the first epoch's start."""
    import ray

    from workloads.training import ray_jobs

    events = storage / f"{name}.jsonl"
    settings = ray_jobs.TrainerSettings(
        run_name=name, storage=str(storage), events_path=str(events), workers=workers,
        cpus_per_worker=1, gpus_per_worker=0, max_failures=0,
    )
    config = {
        "entrypoint": "workloads.examples.fraud.model:hooks",
        "data": ray.put(payload),
        "hparams": {"batch_size": BATCH},
        "epochs": epochs, "batch_size": BATCH, "seed": SEED, "threads": 1,
    }
    from workloads.examples.fraud.model import DEFAULT_CONFIG

    config["hparams"].update(DEFAULT_CONFIG)
    started = time.time()
    result = ray_jobs.make_trainer(config, settings).fit()
    total = time.time() - started
    assert result.error is None, result.error
    reports = [e for e in ray_jobs.read_events(events) if e["event"] == "epoch"]
    times = [e["time"] for e in reports]
    first_start = times[0] - reports[0]["epoch_seconds"]
    return {
        "startup_s": first_start - started,
        "epoch_s": [b - a for a, b in zip(times, times[1:])],
        "first_epoch_s": reports[0]["epoch_seconds"],
        "total_s": total,
    }


def tune_trials_per_minute(payload_rows: int, storage: Path) -> dict:
    """4 trials x 2 epochs (max 2 concurrent) on the fraud example, through the runner's
    Tune path (Optuna + ASHA around Ray Train), timed end to end."""
    import ray

    from workloads.training import ray_jobs
    from workloads.training.cli import resolve_spec
    from workloads.training.runner import apply_overrides

    spec, prefix = resolve_spec("fraud")
    spec = apply_overrides(spec, {"training.hpo.trials": 4, "training.hpo.maxConcurrent": 2, "training.epochs": 2}, prefix)
    payload = _payload_small(payload_rows)
    from workloads.examples.fraud.model import DEFAULT_CONFIG

    base = {
        "entrypoint": spec.training.entrypoint, "data": ray.put(payload), "hparams": {"batch_size": BATCH, **DEFAULT_CONFIG},
        "epochs": 2, "batch_size": BATCH, "seed": SEED, "threads": 1,
    }
    settings = ray_jobs.TrainerSettings(
        run_name="bench-tune", storage=str(storage), events_path=str(storage / "tune.jsonl"), workers=1,
        cpus_per_worker=1, gpus_per_worker=0, max_failures=0,
    )
    started = time.time()
    _, grid = ray_jobs.run_tuner(spec, base, settings, trials=4, max_concurrent=2)
    minutes = (time.time() - started) / 60
    return {"trials": len(grid), "minutes": minutes, "trials_per_minute": len(grid) / minutes}


def _payload_small(rows: int):
    global ROWS
    saved, ROWS = ROWS, rows
    try:
        return _payload()
    finally:
        ROWS = saved


@pytest.fixture(scope="module")
def ray_runtime(request):
    if not request.config.getoption("benchmark_enable", False):
        pytest.skip("minutes of Ray runs: only with --benchmark-enable (make bench)")
    from workloads.training import ray_jobs

    ray_jobs.ensure_ray(num_cpus=2)
    yield
    import ray

    ray.shutdown()
    from tests.training.conftest import _kill_descendants

    _kill_descendants()


def test_training_overhead_and_scaling(ray_runtime, tmp_path, benchmark):
    payload = _payload()
    plain = plain_torch_loop(payload, EPOCHS)
    one = ray_train(payload, EPOCHS, 1, tmp_path, "bench-1w")
    two = ray_train(payload, EPOCHS, 2, tmp_path, "bench-2w")
    tune = tune_trials_per_minute(20_000, tmp_path)
    plain_steady = statistics.median(plain[1:])
    one_steady = statistics.median(one["epoch_s"])
    two_steady = statistics.median(two["epoch_s"])
    results = {
        "machine": f"{os.cpu_count()} CPUs",
        "rows": ROWS,
        "epochs": EPOCHS,
        "plain_epoch_s": plain_steady,
        "ray_1w_epoch_s": one_steady,
        "ray_1w_overhead_ratio": one_steady / plain_steady,
        "ray_1w_startup_s": one["startup_s"],
        "ray_2w_epoch_s": two_steady,
        "ray_2w_vs_1w_ratio": two_steady / one_steady,
        "ray_2w_startup_s": two["startup_s"],
        "tune_trials_per_minute": tune["trials_per_minute"],
        "tune_trials": tune["trials"],
    }
    print("\nTRAINING BENCHMARK " + json.dumps(results, indent=2))
    out = os.environ.get("BENCH_OUT")
    if out:
        Path(out).write_text(json.dumps(results, indent=2))
    benchmark.extra_info.update(results)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # numbers above; pytest-benchmark records extra_info
    assert len(one["epoch_s"]) == EPOCHS - 1 and len(two["epoch_s"]) == EPOCHS - 1 and tune["trials"] == 4
