"""Ray Train / Tune plumbing: cluster start, the trainer, the Tune trial wrapper.

The same code runs against a local Ray runtime (`ray.init()`; `strata train --local`)
and inside a KubeRay RayJob (RAY_ADDRESS set by the job submission).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workloads.spec import Direction, Hpo, ModelSpec

# Ray 2.60 defaults that break or slow a local run (set before `import ray`).
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_DEDUP_LOGS": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    # The Train controller drains ONE report per worker per poll (Ray 2.60 default: every
    # 2 s) and a worker's result queue holds one: with the default, training is throttled
    # to one epoch per 2 s whatever the epoch costs (measured: 0.94 s epochs were
    # reported every 2.0 s, and the worker blocks once the queue is full); start-up and
    # the final flush wait on the same clock, and worker failures are noticed late.
    # At 0.25 s a poll (one small actor call per worker) is cheap next to an epoch. Ray
    # propagates this from the driver to the controller and workers
    # (`get_env_vars_to_propagate`), so a RayJob's entrypoint sets it too.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
}
REPO_ROOT = Path(__file__).resolve().parents[2]


def configure_env() -> None:
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    # workers import the team's entrypoint module: make the repository importable
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *paths])


def ensure_ray(num_cpus: int | None = None, dashboard: bool = True) -> dict[str, float]:
    """Connect to RAY_ADDRESS if set, else start a local runtime (`dashboard`: Tune needs it,
    Ray Data programs do not). Returns resources."""
    configure_env()
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"log_to_driver": os.environ.get("STRATA_RAY_LOGS", "0") == "1"}
        if address:
            ray.init(address=address, **kwargs)
        else:
            start_local_ray(num_cpus, kwargs, dashboard)
    return dict(ray.cluster_resources())


# Ray gives a new raylet a fixed 30 s to register with its GCS, and its dashboard a fixed
# window to come up (neither configurable in 2.60); a loaded 2-core machine can miss either,
# so a local start is tried again a few times.
LOCAL_START_ATTEMPTS = 3
START_WINDOW_MISSED = ("timed out during startup", "the error message from the dashboard")


# Ray Train actors a one-node local runtime does not need: the preemption watcher polls for
# nodes being drained (spot reclaims on a cluster); here there is no other node, and each
# watcher is one more Python process per training attempt (two per HPO sweep of two).
# Ray Train propagates the variable from the driver to its controllers.
LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def start_local_ray(num_cpus: int | None, kwargs: dict[str, Any], dashboard: bool = True) -> None:
    import ray
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_fixed

    def start_timed_out(error: BaseException) -> bool:
        if not any(sign in str(error) for sign in START_WINDOW_MISSED):
            return False
        ray.shutdown()  # whatever the failed start left connected, before the next try
        return True

    @retry(retry=retry_if_exception(start_timed_out), stop=stop_after_attempt(LOCAL_START_ATTEMPTS),
           wait=wait_fixed(2), reraise=True)
    def start() -> None:
        # The dashboard must be on: Tune over Train waits on it in Ray 2.60.
        ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1", **kwargs)

    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    start()


configure_env()

from ray.train import UserCallback  # noqa: E402 - after the environment is set


class EventLog(UserCallback):
    """Ray Train callback (runs in the Train controller) appending one JSON line per
    report or worker failure to a file: the CLI's progress display and the MLflow
    record of which epochs ran in which attempt both read it."""

    def __init__(self, path: str, trial: str | None = None):
        self.path = path
        self.trial = trial

    def _write(self, record: dict[str, Any]) -> None:
        record = {"time": time.time(), "trial": self.trial, **record}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        self._write({"event": "epoch", "checkpoint": getattr(checkpoint, "path", None), **metrics[0]})

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        self._write(
            {
                "event": "worker_failure",
                "ranks": sorted(worker_exceptions),
                "errors": [f"{type(e).__name__}: {e}"[:400] for e in worker_exceptions.values()],
            }
        )


def read_events(path: Path | str) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written
    return events


@dataclass(frozen=True)
class TrainerSettings:
    run_name: str
    storage: str  # absolute local path, or bucket/prefix on `filesystem`
    events_path: str
    workers: int
    cpus_per_worker: float
    gpus_per_worker: int
    max_failures: int
    filesystem: Any = None  # pyarrow filesystem of `storage` (S3); None: the local file system


def make_trainer(
    loop_config: dict[str, Any], settings: TrainerSettings, callbacks: list[Any] | None = None, trial: str | None = None
) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from workloads.training.loop import train_loop_per_worker

    use_gpu = settings.gpus_per_worker > 0
    resources: dict[str, float] = {"CPU": settings.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = settings.gpus_per_worker
    root = settings.storage.rstrip("/") + "/" + settings.run_name  # Ray Train's run folder
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**loop_config, "checkpoint_root": root, "checkpoint_filesystem": settings.filesystem},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=settings.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=settings.run_name,
            storage_path=settings.storage,
            storage_filesystem=settings.filesystem,
            failure_config=FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[EventLog(settings.events_path, trial), *(callbacks or [])],
        ),
    )


def tune_trial(config: dict[str, Any], base: dict[str, Any], settings: TrainerSettings) -> None:
    """One Tune trial = one Ray Train run (wrapping `fit()` in a function trainable is
    the supported way to combine them in Ray 2.60). Metrics flow back to Tune through
    `TuneReportCallback`, so ASHA can stop the trial between epochs."""
    from dataclasses import replace

    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    searched = sorted(config)
    loop_config = {**base, **{k: config[k] for k in searched}, "searched": searched}
    trial_settings = replace(settings, run_name=f"{settings.run_name}-{trial_id}")
    make_trainer(loop_config, trial_settings, callbacks=[TuneReportCallback()], trial=trial_id).fit()


def search_space(hpo: Hpo) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {}
    for key, param in hpo.space.items():
        if param.type == "uniform":
            space[key] = tune.uniform(param.low, param.high)
        elif param.type == "loguniform":
            space[key] = tune.loguniform(param.low, param.high)
        elif param.type == "randint":
            space[key] = tune.randint(param.low, param.high + 1)  # spec bounds are inclusive
        else:
            space[key] = tune.choice(list(param.values))
    return space


def run_tuner(
    spec: ModelSpec, base: dict[str, Any], settings: TrainerSettings, trials: int, max_concurrent: int
) -> tuple[Any, Any]:
    """Ray Tune with Optuna search (seeded) and ASHA. Returns (best_result, result_grid)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    hpo = spec.training.hpo
    assert hpo is not None
    mode = "max" if hpo.direction is Direction.MAX else "min"
    searcher = ConcurrencyLimiter(
        OptunaSearch(metric=hpo.metric, mode=mode, seed=spec.training.seed), max_concurrent=max_concurrent
    )
    scheduler = ASHAScheduler(
        time_attr="epoch",
        max_t=int(base["epochs"]),
        grace_period=min(hpo.grace_period_epochs, int(base["epochs"])),
        reduction_factor=2,
    )
    # the trial function only waits on its Train run: no CPU (a token of memory, since
    # Ray rejects an empty resource request), so trials do not starve their workers
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, base=base, settings=settings), {"cpu": 0, "memory": 64 * 1024 * 1024}
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(hpo),
        tune_config=tune.TuneConfig(
            metric=hpo.metric, mode=mode, search_alg=searcher, scheduler=scheduler, num_samples=trials
        ),
        run_config=tune.RunConfig(name=f"{settings.run_name}-tune", storage_path=settings.storage,
                                   storage_filesystem=settings.filesystem, verbose=0),
    )
    grid = tuner.fit()
    best = grid.get_best_result(metric=hpo.metric, mode=mode, scope="last")
    return best, grid
