"""Where model specs live in this repository, found by model name.

* `workloads/examples/<name>/model.yaml` - the platform's examples (fraud, digits);
* `workloads/models/<package>/model.yaml` - models that teams onboard with
  `strata onboard NAME`; `<package>` is NAME with `-` as `_`, so the team's code is the
  importable module `workloads.models.<package>.model` that the spec's entrypoint names.

Pure pathlib + yaml (no Pulumi): the training image resolves specs with it too.
"""

from __future__ import annotations

from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = Path("workloads") / "examples"
MODELS_DIR = Path("workloads") / "models"
SPEC_FILE = "model.yaml"


def package_name(model: str) -> str:
    """`demo-model` -> `demo_model`: a model name as a Python package name."""
    return model.replace("-", "_")


def spec_files(root: Path = REPO_ROOT) -> list[Path]:
    """Every model spec file of the repository, examples first, each sorted by folder."""
    return [file for folder in (EXAMPLES_DIR, MODELS_DIR) for file in sorted((root / folder).glob(f"*/{SPEC_FILE}"))]


def spec_name(file: Path) -> str:
    """The model a spec file declares: its `name`, else its folder's name (as the loaders do)."""
    try:
        raw = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError):
        raw = None
    name = raw.get("name") if isinstance(raw, dict) else None
    return name if isinstance(name, str) else file.parent.name


def find_spec_file(model: str, root: Path = REPO_ROOT) -> Path | None:
    """The spec file of `model`: an example folder named after it, or its onboarded package."""
    for candidate in (root / EXAMPLES_DIR / model / SPEC_FILE, root / MODELS_DIR / package_name(model) / SPEC_FILE):
        if candidate.is_file():
            return candidate
    return None


def model_names(root: Path = REPO_ROOT) -> list[str]:
    return sorted(spec_name(file) for file in spec_files(root))
