"""`strata train MODEL [--stack NAME | --spec-file PATH] [--local]`: train one onboarded model.

Where the spec comes from: `--spec-file PATH` (or `STRATA_MODEL_SPEC_FILE`), a YAML or
JSON file holding either a bare model spec or the payload of the `<model>-spec`
ConfigMap that `ModelDeployment` writes (`{"spec": {...}, "mode": ..., ...}`; on the
cluster the RayJob mounts it and passes it here); else `--stack NAME`, the stack's
`models` map; else the example `workloads/examples/MODEL/model.yaml` or the onboarded
model's `workloads/models/<MODEL with - as _>/model.yaml` (`workloads.catalog`).

The lead's CLI mounts `train_command` (typer); `train()` is the plain function behind
it (tests and notebooks call it). Standalone: `python -m workloads.training.cli MODEL`.

Exit codes: 0 trained (whether or not the gate promoted it; the table says), 2 invalid
spec/stack (the message names the property path), 3 data refused by validation,
4 training failed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from workloads.monitoring.metrics import TRAINING_TRIGGERS
from workloads.spec import SPEC_FILE_ENV, ModelSpec, SpecError, parse_model_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXIT_SPEC, EXIT_DATA, EXIT_TRAINING = 2, 3, 4

console = Console(stderr=True)


def load_spec_file(file: Path | str, model_name: str | None = None) -> tuple[ModelSpec, str]:
    """(spec, property-path prefix) from a YAML/JSON file: a bare model spec, or the
    `<model>-spec` ConfigMap payload `{"spec": {...}, ...}` (its other keys are the
    deployment's facts, not the spec). A spec without `name` takes `model_name`; a spec
    naming another model is refused. Errors name `<file>:<property path>`."""
    file = Path(file)
    try:
        text = file.read_text()
    except OSError as error:
        raise SpecError([(str(file), f"cannot read the spec file: {error.strerror or error}")]) from None
    try:
        raw = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise SpecError([(str(file), f"neither JSON nor YAML: {error}")]) from None
    if not isinstance(raw, dict):
        raise SpecError([(str(file), "a model spec must be a mapping")])
    prefix = f"{file}:"
    if "spec" in raw and "spec" not in ModelSpec.model_fields:  # the ConfigMap payload
        raw, prefix = raw["spec"], f"{file}:spec"
        if not isinstance(raw, dict):
            raise SpecError([(prefix, "the deployed spec must be a mapping")])
    raw = dict(raw)
    if model_name is not None:
        raw.setdefault("name", model_name)
        if raw["name"] != model_name:
            where = f"{prefix}.name" if not prefix.endswith(":") else f"{prefix}name"
            raise SpecError([(where, f"the file is the spec of {raw['name']!r}, not of {model_name!r}")])
    return parse_model_spec(raw, prefix), prefix.removesuffix(":")


def resolve_spec(model_name: str, stack: str | None = None,
                 spec_file: Path | str | None = None) -> tuple[ModelSpec, str]:
    """(spec, property-path prefix): from a spec file, a stack's `models` map, or the example folder."""
    if spec_file is not None:
        if stack is not None:
            raise SpecError([("--spec-file", "pass a spec file or --stack, not both")])
        return load_spec_file(spec_file, model_name)
    if stack is not None:
        from infra.config import load_stack  # lazily: the training image has no Pulumi

        stack_spec = load_stack(stack)
        for spec in stack_spec.models:
            if spec.name == model_name:
                return spec, f"strata:models.{model_name}"
        available = ", ".join(sorted(m.name for m in stack_spec.models)) or "none"
        raise SpecError([(f"strata:models.{model_name}", f"not in stack {stack!r}; models: {available}")])
    from workloads.catalog import MODELS_DIR, find_spec_file, model_names, package_name

    file = find_spec_file(model_name)
    if file is None:
        available = ", ".join(sorted(p.parent.name for p in EXAMPLES.glob("*/model.yaml")))
        onboarded = ", ".join(n for n in model_names() if n not in available.split(", ")) or "none"
        raise SpecError([(model_name, f"no spec at {EXAMPLES / model_name / 'model.yaml'} or "
                                      f"{MODELS_DIR / package_name(model_name) / 'model.yaml'}; examples: {available}; "
                                      f"onboarded: {onboarded} (or pass --stack)")])
    raw = yaml.safe_load(file.read_text())
    if not isinstance(raw, dict):
        raise SpecError([(str(file), "a model spec must be a YAML mapping")])
    raw.setdefault("name", model_name)  # like a stack's models map: the key is the name
    prefix = str(file.relative_to(EXAMPLES.parents[1]))
    return parse_model_spec(raw, prefix), prefix


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError([(item, "overrides look like training.epochs=3")])
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


class _Progress:
    """Rich progress fed by the runner's phase events and the Train event log."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.phase = progress.add_task("starting", total=None)
        self.epochs: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "run":
            self.progress.console.print(f"MLflow run [bold]{event['run_id']}[/] ({event['run_name']})")
        elif kind == "phase":
            self.progress.update(self.phase, description=f"phase: {event['phase']}")
            if event["phase"] == "train":
                total = int(event["epochs"]) * int(event.get("trials", 1))
                self.epochs = self.progress.add_task("epochs", total=total)
                self._thread = threading.Thread(target=self._tail, args=(Path(event["events"]),), daemon=True)
                self._thread.start()
            elif self._thread is not None:
                self.stop()
        elif kind == "done":
            self.stop()
            self.progress.update(self.phase, description="done", total=1, completed=1)

    def _tail(self, path: Path) -> None:
        from workloads.training.ray_jobs import read_events

        seen = 0
        while not self._stop.is_set():
            events = read_events(path)
            for event in events[seen:]:
                if event.get("event") == "epoch":
                    metrics = ", ".join(f"{k}={v:.4g}" for k, v in event.items() if k.startswith("val_") and isinstance(v, float))
                    trial = f" trial {event['trial']}" if event.get("trial") else ""
                    self.progress.update(self.epochs, advance=1, description=f"epoch {event['epoch']}{trial}: {metrics}")
                elif event.get("event") == "worker_failure":
                    self.progress.console.print(f"[yellow]worker failure, resuming from the last checkpoint:[/] {event['errors']}")
            seen = len(events)
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None


def train(
    model_name: str,
    stack: str | None = None,
    local: bool = True,
    smoke: bool = False,
    tracking_uri: str | None = None,
    state_dir: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    storage: str | None = None,
    num_cpus: int | None = None,
    quiet: bool = False,
    spec_file: Path | str | None = None,
    trigger: str = "manual",
) -> Any:
    """Train `model_name`; print run id, metrics, gate decision and registered version.
    Returns the runner's `TrainOutcome`. Raises SpecError / DataValidationError /
    TrainingError (the typer command maps them to exit codes)."""
    from workloads.training.runner import TrainOptions, run_training
    from workloads.training.tracking import default_state_dir, default_tracking_uri

    spec, prefix = resolve_spec(model_name, stack, spec_file)
    if local:
        os.environ.pop("RAY_ADDRESS", None)  # a local runtime, even inside a cluster shell
    elif not os.environ.get("RAY_ADDRESS"):
        raise SpecError([("--local", "not running locally needs RAY_ADDRESS (a Ray cluster); pass --local to start one here")])
    state = Path(state_dir).resolve() if state_dir else default_state_dir()
    uri = tracking_uri or default_tracking_uri(state)
    options = TrainOptions(
        state_dir=state,
        tracking_uri=uri,
        storage=storage or os.environ.get("STRATA_CHECKPOINT_URI"),
        smoke=smoke,
        overrides=overrides or {},
        num_cpus=num_cpus,
        spec_path=prefix,
        trigger=trigger,
    )
    if quiet:
        outcome = run_training(spec, options)
    else:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), console=console, transient=False,
        ) as progress:
            sink = _Progress(progress)
            options.on_event = sink
            try:
                outcome = run_training(spec, options)
            finally:
                sink.stop()
        print_outcome(outcome, uri)
    return outcome


def print_outcome(outcome: Any, tracking_uri: str) -> None:
    table = Table(title=f"{outcome.model}: held-out metrics", show_lines=False)
    table.add_column("metric")
    for column in ("candidate", "trivial", "champion"):
        table.add_column(column, justify="right")
    candidate = outcome.holdout["candidate"]
    trivial = outcome.holdout.get("trivial") or {}
    champion = outcome.holdout.get("champion") or {}
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for key, value in candidate.items():
        table.add_row(key, fmt(value), fmt(trivial.get(key)), fmt(champion.get(key)))
    console.print(table)
    gate = outcome.gate
    verdict = "[green]passed[/]" if gate.passed else "[red]failed[/]"
    console.print(f"gate ({gate.metric}, {gate.direction} is better): {verdict} - {gate.reason}")
    if outcome.registered_version:
        console.print(f"registered [bold]{outcome.model}[/] version {outcome.registered_version} as @{outcome.alias}")
    else:
        console.print("not registered (the run keeps the model and the reason)")
    console.print(f"MLflow run id: {outcome.run_id}  tracking: {tracking_uri}")
    console.print(f"dataset digest: {outcome.dataset_digest}")


def summary(outcome: Any) -> dict[str, Any]:
    return {
        "model": outcome.model,
        "runId": outcome.run_id,
        "datasetDigest": outcome.dataset_digest,
        "gate": outcome.gate.to_dict(),
        "registeredVersion": outcome.registered_version,
        "alias": outcome.alias,
        "holdout": outcome.holdout,
        "history": outcome.history,
        "hparams": outcome.hparams,
        "seconds": outcome.seconds,
        "runDir": str(outcome.run_dir),
    }


def _check_trigger(value: str) -> str:
    if value not in TRAINING_TRIGGERS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(TRAINING_TRIGGERS)}")
    return value


def train_command(
    model: str = typer.Argument(..., help="model name: an example under workloads/examples or a key of the stack's models map"),
    stack: Optional[str] = typer.Option(None, "--stack", help="read the model spec from stacks/Pulumi.<stack>.yaml"),
    spec_file: Optional[Path] = typer.Option(
        None, "--spec-file", envvar=SPEC_FILE_ENV,
        help="read the model spec from a YAML/JSON file: a bare spec or the <model>-spec ConfigMap's {\"spec\": ...}"),
    local: bool = typer.Option(True, "--local/--cluster", help="start a local Ray runtime (default) or use RAY_ADDRESS"),
    smoke: bool = typer.Option(False, "--smoke", help="tiny settings: <=2 epochs, <=2 trials, <=20k synthetic rows"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override a spec value, e.g. --set training.epochs=3"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="default sqlite under the state dir"),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", envvar="STRATA_STATE_DIR", help="default ./.strata"),
    json_out: bool = typer.Option(False, "--json", help="print a JSON summary on stdout"),
    trigger: str = typer.Option("manual", "--trigger", callback=_check_trigger,
                                help=f"who started the run ({'|'.join(TRAINING_TRIGGERS)}): the run's "
                                     "strata.trigger tag, by which the training metrics count runs"),
) -> None:
    """Train MODEL with Ray Train (+ Tune), track in MLflow, gate and register it."""
    from workloads.data.validation import DataValidationError
    from workloads.training.runner import TrainingError

    try:
        outcome = train(model, stack, local, smoke, tracking_uri, state_dir, parse_overrides(set_), quiet=json_out,
                        spec_file=spec_file, trigger=trigger)
    except SpecError as error:
        console.print(f"[red]invalid spec:[/]\n{error}")
        raise typer.Exit(EXIT_SPEC) from None
    except DataValidationError as error:
        console.print(f"[red]data refused:[/] {error}")
        if error.report is not None:
            console.print_json(json.dumps(error.report.to_dict(), default=str))
        raise typer.Exit(EXIT_DATA) from None
    except TrainingError as error:
        console.print(f"[red]training failed:[/] {error}")
        raise typer.Exit(EXIT_TRAINING) from None
    finally:
        _shutdown_ray()
    if json_out:
        typer.echo(json.dumps(summary(outcome), default=str))


def _shutdown_ray() -> None:
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:  # noqa: BLE001
        pass


app = typer.Typer(add_completion=False, help="Strata training")
app.command("train")(train_command)

if __name__ == "__main__":
    started = time.time()
    app()
