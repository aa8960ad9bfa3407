"""One Pulumi stack of an inline program (the Automation API), created for a test module and
destroyed and removed after it, whatever the tests did."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def inline_stack(name: str, program: Callable[[], None], work_dir: Path) -> Iterator[object]:
    from infra.preview.automation import AutomationStacks

    stacks = AutomationStacks(work_dir=work_dir, program=program)
    stacks.create_or_select(name)
    try:
        yield stacks
    finally:
        stacks.destroy(name)
        stacks.remove(name)


def restricted_namespaces(kubeconfig: str, namespaces: dict[str, tuple[str, str]]) -> tuple[object, list[object]]:
    """Inside a program: the local cluster's provider (server-side apply) and one restricted
    `PlatformNamespace` per role -> (name, tenant). Returns (resource options, namespaces)."""
    import pulumi
    import pulumi_kubernetes as k8s

    from infra.k8s import PodSecurityLevel
    from infra.platform.namespaces import PlatformNamespace, PlatformNamespaceArgs

    provider = k8s.Provider("local", kubeconfig=pulumi.Output.secret(kubeconfig), enable_server_side_apply=True)
    opts = pulumi.ResourceOptions(provider=provider)
    created = [PlatformNamespace(role, PlatformNamespaceArgs(name=name, tenant=tenant,
                                                             pod_security=PodSecurityLevel.RESTRICTED), opts=opts)
               for role, (name, tenant) in namespaces.items()]
    return opts, created
