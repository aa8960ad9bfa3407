"""`strata features apply` and `strata features materialize` against the real local S3 (a
gold Delta table) and Redis: the online values are the view's latest known values, and the
registry records the gold version materialized."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import polars as pl
import yaml
from typer.testing import CliRunner

from tests.data.conftest import lake, s3_settings, table_name  # noqa: F401
from tests.features.specs import model_spec
from workloads.data.features.repo import Registry


def test_materialize_gold_into_redis(lake, table_name, redis_url, redis_client, tmp_path, monkeypatch):  # noqa: F811
    from deltalake import write_deltalake

    from infra.cli import app

    spec = model_spec(view=table_name).model_dump(mode="json", by_alias=True, exclude_none=True)
    spec_file = tmp_path / "m" / "model.yaml"
    spec_file.parent.mkdir()
    spec_file.write_text(yaml.safe_dump(spec))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    gold = pl.DataFrame({"card_id": [1, 1, 2], "event_ts": [now - timedelta(minutes=20), now - timedelta(minutes=5),
                                                           now - timedelta(minutes=1)],
                         "created_ts": [now - timedelta(minutes=20), now - timedelta(minutes=5), now + timedelta(hours=1)],
                         "f0": [1.0, 2.0, 3.0], "f1": [0.0, 0.0, 0.0], "f2": [0.0, 0.0, 0.0]})
    write_deltalake(lake.uri("gold", table_name), gold.to_arrow(), storage_options=lake.settings.delta_options())
    for key, value in lake.settings.env().items():
        monkeypatch.setenv(key, value)
    registry_url = f"sqlite:///{tmp_path}/registry.db"
    monkeypatch.setenv("STRATA_FEATURE_REGISTRY", registry_url)
    monkeypatch.setenv("STRATA_REDIS_URL", redis_url)

    runner = CliRunner()
    applied = runner.invoke(app, ["features", "apply", "--spec", str(spec_file)])
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.output) == {table_name: "created"}
    done = runner.invoke(app, ["features", "materialize", table_name, "--spec", str(spec_file)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"view": table_name, "goldVersion": 0, "entities": 1}  # card 2's row is not known yet
    assert redis_client.hget(f"strata:fv:{table_name}:1", "f0") == b"2.0"
    assert not redis_client.exists(f"strata:fv:{table_name}:2")
    assert Registry(registry_url).last_materialization(table_name)["source_version"] == 0

    missing = runner.invoke(app, ["features", "materialize", "nope", "--spec", str(spec_file)])
    assert missing.exit_code == 2 and "no feature view 'nope'" in missing.output
