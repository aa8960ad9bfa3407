"""The Pulumi program's entry point: the ONLY place that reads `pulumi.Config`.

It turns the stack's config into a typed `StackSpec` (failing with property paths),
pulls the secrets out as secret Outputs, and hands both to `infra.program.build`. Run by
`infra/__main__.py` (a directory `pulumi up`) and, as an inline program, by the
Automation API (`infra.preview.automation`), where no Python language host is needed.
"""

from __future__ import annotations

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env

from infra.config import SpecError, parse_stack_config
from infra.program import StackSecrets, build


def main() -> None:
    raw = {**get_config_env(), **CONFIG.get()}
    try:
        spec = parse_stack_config(raw, pulumi.get_stack())
    except SpecError as error:
        raise SystemExit(f"invalid stack config for {pulumi.get_stack()!r}:\n{error}") from None
    strata = pulumi.Config("strata")
    secrets = StackSecrets(
        pagerduty_routing_keys=strata.get_secret_object("pagerdutyRoutingKeys"),
        kubeconfig=strata.get_secret("kubeconfig"),
        cdc_credentials=strata.get_secret_object("cdcCredentials"),
    )
    for name, value in build(spec, secrets).items():
        pulumi.export(name, value)
