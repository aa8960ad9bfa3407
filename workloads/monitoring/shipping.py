"""Ship only the alerts and panels whose metrics have an emitter running in the mode.

An alert over a metric nobody exports is worse than none: it never fires and it looks like
coverage. `ship_rules` drops every rule whose expression reads a contract metric of an
absent emitter (and, transitively, every rule reading a recording it dropped);
`ship_dashboard` drops the panels that would show "No data". Which emitters run is the
caller's fact: the program knows the mode (`infra.platform`), the supervisor knows what it
starts (`workloads.local`).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from workloads.monitoring import metrics as contract

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _series_emitters() -> dict[str, contract.Emitter]:
    return {series: m.emitter for m in contract.CONTRACT for series in (*m.series_names, m.name)}


def emitters_read(expr: str) -> set[contract.Emitter]:
    """The emitters whose metrics an expression reads."""
    table = _series_emitters()
    return {table[name] for name in _NAME.findall(expr) if name in table}


def ship_rules(groups: dict[str, Any], emitters: Iterable[contract.Emitter]) -> dict[str, Any]:
    running = set(emitters)
    dropped_records: set[str] = set()
    kept_groups = []
    # recordings may feed later groups (SLIs first): repeat until nothing more is dropped
    changed = True
    rules_of = [(g, list(g["rules"])) for g in groups["groups"]]
    while changed:
        changed = False
        for _, rules in rules_of:
            for rule in list(rules):
                names = set(_NAME.findall(rule["expr"]))
                if emitters_read(rule["expr"]) - running or names & dropped_records:
                    rules.remove(rule)
                    if "record" in rule:
                        dropped_records.add(rule["record"])
                    changed = True
    for group, rules in rules_of:
        if rules:
            kept_groups.append({**group, "rules": rules})
    return {**groups, "groups": kept_groups}


def ship_dashboard(dashboard: dict[str, Any], emitters: Iterable[contract.Emitter]) -> dict[str, Any] | None:
    """The dashboard without panels reading absent emitters; None when no data panel is left."""
    running = set(emitters)
    panels = [p for p in dashboard["panels"]
              if not any(emitters_read(t.get("expr", "")) - running for t in p.get("targets", []))]
    if not any(p.get("targets") for p in panels):
        return None
    return {**dashboard, "panels": panels}
