"""The real `PulumiStacks` (Pulumi Automation API) and `PreviewCluster` (`kubectl`).

Used by `strata preview ...` in the workflows. They need the `pulumi` CLI, a logged-in
backend (`PULUMI_BACKEND_URL` / `PULUMI_ACCESS_TOKEN`) and the preview cluster's
kubeconfig; the unit tests replace both classes with doubles (tests/cicd).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from infra.config import PROJECT_ROOT
from infra.preview.stacks import StackInfo, is_preview_stack
from infra.preview.teardown import KubeObject


def _print(line: str) -> None:
    sys.stderr.write(line if line.endswith("\n") else line + "\n")


def _config_value(value: Any) -> str:
    # Structured values as JSON strings: the entry point decodes them (infra.config._decode).
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value).lower() if isinstance(value, bool) else str(value)


class AutomationStacks:
    """Stacks of this project (Pulumi.yaml at the repository root) through the Automation API."""

    def __init__(self, work_dir: Path = PROJECT_ROOT, env: Mapping[str, str] | None = None):
        from pulumi import automation

        self._auto = automation
        self._workspace = automation.LocalWorkspace(work_dir=str(work_dir), env_vars=dict(env or {}))

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
        self._clear_pending_operations(selected)
        # refresh: resources deleted behind Pulumi's back (or never finished) leave the state first.
        selected.destroy(on_output=_print, color="never", refresh=True)

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


class KubectlCluster:
    """The shared preview cluster through `kubectl` and one kubeconfig file."""

    def __init__(self, kubeconfig: Path, kubectl: str = "kubectl"):
        self.kubeconfig = Path(kubeconfig)
        self.kubectl = kubectl

    def _run(self, *args: str) -> str:
        command = [self.kubectl, "--kubeconfig", str(self.kubeconfig), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[3:])}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def _items(self, *args: str) -> list[dict[str, Any]]:
        return json.loads(self._run("get", *args, "-o", "json")).get("items", [])

    def load_balancers(self, prefix: str) -> list[KubeObject]:
        found = []
        for item in self._items("services,ingresses.networking.k8s.io", "--all-namespaces"):
            meta = item["metadata"]
            if not meta.get("namespace", "").startswith(prefix):
                continue
            if item["kind"] == "Ingress" or (item.get("spec") or {}).get("type") == "LoadBalancer":
                found.append(KubeObject(item["kind"], meta["namespace"], meta["name"]))
        return found

    def namespaces(self, prefix: str) -> list[KubeObject]:
        return [KubeObject("Namespace", "", item["metadata"]["name"])
                for item in self._items("namespaces", "-l", "app.kubernetes.io/part-of=strata")
                if item["metadata"]["name"].startswith(prefix)]

    def delete(self, obj: KubeObject) -> None:
        kind = {"Ingress": "ingresses.networking.k8s.io"}.get(obj.kind, obj.kind.lower())
        args = ["delete", kind, obj.name, "--ignore-not-found", "--wait=false"]
        if obj.namespace:
            args += ["--namespace", obj.namespace]
        self._run(*args)
