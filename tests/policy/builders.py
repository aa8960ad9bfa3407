"""Fixture builders for policy tests: harness-shaped records with compliant defaults."""

from __future__ import annotations

import copy
from typing import Any

from infra.plan.harness import PlannedResource

DELETE = object()  # in an override: remove this key


def merge(base: Any, override: Any) -> Any:
    """Deep-merge `override` into a copy of `base`; dict values merge, everything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = copy.deepcopy(base)
        for key, value in override.items():
            if value is DELETE:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


def res(
    type_: str,
    name: str,
    inputs: dict[str, Any],
    secret_paths: tuple[str, ...] = (),
    dependencies: tuple[str, ...] = (),
    parent: str | None = None,
) -> PlannedResource:
    return PlannedResource(
        urn=urn(type_, name),
        type=type_,
        name=name,
        parent_urn=parent,
        custom=True,
        inputs=inputs,
        secret_paths=secret_paths,
        dependencies=dependencies,
    )


def urn(type_: str, name: str) -> str:
    return f"urn:pulumi:test::strata::{type_}::{name}"


PROBE = {"httpGet": {"path": "/health", "port": 8080}}


def container(**override: Any) -> dict[str, Any]:
    base = {
        "name": "app",
        "image": "000000000000.dkr.ecr.eu-west-1.amazonaws.com/strata/app:1.2.3",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "livenessProbe": PROBE,
        "readinessProbe": PROBE,
    }
    return merge(base, override)


def pod_spec(containers: list[dict[str, Any]] | None = None, **override: Any) -> dict[str, Any]:
    base = {
        "containers": containers if containers is not None else [container()],
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,
    }
    return merge(base, override)


def deployment(
    name: str = "web",
    spec: dict[str, Any] | None = None,
    replicas: int = 1,
    namespace: str = "team-a",
    kind: str = "Deployment",
) -> PlannedResource:
    labels = {"app": name}
    return res(
        f"kubernetes:apps/v1:{kind}",
        name,
        {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": float(replicas),  # the engine hands numbers over as floats
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": spec if spec is not None else pod_spec()},
            },
        },
    )


def custom(api_version: str, kind: str, name: str, spec: dict[str, Any], namespace: str = "team-a") -> PlannedResource:
    group, version = api_version.rsplit("/", 1)
    return res(
        f"kubernetes:{group}/{version}:{kind}",
        name,
        {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec},
    )


def seldon(name: str = "fraud", replicas: int = 1, component: dict[str, Any] | None = None, spec: dict[str, Any] | None = None):
    component_spec = {"metadata": {"labels": {"strata.dev/model": name}}, "spec": spec or pod_spec()}
    component_spec.update(component or {})
    return custom(
        "machinelearning.seldon.io/v1",
        "SeldonDeployment",
        name,
        {
            "predictors": [
                {
                    "name": "default",
                    "replicas": float(replicas),
                    "graph": {"name": "app", "type": "MODEL"},
                    "componentSpecs": [component_spec],
                }
            ]
        },
    )


def ray_job(name: str = "train", head: dict[str, Any] | None = None, worker: dict[str, Any] | None = None):
    return custom(
        "ray.io/v1",
        "RayJob",
        name,
        {
            "entrypoint": "python -m workloads.training.train",
            "rayClusterSpec": {
                "headGroupSpec": {"template": {"metadata": {"labels": {"role": "head"}}, "spec": head or pod_spec()}},
                "workerGroupSpecs": [
                    {"groupName": "cpu", "replicas": 2.0, "template": {"spec": worker or pod_spec()}}
                ],
            },
        },
    )
