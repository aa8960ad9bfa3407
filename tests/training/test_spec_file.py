"""`--spec-file` / `STRATA_MODEL_SPEC_FILE`: the spec as deployed reaches training (no Ray).

On the cluster the RayJob mounts ModelDeployment's `<model>-spec` ConfigMap and passes
it as `--spec-file`; the file holds `{"spec": <ModelSpec as camelCase JSON>, ...}`. A
laptop may pass a bare spec file instead. Either way the spec is validated by
`workloads.spec.parse_model_spec` and an error names `<file>:<property path>`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from workloads.spec import SpecError
from workloads.training.cli import EXIT_SPEC, SPEC_FILE_ENV, app, load_spec_file, resolve_spec
from workloads.training.runner import apply_overrides

EXAMPLE = Path("workloads/examples/fraud/model.yaml")


@pytest.fixture(scope="module")
def fraud():
    spec, _ = resolve_spec("fraud")
    return spec


def payload(spec, **facts) -> dict:
    """What ModelDeployment writes into `<model>-spec`'s `model.json`."""
    return {"spec": spec.model_dump(mode="json", by_alias=True), "mode": "enterprise", "environment": "prod",
            "rolloutStrategy": "canary", "streaming": False, "hpo": True, "trainingWorkers": 2,
            "mlflowTrackingUri": "http://mlflow.mlflow.svc.cluster.local:5000", **facts}


def _paths(error: SpecError) -> list[str]:
    return [path for path, _ in error.problems]


# ------------------------------------------------------------------------------ both shapes


def test_a_bare_spec_file_without_a_name_takes_the_models(tmp_path, fraud):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw.pop("name", None)
    file = tmp_path / "model.yaml"
    file.write_text(yaml.safe_dump(raw))
    spec, prefix = load_spec_file(file, "fraud")
    assert spec == fraud and prefix == str(file)


def test_the_config_map_payload_is_the_deployed_spec_with_its_overrides(tmp_path, fraud):
    deployed = apply_overrides(fraud, {"training.workers": 3, "training.epochs": 7})  # a stack's overrides
    file = tmp_path / "model.json"
    file.write_text(json.dumps(payload(deployed)))
    spec, prefix = resolve_spec("fraud", spec_file=file)
    assert spec == deployed and spec != fraud
    assert (spec.training.workers, spec.training.epochs) == (3, 7)
    assert prefix == f"{file}:spec"


def test_the_payload_in_yaml_and_a_model_only_a_stack_defines(tmp_path, fraud):
    only_in_a_stack = fraud.model_copy(update={"name": "fraud-eu"})  # no examples/fraud-eu/model.yaml
    file = tmp_path / "model.yaml"
    file.write_text(yaml.safe_dump(payload(only_in_a_stack)))
    spec, _ = resolve_spec("fraud-eu", spec_file=file)
    assert spec.name == "fraud-eu" and spec.training == fraud.training
    with pytest.raises(SpecError, match="no spec at"):
        resolve_spec("fraud-eu")  # without the file it could not be found


# ------------------------------------------------------------------------------ errors name the path


def test_a_bad_payload_names_the_property_path(tmp_path, fraud):
    bad = payload(fraud)
    bad["spec"]["training"]["workers"] = 0
    bad["spec"]["training"]["epocs"] = 3
    file = tmp_path / "model.json"
    file.write_text(json.dumps(bad))
    with pytest.raises(SpecError) as caught:
        load_spec_file(file, "fraud")
    assert f"{file}:spec.training.workers" in _paths(caught.value)
    assert f"{file}:spec.training.epocs" in _paths(caught.value)


def test_a_bad_bare_file_names_the_property_path(tmp_path):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["training"]["workers"] = "many"
    file = tmp_path / "model.yaml"
    file.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as caught:
        load_spec_file(file, "fraud")
    assert _paths(caught.value) == [f"{file}:training.workers"]


def test_a_file_for_another_model_is_refused(tmp_path, fraud):
    file = tmp_path / "model.json"
    file.write_text(json.dumps(payload(fraud)))
    with pytest.raises(SpecError) as caught:
        load_spec_file(file, "digits")
    assert _paths(caught.value) == [f"{file}:spec.name"]
    assert "'fraud', not of 'digits'" in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "must be a mapping"),
    ('{"spec": [1]}', "deployed spec must be a mapping"),
    ('{"spec": ', "neither JSON nor YAML"),
    ("a: [b\n", "neither JSON nor YAML"),
])
def test_malformed_files_name_the_file(tmp_path, text, message):
    file = tmp_path / "model.json"
    file.write_text(text)
    with pytest.raises(SpecError, match=message) as caught:
        load_spec_file(file, "fraud")
    assert _paths(caught.value)[0].startswith(str(file))


def test_a_missing_file_and_an_ambiguous_source_are_refused(tmp_path):
    with pytest.raises(SpecError, match="cannot read the spec file"):
        resolve_spec("fraud", spec_file=tmp_path / "absent.json")
    with pytest.raises(SpecError) as caught:
        resolve_spec("fraud", stack="quick", spec_file=EXAMPLE)
    assert _paths(caught.value) == ["--spec-file"]


# ------------------------------------------------------------------------------ the command line


@pytest.mark.parametrize("via", ["option", "env"])
def test_the_cli_reads_the_file_and_exits_2_naming_the_path(tmp_path, fraud, via):
    """Refused before any training starts: the spec is resolved first (no Ray here)."""
    bad = payload(fraud)
    bad["spec"]["training"]["workers"] = 0
    file = tmp_path / "model.json"
    file.write_text(json.dumps(bad))
    args, env = ["fraud", "--local", "--json"], {}
    if via == "option":
        args += ["--spec-file", str(file)]
    else:
        env[SPEC_FILE_ENV] = str(file)
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == EXIT_SPEC, result.output
    output = "".join(result.output.split())  # rich wraps long lines, even inside the path
    assert output.startswith("invalidspec:") and f"{file.name}:spec.training.workers:" in output
