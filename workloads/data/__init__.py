"""Data for the workloads: datasets, data URIs, feature schemas, validation.

numpy only at import time (pandas/scikit-learn are imported lazily where needed), so the
serving and monitoring environments can use `workloads.data.schema` too.
"""

from workloads.data.dataset import Dataset, Splits, load_uri, split
from workloads.data.schema import Feature, FeatureSchema
from workloads.data.validation import DataValidationError, ValidationReport, ValidationResult, validate

__all__ = [
    "Dataset",
    "DataValidationError",
    "Feature",
    "FeatureSchema",
    "Splits",
    "ValidationReport",
    "ValidationResult",
    "load_uri",
    "split",
    "validate",
]
