"""Train one model from its spec: validate data, Ray Train (+ Tune), MLflow, gate.

    outcome = run_training(spec, TrainOptions(smoke=True))

Order of work (each step is recorded on the MLflow run):
1. resolve the team's hooks; check the spec's HPO space and metric names against them;
2. load and validate the data (refuse above `maxInvalidRowFraction`, quarantine the rest);
3. split train/val/test (seeded), digest, standardisation stats, drift reference profile;
4. Ray Train `TorchTrainer` (checkpoint each epoch; restarts resume from the last
   checkpoint), or Ray Tune + Optuna + ASHA around it when `training.hpo` is set;
5. evaluate on the held-out split vs the trivial baseline and the `champion`;
6. log the model (pt2, signature, input example) with the serving bundle; register it
   once; alias `challenger` only if the gate passed; otherwise record why on the run.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from workloads.data.dataset import Dataset, parse_uri, split
from workloads.data.profile import build_profile, prediction_score
from workloads.data.validation import DataValidationError, validate
from workloads.spec import ModelSpec, SpecError, parse_model_spec
from workloads.training import gate as gate_mod
from workloads.training.hooks import ModelHooks, check_spec_against_hooks, load_hooks
from workloads.training.metrics import log_loss, prior_probs

SMOKE_MAX_ROWS = 20_000
SMOKE_MAX_EPOCHS = 2
SMOKE_MAX_TRIALS = 2


class TrainingError(RuntimeError):
    """Training ran but failed (all retries used, or the result is unusable)."""


@dataclass
class TrainOptions:
    state_dir: Path
    tracking_uri: str
    storage: str | None = None  # checkpoint root: local path or s3://...; default <state>/checkpoints
    smoke: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted spec paths -> values
    run_name: str | None = None
    num_cpus: int | None = None  # local Ray runtime size (default: all cores)
    on_event: Callable[[dict[str, Any]], None] | None = None  # progress sink (CLI)
    spec_path: str = ""  # property-path prefix for error messages
    trigger: str = "manual"  # who started the run (schedule|manual|retrain|ci): the `strata.trigger` tag


@dataclass
class TrainOutcome:
    model: str
    run_id: str
    experiment_id: str
    run_dir: Path
    dataset_digest: str
    validation: dict[str, Any]
    history: list[dict[str, Any]]
    events: list[dict[str, Any]]
    holdout: dict[str, dict[str, float] | None]
    gate: gate_mod.GateDecision
    hparams: dict[str, Any]
    registered_version: str | None
    alias: str | None
    model_uri: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- spec


def apply_overrides(spec: ModelSpec, overrides: Mapping[str, Any], path: str = "") -> ModelSpec:
    """`{"training.epochs": 2}` -> a re-validated spec (errors name the property path)."""
    if not overrides:
        return spec
    raw = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    for dotted, value in overrides.items():
        node = raw
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise SpecError([(f"{path}.{dotted}" if path else dotted, "cannot override inside a non-mapping")])
        node[keys[-1]] = value
    return parse_model_spec(raw, path)


def smoke_spec(spec: ModelSpec, path: str = "") -> ModelSpec:
    """Small settings for a quick end-to-end check: <= 2 epochs, <= 2 trials, and
    synthetic data capped at 20k rows."""
    overrides: dict[str, Any] = {"training.epochs": min(spec.training.epochs, SMOKE_MAX_EPOCHS)}
    if spec.training.hpo is not None:
        overrides["training.hpo.trials"] = min(spec.training.hpo.trials, SMOKE_MAX_TRIALS)
        overrides["training.hpo.gracePeriodEpochs"] = 1
    scheme, location, query = parse_uri(spec.training.data)
    if scheme == "synthetic" and int(float(query.get("rows", 200_000))) > SMOKE_MAX_ROWS:
        query["rows"] = str(SMOKE_MAX_ROWS)
        overrides["training.data"] = f"{scheme}://{location}?" + "&".join(f"{k}={v}" for k, v in query.items())
    return apply_overrides(spec, overrides, path)


def validate_search_space(spec: ModelSpec, hooks: ModelHooks, prefix: str = "") -> None:
    """Build the model at every end of every searched range (and every choice) and run
    a zero batch through it, so a bad space fails now, naming its property, instead of
    inside a Tune trial an hour later."""
    import torch

    from workloads.training.loop import build_train_module

    hpo = spec.training.hpo
    if hpo is None:
        return
    base = f"{prefix}." if prefix else ""
    problems = []
    for key, param in hpo.space.items():
        candidates = list(param.values) if param.type == "choice" else [param.low, param.high]
        for value in candidates:
            config = {**hooks.default_config, key: value}
            try:
                module = build_train_module(hooks, config, None)
                with torch.no_grad():
                    module.eval()(torch.zeros(2, hooks.feature_schema.width))
                if key in ("lr", "weight_decay") and not (isinstance(value, (int, float)) and value >= 0):
                    raise ValueError(f"{key} must be a non-negative number")
                if key == "batch_size" and not (isinstance(value, int) and value >= 1):
                    raise ValueError("batch_size must be a positive integer")
            except Exception as error:  # noqa: BLE001 - report any failure of the team's code
                problems.append(
                    (f"{base}training.hpo.space.{key}", f"value {value!r} breaks the model: {type(error).__name__}: {error}")
                )
                break
    if problems:
        raise SpecError(problems)


def prepare(spec: ModelSpec, prefix: str = "") -> ModelHooks:
    """Everything that can fail before any data or cluster work, with property paths."""
    base = f"{prefix}." if prefix else ""
    hooks = load_hooks(spec.training.entrypoint, f"{base}training.entrypoint")
    check_spec_against_hooks(spec, hooks, prefix)
    validate_search_space(spec, hooks, prefix)
    return hooks


# ----------------------------------------------------------------------------- run


def _emit(options: TrainOptions, event: dict[str, Any]) -> None:
    if options.on_event is not None:
        options.on_event(event)


def _split_uri_seed(uri: str, default: int) -> int:
    _, _, query = parse_uri(uri)
    return int(query["seed"]) if "seed" in query else default


def run_training(spec: ModelSpec, options: TrainOptions) -> TrainOutcome:
    from workloads.training import tracking  # MLflow + Ray only from here on

    started = time.perf_counter()
    seconds: dict[str, float] = {}
    if options.smoke:
        spec = smoke_spec(spec, options.spec_path)
    if options.overrides:  # explicit overrides win over the smoke caps
        spec = apply_overrides(spec, options.overrides, options.spec_path)
    hooks = prepare(spec, options.spec_path)
    training = spec.training

    state_dir = options.state_dir
    run_name = options.run_name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run_dir = state_dir / "runs" / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = options.storage or str((state_dir / "checkpoints").resolve())
    if "://" not in storage:
        Path(storage).mkdir(parents=True, exist_ok=True)
    storage_path, storage_fs = checkpoint_storage(storage)
    events_path = run_dir / "events.jsonl"

    tracking.setup_tracking(options.tracking_uri, state_dir)
    experiment = tracking.experiment_id(spec.name, options.tracking_uri, state_dir)
    import mlflow

    with mlflow.start_run(experiment_id=experiment, run_name=run_name) as run:
        run_id = run.info.run_id
        _emit(options, {"event": "run", "run_id": run_id, "run_name": run_name})
        mlflow.set_tags(
            {
                **tracking.git_info(),
                "strata.model": spec.name,
                "strata.team": spec.team,
                "strata.owner": spec.owner,
                "strata.entrypoint": training.entrypoint,
                "strata.data_uri": training.data,
                "strata.smoke": str(options.smoke).lower(),
                "strata.status": "running",
                "strata.trigger": options.trigger,
                **{f"strata.version.{k}": v for k, v in tracking.library_versions().items()},
            }
        )
        mlflow.log_dict(spec.model_dump(by_alias=True, mode="json", exclude_none=True), "spec.json")

        # ---- data
        t = time.perf_counter()
        _emit(options, {"event": "phase", "phase": "data"})
        data_seed = _split_uri_seed(training.data, training.seed)
        raw = hooks.load_data(training.data, data_seed)
        lake_meta = {f"strata.{k}": str(v) for k, v in raw.meta.items() if k.startswith("lake.")}
        if lake_meta:  # the exact gold version (and its content digest) this run trained on
            mlflow.set_tags(lake_meta)
        try:
            validated = validate(raw, hooks.feature_schema, training.baseline.max_invalid_row_fraction)
        except DataValidationError as error:
            if error.report is not None:
                mlflow.log_dict(error.report.to_dict(), "data/validation_report.json")
            mlflow.set_tags({"strata.status": "refused", "strata.refusal_reason": str(error)[:4000]})
            mlflow.end_run(status="FAILED")
            raise
        validated.write(run_dir / "data")
        mlflow.log_artifacts(str(run_dir / "data"), "data")
        dataset = validated.clean
        digest = dataset.digest()
        splits = split(dataset, training.seed)
        stats = {
            "mean": splits.train.features.mean(axis=0, dtype=np.float64).astype(np.float32),
            "std": splits.train.features.std(axis=0, dtype=np.float64).astype(np.float32),
        }
        mlflow.set_tags({"strata.dataset_digest": digest, "strata.quarantined_rows": str(validated.report.invalid_rows)})
        mlflow.log_params(
            {
                "data_uri": training.data,
                "data_seed": data_seed,
                "seed": training.seed,
                "init_seed": training.weights_seed,
                "dataset_digest": digest,
                "rows_total": validated.report.rows,
                "rows_valid": validated.report.valid_rows,
                "rows_train": len(splits.train),
                "rows_val": len(splits.val),
                "rows_holdout": len(splits.test),
                "epochs": training.epochs,
                "batch_size": training.batch_size,
                "workers": training.workers,
                "cpu_per_worker": training.resources.cpu,
                "gpu_per_worker": training.resources.gpu,
                "max_failures": training.max_failures,
                "hpo_trials": training.hpo.trials if training.hpo else 0,
            }
        )
        _log_dataset_input(dataset, training.data)
        mlflow.log_metrics({"data_invalid_fraction": validated.report.invalid_fraction, "data_invalid_rows": validated.report.invalid_rows})
        seconds["data"] = time.perf_counter() - t

        # ---- train
        t = time.perf_counter()
        _emit(options, {"event": "phase", "phase": "ray"})
        from workloads.training import ray_jobs

        resources = ray_jobs.ensure_ray(options.num_cpus)
        concurrency = _check_fits(spec, resources, options.spec_path)
        seconds["ray_start"] = time.perf_counter() - t
        t = time.perf_counter()
        import ray

        payload = {
            "train_x": np.ascontiguousarray(splits.train.features, dtype=np.float32),
            "train_y": splits.train.labels.astype(np.int64),
            "val_x": np.ascontiguousarray(splits.val.features, dtype=np.float32),
            "val_y": splits.val.labels.astype(np.int64),
            "stats": stats,
        }
        hparams = {"batch_size": training.batch_size, **hooks.default_config}
        base = {
            "entrypoint": training.entrypoint,
            "data": ray.put(payload),
            "hparams": hparams,
            "epochs": training.epochs,
            "batch_size": training.batch_size,
            "seed": training.weights_seed,
            "threads": max(1, int(training.resources.cpu)),
        }
        settings = ray_jobs.TrainerSettings(
            run_name=run_name,
            storage=storage_path,
            filesystem=storage_fs,
            events_path=str(events_path),
            workers=training.workers,
            cpus_per_worker=training.resources.cpu,
            gpus_per_worker=training.resources.gpu,
            max_failures=training.max_failures,
        )
        _emit(options, {"event": "phase", "phase": "train", "epochs": training.epochs, "events": str(events_path),
                        "trials": training.hpo.trials if training.hpo else 1})
        trials: list[dict[str, Any]] = []
        if training.hpo is None:
            result = ray_jobs.make_trainer(base, settings).fit()
            if result.error is not None:
                _fail(f"training failed after {training.max_failures} retries: {result.error}")
            checkpoint = result.checkpoint
        else:
            best, grid = ray_jobs.run_tuner(spec, base, settings, training.hpo.trials, min(training.hpo.max_concurrent, concurrency))
            trials = _trial_summaries(grid, training.hpo.metric)
            if best.error is not None or "checkpoint_path" not in (best.metrics or {}):
                _fail(f"no successful HPO trial: {best.error}")
            from ray.train import Checkpoint

            checkpoint = Checkpoint(best.metrics["checkpoint_path"], filesystem=storage_fs)
            hparams = {**hparams, **{k: best.config[k] for k in training.hpo.space}}
            mlflow.log_dict({"trials": trials, "best": {k: best.config[k] for k in training.hpo.space}}, "hpo/trials.json")
            _log_trials_as_child_runs(experiment, run_name, trials)
        if checkpoint is None:
            _fail("training finished without a checkpoint")
        from workloads.training.loop import build_train_module, load_state, predict_probs

        with checkpoint.as_directory() as directory:
            state = load_state(directory)
        seconds["train"] = time.perf_counter() - t
        history = state["history"]
        hparams = {**hparams, **state.get("hparams", {})}
        mlflow.log_params({f"hp_{k}": v for k, v in hparams.items()})
        for record in history:
            mlflow.log_metrics(
                {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and k not in ("epoch", "worker_pid")},
                step=int(record["epoch"]),
            )
        events = ray_jobs.read_events(events_path)
        attempts = _attempts(history)
        mlflow.set_tags({"strata.attempts": str(len(attempts)), "strata.epochs_completed": str(len(history))})
        mlflow.log_dict({"attempts": attempts, "events": events}, "train/epochs.json")
        if (run_dir / "events.jsonl").is_file():
            mlflow.log_artifact(str(events_path), "train")

        # ---- evaluate + gate
        t = time.perf_counter()
        _emit(options, {"event": "phase", "phase": "evaluate"})
        module = build_train_module(hooks, hparams, stats)
        module.load_state_dict(state["model"])
        module.eval()
        holdout = _holdout_metrics(hooks, module, splits)
        champion_metrics, champion_ver, champion_problem = _champion_metrics(spec, hooks, splits, run_dir)
        holdout["champion"] = champion_metrics
        decision = gate_mod.decide(
            training.baseline,
            holdout["candidate"],
            holdout["trivial"],
            champion_metrics,
            champion_ver,
            champion_problem,
        )
        mlflow.log_metrics(holdout["candidate"])
        if holdout["trivial"]:
            mlflow.log_metrics({f"trivial_{k}": v for k, v in holdout["trivial"].items() if math.isfinite(v)})
        if champion_metrics:
            mlflow.log_metrics({f"champion_{k}": v for k, v in champion_metrics.items() if math.isfinite(v)})

        # ---- artifacts: curves, evaluation report, serving bundle, model
        from workloads.training import artifacts
        from workloads.training.tracking import plot_curves

        mlflow.log_artifact(str(plot_curves(history, run_dir / "curves.png", f"{spec.name} ({run_name})")), "plots")
        report = {
            "model": spec.name,
            "run": run_name,
            "runId": run_id,
            "datasetDigest": digest,
            "holdoutRows": len(splits.test),
            "holdout": holdout,
            "gate": decision.to_dict(),
            "hparams": hparams,
            "confusionMatrix": _confusion(predict_probs(module, splits.test.features, hooks.num_classes), splits.test.labels, hooks.num_classes),
            "validation": validated.report.to_dict(),
        }
        (run_dir / "evaluation_report.json").write_text(json.dumps(report, indent=2, default=str, sort_keys=True) + "\n")
        mlflow.log_artifact(str(run_dir / "evaluation_report.json"), "evaluation")
        (run_dir / "evaluation_report.md").write_text(_report_markdown(report))
        mlflow.log_artifact(str(run_dir / "evaluation_report.md"), "evaluation")

        # the reference for prediction drift: the trained model's scores on its training rows
        reference_scores = prediction_score(predict_probs(module, splits.train.features, hooks.num_classes))
        profile = build_profile(splits.train.features, splits.train.names, seed=training.seed,
                                predictions=reference_scores)
        example = splits.val.features[:8]
        serving, bundle_files = artifacts.write_bundle(
            run_dir / "bundle",
            module,
            hooks.feature_schema,
            profile,
            example,
            hooks.num_classes,
            {"model": spec.name, "runId": run_id, "datasetDigest": digest, "hparams": hparams, "holdout": holdout["candidate"]},
        )
        info = tracking.log_torch_model(serving, example, hooks.num_classes, bundle_files)
        seconds["evaluate_and_log"] = time.perf_counter() - t

        version = None
        alias = None
        mlflow.set_tags(
            {
                "strata.gate": "passed" if decision.passed else "failed",
                "strata.gate_reason": decision.reason[:4000],
                "strata.gate_metric": decision.metric,
            }
        )
        if decision.passed:
            registered = tracking.register(
                spec.name,
                info.model_uri,
                run_id,
                tags={"strata.dataset_digest": digest, "strata.gate": "passed", "strata.run_name": run_name},
                description=spec.description,
            )
            version = str(registered.version)
            tracking.set_alias(spec.name, tracking.CHALLENGER, version)
            alias = tracking.CHALLENGER
            exported = _export_for_serving(spec.name, version, alias, run_dir / "bundle", state_dir, run_id, digest, holdout)
            mlflow.set_tags(
                {"strata.registered_version": version, "strata.alias": alias, "strata.serving_export": str(exported)}
            )
        seconds["total"] = time.perf_counter() - started
        mlflow.log_metrics({f"seconds_{k}": v for k, v in seconds.items()})
        mlflow.set_tag("strata.status", "finished")
        _emit(options, {"event": "done", "gate": decision.to_dict(), "version": version})
        return TrainOutcome(
            model=spec.name,
            run_id=run_id,
            experiment_id=experiment,
            run_dir=run_dir,
            dataset_digest=digest,
            validation=validated.report.to_dict(),
            history=history,
            events=events,
            holdout=holdout,
            gate=decision,
            hparams=hparams,
            registered_version=version,
            alias=alias,
            model_uri=info.model_uri,
            trials=trials,
            seconds=seconds,
        )


def _export_for_serving(
    model: str, version: str, alias: str, bundle: Path, state_dir: Path, run_id: str, digest: str, holdout: dict[str, Any]
) -> Path:
    """Copy the registered version's serving files into the local registry export that
    the serving and streaming processes read without MLflow (`workloads.serving.registry`;
    `$STRATA_REGISTRY_DIR`, default `<state dir>/registry`)."""
    import os

    from workloads.serving import registry
    from workloads.training import artifacts

    root = Path(os.environ.get("STRATA_REGISTRY_DIR") or state_dir / "registry")
    manifest = json.loads((bundle / artifacts.MANIFEST).read_text())
    exported = registry.export_version(
        root,
        model,
        version,
        artifact=bundle / artifacts.MODEL_FILE,
        schema_json=bundle / artifacts.SCHEMA,
        profile_json=bundle / artifacts.PROFILE,
        info={"run_id": run_id, "dataset_digest": digest, "metrics": holdout["candidate"], "manifest": manifest},
        aliases=(alias,),
    )
    return exported.path


def _fail(message: str) -> None:
    import mlflow

    mlflow.set_tags({"strata.status": "failed", "strata.failure": message[:4000]})
    mlflow.end_run(status="FAILED")
    raise TrainingError(message)


def checkpoint_storage(storage: str) -> tuple[str, Any]:
    """(path, filesystem) for Ray Train: an `s3://bucket/prefix` on the S3 of the standard
    variables (SeaweedFS locally, AWS in a pod) as `bucket/prefix` on an explicit pyarrow
    filesystem; a local path as it is (None: Ray's local file system); any other URI as
    pyarrow resolves it."""
    if "://" not in storage:
        return storage, None
    if storage.startswith("s3://"):
        from workloads.data.storage import S3Settings

        return storage.removeprefix("s3://").rstrip("/"), S3Settings.from_env().arrow_filesystem()
    import pyarrow.fs

    filesystem, path = pyarrow.fs.FileSystem.from_uri(storage)
    return path, filesystem


def _check_fits(spec: ModelSpec, resources: Mapping[str, float], prefix: str) -> int:
    """Fail fast (instead of waiting forever for resources) when the cluster cannot
    hold one training run; return how many HPO trials fit at once."""
    base = f"{prefix}." if prefix else ""
    training = spec.training
    need_cpu = training.workers * training.resources.cpu
    need_gpu = training.workers * training.resources.gpu
    have_cpu, have_gpu = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if need_cpu > have_cpu:
        raise SpecError([(f"{base}training.workers", f"{training.workers} workers x {training.resources.cpu} CPU need {need_cpu:g} CPUs; the Ray cluster has {have_cpu:g}")])
    if need_gpu > have_gpu:
        raise SpecError([(f"{base}training.resources.gpu", f"{training.workers} workers x {training.resources.gpu} GPU need {need_gpu:g} GPUs; the Ray cluster has {have_gpu:g}")])
    fits = int(have_cpu // need_cpu) if need_cpu else 1
    if need_gpu:
        fits = min(fits, int(have_gpu // need_gpu))
    return max(1, fits)


def _log_dataset_input(dataset: Dataset, uri: str) -> None:
    import mlflow

    try:
        sample = dataset.take(np.arange(min(len(dataset), 10_000)))
        ds = mlflow.data.from_numpy(sample.features, targets=sample.labels, source=uri, name=uri.split("?")[0])
        mlflow.log_input(ds, context="training")
    except Exception:  # noqa: BLE001 - lineage is nice to have; the digest tag is the record
        pass


def _attempts(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group epochs by the worker process that ran them: one group per (re)start."""
    attempts: list[dict[str, Any]] = []
    for record in history:
        key = (record.get("resumed_from"), record.get("worker_pid"))
        if not attempts or attempts[-1]["key"] != key:
            attempts.append({"key": key, "resumed_from": record.get("resumed_from"), "worker_pid": record.get("worker_pid"), "epochs": []})
        attempts[-1]["epochs"].append(record["epoch"])
    for attempt in attempts:
        attempt.pop("key")
    return attempts


def _holdout_metrics(hooks: ModelHooks, module: Any, splits: Any) -> dict[str, dict[str, float] | None]:
    from workloads.training.loop import predict_probs

    labels = splits.test.labels
    probs = predict_probs(module, splits.test.features, hooks.num_classes)
    candidate = {"holdout_loss": log_loss(probs, labels)}
    candidate.update({f"holdout_{k}": float(v) for k, v in hooks.compute_metrics(probs, labels).items()})
    trivial = None
    prior = prior_probs(splits.train.labels, hooks.num_classes, labels.size)
    trivial = {"holdout_loss": log_loss(prior, labels)}
    trivial.update({f"holdout_{k}": float(v) for k, v in hooks.compute_metrics(prior, labels).items()})
    return {"candidate": candidate, "trivial": trivial}


def _champion_metrics(
    spec: ModelSpec, hooks: ModelHooks, splits: Any, run_dir: Path
) -> tuple[dict[str, float] | None, str | None, str | None]:
    """Score the current champion on today's held-out split, through its own serving
    bundle (the artifact production runs)."""
    from workloads.training import tracking
    from workloads.training.artifacts import load_bundle

    version = tracking.champion_version(spec.name)
    if version is None:
        return None, None, None
    with tempfile.TemporaryDirectory(dir=run_dir) as tmp:
        try:
            bundle = load_bundle(tracking.download_version(spec.name, str(version.version), Path(tmp)))
        except Exception as error:  # noqa: BLE001
            return None, str(version.version), f"champion v{version.version} cannot be loaded for comparison: {error}"
        if bundle.schema.names != hooks.feature_schema.names:
            return None, str(version.version), (
                f"champion v{version.version} has a different feature schema; compare and promote manually"
            )
        probs = bundle.predict_proba(splits.test.features)
    labels = splits.test.labels
    metrics = {"holdout_loss": log_loss(probs, labels)}
    metrics.update({f"holdout_{k}": float(v) for k, v in hooks.compute_metrics(probs, labels).items()})
    return metrics, str(version.version), None


def _trial_summaries(grid: Any, metric: str) -> list[dict[str, Any]]:
    trials = []
    for result in grid:
        frame = result.metrics_dataframe
        history = []
        if frame is not None:
            keep = [c for c in frame.columns if c in ("epoch", "train_loss") or c.startswith("val_")]
            history = frame[keep].to_dict(orient="records")
        trials.append(
            {
                "trial": getattr(result, "path", "").rstrip("/").split("/")[-1],
                "config": {k: v for k, v in (result.config or {}).items()},
                "epochs": int(result.metrics.get("epoch", 0)) if result.metrics else 0,
                metric: (result.metrics or {}).get(metric),
                "error": str(result.error) if result.error else None,
                "history": history,
            }
        )
    return trials


def _log_trials_as_child_runs(experiment: str, parent_name: str, trials: list[dict[str, Any]]) -> None:
    import mlflow

    for index, trial in enumerate(trials):
        with mlflow.start_run(experiment_id=experiment, run_name=f"{parent_name}-trial-{index}", nested=True):
            mlflow.log_params({f"hp_{k}": v for k, v in trial["config"].items()})
            mlflow.set_tag("strata.trial", trial["trial"])
            for record in trial["history"]:
                values = {k: float(v) for k, v in record.items() if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v)}
                mlflow.log_metrics(values, step=int(record.get("epoch", 0)))


def _confusion(probs: np.ndarray, labels: np.ndarray, classes: int) -> list[list[int]]:
    predicted = np.argmax(probs, axis=1)
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix.tolist()


def _report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Evaluation: {report['model']} ({report['run']})", "", f"Held-out rows: {report['holdoutRows']}", ""]
    lines += ["| metric | candidate | trivial | champion |", "|---|---|---|---|"]
    candidate = report["holdout"]["candidate"]
    trivial = report["holdout"].get("trivial") or {}
    champion = report["holdout"].get("champion") or {}
    for key in candidate:
        fmt = lambda v: "-" if v is None else f"{v:.5g}"  # noqa: E731
        lines.append(f"| {key} | {fmt(candidate[key])} | {fmt(trivial.get(key))} | {fmt(champion.get(key))} |")
    gate = report["gate"]
    lines += ["", f"Gate: **{'passed' if gate['passed'] else 'failed'}** - {gate['reason']}", ""]
    return "\n".join(lines)
