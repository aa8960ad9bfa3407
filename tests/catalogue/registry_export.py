"""A registry export with one champion version, as training writes it (files only)."""

from __future__ import annotations

import json
from pathlib import Path

from workloads.serving.registry import export_version


def write_champion(root: Path, model: str, version: str = "1") -> None:
    scratch = root.parent / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "model.pt").write_bytes(b"not read here")
    (scratch / "schema.json").write_text(json.dumps({"features": []}))
    (scratch / "profile.json").write_text(json.dumps({}))
    export_version(root, model, version, scratch / "model.pt", scratch / "schema.json", scratch / "profile.json",
                   info={"metrics": {"val_auc": 0.97}}, aliases=("champion",))
