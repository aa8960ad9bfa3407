"""`strata plan`: the offline plan of one stack, as a table for people or JSON for tools."""

from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from infra.modes import RolloutStrategy
from infra.policy import PolicyResult, blocking, evaluate
from infra.plan.cost import CostReport, estimate
from infra.plan.harness import SECRET_PLACEHOLDER, Plan, PlannedResource, run_program, run_stack

COMPONENT_PREFIX = "strata:"


@dataclass
class PlanReport:
    plan: Plan
    cost: CostReport
    policy_results: list[PolicyResult]
    enforcement: str
    notes: list[str]

    @property
    def mandatory_violations(self) -> list[PolicyResult]:
        return blocking(self.policy_results)


def mode_notes(plan: Plan) -> list[str]:
    """What the mode changed about each model's wishes: said out loud, never silent."""
    spec = plan.spec
    caps = spec.capabilities
    notes = []
    for model in spec.models:
        wanted = RolloutStrategy(model.serving.rollout.strategy.value)
        if wanted not in caps.rollout_strategies:
            notes.append(f"{model.name}: rollout {wanted.value!r} is not offered in mode {caps.mode.value!r}; one predictor instead")
        if model.serving.streaming.enabled and not caps.kafka:
            notes.append(f"{model.name}: streaming needs Kafka, which mode {caps.mode.value!r} does not deploy; real-time only")
        if model.training.data_key and not caps.kafka:
            notes.append(f"{model.name}: lake ingestion by CDC (Debezium on Kafka Connect) needs Kafka, which mode "
                         f"{caps.mode.value!r} does not deploy; batch ingestion (landing files) only")
        if model.training.hpo is not None and not caps.training_hpo:
            notes.append(f"{model.name}: HPO is off in mode {caps.mode.value!r}; trains once with the spec's defaults")
        if model.training.workers > caps.training_max_workers:
            notes.append(f"{model.name}: {model.training.workers} training workers capped at {caps.training_max_workers} in mode {caps.mode.value!r}")
    online_views = any(v.online for m in spec.models if m.features is not None for v in m.features.views)
    for pipeline in spec.cdc_pipelines:
        if not caps.kafka:
            notes.append(f"cdc {pipeline.name}: {pipeline.table} -> bronze/{pipeline.lake_table} needs Kafka, which mode "
                         f"{caps.mode.value!r} does not deploy; not rendered (batch ingestion only)")
            if pipeline.features is not None:
                view = pipeline.features.view
                notes.append(f"cdc {pipeline.name}: the streaming features of view {view!r} need "
                             f"the CDC stream (Kafka); no aggregator: the lake step (`strata data run "
                             f"{pipeline.lake_table}`) computes the same aggregates into gold/{view} from the "
                             f"batch-ingested bronze/{pipeline.lake_table}, and the view's online values come from "
                             f"its materialization")
        elif pipeline.features is not None and not online_views:
            notes.append(f"cdc {pipeline.name}: the streaming features of view {pipeline.features.view!r} need an "
                         f"online store, which exists only where a model declares online feature views; no aggregator")
        elif pipeline.features is not None:
            view = pipeline.features.view
            notes.append(f"cdc {pipeline.name}: view {view!r} is kept current online from the change stream, not "
                         f"materialized from gold; the lake step (`strata data run {pipeline.lake_table}`) writes "
                         f"its offline copy gold/{view} for training sets")
    materializing = sorted(r.inputs["metadata"]["name"].removesuffix("-materialize") for r in plan.of_kind("CronJob")
                           if (r.inputs["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
                           == "feature-materialization")
    if materializing:
        server = ("MLflow's RDS instance (TLS, certificate verified)" if plan.by_type("aws:rds/instance:Instance")
                  else "MLflow's in-cluster PostgreSQL")
        notes.append(f"feature registry: database 'feature_registry' with its own role on {server}, for the "
                     f"materialization of {', '.join(materializing)} (URL in Secret 'feature-registry')")
    elif online_views:
        notes.append("feature registry: none; every online view is filled from the change stream (CDC), nothing "
                     "materializes from gold")
    return notes


def build_report(stack: str, stack_file: Path | None = None) -> PlanReport:
    from infra.config import read_stack_document

    plan = run_program(stack, read_stack_document(stack_file)) if stack_file else run_stack(stack)
    enforcement = plan.spec.capabilities.policy_enforcement
    results = evaluate(plan.resources, enforcement)
    return PlanReport(plan=plan, cost=estimate(plan), policy_results=results, enforcement=enforcement.value, notes=mode_notes(plan))


def _masked(resource: PlannedResource) -> dict[str, Any]:
    inputs = copy.deepcopy(resource.inputs)
    for path in resource.secret_paths:
        _set_path(inputs, path, SECRET_PLACEHOLDER)
    return inputs


def _set_path(data: Any, path: str, value: Any) -> None:
    if path == "<root>":
        return
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    target = data
    for part in parts[:-1]:
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            return
    try:
        target[parts[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass


def to_json(report: PlanReport) -> dict[str, Any]:
    plan = report.plan
    return {
        "stack": plan.stack,
        "mode": plan.spec.mode.value,
        "region": plan.spec.region,
        "evaluationSeconds": round(plan.seconds, 3),
        "importSeconds": round(plan.import_seconds, 3),
        "counts": dict(sorted(Counter(r.type for r in plan.resources).items())),
        "resources": [
            {
                "type": r.type,
                "name": r.name,
                "urn": r.urn,
                "parent": r.parent_urn,
                "custom": r.custom,
                "dependsOn": list(r.dependencies),
                "secretInputs": list(r.secret_paths),
                "inputs": _masked(r),
            }
            for r in plan.resources
        ],
        "policies": {
            "enforcement": report.enforcement,
            "violations": [
                {"policy": v.policy, "resource": v.urn, "message": v.message, "level": v.enforcement.value}
                for v in report.policy_results
            ],
        },
        "cost": {
            "priceTable": report.cost.price_table,
            "monthlyUsd": report.cost.monthly_usd,
            "spotShare": round(report.cost.spot_share, 3),
            "byItem": report.cost.by_item(),
            "lines": [
                {"item": l.item, "resource": l.resource, "monthlyUsd": l.monthly_usd, "spot": l.spot}
                for l in report.cost.lines
            ],
            "notEstimated": report.cost.not_estimated,
        },
        "notes": report.notes,
        "outputs": plan.outputs,
    }


def _tree(plan: Plan) -> Tree:
    by_parent: dict[str | None, list[PlannedResource]] = {}
    for resource in plan.resources:
        by_parent.setdefault(resource.parent_urn, []).append(resource)
    root_urns = {r.parent_urn for r in plan.resources} - {r.urn for r in plan.resources}
    tree = Tree(f"[bold]stack {plan.stack}[/] ({len(plan.resources)} resources)")

    def add(node: Tree, parent: str | None) -> None:
        children = by_parent.get(parent, [])
        for component in sorted((c for c in children if not c.custom), key=lambda c: (c.type, c.name)):
            branch = node.add(f"[cyan]{component.type}[/] [bold]{component.name}[/]")
            add(branch, component.urn)
        leaves = Counter(c.type for c in children if c.custom)
        for type_token, count in sorted(leaves.items()):
            node.add(f"{type_token} x{count}" if count > 1 else type_token)

    for root in sorted(u for u in root_urns if u):
        add(tree, root)
    return tree


def print_table(report: PlanReport, console: Console) -> None:
    plan, cost = report.plan, report.cost
    console.print(_tree(plan))

    counts = Table(title="Resources by type", show_lines=False)
    counts.add_column("type")
    counts.add_column("count", justify="right")
    for type_token, count in sorted(Counter(r.type for r in plan.custom_resources).items()):
        counts.add_row(type_token, str(count))
    console.print(counts)

    policies = Table(title=f"Policy results (enforcement: {report.enforcement})")
    policies.add_column("policy")
    policies.add_column("resource")
    policies.add_column("level")
    policies.add_column("message")
    for v in report.policy_results:
        policies.add_row(v.policy, v.resource_name or "(stack)", v.enforcement.value, v.message)
    if report.policy_results:
        console.print(policies)
    else:
        console.print(f"[green]Policies: no violations[/] (enforcement: {report.enforcement})")

    costs = Table(title=f"Estimated monthly cost (price table {cost.price_table})")
    costs.add_column("item")
    costs.add_column("USD / month", justify="right")
    for item, usd in sorted(cost.by_item().items(), key=lambda kv: -kv[1]):
        costs.add_row(item, f"{usd:,.2f}")
    costs.add_row("[bold]total[/]", f"[bold]{cost.monthly_usd:,.2f}[/]")
    console.print(costs)
    console.print(f"spot share of compute: {cost.spot_share:.0%}; not estimated: {', '.join(cost.not_estimated)}")
    for note in report.notes:
        console.print(f"[yellow]note[/] {note}")
    console.print(f"evaluated under mocks in {plan.seconds:.2f} s (+{plan.import_seconds:.2f} s importing the program)")
