"""In-memory datasets and the data URIs a model spec names.

`training.data` in a model spec is one of:

* `synthetic://fraud?rows=200000&seed=7&noise=0.01&drift=amount:1.0:1.5&corrupt=0.002`
* `sklearn://digits` (scikit-learn's bundled 8x8 digit images; no download)
* `file:///path/data.npz` (arrays `features`, `labels`, optional `names`) or
  `file:///path/data.csv` (header row; the label column named by the schema)
* `s3://bucket/key.npz|.csv` (in the cluster; needs `boto3` and credentials via IRSA)
* `lake://gold/<table>[?version=N]` (a gold Delta table of the lake at a version; the
  latest when none is given; the version read and its digest land in `Dataset.meta`)
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlparse

import numpy as np

from workloads.data.schema import FeatureSchema


@dataclass
class Dataset:
    """Rows of features (float, [n, d]) with integer class labels ([n])."""

    features: np.ndarray
    labels: np.ndarray
    names: list[str]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features.ndim != 2:
            raise ValueError(f"features must be 2-D [rows, columns], got shape {self.features.shape}")
        if self.labels.shape != (self.features.shape[0],):
            raise ValueError(
                f"labels must be 1-D with one entry per row ({self.features.shape[0]}), got shape {self.labels.shape}"
            )
        if len(self.names) != self.features.shape[1]:
            raise ValueError(f"{len(self.names)} names for {self.features.shape[1]} columns")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def take(self, index: np.ndarray) -> "Dataset":
        return Dataset(self.features[index], self.labels[index], list(self.names), self.source, dict(self.meta))

    def digest(self) -> str:
        """sha256 over column names, dtypes, shapes and bytes: the dataset's identity."""
        h = hashlib.sha256()
        h.update(repr((self.names, str(self.features.dtype), self.features.shape, str(self.labels.dtype))).encode())
        h.update(np.ascontiguousarray(self.features).tobytes())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


def split(dataset: Dataset, seed: int, val_fraction: float = 0.1, test_fraction: float = 0.1) -> Splits:
    """Deterministic shuffled train/val/test split. `test` is the held-out split the
    evaluation gate uses; HPO only ever sees `val`."""
    n = len(dataset)
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_test - n_val < 1:
        raise ValueError(f"{n} rows are too few to split into train/val/test")
    test, val, train = np.split(order, [n_test, n_test + n_val])
    return Splits(dataset.take(np.sort(train)), dataset.take(np.sort(val)), dataset.take(np.sort(test)))


def parse_uri(uri: str) -> tuple[str, str, dict[str, str]]:
    """`scheme://name-or-path?query` -> (scheme, location, query dict)."""
    parsed = urlparse(uri)
    if not parsed.scheme:
        raise ValueError(f"data URI {uri!r} has no scheme (synthetic://, sklearn://, file://, s3://)")
    location = unquote(parsed.netloc + parsed.path)
    return parsed.scheme, location, dict(parse_qsl(parsed.query, keep_blank_values=True))


def load_uri(uri: str, seed: int = 0, schema: FeatureSchema | None = None) -> Dataset:
    """Load any supported data URI. `seed` applies where the URI does not fix one."""
    scheme, location, query = parse_uri(uri)
    if scheme == "synthetic":
        if location != "fraud":
            raise ValueError(f"synthetic://{location}: unknown generator; available: fraud")
        from workloads.data.synthetic import FRAUD_NAMES, fraud_config_from_query, generate_fraud

        config = fraud_config_from_query(query, seed)
        x, y = generate_fraud(config)
        return Dataset(x, y, list(FRAUD_NAMES), uri, {"generator": "fraud", "config": repr(config)})
    if scheme == "sklearn":
        if location != "digits":
            raise ValueError(f"sklearn://{location}: unknown dataset; available: digits")
        from workloads.data.digits import load_digits_dataset

        return load_digits_dataset(uri)
    if scheme == "file":
        return _load_file(Path(location), uri, schema)
    if scheme == "s3":
        return _load_s3(location, uri, schema)
    if scheme == "lake":
        from workloads.data.lake.gold import load_lake_uri

        return load_lake_uri(uri, schema)
    raise ValueError(f"data URI {uri!r}: unsupported scheme {scheme!r}")


def _from_bytes(suffix: str, payload: bytes | Path, uri: str, schema: FeatureSchema | None) -> Dataset:
    if suffix == ".npz":
        with np.load(payload if isinstance(payload, Path) else io.BytesIO(payload), allow_pickle=False) as data:
            if "features" not in data or "labels" not in data:
                raise ValueError(f"{uri}: an .npz needs arrays 'features' and 'labels', got {sorted(data.files)}")
            features, labels = data["features"], data["labels"]
            if "names" in data:
                names = [str(n) for n in data["names"]]
            elif schema is not None:
                names = schema.names
            else:
                names = [f"f{i}" for i in range(features.shape[1])]
        return Dataset(features, labels, names, uri)
    if suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(payload if isinstance(payload, Path) else io.BytesIO(payload))
        label = schema.label if schema is not None else "label"
        if label not in frame.columns:
            raise ValueError(f"{uri}: no label column {label!r}; columns: {', '.join(frame.columns)}")
        labels = frame.pop(label).to_numpy()
        # non-numeric cells become NaN so validation quarantines them instead of crashing
        features = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        return Dataset(features, labels, [str(c) for c in frame.columns], uri)
    raise ValueError(f"{uri}: unsupported file type {suffix!r} (use .npz or .csv)")


def _load_file(path: Path, uri: str, schema: FeatureSchema | None) -> Dataset:
    if not path.is_file():
        raise FileNotFoundError(f"{uri}: no such file")
    return _from_bytes(path.suffix, path, uri, schema)


def _load_s3(location: str, uri: str, schema: FeatureSchema | None) -> Dataset:
    try:
        import boto3  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError(f"{uri}: reading s3:// needs boto3 (present in the cluster training image)") from None
    bucket, _, key = location.partition("/")
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return _from_bytes(Path(key).suffix, body, uri, schema)
