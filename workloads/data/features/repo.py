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
class RegistryError(ValueError):
    """A registry URL that cannot be used; the message names it (password hidden)."""


_SCHEMA_LOCK = 0x5354524146524547  # pg_advisory_xact_lock key ("STRAFREG"): one table creation at a time


def registry_engine_url(url: str):
    """The SQLAlchemy URL of `url`: `postgresql://` (libpq's form, what the cluster's Secret
    may carry) is driven by psycopg 3, the driver the images have; sqlite and
    `postgresql+psycopg://` are taken as they are. Anything else is refused by name."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as error:
        raise RegistryError(f"feature registry URL {url.split('@')[-1]!r} is not a database URL "
                            "(sqlite:///<file> or postgresql+psycopg://<user>:<password>@<host>/<db>)") from error
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise RegistryError(f"feature registry URL {parsed.render_as_string(hide_password=True)!r}: driver "
                            f"{parsed.drivername!r} is not supported (sqlite, postgresql+psycopg)")
    return parsed


class Registry:
    """The repo's registry in a SQL database: `sqlite:///<state>/features/registry.db` locally,
    PostgreSQL on the cluster (`postgresql+psycopg://...`, the registry's own database and role on
    the MLflow database server: `infra.platform.feature_registry`).

    Safe for concurrent writers (two materializations, or a materialization and an `apply`, at
    once): the tables are created under a transaction-scoped advisory lock on PostgreSQL (DDL is
    transactional there, so the second creator sees the first one's tables); `apply` inserts with
    ON CONFLICT DO NOTHING and updates only a row whose hash differs, so racing applies of one view
    give one row, one "created" and the others "unchanged"; a materialization is recorded once per
    (view, gold version, as_of), so a retried run adds no second record.
    """

    def __init__(self, url: str):
        import sqlalchemy as sa

        engine_url = registry_engine_url(url)
        self.engine = sa.create_engine(engine_url, pool_pre_ping=True)
        self.url = engine_url.render_as_string(hide_password=True)
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
        # one record per run; an index (not a table constraint) so a registry created before it gets it too
        run_index = sa.Index("materializations_run", self.materializations.c.view,
                             self.materializations.c.source_version, self.materializations.c.as_of, unique=True)
        try:
            with self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
                meta.create_all(conn)
                run_index.create(conn, checkfirst=True)
        except sa.exc.OperationalError as error:
            raise RegistryError(f"feature registry {self.url}: cannot connect: "
                                f"{str(error.orig).strip().splitlines()[0] if error.orig else error}") from error

    def _insert(self, table):
        """INSERT with the dialect's ON CONFLICT (PostgreSQL and sqlite both have it)."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def apply(self, repo: FeatureRepo) -> dict[str, str]:
        """Upsert every view; returns view -> "created" | "updated" | "unchanged"."""
        import sqlalchemy as sa

        now, changes, t = datetime.now(timezone.utc), {}, self.views_table
        with self.engine.begin() as conn:
            for name, view in sorted(repo.views.items()):
                row = {"name": name, "content_hash": view.content_hash, "owner": view.owner,
                       "definition": json.dumps(view.definition(), sort_keys=True),
                       "models": ",".join(view.models), "applied_at": now}
                # A concurrent insert of the same name waits for the other transaction, then does nothing.
                inserted = conn.execute(self._insert(t).values(**row).on_conflict_do_nothing(index_elements=["name"])
                                        .returning(t.c.name)).first()  # RETURNING: INSERT's rowcount is not kept
                if inserted is not None:
                    changes[name] = "created"
                elif conn.execute(sa.update(t).where(t.c.name == name, t.c.content_hash != view.content_hash)
                                  .values(**row)).rowcount:
                    changes[name] = "updated"
                else:
                    changes[name] = "unchanged"
        return changes

    def stored_views(self) -> dict[str, dict[str, Any]]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return {r.name: json.loads(r.definition) for r in conn.execute(sa.select(self.views_table))}

    def record_materialization(self, view: str, source_version: int, as_of: datetime, entities: int) -> bool:
        """Record one run; False when this (view, version, as_of) is already recorded (a retry)."""
        t = self.materializations
        with self.engine.begin() as conn:
            inserted = conn.execute(self._insert(t).values(
                view=view, source_version=source_version, as_of=as_of, entities=entities,
                finished_at=datetime.now(timezone.utc)).on_conflict_do_nothing(
                    index_elements=["view", "source_version", "as_of"]).returning(t.c.id)).first()
        return inserted is not None

    def materializations_of(self, view: str) -> list[dict[str, Any]]:
        """Every recorded run of `view`, latest values first."""
        import sqlalchemy as sa

        t = self.materializations
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.view == view).order_by(t.c.as_of.desc(), t.c.id.desc()))
            return [dict(r._mapping) for r in rows]

    def last_materialization(self, view: str) -> dict[str, Any] | None:
        """The run whose values are the newest (latest `as_of`): which gold version is online."""
        runs = self.materializations_of(view)
        return runs[0] if runs else None


def enrichment_plan(spec: ModelSpec) -> "EnrichmentPlan | None":
    """What serving looks up online for `spec` (its online views), or None without features."""
    from workloads.data.features.lookup import EnrichmentPlan, FeatureColumn, ViewPlan

    if spec.features is None:
        return None
    views = tuple(ViewPlan(v.name, tuple(spec.features.join_keys(v)),
                           tuple(FeatureColumn(f.name, f.dtype, f.default) for f in v.features))
                  for v in spec.features.views if v.online)
    return EnrichmentPlan(views, spec.features.on_outage, spec.name) if views else None
