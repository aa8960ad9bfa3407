"""Feature schema: names, dtypes and valid ranges of a model's input features.

Pure numpy + json (no pandas, no MLflow): the training harness validates data with it,
and the serving and monitoring environments load the same JSON from a registered
model version to check requests and to compute drift.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

SCHEMA_VERSION = 1
_DTYPES = ("float32", "float64", "int32", "int64")


@dataclass(frozen=True)
class Feature:
    """One input column. `low`/`high` are inclusive bounds; None means unbounded."""

    name: str
    dtype: str = "float32"
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"feature {self.name!r}: dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.low is not None and self.high is not None and not self.low <= self.high:
            raise ValueError(f"feature {self.name!r}: low ({self.low}) must be <= high ({self.high})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "low": self.low,
            "high": self.high,
            "nullable": self.nullable,
            "description": self.description,
        }


@dataclass(frozen=True)
class FeatureSchema:
    """The input contract of a model: an ordered list of features plus the label."""

    features: tuple[Feature, ...]
    label: str = "label"
    label_values: tuple[int, ...] = (0, 1)  # allowed class ids (classification)
    task: str = "binary"  # binary | multiclass
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. image shape for digits

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def width(self) -> int:
        return len(self.features)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature low/high as float64 arrays (-inf/+inf where unbounded)."""
        low = np.array([-math.inf if f.low is None else f.low for f in self.features], dtype=np.float64)
        high = np.array([math.inf if f.high is None else f.high for f in self.features], dtype=np.float64)
        return low, high

    def to_dict(self) -> dict[str, Any]:
        return {
            "schemaVersion": SCHEMA_VERSION,
            "task": self.task,
            "label": self.label,
            "labelValues": list(self.label_values),
            "features": [f.to_dict() for f in self.features],
            "extra": dict(self.extra),
        }

    def to_json(self, path: Path | str) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "FeatureSchema":
        return cls(
            features=tuple(
                Feature(
                    name=f["name"],
                    dtype=f.get("dtype", "float32"),
                    low=f.get("low"),
                    high=f.get("high"),
                    nullable=bool(f.get("nullable", False)),
                    description=f.get("description", ""),
                )
                for f in raw["features"]
            ),
            label=raw.get("label", "label"),
            label_values=tuple(raw.get("labelValues", (0, 1))),
            task=raw.get("task", "binary"),
            extra=dict(raw.get("extra", {})),
        )

    @classmethod
    def from_json(cls, path: Path | str) -> "FeatureSchema":
        return cls.from_dict(json.loads(Path(path).read_text()))


def uniform_schema(
    names: Sequence[str],
    dtype: str = "float32",
    low: float | None = None,
    high: float | None = None,
    **kwargs: Any,
) -> FeatureSchema:
    """A schema whose features all share dtype and range (image pixels, embeddings)."""
    return FeatureSchema(features=tuple(Feature(n, dtype, low, high) for n in names), **kwargs)


def feature_names(prefix: str, count: int) -> list[str]:
    width = len(str(count - 1))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]


def check_names(expected: Iterable[str], got: Iterable[str]) -> list[str]:
    """Human-readable differences between two ordered column lists (empty if equal)."""
    expected, got = list(expected), list(got)
    if expected == got:
        return []
    problems = []
    missing = [n for n in expected if n not in got]
    unexpected = [n for n in got if n not in expected]
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected columns: {', '.join(unexpected)}")
    if not missing and not unexpected:
        problems.append("columns are in a different order than the schema")
    return problems
