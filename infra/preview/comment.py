"""The pull-request comment: offline plans of every stack, head against base.

Input: `strata plan --stack S --format json` of the head (this PR) and of the base branch
(computed from a worktree of it); output: one markdown comment, found again and updated
in place through the `MARKER` line. Pure functions of the plan JSON - no network.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional

MARKER = "<!-- strata:pr-plan -->"
MAX_VIOLATIONS_LISTED = 20
PLAN_KEYS = {"stack", "mode", "counts", "resources", "policies", "cost"}  # what `to_json` writes and we read


def _cell(text: str) -> str:
    """Table-safe: a `|` in a policy message would split the markdown row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def resource_total(plan: Mapping[str, Any]) -> int:
    return len(plan.get("resources", []))


def count_diff(base: Optional[Mapping[str, Any]], head: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(type, base count, head count) for every type whose count changed, by type."""
    before = Counter(base.get("counts", {})) if base else Counter()
    after = Counter(head.get("counts", {}))
    return [(t, before.get(t, 0), after.get(t, 0)) for t in sorted(set(before) | set(after))
            if before.get(t, 0) != after.get(t, 0)]


def _delta(before: float, after: float, money: bool = False) -> str:
    change = after - before
    if abs(change) < (0.005 if money else 1):
        return "±0"
    return f"{change:+,.2f}" if money else f"{change:+,d}"


def _violations(plan: Mapping[str, Any]) -> tuple[int, int]:
    found = plan.get("policies", {}).get("violations", [])
    mandatory = sum(1 for v in found if v.get("level") == "mandatory")
    return mandatory, len(found) - mandatory


def render_comment(
    heads: Mapping[str, Mapping[str, Any]],
    bases: Mapping[str, Optional[Mapping[str, Any]]],
    *,
    head_ref: str = "",
    base_ref: str = "",
    preview_notice: str = "",
    failures: Mapping[str, str] | None = None,
) -> str:
    """`heads`/`bases`: stack -> plan JSON (`bases[stack]` None where the base has no plan)."""
    failures = dict(failures or {})
    lines = [MARKER, "## Strata offline plan", ""]
    if head_ref or base_ref:
        lines += [f"`{head_ref or 'head'}` against base `{base_ref or 'base'}` - Pulumi program under mocks, "
                  "no cloud credentials.", ""]
    lines += ["| stack | mode | resources (base → head) | Δ | USD/month (base → head) | Δ | spot share | policies |",
              "|---|---|---|---|---|---|---|---|"]
    for stack in sorted(set(heads) | set(failures)):
        if stack in failures:
            lines.append(f"| {stack} | - | plan failed | | | | | :x: |")
            continue
        head, base = heads[stack], bases.get(stack)
        total, usd = resource_total(head), float(head["cost"]["monthlyUsd"])
        mandatory, advisory = _violations(head)
        policy = (":x: " if mandatory else ":white_check_mark: ") + (
            f"{mandatory} mandatory, {advisory} advisory ({head['policies']['enforcement']})"
            if mandatory or advisory else f"no violations ({head['policies']['enforcement']})")
        if base is None:
            counts = f"new → {total}"
            money = f"new → {usd:,.2f}"
            deltas = ("", "")
        else:
            base_total, base_usd = resource_total(base), float(base["cost"]["monthlyUsd"])
            counts, money = f"{base_total} → {total}", f"{base_usd:,.2f} → {usd:,.2f}"
            deltas = (_delta(base_total, total), _delta(base_usd, usd, money=True))
        lines.append(f"| {stack} | {head['mode']} | {counts} | {deltas[0]} | {money} | {deltas[1]} | "
                     f"{float(head['cost']['spotShare']):.0%} | {policy} |")
    lines.append("")

    changed = {stack: count_diff(bases.get(stack), heads[stack]) for stack in sorted(heads)}
    if any(changed.values()):
        lines += ["### Resource counts that changed", "", "| stack | type | base | head | Δ |", "|---|---|---|---|---|"]
        for stack, rows in changed.items():
            for type_token, before, after in rows:
                lines.append(f"| {stack} | `{type_token}` | {before} | {after} | {_delta(before, after)} |")
        lines.append("")
    else:
        lines += ["No resource count changed against the base branch.", ""]

    violations = [(stack, v) for stack in sorted(heads) for v in heads[stack]["policies"]["violations"]]
    if violations:
        lines += ["### Policy violations", "", "| stack | level | policy | resource | message |", "|---|---|---|---|---|"]
        for stack, v in violations[:MAX_VIOLATIONS_LISTED]:
            resource = v["resource"].rsplit("::", 1)[-1] if v.get("resource") else "(stack)"
            lines.append(f"| {stack} | {v['level']} | {v['policy']} | `{resource}` | {_cell(v['message'])} |")
        if len(violations) > MAX_VIOLATIONS_LISTED:
            lines.append(f"\n… and {len(violations) - MAX_VIOLATIONS_LISTED} more (see the job's plan artifacts).")
        lines.append("")

    notes = [(stack, note) for stack in sorted(heads) for note in heads[stack].get("notes", [])]
    if notes:
        lines += ["<details><summary>Mode notes</summary>", ""]
        lines += [f"- **{stack}**: {_cell(note)}" for stack, note in notes]
        lines += ["", "</details>", ""]
    for stack, error in sorted(failures.items()):
        lines += [f"**{stack}**: plan failed - {error}", ""]
    if preview_notice:
        lines += [preview_notice, ""]
    return "\n".join(lines).rstrip() + "\n"


def load_plans(folder: Path) -> dict[str, dict[str, Any]]:
    """`<folder>/<stack>.json` files written by `strata plan --format json --output`."""
    plans = {}
    for file in sorted(Path(folder).glob("*.json")):
        try:
            plan = json.loads(file.read_text())
        except (OSError, ValueError):
            continue  # a failed or partial plan: reported as missing
        if isinstance(plan, dict) and PLAN_KEYS <= set(plan):
            plans[file.stem] = plan
    return plans
