"""The local S3: SeaweedFS's all-in-one `weed mini` (master, volume, filer, S3 gateway).

Every port comes from the `s3` row of the ports table (offsets below) and binds 127.0.0.1;
the WebDAV, admin UI, Iceberg and Lance endpoints are off and so is telemetry. Its buckets
(the lake's, MLflow's artifacts, Ray checkpoints, serving bundles) are created at start.
Clients reach it through the standard AWS variables (`s3_env()`), exactly as on AWS.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from workloads.data.storage import LAKE_BUCKETS, S3Settings
from workloads.local import s3_setup
from workloads.local.ports import HOST

if TYPE_CHECKING:
    from workloads.local.services import ServiceContext

ARTIFACTS_BUCKET = "strata-mlflow-artifacts"
CHECKPOINTS_BUCKET = "strata-ray-checkpoints"
BUNDLES_BUCKET = "strata-serving-bundles"
BUCKETS = (*LAKE_BUCKETS.values(), ARTIFACTS_BUCKET, CHECKPOINTS_BUCKET, BUNDLES_BUCKET)
# Local-only credentials of the one identity the gateway knows (never used on AWS).
ACCESS_KEY, SECRET_KEY = "strata-local", "strata-local-secret"
# offsets within the `s3` port row
OFFSETS = {"s3": 0, "master": 1, "volume": 2, "filer": 3, "master.grpc": 4, "volume.grpc": 5,
           "filer.grpc": 6, "s3.grpc": 7, "metrics": 8, "admin": 9}


def port(ctx: "ServiceContext", role: str) -> int:
    return ctx.port(f"s3+{OFFSETS[role]}")


def endpoint(ctx: "ServiceContext") -> str:
    return f"http://{HOST}:{port(ctx, 's3')}"


def settings(ctx: "ServiceContext") -> S3Settings:
    return S3Settings(endpoint_url=endpoint(ctx), access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)


def s3_env(ctx: "ServiceContext") -> dict[str, str]:
    """What every client process needs to use the local S3 (boto3, MLflow, delta-rs)."""
    return settings(ctx).env()


def prepare(ctx: "ServiceContext") -> None:
    s3_setup.ensure_weed(log=ctx.log)
    ctx.data_dir().mkdir(parents=True, exist_ok=True)
    config = ctx.config_dir()
    config.mkdir(parents=True, exist_ok=True)
    identity = {"identities": [{"name": "strata", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
    (config / "s3.json").write_text(json.dumps(identity, indent=2) + "\n")


def command(ctx: "ServiceContext") -> list[str]:
    p = lambda role: str(port(ctx, role))  # noqa: E731
    return [
        str(s3_setup.weed_path()), "mini",
        f"-dir={ctx.data_dir()}", f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-s3.port={p('s3')}", f"-s3.port.grpc={p('s3.grpc')}", "-s3.port.https=0",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={ctx.config_dir() / 's3.json'}",
        f"-master.port={p('master')}", f"-master.port.grpc={p('master.grpc')}", "-master.telemetry=false",
        f"-volume.port={p('volume')}", f"-volume.port.grpc={p('volume.grpc')}",
        f"-filer.port={p('filer')}", f"-filer.port.grpc={p('filer.grpc')}",
        f"-metricsPort={p('metrics')}", f"-metricsIp={HOST}",
        "-webdav=false", "-admin.ui=false", f"-admin.port={p('admin')}", "-admin.port.legacy=0",
        f"-bucket={','.join(BUCKETS)}",
    ]


def health(ctx: "ServiceContext"):
    """Ready when the gateway answers and every bucket exists (created by `-bucket` at start)."""
    from workloads.local.health import Health, http_check

    up = http_check(port(ctx, "s3"), "/healthz")
    if not up:
        return up
    try:
        from botocore.config import Config
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint(ctx), region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY,
                          config=Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 1}))
        have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    except Exception as error:  # noqa: BLE001 - any failure means not ready yet
        return Health(False, f"ListBuckets: {error}")
    missing = [b for b in BUCKETS if b not in have]
    return Health(not missing, f"buckets missing: {', '.join(missing)}" if missing else f"{len(have)} buckets")
