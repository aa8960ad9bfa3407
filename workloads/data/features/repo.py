"""The feature repository, generated from the model specs, and its SQL registry.

Each spec's `features` section declares entities and feature views over gold tables. Two
models may share a view only if they declare it identically (same source, keys, TTL,
features); a view's owner defaults to the owner of the first model that declares it. The
registry is a SQL database (sqlite locally, PostgreSQL on the cluster, through SQLAlchemy):
`apply()` records every view with a content hash (re-applying the same repo changes
nothing), and materializations record which gold version each view's online values came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable

from workloads.spec import Entity, FeatureView, ModelSpec

if TYPE_CHECKING:
    from workloads.data.features.lookup import EnrichmentPlan


class FeatureRepoError(ValueError):
    """Specs that cannot form one repository; the message names the models and the view."""


@dataclass(frozen=True)
class ViewDefinition:
    """A feature view as the store uses it: the spec's view plus its resolved keys and owner."""

    view: FeatureView
    join_keys: tuple[str, ...]
    owner: str
    models: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.view.name

    @property
    def table(self) -> str:
        return self.view.source.removeprefix("gold/")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.view.features]

    @property
    def defaults(self) -> dict[str, Any]:
        return {f.name: f.default for f in self.view.features}

    def definition(self) -> dict[str, Any]:
        return {"view": self.view.model_dump(mode="json", by_alias=True), "joinKeys": list(self.join_keys),
                "owner": self.owner}

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.definition(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class FeatureRepo:
    entities: dict[str, Entity] = field(default_factory=dict)
    views: dict[str, ViewDefinition] = field(default_factory=dict)

    def view(self, name: str) -> ViewDefinition:
        if name not in self.views:
            raise FeatureRepoError(f"no feature view {name!r}; views: {', '.join(sorted(self.views)) or 'none'}")
        return self.views[name]

    def for_model(self, spec: ModelSpec) -> list[ViewDefinition]:
        return [self.views[v.name] for v in spec.features.views] if spec.features else []


def build_repo(specs: Iterable[ModelSpec]) -> FeatureRepo:
    """Entities and views of every spec with a `features` section, checked for conflicts."""
    repo = FeatureRepo()
    entity_from: dict[str, str] = {}
    for spec in sorted(specs, key=lambda s: s.name):
        if spec.features is None:
            continue
        for entity in spec.features.entities:
            known = repo.entities.get(entity.name)
            if known is not None and known.join_keys != entity.join_keys:
                raise FeatureRepoError(
                    f"entity {entity.name!r}: model {spec.name!r} keys it by {entity.join_keys}, "
                    f"model {entity_from[entity.name]!r} by {known.join_keys}; one entity has one key")
            repo.entities.setdefault(entity.name, entity)
            entity_from.setdefault(entity.name, spec.name)
        for view in spec.features.views:
            keys = tuple(spec.features.join_keys(view))
            known = repo.views.get(view.name)
            if known is None:
                repo.views[view.name] = ViewDefinition(view, keys, view.owner or spec.owner, (spec.name,))
                continue
            mine = view.model_copy(update={"owner": known.view.owner})
            if mine != known.view or keys != known.join_keys:
                raise FeatureRepoError(
                    f"feature view {view.name!r} is declared differently by models {', '.join(known.models)} "
                    f"and {spec.name!r}; share it by declaring it identically, or give it another name")
            repo.views[view.name] = ViewDefinition(known.view, keys, known.owner, known.models + (spec.name,))
    return repo


# ------------------------------------------------------------------------ registry (SQL)
class Registry:
    """The repo's registry in a SQL database: `sqlite:///<state>/features/registry.db` locally."""

    def __init__(self, url: str):
        import sqlalchemy as sa

        self.engine = sa.create_engine(url)
        meta = sa.MetaData()
        self.views_table = sa.Table(
            "feature_views", meta,
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("content_hash", sa.String(16), nullable=False),
            sa.Column("definition", sa.Text, nullable=False),
            sa.Column("owner", sa.String(254), nullable=False),
            sa.Column("models", sa.Text, nullable=False),
            sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False))
        self.materializations = sa.Table(
            "materializations", meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("view", sa.String(64), nullable=False, index=True),
            sa.Column("source_version", sa.Integer, nullable=False),
            sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
            sa.Column("entities", sa.Integer, nullable=False),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False))
        meta.create_all(self.engine)

    def apply(self, repo: FeatureRepo) -> dict[str, str]:
        """Upsert every view; returns view -> "created" | "updated" | "unchanged"."""
        import sqlalchemy as sa

        now, changes = datetime.now(timezone.utc), {}
        with self.engine.begin() as conn:
            stored = {r.name: r.content_hash for r in conn.execute(sa.select(self.views_table))}
            for name, view in sorted(repo.views.items()):
                row = {"name": name, "content_hash": view.content_hash, "owner": view.owner,
                       "definition": json.dumps(view.definition(), sort_keys=True),
                       "models": ",".join(view.models), "applied_at": now}
                if name not in stored:
                    conn.execute(sa.insert(self.views_table).values(**row))
                    changes[name] = "created"
                elif stored[name] != view.content_hash:
                    conn.execute(sa.update(self.views_table).where(self.views_table.c.name == name).values(**row))
                    changes[name] = "updated"
                else:
                    changes[name] = "unchanged"
        return changes

    def stored_views(self) -> dict[str, dict[str, Any]]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return {r.name: json.loads(r.definition) for r in conn.execute(sa.select(self.views_table))}

    def record_materialization(self, view: str, source_version: int, as_of: datetime, entities: int) -> None:
        import sqlalchemy as sa

        with self.engine.begin() as conn:
            conn.execute(sa.insert(self.materializations).values(
                view=view, source_version=source_version, as_of=as_of, entities=entities,
                finished_at=datetime.now(timezone.utc)))

    def last_materialization(self, view: str) -> dict[str, Any] | None:
        import sqlalchemy as sa

        t = self.materializations
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.view == view).order_by(t.c.id.desc()).limit(1)).first()
        return dict(row._mapping) if row else None


def enrichment_plan(spec: ModelSpec) -> "EnrichmentPlan | None":
    """What serving looks up online for `spec` (its online views), or None without features."""
    from workloads.data.features.lookup import EnrichmentPlan, FeatureColumn, ViewPlan

    if spec.features is None:
        return None
    views = tuple(ViewPlan(v.name, tuple(spec.features.join_keys(v)),
                           tuple(FeatureColumn(f.name, f.dtype, f.default) for f in v.features))
                  for v in spec.features.views if v.online)
    return EnrichmentPlan(views, spec.features.on_outage, spec.name) if views else None
