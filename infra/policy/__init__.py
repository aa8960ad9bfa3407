"""Strata's policy pack (`pulumi_policy`), and the same checks run offline over the plan.

    from infra.policy import evaluate
    results = evaluate(plan.resources, plan.spec.capabilities.policy_enforcement)
"""

from infra.policy.offline import PolicyResult, blocking, evaluate, load_pack_config
from infra.policy.policies import POLICIES, POLICIES_BY_NAME

__all__ = ["POLICIES", "POLICIES_BY_NAME", "PolicyResult", "blocking", "evaluate", "load_pack_config"]
