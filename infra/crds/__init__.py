"""Typed builders for custom resources: ONE builder per kind, in `<operator>.py`.

Each module holds pydantic models that mirror the upstream CRD schema of the operator
version pinned in `infra.platform.charts` (field names, enums, required fields), so a
typo or a value outside an enum fails while the program is built, naming the property
path, instead of at `pulumi up` time in the API server.

Every builder takes the operator's Helm release and adds it to `depends_on`: a custom
resource is never registered before the release that installs its CRD (and starts the
controller that reconciles it). `custom_resource()` enforces that for all of them.
"""

from __future__ import annotations

from typing import Any, Mapping

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CrdModel(BaseModel):
    """Base of the CRD mirrors: camelCase on the wire, unknown fields refused, frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    def render(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectMeta(CrdModel):
    name: str
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


def custom_resource(
    resource_name: str,
    *,
    api_version: str,
    kind: str,
    metadata: ObjectMeta,
    spec: CrdModel | Mapping[str, Any],
    operator: pulumi.Resource,
    opts: pulumi.ResourceOptions | None = None,
) -> k8s.apiextensions.CustomResource:
    """Register one custom resource after (`depends_on`) the release serving its CRD."""
    if operator is None:
        raise ValueError(f"{kind} {metadata.name!r}: needs its operator's Helm release (CRD provider)")
    rendered_spec = spec.render() if isinstance(spec, CrdModel) else dict(spec)
    merged = pulumi.ResourceOptions.merge(opts or pulumi.ResourceOptions(), pulumi.ResourceOptions(depends_on=[operator]))
    return k8s.apiextensions.CustomResource(
        resource_name,
        api_version=api_version,
        kind=kind,
        metadata=metadata.render(),
        spec=rendered_spec,
        opts=merged,
    )
