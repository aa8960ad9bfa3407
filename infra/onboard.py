"""Onboarding: scaffold a model, check every model spec, generate CODEOWNERS.

* `strata onboard NAME [--team T --owner E]` writes `workloads/models/<package>/`
  (`model.yaml`, `model.py`, `__init__.py`): a spec that validates and a model that trains
  locally out of the box on synthetic data (`strata train NAME --local --smoke`). It
  never overwrites: an existing folder or a name taken by an example is refused.
* `check_model_specs()` - what `strata validate` runs over every spec file the repository
  holds (`workloads.catalog`), errors named `<file>:<property path>`.
* `strata codeowners [--check]` writes `.github/CODEOWNERS` from the specs' `team` (and
  `owner`): each model's folder belongs to its team, everything else to the platform
  team, so with "require review from Code Owners" a team's PR changes only its own
  models without another team's approval. Deterministic; a test regenerates and diffs.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from pathlib import Path

import yaml

from workloads.catalog import EXAMPLES_DIR, MODELS_DIR, REPO_ROOT, SPEC_FILE, find_spec_file, package_name, spec_files
from workloads.spec import ModelSpec, SpecError, parse_model_spec

DEFAULT_TEAM = "ml-platform"
DEFAULT_OWNER = "ml-platform@example.com"
DEFAULT_GITHUB_ORG = "strata-ml"  # GitHub organisation whose team slugs equal the specs' `team`
PLATFORM_TEAM = "ml-platform"  # owns everything that is not a model folder
CODEOWNERS_FILE = Path(".github") / "CODEOWNERS"


# ------------------------------------------------------------------------------ scaffold


def scaffold_spec(name: str, team: str, owner: str) -> dict:
    """The new model's spec: small, valid, trains in about a minute with --smoke."""
    return {
        "name": name,
        "team": team,
        "owner": owner,
        "description": f"{name}: binary classifier scaffolded by `strata onboard` (replace the synthetic data).",
        "pagerduty": {"routingKeyName": team},
        "training": {
            "entrypoint": f"workloads.models.{package_name(name)}.model:hooks",
            "data": f"synthetic://{name}?rows=20000",
            "resources": {"cpu": 1, "memoryGib": 2, "gpu": 0},
            "workers": 1,
            "epochs": 4,
            "batchSize": 256,
            "seed": 0,
            "baseline": {"primaryMetric": "val_auc", "direction": "max", "maxRegressionPct": 5,
                         "trivial": "majority-class"},
        },
        "serving": {
            "realtime": {"protocol": "rest", "autoscaling": {"minReplicas": 2, "maxReplicas": 4}},
            "rollout": {"strategy": "canary", "steps": [10, 50, 100]},
        },
        "slos": {"availabilityPercent": 99.5, "latencyP99Ms": 200},
        "drift": {"psiThreshold": 0.2, "ksThreshold": 0.1},
    }


MODEL_PY = '''"""Model-team code for `{name}` (scaffolded by `strata onboard`; yours to change).

The harness (workloads/training) calls `hooks()` and does the rest: Ray Train, MLflow,
the evaluation gate, the serving artifacts. Replace `load_data` with your data (the
spec's `training.data`: file://, s3://) and `TinyMLP` with your model; keep
`FEATURE_SCHEMA` the truth about your inputs - serving checks every request against it.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from workloads.data.dataset import Dataset, load_uri, parse_uri
from workloads.data.schema import Feature, FeatureSchema
from workloads.training.hooks import ModelHooks

FEATURES = tuple(Feature(f"x{{index}}", "float32", -10.0, 10.0, description="synthetic feature") for index in range(8))
FEATURE_SCHEMA = FeatureSchema(features=FEATURES, label="label", label_values=(0, 1), task="binary")
DEFAULT_CONFIG = {{"lr": 3e-3, "weight_decay": 1e-5, "hidden": 32, "dropout": 0.1}}


class TinyMLP(nn.Module):
    def __init__(self, features: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # one logit per row


def build_model(config: Mapping[str, Any]) -> nn.Module:
    return TinyMLP(FEATURE_SCHEMA.width, hidden=int(config["hidden"]), dropout=float(config["dropout"]))


def synthetic(rows: int, seed: int) -> Dataset:
    """A seeded, learnable stand-in: the label depends on a few features plus noise."""
    rng = np.random.default_rng(seed)
    x = np.clip(rng.normal(0.0, 2.0, size=(rows, FEATURE_SCHEMA.width)), -10.0, 10.0).astype(np.float32)
    logits = 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + rng.normal(0.0, 1.0, rows)
    y = (logits > 0).astype(np.int64)
    return Dataset(x, y, FEATURE_SCHEMA.names, f"synthetic://{name}?rows={{rows}}&seed={{seed}}")


def load_data(uri: str, seed: int) -> Dataset:
    scheme, _location, query = parse_uri(uri)
    if scheme == "synthetic":
        return synthetic(int(float(query.get("rows", 20_000))), int(query.get("seed", seed)))
    return load_uri(uri, seed, FEATURE_SCHEMA)


def hooks() -> ModelHooks:
    return ModelHooks(
        build_model=build_model,
        load_data=load_data,
        feature_schema=FEATURE_SCHEMA,
        num_classes=2,
        default_config=DEFAULT_CONFIG,
    )
'''

MODELS_PACKAGE_DOC = '"""Models onboarded with `strata onboard NAME`: one package per model (see workloads/catalog.py)."""\n'


@dataclass(frozen=True)
class Scaffolded:
    name: str
    folder: Path  # relative to the repository root
    files: tuple[Path, ...]


def check_model_name(name: str, root: Path = REPO_ROOT) -> None:
    """A valid, free model name; errors name `NAME` (or the folder in the way)."""
    try:
        parse_model_spec(scaffold_spec(name, DEFAULT_TEAM, DEFAULT_OWNER))
    except SpecError as error:
        problems = [(("NAME" if path == "name" else path), message) for path, message in error.problems]
        raise SpecError(problems) from None
    package = package_name(name)
    if keyword.iskeyword(package) or not package.isidentifier():
        raise SpecError([("NAME", f"{name!r} does not make a Python package name ({package!r})")])
    existing = find_spec_file(name, root)
    folder = MODELS_DIR / package
    if existing is not None:
        raise SpecError([(str(existing.relative_to(root)), f"model {name!r} already exists; onboarding never overwrites")])
    if (root / folder).exists():
        raise SpecError([(str(folder), "already exists; onboarding never overwrites - pick another name or edit it")])


def scaffold(name: str, team: str = DEFAULT_TEAM, owner: str = DEFAULT_OWNER, root: Path = REPO_ROOT) -> Scaffolded:
    """Write the new model's folder; nothing is written if any check fails."""
    check_model_name(name, root)
    spec = scaffold_spec(name, team, owner)
    try:
        parse_model_spec(spec)
    except SpecError as error:
        flags = {"team": "--team", "owner": "--owner", "pagerduty.routingKeyName": "--team"}
        raise SpecError([(flags.get(path, path), message) for path, message in error.problems]) from None
    folder = MODELS_DIR / package_name(name)
    target = root / folder
    written = []
    package_init = root / MODELS_DIR / "__init__.py"
    if not package_init.exists():
        package_init.parent.mkdir(parents=True, exist_ok=True)
        package_init.write_text(MODELS_PACKAGE_DOC)
        written.append(package_init.relative_to(root))
    target.mkdir(parents=True)
    header = ("# yaml-language-server: $schema=../../model-spec.schema.json\n"
              f"# The {name} model, scaffolded by `strata onboard` - edit freely; `strata validate` checks it.\n"
              f"# Schema for editors: workloads/model-spec.schema.json. Add it to a stack with\n"
              f"#   strata:models: {{{name}: {{specFile: {folder.as_posix()}/{SPEC_FILE}}}}}\n")
    files = {
        target / "__init__.py": "",
        target / SPEC_FILE: header + yaml.safe_dump(spec, sort_keys=False),
        target / "model.py": MODEL_PY.format(name=name),
    }
    for path, text in files.items():
        path.write_text(text)
        written.append(path.relative_to(root))
    return Scaffolded(name=name, folder=folder, files=tuple(written))


# ------------------------------------------------------------------------------ validate


def check_model_specs(root: Path = REPO_ROOT, hooks: bool = False) -> tuple[list[ModelSpec], list[tuple[str, str]]]:
    """Every spec file in the repository: (valid specs, problems as (path, message)).

    Paths are `<file>:<property path>`. The folder must match the name (examples: the
    folder is the name; onboarded: the package name). With `hooks`, each entrypoint is
    imported and the spec is checked against what the code reports (metrics, HPO keys)."""
    specs, problems = [], []
    for file in spec_files(root):
        relative = file.relative_to(root).as_posix()
        try:
            raw = yaml.safe_load(file.read_text())
        except yaml.YAMLError as error:
            problems.append((relative, f"not valid YAML: {error}"))
            continue
        if not isinstance(raw, dict):
            problems.append((relative, "a model spec must be a YAML mapping"))
            continue
        examples = file.parent.parent == root / EXAMPLES_DIR
        raw.setdefault("name", file.parent.name)
        expected = file.parent.name if examples else None
        name = raw.get("name")
        if isinstance(name, str) and (name != expected if examples else package_name(name) != file.parent.name):
            want = f"{expected!r}" if examples else f"a name whose package is {file.parent.name!r}"
            problems.append((f"{relative}:name", f"must match its folder ({want}), got {name!r}"))
            continue
        try:
            spec = parse_model_spec(raw, f"{relative}:")
        except SpecError as error:
            problems.extend(error.problems)
            continue
        if hooks:
            from workloads.training.hooks import check_spec_against_hooks, load_hooks

            try:
                check_spec_against_hooks(spec, load_hooks(spec.training.entrypoint, "training.entrypoint"))
            except SpecError as error:
                problems.extend((f"{relative}:{path}", message) for path, message in error.problems)
                continue
        specs.append(spec)
    return specs, problems


# ------------------------------------------------------------------------------ CODEOWNERS


def render_codeowners(root: Path = REPO_ROOT, org: str = DEFAULT_GITHUB_ORG) -> str:
    """CODEOWNERS from the specs: the platform team by default, each model folder its team."""
    specs, problems = check_model_specs(root)
    if problems:
        raise SpecError(problems)
    lines = [
        "# Generated by `strata codeowners` from the model specs' team and owner - do not edit by hand.",
        "# Each model's folder belongs to its team; everything else to the platform team. With",
        "# \"require review from Code Owners\", a team's pull request changes only its own models.",
        f"* @{org}/{PLATFORM_TEAM}",
    ]
    for file, spec in zip(spec_files(root), specs):  # no problems: one spec per file, same order
        folder = file.parent.relative_to(root).as_posix()
        owners = [f"@{org}/{spec.team}"] + ([spec.owner] if spec.owner else [])
        lines.append(f"/{folder}/ {' '.join(owners)}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ commands

import typer  # noqa: E402  (commands below; the functions above stay importable without typer's app)
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402  (patterns like [a-z] are not markup)

_out = Console()
_err = Console(stderr=True)


def _fail(error: SpecError, what: str) -> None:
    _err.print(f"[red]✗ {what}[/]")
    for path, message in error.problems:
        _err.print(f"  [bold]{escape(path)}[/]: {escape(message)}", highlight=False)
    raise typer.Exit(2)


def onboard_command(
    name: str = typer.Argument(..., help="model name: lowercase letters, digits and '-' (e.g. demo-model)"),
    team: str = typer.Option(DEFAULT_TEAM, "--team", help="owning team (GitHub team slug, PagerDuty routing key name)"),
    owner: str = typer.Option(DEFAULT_OWNER, "--owner", help="owner e-mail"),
) -> None:
    """Scaffold workloads/models/<name>/ (spec + model code) that validates and trains locally as is."""
    try:
        made = scaffold(name, team, owner)
    except SpecError as error:
        _fail(error, f"cannot onboard {name!r}")
    for file in made.files:
        _out.print(f"[green]created[/] {file.as_posix()}")
    _out.print(
        f"next: strata validate && strata train {name} --local --smoke; then strata codeowners, and add\n"
        f"  {name}: {{specFile: {made.folder.as_posix()}/{SPEC_FILE}}} to a stack's strata:models")


def codeowners_command(
    check: bool = typer.Option(False, "--check", help="exit 1 if .github/CODEOWNERS is out of date"),
    org: str = typer.Option(DEFAULT_GITHUB_ORG, "--org", envvar="STRATA_GITHUB_ORG", help="GitHub organisation of the teams"),
) -> None:
    """Write .github/CODEOWNERS from the model specs' team: each team owns its own models."""
    try:
        text = render_codeowners(REPO_ROOT, org)
    except SpecError as error:
        _fail(error, "invalid model specs")
    target = REPO_ROOT / CODEOWNERS_FILE
    if check:
        if not target.is_file() or target.read_text() != text:
            _err.print(f"[red]{CODEOWNERS_FILE} is out of date: run `strata codeowners`[/]")
            raise typer.Exit(1)
        _out.print(f"{CODEOWNERS_FILE} is up to date")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    _out.print(f"wrote {CODEOWNERS_FILE}")
