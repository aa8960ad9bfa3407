"""The policy pack's entry point: `pulumi preview --policy-pack infra/policy \
    --policy-pack-config infra/policy/enterprise.json` (mandatory) or `.../advisory.json`.

The enforcement level comes from that config file (`"all": "mandatory"|"advisory"`, plus
per-policy properties); without one, every policy is MANDATORY (advisory only when asked for).
"""

import sys
from pathlib import Path

# The analyzer runs this file with the pack directory as cwd; the checks live in the `infra` package.
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from pulumi_policy import PolicyPack  # noqa: E402

from infra.policy.offline import PACK_DEFAULT_LEVEL  # noqa: E402
from infra.policy.policies import POLICIES  # noqa: E402


PolicyPack(
    name="strata",
    policies=list(POLICIES),
    enforcement_level=PACK_DEFAULT_LEVEL,
    description="Strata platform guardrails; level and knobs from --policy-pack-config (enterprise.json / advisory.json).",
)
