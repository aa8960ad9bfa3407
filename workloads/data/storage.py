"""S3 access shared by every `s3://` path: the lake, MLflow artifacts, checkpoints, bundles.

One code path for AWS and local mode: on AWS the settings are empty (the default
credential chain and endpoint, IRSA in pods); locally the supervisor exports the
SeaweedFS endpoint and its credentials in the standard variables (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, ...), which boto3, MLflow and delta-rs all read the same way.
Components take an `S3Settings`; only entry points call `S3Settings.from_env()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping
from urllib.parse import urlparse


#: The local lake buckets (on AWS the cloud layer's `CloudStorage.lake_buckets` are passed in).
LAKE_BUCKETS = {"bronze": "strata-lake-bronze", "silver": "strata-lake-silver", "gold": "strata-lake-gold"}


def lake_buckets_from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The lake buckets an entry point runs against: `STRATA_LAKE_<LAYER>_BUCKET` where the
    cluster sets it (the cloud layer's buckets), else the local names."""
    env = os.environ if env is None else env
    return {layer: env.get(f"STRATA_LAKE_{layer.upper()}_BUCKET") or bucket for layer, bucket in LAKE_BUCKETS.items()}


@dataclass(frozen=True)
class S3Settings:
    """Where S3 is. None fields: the AWS defaults (endpoint by region, default credentials)."""

    endpoint_url: str | None = None  # http://127.0.0.1:19400 locally; None on AWS
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "S3Settings":
        env = os.environ if env is None else env
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        )

    def env(self) -> dict[str, str]:
        """The standard variables for a child process (MLflow, training, Ray workers)."""
        out = {"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region}
        if self.endpoint_url:
            out |= {"AWS_ENDPOINT_URL": self.endpoint_url, "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url}
        if self.access_key_id and self.secret_access_key:
            out |= {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}
        return out

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
            # path-style: bucket names need no DNS locally; virtual-host style stays AWS's default
            config=Config(s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                          retries={"max_attempts": 5, "mode": "standard"}),
        )

    def arrow_filesystem(self) -> Any:
        """A pyarrow S3 filesystem at these settings (Ray Train's checkpoint storage). Passed to
        Ray explicitly, so Ray's worker processes, which may have started before the caller
        set any variable, write to the same S3."""
        import pyarrow.fs as pafs

        options: dict[str, Any] = {"region": self.region}
        if self.endpoint_url:
            parsed = urlparse(self.endpoint_url)
            options |= {"endpoint_override": parsed.netloc or parsed.path, "scheme": parsed.scheme or "https"}
        if self.access_key_id and self.secret_access_key:
            options |= {"access_key": self.access_key_id, "secret_key": self.secret_access_key}
        return pafs.S3FileSystem(**options)

    def delta_options(self) -> dict[str, str]:
        """delta-rs (object_store) storage options. Concurrent writers are made safe by S3
        conditional writes (If-None-Match on the commit file), so no DynamoDB lock."""
        opts = {"AWS_REGION": self.region, "conditional_put": "etag", "AWS_S3_ALLOW_UNSAFE_RENAME": "false"}
        if self.endpoint_url:
            opts |= {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ALLOW_HTTP": str(self.endpoint_url.startswith("http://")).lower(),
                     "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false"}
        if self.access_key_id and self.secret_access_key:
            opts |= {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}
        return opts


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> ("bucket", "some/key")."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def ensure_buckets(settings: S3Settings, buckets: Iterable[str]) -> list[str]:
    """Create the buckets that do not exist yet; return the ones created."""
    s3 = settings.client()
    have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    created = []
    for bucket in buckets:
        if bucket not in have:
            s3.create_bucket(Bucket=bucket)
            created.append(bucket)
    return created


def upload_dir(settings: S3Settings, local: str | os.PathLike, uri: str) -> int:
    """Upload a folder's files under `uri` (a serving bundle, a checkpoint). Returns the file count."""
    from pathlib import Path

    bucket, prefix = split_s3_uri(uri)
    s3, root, count = settings.client(), Path(local), 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(root).as_posix()}")
        count += 1
    return count


def download_dir(settings: S3Settings, uri: str, local: str | os.PathLike) -> int:
    """Download every object under `uri` into a folder. Returns the file count."""
    from pathlib import Path

    bucket, prefix = split_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/"
    s3, root, count = settings.client(), Path(local), 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            target = root / obj["Key"][len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            count += 1
    return count
