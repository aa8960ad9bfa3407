"""The ONE substitution mechanism both renderers use (Score's `${resources.<name>.<output>}`).

Placeholders in a declaration's command, args and env values:

| placeholder                      | local supervisor                 | cluster                              |
|----------------------------------|----------------------------------|--------------------------------------|
| `${bind}`                        | `127.0.0.1`                      | `$(POD_IP)` (downward API env)       |
| `${ports.<name>}`                | the port table's number          | the declared container port          |
| `${workloads.<w>.<port>}`        | `127.0.0.1:<its local port>`     | `<w>.<its namespace>.svc:<port>`     |
| `${resources.<r>.<output>}`      | the local provisioner's output   | the cluster provisioner's output     |

A renderer supplies a `Resolver`; `substitute` fails, naming the workload and the
placeholder, on anything it cannot resolve (a typo never reaches a process).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from workloads.catalogue.model import Resource, Workload

_PLACEHOLDER = re.compile(r"\$\{([a-z]+)(?:\.([a-z0-9-]+))?(?:\.([a-z0-9_-]+))?\}")
KINDS = ("bind", "ports", "workloads", "resources")


class SubstitutionError(ValueError):
    pass


def placeholders(text: str) -> list[tuple[str, str, str]]:
    """(kind, target, output) of every placeholder in `text`; unknown kinds fail here."""
    found = _PLACEHOLDER.findall(text)
    for kind, _, _ in found:
        if kind not in KINDS:
            raise SubstitutionError(f"{text!r}: unknown placeholder kind ${{{kind}...}} (known: {', '.join(KINDS)})")
    return found


class Resolver(Protocol):
    """What a renderer knows about where things are."""

    def bind(self, workload: "Workload") -> str: ...

    def own_port(self, workload: "Workload", port: str) -> int: ...

    def workload_address(self, workload: "Workload", target: str, port: str) -> str: ...

    def resource_output(self, workload: "Workload", name: str, resource: "Resource", output: str) -> str: ...


def substitute(text: str, workload: "Workload", resolver: Resolver) -> str:
    def one(match: re.Match) -> str:
        kind, target, output = match.group(1), match.group(2) or "", match.group(3) or ""
        where = f"workload {workload.name}: {match.group(0)}"
        try:
            if kind == "bind" and not target:
                return resolver.bind(workload)
            if kind == "ports" and target and not output:
                workload.port(target)  # KeyError names the ports it has
                return str(resolver.own_port(workload, target))
            if kind == "workloads" and target and output:
                return resolver.workload_address(workload, target, output)
            if kind == "resources" and target and output:
                if target not in workload.resources_used:
                    raise KeyError(f"no resource {target!r} (has {sorted(workload.resources_used)})")
                return resolver.resource_output(workload, target, workload.resources_used[target], output)
        except KeyError as error:
            raise SubstitutionError(f"{where}: {error.args[0]}") from None
        raise SubstitutionError(f"{where}: malformed placeholder (forms: {', '.join(_FORMS)})")

    placeholders(text)
    return _PLACEHOLDER.sub(one, text)


_FORMS = ("${bind}", "${ports.<name>}", "${workloads.<workload>.<port>}", "${resources.<name>.<output>}")


def render_argv(workload: "Workload", resolver: Resolver) -> list[str]:
    return [substitute(part, workload, resolver) for part in (*workload.command, *workload.args)]
