"""The object types and fields the compiler knows, each with the value Strawberry's resolver
gives (``schema/workflows/types.py``, ``schema/workspaces/types.py``), read the same way.

Each loader reads the children of every parent in one statement, through the lean reads,
with the tenancy and limits they hold (a workflow only from the caller's workspaces, pages
of at most 100, cursors checked); a check that fails raises, and the request declines to
the general path, which reports it.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.engine.nodes.base import load_catalogue
from app.errors import NotFound
from app.models import Role, ScheduleOverlap
from app.services import reads
from app.services import schedules as schedule_service
from app.services.pagination import Page
from app.services.reads import RunPageKey, VersionPageKey
from app.services.records import (
    RunRecord,
    UserRecord,
    VersionRecord,
    WebhookRecord,
    WorkflowRecord,
    WorkspaceRecord,
)
from schema.compiled.core import (
    Arguments,
    Children,
    Computed,
    Decline,
    Execution,
    Leaf,
    Link,
    ObjectPlan,
    ObjectType,
    Pages,
)
from schema.ids import decode_id, encode_id
from schema.runs.types import run_duration_ms
from schema.workflows.types import SCHEDULE_COLUMNS, Severity


def _id(kind: str) -> Leaf:
    return Leaf(("id",), lambda row: encode_id(kind, row.id))


def _column(name: str) -> Leaf:
    def value(row: Any) -> Any:
        return getattr(row, name)

    return Leaf((name,), value)


def _int4(name: str) -> Leaf:
    """An integer column of 32 bits: every value is a GraphQL Int."""
    return Leaf((name,), lambda row: getattr(row, name), int4=True)


def _time(name: str) -> Leaf:
    def value(row: Any) -> Any:
        moment = getattr(row, name)
        return moment.isoformat() if moment is not None else None

    return Leaf((name,), value)


def _stored_text(name: str, *, nullable: bool) -> Leaf:
    """A text field of a diagnostic stored as JSON; anything else there (never written by a
    save) declines, for the general path to report as it would."""

    def value(stored: dict[str, Any]) -> Any:
        found = stored.get(name)
        if type(found) is str or (found is None and nullable):
            return found
        raise Decline(f"a stored diagnostic's {name}")

    return Leaf((), value)


def _stored_path(stored: dict[str, Any]) -> list[str]:
    path = stored.get("path", [])
    if type(path) is not list or any(type(p) is not str for p in path):
        raise Decline("a stored diagnostic's path")
    return list(path)


def _severity(stored: dict[str, Any]) -> str:
    try:
        return Severity(stored.get("severity")).name
    except ValueError as error:
        raise Decline("a stored diagnostic's severity") from error


# --- loaders ------------------------------------------------------------------------------


async def _workflow(
    ex: Execution, parents: list[Any], args: Arguments, child: ObjectPlan
) -> Children:
    """``Query.workflow(id:)``: with the newest version in the same statement when a
    ``currentVersion`` below asks for it (kept for that field's loader)."""
    ahead = next((f.child for f in child.fields if f.name == "currentVersion"), None)
    # And the user who saved it, when that version's createdBy is asked
    creator = ahead is not None and any(f.name == "createdBy" for f in ahead.fields)
    row, version, user = await reads.read_workflow(
        ex.conn,
        principal=ex.principal,
        workflow_id=decode_id("Workflow", args["id"]),
        columns=child.columns,
        current_version=ahead.columns if ahead is not None else None,
        version_creator=creator,
    )
    if version is not None and ahead is not None:
        ex.primed[(row.id, row.current_version, ahead.columns)] = version
    if user is not None:
        ex.primed[("User", user.id)] = user
    return [row for _ in parents]


async def _workspace(
    ex: Execution, parents: list[Any], args: Arguments, child: ObjectPlan
) -> Children:
    """``Query.workspace(id:)``."""
    row = await reads.read_workspace(
        ex.conn,
        principal=ex.principal,
        workspace_id=decode_id("Workspace", args["id"]),
        columns=child.columns,
    )
    return [row for _ in parents]


async def _current_versions(
    ex: Execution, parents: list[Any], args: Arguments, child: ObjectPlan
) -> Children:
    """Each workflow's newest version (read ahead by the workflow's own statement, else
    all at once)."""
    columns = child.columns
    keys = [(w.id, w.current_version) for w in parents]
    found = {k: ex.primed[(*k, columns)] for k in keys if (*k, columns) in ex.primed}
    missing = [k for k in keys if k not in found]
    if missing:
        found |= await reads.read_versions(ex.conn, keys=missing, columns=columns)
    versions = [found.get(k) for k in keys]
    if any(v is None for v in versions):
        raise NotFound("WorkflowVersion")  # gone meanwhile: let the general path answer
    return versions


async def _version(
    ex: Execution, parents: list[Any], args: Arguments, child: ObjectPlan
) -> Children:
    """``Workflow.version(number:)``: null when there is none."""
    keys = [(w.id, args["number"]) for w in parents]
    found = await reads.read_versions(ex.conn, keys=keys, columns=child.columns)
    return [found.get(k) for k in keys]


async def _version_pages(
    ex: Execution, parents: list[Any], args: Arguments, columns: frozenset[str]
) -> list[Page[Any]]:
    """``Workflow.versions(first:, after:)``: every workflow's page in one statement."""
    first, after = args["first"], args.get("after")
    reads.check_version_page(first, after)
    keys = [VersionPageKey(w.id, first, after) for w in parents]
    return await reads.read_version_pages(ex.conn, keys=keys, columns=columns)


async def _version_counts(ex: Execution, parents: list[Any], args: Arguments) -> list[int]:
    # Versions are numbered 1..current without gaps, as Workflow.versions counts them.
    return [w.current_version for w in parents]


async def _run_pages(
    ex: Execution, parents: list[Any], args: Arguments, columns: frozenset[str]
) -> list[Page[Any]]:
    """``Workflow.runs(first:, after:, status:)``: every workflow's page in one statement."""
    first, after, status = args["first"], args.get("after"), args.get("status")
    reads.check_run_page(first, after)
    keys = [RunPageKey(w.id, first, after, status) for w in parents]
    return await reads.read_run_pages(ex.conn, keys=keys, columns=columns)


async def _run_counts(ex: Execution, parents: list[Any], args: Arguments) -> list[int]:
    status = args.get("status")
    return await reads.count_runs_of(ex.conn, keys=[(w.id, status) for w in parents])


async def _run_versions(
    ex: Execution, parents: list[Any], args: Arguments, child: ObjectPlan
) -> Children:
    """The version each run ran: one statement for all."""
    keys = [(r.workflow_id, r.version_number) for r in parents]
    found = await reads.read_versions(ex.conn, keys=list(set(keys)), columns=child.columns)
    versions = [found.get(k) for k in keys]
    if any(v is None for v in versions):
        raise NotFound("WorkflowVersion")  # a run's version is never deleted: let it report
    return versions


async def _workflow_pages(
    ex: Execution, parents: list[Any], args: Arguments, columns: frozenset[str]
) -> list[Page[Any]]:
    """``Workspace.workflows(first:, after:, search:)``."""
    return [
        await reads.read_workflow_page(
            ex.conn,
            principal=ex.principal,
            workspace_id=s.id,
            first=args["first"],
            after=args.get("after"),
            search=args.get("search"),
            columns=columns,
        )
        for s in parents
    ]


async def _workflow_counts(ex: Execution, parents: list[Any], args: Arguments) -> list[int]:
    return [
        await reads.count_workflows(ex.conn, workspace_id=s.id, search=args.get("search"))
        for s in parents
    ]


async def _users(ex: Execution, parents: list[Any], column: str) -> Children:
    """The users the parents' ``column`` names (read ahead by the workflow's statement,
    else all at once)."""
    keys = {key for p in parents if (key := getattr(p, column)) is not None}
    found = {k: ex.primed[("User", k)] for k in keys if ("User", k) in ex.primed}
    wanted = list(keys - found.keys())
    if wanted:
        found |= await reads.read_users(ex.conn, user_ids=wanted)
    return [found.get(getattr(p, column)) for p in parents]


async def _created_by(
    ex: Execution, parents: list[Any], args: Arguments, child: ObjectPlan
) -> Children:
    """Who made a version or workflow (null when that user was removed)."""
    return await _users(ex, parents, "created_by_id")


async def _schedule(
    ex: Execution, parents: list[Any], args: Arguments, child: ObjectPlan
) -> Children:
    """A workflow's schedule: its own row's columns (no statement); null when no cron was
    ever set."""
    return [
        w if w.schedule_cron is not None and w.schedule_timezone is not None else None
        for w in parents
    ]


async def _last_runs(
    ex: Execution, parents: list[Any], args: Arguments, child: ObjectPlan
) -> Children:
    """Each workflow's newest run, if any: one statement for all."""
    found = await reads.read_last_runs(
        ex.conn, workflow_ids=[w.id for w in parents], columns=child.columns
    )
    return [found.get(w.id) for w in parents]


async def _webhooks(
    ex: Execution, parents: list[Any], args: Arguments, child: ObjectPlan
) -> Children:
    """Each workflow's webhook, if it has one: one statement for all."""
    found = await reads.read_webhooks(
        ex.conn, workflow_ids=[w.id for w in parents], columns=child.columns
    )
    return [found.get(w.id) for w in parents]


def _webhook_url(hook: Any, args: Arguments, ex: Execution) -> str | None:
    """Where to POST; null for roles that cannot run the workflow (as Webhook.url)."""
    role = ex.principal.role_in(hook.workspace_id)
    if role is None or role.rank < Role.MEMBER.rank:
        return None
    return f"{ex.public_base_url()}/hooks/{hook.token}"


async def _node_types(
    ex: Execution, parents: list[Any], args: Arguments, child: ObjectPlan
) -> Children:
    """The catalogue, by category then type (as Query.nodeTypes)."""
    catalogue = sorted(load_catalogue().values(), key=lambda t: (t.category, t.type))
    return [list(catalogue) for _ in parents]


async def _diagnostics(
    ex: Execution, parents: list[Any], args: Arguments, child: ObjectPlan
) -> Children:
    return [list(v.diagnostics or []) for v in parents]


# --- the types ----------------------------------------------------------------------------

USER = ObjectType(
    "User",
    UserRecord,
    {"id": _id("User"), "email": _column("email"), "name": _column("name")},
)
DIAGNOSTIC = ObjectType(
    "Diagnostic",
    None,
    {
        "severity": Leaf((), _severity),
        "code": _stored_text("code", nullable=False),
        "message": _stored_text("message", nullable=False),
        "nodeId": _stored_text("nodeId", nullable=True),
        "edgeId": _stored_text("edgeId", nullable=True),
        "path": Leaf((), _stored_path),
    },
)
SCHEDULE = ObjectType(
    "WorkflowSchedule",
    None,  # the workflow's row: its parent reads the columns
    {
        "enabled": _column("schedule_enabled"),
        "cron": _column("schedule_cron"),
        "timezone": _column("schedule_timezone"),
        "overlap": Leaf((), lambda w: ScheduleOverlap(w.schedule_overlap).name),
        "nextFireAt": _time("schedule_next_fire_at"),
        "lastFiredAt": _time("schedule_last_fired_at"),
        "skippedCount": _int4("schedule_skipped_count"),
        "upcoming": Computed(
            (),
            lambda w, args, _: [
                t.isoformat() for t in schedule_service.upcoming(w, count=args["count"])
            ],
        ),
    },
)
WEBHOOK = ObjectType(
    "Webhook",
    WebhookRecord,
    {
        "enabled": _column("enabled"),
        "requireSignature": _column("require_signature"),
        "waitForResult": _column("wait_for_result"),
        "createdAt": _time("created_at"),
        "updatedAt": _time("updated_at"),
        "url": Computed((), _webhook_url),
        "signingSecret": Leaf((), lambda _: None),  # only in the payload that made it
    },
)
NODE_TYPE = ObjectType(
    "NodeType",
    None,
    {
        "type": _column("type"),
        "category": _column("category"),
        "label": _column("label"),
        "description": _column("description"),
        "configSchema": Leaf((), lambda t: t.config_schema()),
        "inputs": Leaf((), lambda t: list(t.inputs)),
        "outputs": Leaf((), lambda t: list(t.outputs)),
    },
)
RUN = ObjectType(
    "Run",
    RunRecord,
    {
        "id": _id("Run"),
        "status": Leaf(("status",), lambda r: r.status.name),
        "trigger": Leaf(("trigger",), lambda r: r.trigger.name),
        "error": _column("error"),
        "errorNodeId": _column("error_node_id"),
        "queuedAt": _time("queued_at"),
        "startedAt": _time("started_at"),
        "finishedAt": _time("finished_at"),
        "durationMs": Leaf(
            ("started_at", "finished_at"), lambda r: run_duration_ms(r.started_at, r.finished_at)
        ),
        "version": Link(("version_number",), "WorkflowVersion", _run_versions),
    },
)
VERSION = ObjectType(
    "WorkflowVersion",
    VersionRecord,
    {
        "id": _id("WorkflowVersion"),
        "number": _int4("number"),
        "message": _column("message"),
        "createdAt": _time("created_at"),
        "restoredFrom": _int4("restored_from"),
        # The stored JSON text goes in as is, as the resolver sends it.
        "graph": Leaf(("id", "graph_text"), lambda v: orjson.Fragment(v.graph_text)),
        "createdBy": Link(("created_by_id",), "User", _created_by),
        "diagnostics": Link(("diagnostics",), "Diagnostic", _diagnostics),
    },
)
WORKFLOW = ObjectType(
    "Workflow",
    WorkflowRecord,
    {
        "id": _id("Workflow"),
        "name": _column("name"),
        "description": _column("description"),
        "isTemplate": _column("is_template"),
        "templateCategory": _column("template_category"),
        "createdAt": _time("created_at"),
        "updatedAt": _time("updated_at"),
        "createdBy": Link(("created_by_id",), "User", _created_by),
        "currentVersion": Link(("current_version",), "WorkflowVersion", _current_versions),
        "version": Link((), "WorkflowVersion", _version),
        "versions": Pages(("current_version",), "WorkflowVersion", _version_pages, _version_counts),
        "schedule": Link(SCHEDULE_COLUMNS, "WorkflowSchedule", _schedule),
        "lastRun": Link((), "Run", _last_runs),
        "runs": Pages((), "Run", _run_pages, _run_counts),
        "webhook": Link((), "Webhook", _webhooks),
    },
)
WORKSPACE = ObjectType(
    "Workspace",
    WorkspaceRecord,
    {
        "id": _id("Workspace"),
        "name": _column("name"),
        "createdAt": _time("created_at"),
        "runRetentionDays": _int4("run_retention_days"),
        "workflows": Pages((), "Workflow", _workflow_pages, _workflow_counts),
    },
)
QUERY = ObjectType(
    "Query",
    None,
    {
        "workflow": Link((), "Workflow", _workflow),
        "workspace": Link((), "Workspace", _workspace),
        "nodeTypes": Link((), "NodeType", _node_types),
    },
)
TYPES = {
    t.name: t
    for t in (
        USER,
        DIAGNOSTIC,
        SCHEDULE,
        WEBHOOK,
        NODE_TYPE,
        RUN,
        VERSION,
        WORKFLOW,
        WORKSPACE,
        QUERY,
    )
}
