"""Lean reads: the rows GraphQL shows, by plain psycopg, only the columns asked for.

The builder's hot reads (a workflow with its graph, the workflow list, nested pages of
versions and runs) skip the ORM: each is one statement through the runtime's psycopg pool
(autocommit; psycopg prepares a statement server-side after a few uses), whose rows become
``Record``s holding exactly the selected columns (``app/services/records.py``). A page nested
under a list (each workflow's versions or runs) is read for every parent at once: the
parents' keys go in as arrays and a LATERAL subquery pages each one, with its own ``first``
and cursor, from its index; one statement whatever the page sizes. Tenancy is in the SQL as
well as in the role checks: a workflow is only read from the caller's workspaces.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from app.auth.principal import Principal
from app.errors import ErrorCode, InputErrors, NotFound
from app.models import Role, RunStatus
from app.services.pagination import (
    Page,
    check_page_size,
    decode_cursor,
    decode_time_cursor,
    make_page,
)
from app.services.records import (
    NO_ID,
    NO_NUMBER,
    NO_TIME,
    Connection,
    FireRecord,
    RunRecord,
    UserRecord,
    VersionRecord,
    WebhookRecord,
    WorkflowRecord,
    WorkspaceRecord,
    group_by_key,
    keyed_records,
    plan_of,
    records,
)
from app.services.text import storable
from app.services.workflows import MAX_SEARCH, like_escape

# --- workspaces, users --------------------------------------------------------------------


async def read_workspace(
    conn: Connection, *, principal: Principal, workspace_id: uuid.UUID, columns: frozenset[str]
) -> WorkspaceRecord:
    """A workspace the caller belongs to (NotFound otherwise); no statement when only its id
    is asked (a membership implies the workspace)."""
    principal.require(workspace_id, Role.VIEWER)
    if not columns - set(WorkspaceRecord.BASE):
        record = WorkspaceRecord.__new__(WorkspaceRecord)
        record.id = workspace_id
        return record
    found = await records(
        conn,
        WorkspaceRecord,
        columns,
        "SELECT {columns} FROM workspaces s WHERE s.id = %s",
        (workspace_id,),
    )
    if not found:
        raise NotFound("Workspace")
    return found[0]


async def read_users(conn: Connection, *, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, UserRecord]:
    """Users by id (their id, email and name)."""
    rows = await records(
        conn,
        UserRecord,
        frozenset(),
        "SELECT {columns} FROM users u WHERE u.id = ANY(%b::uuid[])",
        (user_ids,),
    )
    return {row.id: row for row in rows}


# --- workflows ----------------------------------------------------------------------------


WORKFLOW = "SELECT {columns} FROM workflows w WHERE w.id = %s AND w.workspace_id = ANY(%b::uuid[])"
WORKFLOW_AND_VERSION = (
    "SELECT {columns}, {version} FROM workflows w"
    " LEFT JOIN workflow_versions v ON v.workflow_id = w.id AND v.number = w.current_version"
    " WHERE w.id = %s AND w.workspace_id = ANY(%b::uuid[])"
)
WORKFLOW_VERSION_AND_CREATOR = WORKFLOW_AND_VERSION.replace(
    " WHERE", " LEFT JOIN users u ON u.id = v.created_by_id WHERE"
).replace("{version}", "{version}, {user}")


async def read_workflow(
    conn: Connection,
    *,
    principal: Principal,
    workflow_id: uuid.UUID,
    columns: frozenset[str],
    current_version: frozenset[str] | None = None,
    version_creator: bool = False,
) -> tuple[WorkflowRecord, VersionRecord | None, UserRecord | None]:
    """A workflow of the caller's workspaces (NotFound otherwise), and with it, when
    ``current_version`` names its columns, its newest version, and when ``version_creator``
    (``created_by_id`` among those columns), the user who saved it: one statement."""
    columns = columns | {"workspace_id"}  # the role check reads it
    plan = plan_of(WorkflowRecord, columns)
    statement = WORKFLOW.replace("{columns}", plan.inner)
    if current_version is not None:
        version_plan = plan_of(VersionRecord, current_version)
        template = WORKFLOW_AND_VERSION
        if version_creator:
            assert "created_by_id" in current_version
            template = WORKFLOW_VERSION_AND_CREATOR.replace(
                "{user}", plan_of(UserRecord, frozenset()).inner
            )
        statement = template.replace("{columns}", plan.inner).replace(
            "{version}", version_plan.inner
        )
    cursor = await conn.execute(statement, (workflow_id, list(principal.roles)))
    row = await cursor.fetchone()
    if row is None:
        raise NotFound("Workflow")
    width = len(WorkflowRecord.BASE) + len(columns - set(WorkflowRecord.BASE))
    workflow: WorkflowRecord = plan.make(row[:width])
    principal.require(workflow.workspace_id, Role.VIEWER, "Workflow")
    if current_version is None or row[width] is None:
        return workflow, None, None
    end = width + len(VersionRecord.BASE) + len(current_version - set(VersionRecord.BASE))
    version: VersionRecord = version_plan.make(row[width:end])
    if not version_creator or row[end] is None:
        return workflow, version, None
    creator: UserRecord = plan_of(UserRecord, frozenset()).make(row[end:])
    return workflow, version, creator


WORKFLOW_PAGE = (
    "SELECT {columns} FROM workflows w WHERE w.workspace_id = %(ws)s"
    " AND (w.updated_at, w.id) < (%(at)s, %(id)s)"
    " ORDER BY w.updated_at DESC, w.id DESC LIMIT %(size)s"
)
WORKFLOW_COUNT = "SELECT count(*) FROM workflows w WHERE w.workspace_id = %(ws)s"
WORKFLOW_COUNT_SEARCH = WORKFLOW_COUNT + " AND w.name ILIKE %(pattern)s ESCAPE '\\'"
WORKFLOW_PAGE_SEARCH = WORKFLOW_PAGE.replace(
    " ORDER BY", " AND w.name ILIKE %(pattern)s ESCAPE '\\' ORDER BY"
)


async def count_workflows(conn: Connection, *, workspace_id: uuid.UUID, search: str | None) -> int:
    """How many workflows a workspace has (matching ``search``, checked by the page)."""
    if search and not storable(search):
        return 0
    cursor = await conn.execute(
        WORKFLOW_COUNT_SEARCH if search else WORKFLOW_COUNT,
        {"ws": workspace_id, "pattern": f"%{like_escape(search)}%" if search else None},
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def read_workflow_page(
    conn: Connection,
    *,
    principal: Principal,
    workspace_id: uuid.UUID,
    first: int,
    after: str | None,
    search: str | None,
    columns: frozenset[str],
) -> Page[WorkflowRecord]:
    """A page of a workspace's workflows, newest-updated first, optionally by name."""
    principal.require(workspace_id, Role.VIEWER)
    check_page_size(first)
    if search and len(search) > MAX_SEARCH:
        raise InputErrors.single(["search"], ErrorCode.INVALID, f"At most {MAX_SEARCH} characters.")
    at, last_id = decode_time_cursor(after) if after is not None else (NO_TIME, NO_ID)
    if search and not storable(search):
        # No stored name can contain NUL or a lone surrogate: nothing matches.
        return make_page([], first, lambda w: [])
    pattern = f"%{like_escape(search)}%" if search else None
    rows = await records(
        conn,
        WorkflowRecord,
        columns,
        WORKFLOW_PAGE_SEARCH if pattern is not None else WORKFLOW_PAGE,
        {"ws": workspace_id, "at": at, "id": last_id, "pattern": pattern, "size": first + 1},
    )
    return make_page(rows, first, lambda w: [w.updated_at.isoformat(), str(w.id)])


# --- versions -----------------------------------------------------------------------------


async def read_versions(
    conn: Connection, *, keys: list[tuple[uuid.UUID, int]], columns: frozenset[str]
) -> dict[tuple[uuid.UUID, int], VersionRecord]:
    """Versions by (workflow id, number), with the asked columns."""
    rows = await records(
        conn,
        VersionRecord,
        columns | {"workflow_id"},  # the key of each row found
        "SELECT {columns} FROM unnest(%b::uuid[], %b::int[]) AS k(workflow_id, number)"
        " JOIN workflow_versions v ON v.workflow_id = k.workflow_id AND v.number = k.number",
        ([k[0] for k in keys], [k[1] for k in keys]),
    )
    return {(row.workflow_id, row.number): row for row in rows}


async def read_graph_texts(
    conn: Connection, *, version_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The graphs of versions as their stored JSON text, by version id (never decoded)."""
    cursor = await conn.execute(
        "SELECT id, graph::text FROM workflow_versions WHERE id = ANY(%b::uuid[])", (version_ids,)
    )
    return {row[0]: row[1] for row in await cursor.fetchall()}


@dataclass(frozen=True, slots=True)
class VersionPageKey:
    """One parent's page of versions: its workflow, ``first`` and ``after``."""

    workflow_id: uuid.UUID
    first: int
    after: str | None


def _before_number(after: str | None) -> int:
    if after is None:
        return NO_NUMBER
    (number,) = decode_cursor(after, 1)
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= NO_NUMBER:
        raise InputErrors.single(["after"], ErrorCode.INVALID, "Invalid cursor.")
    return number


def check_version_page(first: int, after: str | None) -> None:
    """Refuse a page size or cursor of versions that cannot be read (user errors)."""
    check_page_size(first)
    _before_number(after)


async def read_version_pages(
    conn: Connection, *, keys: Sequence[VersionPageKey], columns: frozenset[str]
) -> list[Page[VersionRecord]]:
    """Each key's page of its workflow's versions, newest first: one statement for all."""
    rows = await keyed_records(
        conn,
        VersionRecord,
        columns,
        "SELECT k.ord, {outer}"
        " FROM unnest(%b::uuid[], %b::int[], %b::int[]) WITH ORDINALITY"
        " AS k(workflow_id, before, size, ord)"
        " CROSS JOIN LATERAL (SELECT {inner} FROM workflow_versions v"
        "   WHERE v.workflow_id = k.workflow_id AND v.number < k.before"
        "   ORDER BY v.number DESC LIMIT k.size) v"
        " ORDER BY k.ord, v.number DESC",
        (
            [k.workflow_id for k in keys],
            [_before_number(k.after) for k in keys],
            [k.first + 1 for k in keys],
        ),
    )
    return [
        make_page(found, key.first, lambda v: [v.number])
        for key, found in zip(keys, group_by_key(rows, len(keys)), strict=True)
    ]


# --- runs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunPageKey:
    """One parent's page of runs: its workflow, ``first``, ``after`` and status filter."""

    workflow_id: uuid.UUID
    first: int
    after: str | None
    status: RunStatus | None


def check_run_page(first: int, after: str | None) -> None:
    """Refuse a page size or cursor of runs that cannot be read (user errors)."""
    check_page_size(first)
    if after is not None:
        decode_time_cursor(after)


async def read_run_pages(
    conn: Connection, *, keys: Sequence[RunPageKey], columns: frozenset[str]
) -> list[Page[RunRecord]]:
    """Each key's page of its workflow's runs, newest queued first: one statement for all."""
    cursors = [decode_time_cursor(k.after) if k.after else (NO_TIME, NO_ID) for k in keys]
    rows = await keyed_records(
        conn,
        RunRecord,
        columns,
        "SELECT k.ord, {outer}"
        " FROM unnest(%b::uuid[], %b::text[], %b::timestamptz[], %b::uuid[], %b::int[])"
        " WITH ORDINALITY AS k(workflow_id, status, at, last_id, size, ord)"
        " CROSS JOIN LATERAL (SELECT {inner} FROM runs r"
        "   WHERE r.workflow_id = k.workflow_id AND (r.queued_at, r.id) < (k.at, k.last_id)"
        "   AND (k.status IS NULL OR r.status = k.status)"
        "   ORDER BY r.queued_at DESC, r.id DESC LIMIT k.size) r"
        " ORDER BY k.ord, r.queued_at DESC, r.id DESC",
        (
            [k.workflow_id for k in keys],
            [k.status.value if k.status else None for k in keys],
            [c[0] for c in cursors],
            [c[1] for c in cursors],
            [k.first + 1 for k in keys],
        ),
    )
    return [
        make_page(found, key.first, lambda r: [r.queued_at.isoformat(), str(r.id)])
        for key, found in zip(keys, group_by_key(rows, len(keys)), strict=True)
    ]


async def count_runs_of(
    conn: Connection, *, keys: Sequence[tuple[uuid.UUID, RunStatus | None]]
) -> list[int]:
    """How many runs each (workflow, status or any) has: one statement for all."""
    cursor = await conn.execute(
        "SELECT (SELECT count(*) FROM runs r WHERE r.workflow_id = k.workflow_id"
        "   AND (k.status IS NULL OR r.status = k.status))"
        " FROM unnest(%b::uuid[], %b::text[]) WITH ORDINALITY AS k(workflow_id, status, ord)"
        " ORDER BY k.ord",
        ([k[0] for k in keys], [k[1].value if k[1] else None for k in keys]),
    )
    return [int(row[0]) for row in await cursor.fetchall()]


async def read_last_runs(
    conn: Connection, *, workflow_ids: list[uuid.UUID], columns: frozenset[str]
) -> dict[uuid.UUID, RunRecord]:
    """The newest run of each workflow (from its index, one row each): one statement."""
    rows = await keyed_records(
        conn,
        RunRecord,
        columns,
        "SELECT k.ord, {outer} FROM unnest(%b::uuid[]) WITH ORDINALITY AS k(workflow_id, ord)"
        " CROSS JOIN LATERAL (SELECT {inner} FROM runs r WHERE r.workflow_id = k.workflow_id"
        "   ORDER BY r.queued_at DESC, r.id DESC LIMIT 1) r",
        (workflow_ids,),
    )
    return {record.workflow_id: record for _, record in rows}


# --- webhooks -----------------------------------------------------------------------------


async def read_webhooks(
    conn: Connection, *, workflow_ids: list[uuid.UUID], columns: frozenset[str]
) -> dict[uuid.UUID, WebhookRecord]:
    """The webhook of each workflow that has one, by workflow id: one statement."""
    rows = await records(
        conn,
        WebhookRecord,
        columns,
        "SELECT {columns} FROM webhooks h WHERE h.workflow_id = ANY(%b::uuid[])",
        (workflow_ids,),
    )
    return {row.workflow_id: row for row in rows}


# --- schedule fires -------------------------------------------------------------------------


async def read_recent_fires(
    conn: Connection, *, keys: Sequence[tuple[uuid.UUID, int]]
) -> list[list[FireRecord]]:
    """The latest fires of each (workflow, limit), newest first: one statement for all."""
    rows = await keyed_records(
        conn,
        FireRecord,
        frozenset(),
        "SELECT k.ord, {outer}"
        " FROM unnest(%b::uuid[], %b::int[]) WITH ORDINALITY AS k(workflow_id, size, ord)"
        " CROSS JOIN LATERAL (SELECT {inner} FROM schedule_fires f"
        "   WHERE f.workflow_id = k.workflow_id ORDER BY f.fire_at DESC LIMIT k.size) f"
        " ORDER BY k.ord, f.fire_at DESC",
        ([k[0] for k in keys], [k[1] for k in keys]),
    )
    return group_by_key(rows, len(keys))
