"""Per-model resources, generated from one `ModelSpec` (the fan-out of the `models` map)."""

from infra.models.deployment import ModelDeployment, ModelDeploymentArgs

__all__ = ["ModelDeployment", "ModelDeploymentArgs"]
