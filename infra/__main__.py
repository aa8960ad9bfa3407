"""Pulumi entry point: the ONLY place that reads `pulumi.Config`.

It turns the stack's config into a typed `StackSpec` (failing with property paths),
pulls the secrets out as secret Outputs, and hands both to `infra.program.build`.
"""

import sys
from pathlib import Path

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # repo root: infra + workloads

from infra.config import SpecError, parse_stack_config  # noqa: E402
from infra.program import StackSecrets, build  # noqa: E402


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
    )
    for name, value in build(spec, secrets).items():
        pulumi.export(name, value)


main()
