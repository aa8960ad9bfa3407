"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes; no download).

Each image is flattened to 64 pixel features `px_r_c` with intensities 0..16, so the
serving contract is a flat feature vector like every other tabular model; the CNN
reshapes to [1, 8, 8] inside the model.
"""

from __future__ import annotations

import numpy as np

from workloads.data.dataset import Dataset
from workloads.data.schema import Feature, FeatureSchema

DIGITS_NAMES = tuple(f"px_{r}_{c}" for r in range(8) for c in range(8))
DIGITS_SCHEMA = FeatureSchema(
    features=tuple(Feature(name, "float32", 0.0, 16.0) for name in DIGITS_NAMES),
    label="digit",
    label_values=tuple(range(10)),
    task="multiclass",
    extra={"image_shape": [1, 8, 8]},
)


def load_digits_dataset(uri: str = "sklearn://digits") -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    features = np.asarray(bunch.data, dtype=np.float32)
    labels = np.asarray(bunch.target, dtype=np.int64)
    return Dataset(features, labels, list(DIGITS_NAMES), uri, {"dataset": "sklearn.datasets.load_digits"})
