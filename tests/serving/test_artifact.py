"""The serving bundle's model file: written once with torch.export (no TorchScript anywhere),
loaded by the one loader; a version-1 TorchScript bundle still loads with a warning that
names the version to retrain; anything else is refused with a message that says why."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import torch

from workloads.serving import registry
from workloads.serving.artifact import EXPORTED, LEGACY_TORCHSCRIPT, ArtifactError, load_module, save_module
from workloads.serving.testing import build_module, fraud_schema, sample_rows

SCHEMA = fraud_schema()


def test_export_round_trip_any_row_count_and_no_warning(tmp_path):
    rows = sample_rows(SCHEMA, 64, seed=4)
    module = build_module(SCHEMA.width, 2, seed=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = save_module(module, rows[:8], tmp_path / EXPORTED)
        loaded = load_module(path)
    assert not caught, [str(w.message) for w in caught]
    with torch.no_grad():
        for n in (1, 2, 7, 64):
            x = torch.from_numpy(rows[:n])
            np.testing.assert_allclose(loaded(x).numpy(), module(x).numpy(), rtol=1e-6, atol=1e-7)
    assert isinstance(loaded, torch.fx.GraphModule)  # a torch.export program, not TorchScript


def test_a_version_one_torchscript_bundle_still_serves_and_says_retrain(tmp_path, caplog):
    module = build_module(SCHEMA.width, 2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing the legacy file is this test's fixture
        torch.jit.save(torch.jit.script(module), str(tmp_path / LEGACY_TORCHSCRIPT))
    SCHEMA.to_json(tmp_path / registry.SCHEMA)
    version = registry.export_version(tmp_path / "export", "fraud", "7", tmp_path / LEGACY_TORCHSCRIPT,
                                      tmp_path / registry.SCHEMA, aliases=("champion",))
    resolved = registry.resolve(tmp_path / "export", "fraud", alias="champion")
    assert resolved.artifact == version.path / LEGACY_TORCHSCRIPT
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        loaded = load_module(resolved.artifact, what="fraud v7")
    assert not caught, [str(w.message) for w in caught]  # torch's deprecation said once, by us, with what to do
    assert "retrain fraud v7" in caplog.text and "bundle is version 2 (torch.export" in caplog.text
    x = torch.from_numpy(sample_rows(SCHEMA, 3))
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), module(x).numpy(), rtol=1e-6)


def test_bad_files_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ArtifactError, match="no such model file"):
        load_module(tmp_path / EXPORTED)
    (tmp_path / "model.onnx").write_bytes(b"\x08\x01")
    with pytest.raises(ArtifactError, match="unknown model file"):
        load_module(tmp_path / "model.onnx")
    (tmp_path / EXPORTED).write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="not a torch.export program .* retrain fraud v9"):
        load_module(tmp_path / EXPORTED, what="fraud v9")
    with pytest.raises(ArtifactError, match="rows >= 2"):
        save_module(build_module(SCHEMA.width), sample_rows(SCHEMA, 1), tmp_path / "x" / EXPORTED)

    class DataDependent(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # Python control flow on values: not exportable
                return x[:, :2].softmax(dim=1)
            return x[:, 2:4].softmax(dim=1)

    with pytest.raises(ArtifactError, match="traceable for any row count"):
        save_module(DataDependent(), sample_rows(SCHEMA, 4), tmp_path / EXPORTED)


def test_registry_refuses_a_version_without_a_model_file(tmp_path):
    version_dir = tmp_path / "export" / "fraud" / "versions" / "1"
    version_dir.mkdir(parents=True)
    (tmp_path / "export" / "fraud" / registry.ALIASES).write_text(json.dumps({"champion": "1"}))
    SCHEMA.to_json(version_dir / registry.SCHEMA)
    with pytest.raises(registry.RegistryError, match="missing model.pt2"):
        registry.resolve(tmp_path / "export", "fraud", alias="champion")


def test_a_bundle_of_an_unknown_version_names_the_version_to_retrain(tmp_path):
    from workloads.training.artifacts import BUNDLE_VERSION, load_bundle

    (tmp_path / registry.MANIFEST).write_text(json.dumps({"bundleVersion": 9, "files": {}}))
    with pytest.raises(ValueError, match=f"retrain the model version to write bundle version {BUNDLE_VERSION}"):
        load_bundle(tmp_path)
