"""The real `PulumiStacks` (Pulumi Automation API) and `PreviewCluster` (Kubernetes API).

Used by `strata preview ...` in the workflows, and against the local control plane in
tests/cluster. The program runs inline (`infra.entrypoint.main` in this process: the
Python SDK serves the language runtime, so no `pulumi-language-python` plugin is
needed). The backend is the Pulumi CLI's own choice: `PULUMI_BACKEND_URL` (Pulumi Cloud
with `PULUMI_ACCESS_TOKEN` in the workflows; `file://DIR` with `PULUMI_CONFIG_PASSPHRASE`
for a local one, no login), else the CLI's logged-in backend. The stack config files go
to a work folder of their own (default `.strata/pulumi` in the checkout, or
`$STRATA_PULUMI_WORK_DIR`), never into stacks/. The unit tests replace both classes with
doubles (tests/cicd).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from infra.config import PROJECT, PROJECT_ROOT
from infra.preview.stacks import StackInfo, is_preview_stack
from infra.preview.teardown import KubeObject


def _print(line: str) -> None:
    sys.stderr.write(line if line.endswith("\n") else line + "\n")


def _config_value(value: Any) -> str:
    # Structured values as JSON strings: the entry point decodes them (infra.config._decode).
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value).lower() if isinstance(value, bool) else str(value)


def _program() -> None:
    from infra.entrypoint import main

    main()


def _process_alive(lock: Mapping[str, Any]) -> bool:
    """A lock's owner still runs: on another host (unknowable here, so yes) or alive here."""
    if lock.get("hostname") != socket.gethostname():
        return True
    try:
        pid = int(lock["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed `pulumi` whose parent died too stays a zombie until PID 1 reaps it (some
    container inits never do): signal 0 still reaches it, but it holds nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


class AutomationStacks:
    """Stacks of this project through the Automation API, the program inline."""

    def __init__(self, work_dir: Path | None = None, env: Mapping[str, str] | None = None,
                 program: Callable[[], None] = _program):
        from pulumi import automation

        self._auto = automation
        self.work_dir = Path(work_dir or os.environ.get("STRATA_PULUMI_WORK_DIR") or PROJECT_ROOT / ".strata" / "pulumi")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._env = dict(env or {})
        self._workspace = automation.LocalWorkspace(
            work_dir=str(self.work_dir), program=program, env_vars=dict(env or {}),
            project_settings=automation.ProjectSettings(name=PROJECT, runtime="python"))

    def _stack(self, stack: str):
        return self._auto.Stack.select(stack, self._workspace)

    def list_stacks(self) -> list[StackInfo]:
        infos = []
        for summary in self._workspace.list_stacks():
            if not is_preview_stack(summary.name):
                continue
            try:
                tags = dict(self._stack(summary.name).list_tags())
            except self._auto.errors.CommandError:
                tags = {}  # a backend without stack tags: gc falls back to the last update time
            infos.append(StackInfo(name=summary.name, tags=tags, last_update=summary.last_update,
                                   update_in_progress=bool(summary.update_in_progress)))
        return infos

    def exists(self, stack: str) -> bool:
        return any(summary.name.rsplit("/", 1)[-1] == stack for summary in self._workspace.list_stacks())

    def create_or_select(self, stack: str) -> None:
        self._auto.Stack.create_or_select(stack, self._workspace)

    def preview(self, stack: str) -> dict[str, int]:
        """`pulumi preview`: the count of each planned operation (`same` only: no changes)."""
        result = self._stack(stack).preview(on_output=_print, color="never")
        return {str(op): count for op, count in result.change_summary.items()}

    def set_tags(self, stack: str, tags: Mapping[str, str]) -> None:
        selected = self._stack(stack)
        for key, value in tags.items():
            selected.set_tag(key, value)

    def set_config(self, stack: str, config: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        values = {key: self._auto.ConfigValue(value=_config_value(value)) for key, value in config.items()}
        values.update({key: self._auto.ConfigValue(value=value, secret=True) for key, value in secrets.items()})
        self._stack(stack).set_all_config(values)

    def up(self, stack: str) -> dict[str, Any]:
        result = self._stack(stack).up(on_output=_print, color="never")
        return {key: output.value for key, output in result.outputs.items()}

    def destroy(self, stack: str) -> None:
        selected = self._stack(stack)
        self._release_dead_locks(stack, selected)
        self._clear_pending_operations(selected)
        # refresh: resources deleted behind Pulumi's back (or never finished) leave the state first.
        selected.destroy(on_output=_print, color="never", refresh=True)

    def _release_dead_locks(self, stack: str, selected) -> None:
        """On a local file backend an update holds a lock file naming its process (pid,
        host); killed, it leaves the file and every later command refuses the stack. When
        every lock's process is gone from this host, `pulumi cancel` (the file backend's way
        to delete them) releases them; a live process's lock is left alone."""
        backend = {**os.environ, **self._env}.get("PULUMI_BACKEND_URL", "")
        if not backend.startswith("file://"):
            return  # Pulumi Cloud knows whether an update is running: gc skips those
        locks_dir = Path(backend.removeprefix("file://").split("?", 1)[0]) / ".pulumi" / "locks"
        locks = [json.loads(path.read_text()) for path in locks_dir.glob(f"**/{PROJECT}/{stack}/*.json")]
        if locks and not any(_process_alive(lock) for lock in locks):
            _print(f"releasing the lock of an interrupted update of {stack} "
                   f"(process {', '.join(str(lock.get('pid')) for lock in locks)} is gone)")
            selected.cancel()

    def _clear_pending_operations(self, selected) -> None:
        """An `up` killed mid-way leaves pending creates in the state, and destroy refuses to
        run until they are resolved: drop them (refresh then finds what really exists)."""
        deployment = selected.export_stack()
        state = deployment.deployment or {}
        if state.get("pending_operations"):
            _print(f"clearing {len(state['pending_operations'])} pending operation(s) of an interrupted update")
            state = {**state, "pending_operations": []}
            selected.import_stack(self._auto.Deployment(version=deployment.version, deployment=state))

    def remove(self, stack: str) -> None:
        self._workspace.remove_stack(stack)


class KubernetesCluster:
    """The shared preview cluster through the Kubernetes API (official Python client) and
    one kubeconfig file."""

    def __init__(self, kubeconfig: Path):
        from kubernetes import client, config

        self.kubeconfig = Path(kubeconfig)
        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        self._core = client.CoreV1Api(api)
        self._networking = client.NetworkingV1Api(api)

    def load_balancers(self, prefix: str) -> list[KubeObject]:
        found = [KubeObject("Service", s.metadata.namespace, s.metadata.name)
                 for s in self._core.list_service_for_all_namespaces().items
                 if s.metadata.namespace.startswith(prefix) and s.spec.type == "LoadBalancer"]
        found += [KubeObject("Ingress", i.metadata.namespace, i.metadata.name)
                  for i in self._networking.list_ingress_for_all_namespaces().items
                  if i.metadata.namespace.startswith(prefix)]
        return found

    def namespaces(self, prefix: str) -> list[KubeObject]:
        return [KubeObject("Namespace", "", n.metadata.name)
                for n in self._core.list_namespace(label_selector="app.kubernetes.io/part-of=strata").items
                if n.metadata.name.startswith(prefix)]

    def delete(self, obj: KubeObject) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            if obj.kind == "Namespace":
                self._core.delete_namespace(obj.name)
            elif obj.kind == "Service":
                self._core.delete_namespaced_service(obj.name, obj.namespace)
            elif obj.kind == "Ingress":
                self._networking.delete_namespaced_ingress(obj.name, obj.namespace)
            else:
                raise ValueError(f"cannot delete {obj}: not a Namespace, Service or Ingress")
        except ApiException as error:
            # 404: already gone; 409 on a Namespace: already being deleted.
            if not (error.status == 404 or (error.status == 409 and obj.kind == "Namespace")):
                raise
