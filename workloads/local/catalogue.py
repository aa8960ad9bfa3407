"""The local renderer of the workload catalogue: a `Workload` becomes a supervisor service.

What it takes from a declaration: command and args (placeholders resolved through the
shared `workloads.catalogue.substitution`), named ports (each mapped to a row of the local
port table, `PORT_ROWS`), readiness probe (the supervisor's health check), metrics block
(the local Prometheus's file-SD scrape target, same job and path as the cluster's
ServiceMonitor), dependencies (start order), env (secret references read from
`<state>/secrets/<secret>/<key>`, created on first use) and the start timeout.

What it cannot honour, said out loud (`UNHONOURED`): replicas (one process each),
resources and disruption policy (no cgroups here), liveness probes (a dead process is
seen by the supervisor, a hung one is not restarted), and whole workloads that need what a
laptop has not got (`NOT_RENDERED`: the Kubernetes API, the cluster's registry sidecar).
The model servers' command is Seldon's wrapper as `workloads.serving.launch` starts it
(same module, parameters and ports).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from workloads.catalogue import declarations as decl
from workloads.catalogue.model import Resource, Workload
from workloads.catalogue.substitution import render_argv, substitute
from workloads.local.errors import ConfigError
from workloads.local.ports import HOST

#: Fields of a declaration the supervisor does not honour (and why).
UNHONOURED = {
    "replicas": "one process per workload",
    "resources": "no cgroup limits on the supervisor's processes",
    "disruption": "no voluntary disruptions locally",
    "liveness": "the supervisor watches the process, not a liveness endpoint",
    "image": "processes run from this checkout's environments (.venv, .venv-serving)",
}

#: Workloads (by component) the local mode does not run, and why.
NOT_RENDERED = {
    "cost-exporter": "reads nodes, pods and events from the Kubernetes API; there are no nodes locally",
    "registry-sync": "local training writes the registry export directly (STRATA_REGISTRY_DIR)",
    "rollout-controller": "runs on demand locally (`strata rollout`, the retrain trigger's hand-off), not supervised",
}

# component -> (port-table row, ports per workload); per-model rows take the model's index.
PORT_ROWS: dict[str, tuple[str, int]] = {
    "model-server": ("model-servers", 3),
    "stream-worker": ("stream-workers", 1),
    "drift-monitor": ("drift-monitor", 1),
    "quality-service": ("quality-service", 1),
    "retrain-trigger": ("retrain-trigger", 1),
    "tracking-server": ("mlflow", 1),
    "training-metrics": ("training-metrics", 1),
    "cdc-sink": ("cdc-sink", 1),  # the local CDC pipeline's (workloads.local.cdc_sink): one
    "feature-aggregator": ("feature-aggregator", 1),  # that pipeline's streaming features: one
}
MODEL_SERVER_PORTS_PER_MODEL = 6  # two slots x (REST, gRPC, Seldon metrics)


def renders(workload: Workload) -> bool:
    return workload.component not in NOT_RENDERED


@dataclass(frozen=True)
class Placement:
    """Where a rendered workload's ports are in the port table."""

    keys: tuple[str, ...]

    def key(self, workload: Workload, port: str) -> str:
        names = [p.name for p in workload.ports]
        return self.keys[names.index(port)]


def port_keys(workload: Workload, model_index: int | None) -> tuple[str, ...]:
    if workload.component not in PORT_ROWS:
        raise ConfigError(f"workload {workload.name}: component {workload.component!r} has no row in the local "
                          f"port table (workloads.local.catalogue.PORT_ROWS) and is not in NOT_RENDERED")
    row, per = PORT_ROWS[workload.component]
    if model_index is None:
        return (row,) if per == 1 else tuple(f"{row}+{i}" for i in range(per))
    if workload.component == "model-server":
        slot = decl.SLOTS.index(workload.labels["strata.dev/predictor"])
        base = MODEL_SERVER_PORTS_PER_MODEL * model_index + 3 * slot
        return tuple(f"{row}+{base + i}" for i in range(per))
    return (f"{row}+{model_index}",)


class LocalResolver:
    """Resolves placeholders for one service against its `ServiceContext`."""

    def __init__(self, ctx: Any, placements: Mapping[str, Placement], catalogue: Mapping[str, Workload],
                 provisioners: Mapping[str, Callable[[Any, Workload, Resource, str], str]]):
        self.ctx, self.placements, self.catalogue, self.provisioners = ctx, placements, catalogue, provisioners

    def bind(self, workload: Workload) -> str:
        return HOST  # every local service stays on loopback

    def own_port(self, workload: Workload, port: str) -> int:
        return self.ctx.port(self.placements[workload.name].key(workload, port))

    def workload_address(self, workload: Workload, target: str, port: str) -> str:
        if target not in self.placements:
            raise KeyError(f"{target!r} is not a local service")
        return f"{HOST}:{self.ctx.port(self.placements[target].key(self.catalogue[target], port))}"

    def resource_output(self, workload: Workload, name: str, resource: Resource, output: str) -> str:
        provisioner = self.provisioners.get(resource.type)
        if provisioner is None:
            raise KeyError(f"resource type {resource.type!r} has no local provisioner")
        return provisioner(self.ctx, workload, resource, output)


def local_secret_path(state_dir: Path, secret: str, key: str) -> Path:
    return state_dir / "secrets" / secret / key


def write_local_secret(state_dir: Path, secret: str, key: str, value: str) -> None:
    """A local Secret whose value the platform knows (like one the cluster's program builds
    from outputs, e.g. the MLflow database's URI): written before each start."""
    path = local_secret_path(state_dir, secret, key)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{key}.tmp")
    tmp.write_text(value)
    tmp.chmod(0o600)
    tmp.replace(path)


def local_secret(state_dir: Path, secret: str, key: str) -> str:
    """A local Secret's key: generated once (like a Secret the cluster's program creates)."""
    path = local_secret_path(state_dir, secret, key)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def render_env(workload: Workload, resolver: LocalResolver) -> dict[str, str]:
    env = {}
    for var in workload.env:
        if var.secret is not None:
            env[var.name] = local_secret(resolver.ctx.state_dir, var.secret.secret, var.secret.key)
        else:
            env[var.name] = substitute(var.value or "", workload, resolver)
    return env


def render_command(workload: Workload, resolver: LocalResolver, python: str) -> list[str]:
    """The declaration's argv; `python` (the module runner) is this checkout's interpreter."""
    argv = render_argv(workload, resolver)
    if argv and argv[0] == "python":
        argv[0] = python
    elif argv and argv[0] == "mlflow":
        argv = [python, "-m", "mlflow", *argv[1:]]
    return argv


def local_dependencies(workload: Workload, rendered: Sequence[str]) -> tuple[str, ...]:
    """Start order: declared workload edges, plus the local services behind its resources."""
    deps = [d.workload for d in workload.depends_on if d.workload in rendered]
    for resource in workload.resources_used.values():
        if resource.type == "kafka":
            deps.append("kafka")
        elif resource.type == "prometheus":
            deps.append("prometheus")
        elif resource.type == "object-store":
            deps.append("s3")
        elif resource.type == "feature-store":
            deps.append("redis")
    return tuple(dict.fromkeys(deps))


def check_complete(catalogue: Mapping[str, Workload], rendered: Sequence[str]) -> None:
    """Every catalogue workload is rendered here or named in NOT_RENDERED (no silent gaps)."""
    missing = sorted(n for n, w in catalogue.items() if renders(w) and n not in rendered)
    if missing:
        raise ConfigError(f"catalogue workloads without a local service: {', '.join(missing)}")


