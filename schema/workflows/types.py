"""GraphQL types of workflows, versions, diagnostics and diffs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import orjson
import strawberry
from strawberry.scalars import JSON

from app import models
from app.engine.diff import ChangeKind as ChangeKindModel
from app.engine.diff import EdgeChange as EdgeChangeModel
from app.engine.diff import GraphDiff as GraphDiffModel
from app.engine.diff import NodeChange as NodeChangeModel
from app.engine.diff import ValueChange as ValueChangeModel
from app.engine.graph import Diagnostic as DiagnosticModel
from app.engine.graph import Severity as SeverityModel
from app.services import reads
from app.services import versions as version_service
from app.services.reads import RunPageKey, VersionPageKey
from app.services.records import VersionRecord, WorkflowRecord
from schema.context import Info
from schema.ids import encode_id
from schema.pagination import Connection, connection
from schema.selection import columns_for, selected_names
from schema.workspaces.types import User, Workspace

if TYPE_CHECKING:
    from schema.runs.types import Run, RunStatus
    from schema.schedules.types import WorkflowSchedule
    from schema.webhooks.types import Webhook

# What a lean row's unread timestamp column reads as; never shown (its field was not asked).
NEVER = datetime.min.replace(tzinfo=UTC)

Severity: TypeAlias = SeverityModel
strawberry.enum(
    Severity,
    description="ERROR blocks a save; WARNING is saved and shown, and blocks execution "
    "(all but MISSING_SECRET: a secret may be set after the save).",
)


@strawberry.type(description="A finding of graph validation.")
class Diagnostic:
    severity: Severity = strawberry.field(description="ERROR or WARNING.")
    code: str = strawberry.field(description="Machine-readable code, e.g. EDGE_TARGET_UNKNOWN.")
    message: str = strawberry.field(description="Human-readable explanation.")
    node_id: str | None = strawberry.field(description="The node concerned, if any.")
    edge_id: str | None = strawberry.field(description="The edge concerned, if any.")
    path: list[str] = strawberry.field(description="Path into the graph, e.g. [nodes, 3, id].")

    @classmethod
    def from_model(cls, d: DiagnosticModel) -> Diagnostic:
        """The type of an engine diagnostic."""
        return cls(
            severity=d.severity,
            code=d.code,
            message=d.message,
            node_id=d.node_id,
            edge_id=d.edge_id,
            path=list(d.path),
        )

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Diagnostic:
        """The type of a diagnostic stored with a version."""
        return cls(
            severity=Severity(d["severity"]),
            code=d["code"],
            message=d["message"],
            node_id=d.get("nodeId"),
            edge_id=d.get("edgeId"),
            path=list(d.get("path", [])),
        )


@strawberry.type(description="One immutable save of a workflow's graph.")
class WorkflowVersion:
    # Plain fields are copied once in from_model: Strawberry resolves them far faster than
    # method resolvers, which matters on list pages (measured in bench/).
    row: strawberry.Private[models.WorkflowVersion | VersionRecord]
    # The workflow row when the parent had it (else loaded): says whether this is published.
    workflow_row: strawberry.Private[models.Workflow | WorkflowRecord | None]
    id: strawberry.ID = strawberry.field(description="Opaque ID.")
    number: int = strawberry.field(description="1, 2, 3 … per workflow, never reused.")
    message: str | None = strawberry.field(description="The save message, if any.")
    created_at: datetime = strawberry.field(description="When it was saved.")
    restored_from: int | None = strawberry.field(
        description="The version number a rollback copied, else null."
    )

    @strawberry.field(description="Who saved it (null when that user was removed).")
    async def created_by(self, info: Info) -> User | None:
        if self.row.created_by_id is None:
            return None
        row = await info.context.loaders.user_by_id.load(self.row.created_by_id)
        return User.from_model(row) if row else None

    @strawberry.field(description="The graph exactly as saved, unknown keys included.")
    async def graph(self, info: Info) -> JSON:
        # The stored JSON text goes into the response as is: decoding and re-encoding a
        # 22 KB graph would cost a third of a read (bench/). A lean row read it already
        # when the selection asked for it.
        text = getattr(self.row, "graph_text", None)
        if text is None:
            text = await info.context.loaders.graph_text_by_version_id.load(self.row.id)
        assert text is not None, "a version's graph is read with the version"
        return JSON(orjson.Fragment(text))

    @strawberry.field(description="Warnings found when it was saved (errors block a save).")
    def diagnostics(self) -> list[Diagnostic]:
        return [Diagnostic.from_json(d) for d in self.row.diagnostics or []]

    async def _published(self, info: Info) -> models.Workflow | WorkflowRecord | None:
        """The workflow row when this version is the published one, else None."""
        workflow: models.Workflow | WorkflowRecord | None = self.workflow_row
        if workflow is None:
            workflow = await info.context.loaders.workflow_by_id.load(self.row.workflow_id)
        if workflow is None or workflow.published_version != self.row.number:
            return None
        return workflow

    @strawberry.field(description="Whether schedules and webhooks run this version.")
    async def is_published(self, info: Info) -> bool:
        return await self._published(info) is not None

    @strawberry.field(description="When it became the published version; null unless it is.")
    async def published_at(self, info: Info) -> datetime | None:
        workflow = await self._published(info)
        return workflow.published_at if workflow is not None else None

    @strawberry.field(
        description="Who published it; null unless it is published (or by the "
        "migration that published existing workflows)."
    )
    async def published_by(self, info: Info) -> User | None:
        workflow = await self._published(info)
        if workflow is None or workflow.published_by_id is None:
            return None
        row = await info.context.loaders.user_by_id.load(workflow.published_by_id)
        return User.from_model(row) if row else None

    @classmethod
    def from_model(
        cls,
        row: models.WorkflowVersion | VersionRecord,
        workflow: models.Workflow | WorkflowRecord | None = None,
    ) -> WorkflowVersion:
        """The type of a row (with its workflow's row when at hand). A lean row holds only
        the columns its selection needs: the others are never shown."""
        return cls(
            row=row,
            workflow_row=workflow,
            id=_version_id(row),
            number=row.number,
            message=getattr(row, "message", None),
            created_at=getattr(row, "created_at", NEVER),
            restored_from=getattr(row, "restored_from", None),
        )


def _version_id(row: models.WorkflowVersion | VersionRecord) -> strawberry.ID:
    # A lean row without its id was read for a selection without `id` (never shown).
    version_id = getattr(row, "id", None)
    return strawberry.ID(encode_id("WorkflowVersion", version_id) if version_id else "")


# The columns each field of a version needs besides its number.
VERSION_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "number": (),
    "message": ("message",),
    "createdAt": ("created_at",),
    "restoredFrom": ("restored_from",),
    "createdBy": ("created_by_id",),
    "graph": ("id", "graph_text"),
    "diagnostics": ("diagnostics",),
    "isPublished": ("workflow_id",),
    "publishedAt": ("workflow_id",),
    "publishedBy": ("workflow_id",),
}


def version_columns(info: Info, below: tuple[str, ...] = ()) -> frozenset[str]:
    """The version columns the selection under the current field (or ``below`` it) needs."""
    return columns_for(selected_names(info, below), VERSION_COLUMNS, VersionRecord.selectable())


def current_version_columns(info: Info) -> frozenset[str]:
    """From a workflow's field: the version columns its ``currentVersion`` selection needs
    (as ``version_columns`` computes them inside currentVersion's own resolver)."""
    return columns_for(
        selected_names(info, ("currentVersion",)), VERSION_COLUMNS, VersionRecord.selectable()
    )


async def load_version(
    info: Info, workflow: models.Workflow | WorkflowRecord, number: int
) -> WorkflowVersion | None:
    """Version ``number`` of a workflow, with the columns its selection needs."""
    row = await info.context.loaders.version_by_key.load(
        (workflow.id, number, version_columns(info))
    )
    return WorkflowVersion.from_model(row, workflow) if row else None


ChangeKind: TypeAlias = ChangeKindModel
strawberry.enum(ChangeKind, description="A value ADDED, REMOVED, or CHANGED at its path.")


@strawberry.type(description="One value that differs inside a node or an edge.")
class ValueChange:
    path: list[str] = strawberry.field(
        description='JSON path inside the node or edge, e.g. ["data", "url"] (array positions '
        "as strings)."
    )
    kind: ChangeKind = strawberry.field(description="Added, removed or changed.")
    before: JSON | None = strawberry.field(
        description="The value before, when a scalar (null for objects, arrays, or absent). "
        "Strings as written in the graph: expressions, never secret values."
    )
    after: JSON | None = strawberry.field(description="The value after, likewise.")

    @classmethod
    def from_model(cls, c: ValueChangeModel) -> ValueChange:
        """The type of an engine value change."""
        return cls(path=list(c.path), kind=c.kind, before=JSON(c.before), after=JSON(c.after))


@strawberry.type(description="A node present in both versions whose content differs.")
class NodeChange:
    node_id: str = strawberry.field(description="The node's id.")
    fields: list[str] = strawberry.field(description="Top-level keys of the node that differ.")
    changes: list[ValueChange] = strawberry.field(
        description="Every value that differs inside those keys, in path order (at most 100)."
    )
    changes_truncated: bool = strawberry.field(description="More than 100 values differ.")

    @classmethod
    def from_model(cls, c: NodeChangeModel) -> NodeChange:
        """The type of an engine node change."""
        return cls(
            node_id=c.node_id,
            fields=c.fields,
            changes=[ValueChange.from_model(v) for v in c.changes],
            changes_truncated=c.truncated,
        )


@strawberry.type(description="An edge present in both versions whose content differs.")
class EdgeChange:
    edge_id: str = strawberry.field(description="The edge's id.")
    fields: list[str] = strawberry.field(description="Top-level keys of the edge that differ.")
    changes: list[ValueChange] = strawberry.field(
        description="Every value that differs inside those keys, in path order (at most 100)."
    )
    changes_truncated: bool = strawberry.field(description="More than 100 values differ.")

    @classmethod
    def from_model(cls, c: EdgeChangeModel) -> EdgeChange:
        """The type of an engine edge change."""
        return cls(
            edge_id=c.edge_id,
            fields=c.fields,
            changes=[ValueChange.from_model(v) for v in c.changes],
            changes_truncated=c.truncated,
        )


@strawberry.type(description="What changed between two versions, by node and edge id.")
class GraphDiff:
    nodes_added: list[str] = strawberry.field(description="Ids of nodes only in `to`.")
    nodes_removed: list[str] = strawberry.field(description="Ids of nodes only in `from`.")
    nodes_changed: list[NodeChange] = strawberry.field(description="Nodes in both that differ.")
    edges_added: list[str] = strawberry.field(description="Ids of edges only in `to`.")
    edges_removed: list[str] = strawberry.field(description="Ids of edges only in `from`.")
    edges_changed: list[str] = strawberry.field(description="Ids of edges in both that differ.")
    edge_changes: list[EdgeChange] = strawberry.field(
        description="The edges in both that differ, with what changed inside them."
    )

    @classmethod
    def from_model(cls, d: GraphDiffModel) -> GraphDiff:
        """The type of an engine diff."""
        return cls(
            nodes_added=d.nodes_added,
            nodes_removed=d.nodes_removed,
            nodes_changed=[NodeChange.from_model(c) for c in d.nodes_changed],
            edges_added=d.edges_added,
            edges_removed=d.edges_removed,
            edges_changed=d.edges_changed,
            edge_changes=[EdgeChange.from_model(c) for c in d.edge_changes],
        )


@strawberry.type(description="A workflow: a name and a history of graph versions.")
class Workflow:
    row: strawberry.Private[models.Workflow | WorkflowRecord]
    # The version a mutation just wrote (it is the current one): shown without a read.
    written: strawberry.Private[models.WorkflowVersion | None]
    id: strawberry.ID = strawberry.field(description="Opaque ID.")
    name: str = strawberry.field(description="Name, unique in its workspace (case-insensitive).")
    description: str = strawberry.field(description="Free text description.")
    is_template: bool = strawberry.field(description="Offered as one of its workspace's templates.")
    template_category: str | None = strawberry.field(
        description="Gallery category when it is a template."
    )
    created_at: datetime = strawberry.field(description="When it was created.")
    updated_at: datetime = strawberry.field(
        description="When its last version was saved (or details changed)."
    )

    @strawberry.field(description="The workspace it belongs to.")
    async def workspace(self, info: Info) -> Workspace:
        row = await info.context.loaders.workspace_by_id.load(self.row.workspace_id)
        assert row is not None
        return Workspace.from_model(row)

    @strawberry.field(description="Who created it (null when that user was removed).")
    async def created_by(self, info: Info) -> User | None:
        if self.row.created_by_id is None:
            return None
        row = await info.context.loaders.user_by_id.load(self.row.created_by_id)
        return User.from_model(row) if row else None

    @strawberry.field(description="Its webhook; null until one is made.")
    async def webhook(
        self, info: Info
    ) -> Annotated[Webhook, strawberry.lazy("schema.webhooks.types")] | None:
        from schema.webhooks.types import Webhook

        row = await info.context.loaders.webhook_by_workflow_id.load(self.row.id)
        return Webhook.from_model(row) if row is not None else None

    @strawberry.field(description="Its cron schedule; null when none was ever set.")
    def schedule(
        self,
    ) -> Annotated[WorkflowSchedule, strawberry.lazy("schema.schedules.types")] | None:
        from schema.schedules.types import WorkflowSchedule

        return WorkflowSchedule.from_model(self.row)

    @strawberry.field(description="The newest version (a draft until it is published).")
    async def current_version(self, info: Info) -> WorkflowVersion:
        written = self.written
        if written is not None and written.number == self.row.current_version:
            return WorkflowVersion.from_model(written, self.row)
        version = await load_version(info, self.row, self.row.current_version)
        assert version is not None
        return version

    @strawberry.field(
        description="The version schedules and webhooks run; null until one is published."
    )
    async def published_version(self, info: Info) -> WorkflowVersion | None:
        if self.row.published_version is None:
            return None
        return await load_version(info, self.row, self.row.published_version)

    @strawberry.field(description="One version by number (null when there is none).")
    async def version(self, info: Info, number: int) -> WorkflowVersion | None:
        return await load_version(info, self.row, number)

    @strawberry.field(description="The history, newest version first.")
    async def versions(
        self, info: Info, first: int = 20, after: str | None = None
    ) -> Connection[WorkflowVersion]:
        reads.check_version_page(first, after)
        columns = version_columns(info, ("edges", "node"))
        page = await info.context.loaders.version_page.load(
            (VersionPageKey(self.row.id, first, after), columns)
        )
        workflow = self.row
        return connection(
            page,
            lambda row: WorkflowVersion.from_model(row, workflow),
            lambda: _count(workflow),
        )

    @strawberry.field(
        description="What changed between two versions, by node and edge id, down to the JSON "
        "paths inside them."
    )
    async def diff(
        self, info: Info, from_: Annotated[int, strawberry.argument(name="from")], to: int
    ) -> GraphDiff:
        model = await version_service.diff_versions(
            info.context.session, workflow_id=self.row.id, from_number=from_, to_number=to
        )
        return GraphDiff.from_model(model)

    @strawberry.field(description="Its runs, newest first, optionally of one status.")
    async def runs(
        self,
        info: Info,
        first: int = 20,
        after: str | None = None,
        status: Annotated[RunStatus, strawberry.lazy("schema.runs.types")] | None = None,
    ) -> Connection[Annotated[Run, strawberry.lazy("schema.runs.types")]]:
        from schema.runs.types import Run, run_columns

        reads.check_run_page(first, after)
        loaders = info.context.loaders
        columns = run_columns(info, ("edges", "node"))
        page = await loaders.run_page.load((RunPageKey(self.row.id, first, after, status), columns))
        workflow_id = self.row.id
        return connection(
            page,
            Run.from_model,
            lambda: loaders.run_count.load((workflow_id, status)),
        )

    @strawberry.field(description="Its newest run, if any.")
    async def last_run(
        self, info: Info
    ) -> Annotated[Run, strawberry.lazy("schema.runs.types")] | None:
        from schema.runs.types import Run, run_columns

        row = await info.context.loaders.last_run_by_workflow_id.load(
            (self.row.id, run_columns(info))
        )
        return Run.from_model(row) if row else None

    @classmethod
    def from_model(
        cls,
        row: models.Workflow | WorkflowRecord,
        written: models.WorkflowVersion | None = None,
    ) -> Workflow:
        """The type of a row (and of the version a mutation just wrote). A lean row holds
        only the columns its selection needs: the others are never shown."""
        return cls(
            row=row,
            written=written,
            id=strawberry.ID(encode_id("Workflow", row.id)),
            name=getattr(row, "name", ""),
            description=getattr(row, "description", ""),
            is_template=getattr(row, "is_template", False),
            template_category=getattr(row, "template_category", None),
            created_at=getattr(row, "created_at", NEVER),
            updated_at=row.updated_at,
        )


SCHEDULE_COLUMNS = (
    "schedule_cron",
    "schedule_timezone",
    "schedule_enabled",
    "schedule_next_fire_at",
    "schedule_last_fired_at",
    "schedule_overlap",
    "schedule_skipped_count",
)
# What a version's isPublished, publishedAt and publishedBy read of its workflow.
PUBLISHED_COLUMNS = ("published_version", "published_at", "published_by_id")
# The columns each field of a workflow needs besides WorkflowRecord.BASE.
WORKFLOW_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": (),
    "name": ("name",),
    "description": ("description",),
    "isTemplate": ("is_template",),
    "templateCategory": ("template_category",),
    "createdAt": ("created_at",),
    "updatedAt": (),
    "workspace": ("workspace_id",),
    "createdBy": ("created_by_id",),
    "webhook": (),
    "schedule": SCHEDULE_COLUMNS,
    "currentVersion": PUBLISHED_COLUMNS,
    "publishedVersion": PUBLISHED_COLUMNS,
    "version": PUBLISHED_COLUMNS,
    "versions": PUBLISHED_COLUMNS,
    "diff": (),
    "runs": (),
    "lastRun": (),
}


def workflow_columns(info: Info, below: tuple[str, ...] = ()) -> frozenset[str]:
    """The workflow columns the selection under the current field (or ``below`` it) needs."""
    return columns_for(selected_names(info, below), WORKFLOW_COLUMNS, WorkflowRecord.selectable())


async def _count(workflow: models.Workflow | WorkflowRecord) -> int:
    # Versions are numbered 1..current without gaps (a unique constraint and one bump a save).
    return workflow.current_version
