"""Ray Train checkpoints in S3 (the local SeaweedFS), through the `s3://` path AWS uses: a
smoke training of fraud with `--storage s3://strata-ray-checkpoints/<prefix>` writes its
checkpoints there (not under the state folder) and the newest one loads as a resume would."""

from __future__ import annotations

import uuid

from tests.data.conftest import s3_settings  # noqa: F401
from tests.training.conftest import platform  # noqa: F401  (a local Ray, MLflow on sqlite)
from workloads.local.s3 import CHECKPOINTS_BUCKET
from workloads.training.cli import train
from workloads.training.loop import STATE_FILE, latest_persisted_state


def test_checkpoints_are_written_to_s3_and_load_back(platform, s3_settings, monkeypatch):  # noqa: F811
    for key, value in s3_settings.env().items():
        monkeypatch.setenv(key, value)
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    outcome = train("fraud", smoke=True, tracking_uri=platform.tracking_uri, state_dir=platform.state_dir, quiet=True,
                    storage=f"s3://{CHECKPOINTS_BUCKET}/{prefix}")
    run_name = outcome.run_dir.name  # Ray's folders: <run> (one training) or <run>-<trial> (HPO trials)
    listed = s3_settings.client().list_objects_v2(Bucket=CHECKPOINTS_BUCKET, Prefix=f"{prefix}/{run_name}")
    states = [item["Key"] for item in listed.get("Contents", [])
              if "/checkpoint_" in item["Key"] and item["Key"].endswith(f"/{STATE_FILE}")]
    assert states, [item["Key"] for item in listed.get("Contents", [])]
    assert not (platform.state_dir / "checkpoints").exists() or not any((platform.state_dir / "checkpoints").glob(
        f"{run_name}*"))
    # the newest checkpoint of a run folder loads from S3 as a resumed worker reads it
    folder = states[0].split("/checkpoint_")[0]
    state = latest_persisted_state(f"{CHECKPOINTS_BUCKET}/{folder}", s3_settings.arrow_filesystem())
    assert state is not None and state["epoch"] >= 1
    # (train() itself returned: the runner loaded the best trial's checkpoint back from S3 for its gate)
