"""Lean reads: the rows GraphQL shows, by plain psycopg, only the columns asked for.

The builder's hot reads (a workflow with its graph, the workflow list, nested pages of
versions and runs) skip the ORM: each is one statement through the runtime's psycopg pool
(autocommit; psycopg prepares a statement server-side after a few uses), whose rows become
``Record``s holding exactly the selected columns (reading another one raises). A page nested
under a list (each workflow's versions or runs) is read for every parent at once: the
parents' keys go in as arrays and a LATERAL subquery pages each one, with its own ``first``
and cursor, from its index; one statement whatever the page sizes. Tenancy is in the SQL as
well as in the role checks: a workflow is only read from the caller's workspaces.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import psycopg

from app.auth.principal import Principal
from app.errors import ErrorCode, InputErrors, NotFound
from app.models import Role, RunStatus, RunTrigger
from app.services.pagination import (
    Page,
    check_page_size,
    decode_cursor,
    decode_time_cursor,
    make_page,
)
from app.services.text import storable
from app.services.workflows import MAX_SEARCH, like_escape

Connection = psycopg.AsyncConnection[Any]
R = TypeVar("R", bound="Record")

# Past every stored key: a page without a cursor starts here (keeps the index condition).
NO_NUMBER = 2**31 - 1
NO_TIME = datetime.max.replace(tzinfo=UTC)
NO_ID = uuid.UUID(int=2**128 - 1)


class Record:
    """Some columns of one row; a column that was not selected is not an attribute."""

    __slots__ = ()
    TABLE: ClassVar[str]
    ALIAS: ClassVar[str]
    # Read whatever the selection: keys, cursors, and what other fields' resolvers need.
    BASE: ClassVar[tuple[str, ...]]
    # A column's SQL when it is not the column itself (the graph as its stored text).
    EXPRESSIONS: ClassVar[dict[str, str]] = {}
    CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    @classmethod
    def selectable(cls) -> frozenset[str]:
        """Every column a query may ask for."""
        return frozenset(cls.__slots__)


class WorkflowRecord(Record):
    """Columns of a ``workflows`` row."""

    __slots__ = (
        "created_at",
        "created_by_id",
        "current_version",
        "description",
        "id",
        "is_template",
        "name",
        "published_at",
        "published_by_id",
        "published_version",
        "schedule_cron",
        "schedule_enabled",
        "schedule_last_fired_at",
        "schedule_next_fire_at",
        "schedule_overlap",
        "schedule_skipped_count",
        "schedule_timezone",
        "template_category",
        "updated_at",
        "workspace_id",
    )
    TABLE = "workflows"
    ALIAS = "w"
    # What a version's isPublished/publishedAt/publishedBy read of its workflow included.
    BASE = (
        "id",
        "workspace_id",
        "updated_at",
        "current_version",
        "published_version",
        "published_at",
        "published_by_id",
    )
    id: uuid.UUID
    workspace_id: uuid.UUID
    name: str
    description: str
    is_template: bool
    template_category: str | None
    current_version: int
    created_by_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    schedule_cron: str | None
    schedule_timezone: str | None
    schedule_enabled: bool
    schedule_next_fire_at: datetime | None
    schedule_last_fired_at: datetime | None
    schedule_overlap: str
    schedule_skipped_count: int
    published_version: int | None
    published_at: datetime | None
    published_by_id: uuid.UUID | None


class VersionRecord(Record):
    """Columns of a ``workflow_versions`` row; ``graph_text`` is its graph as stored text."""

    __slots__ = (
        "created_at",
        "created_by_id",
        "diagnostics",
        "graph_text",
        "id",
        "message",
        "number",
        "restored_from",
        "workflow_id",
    )
    TABLE = "workflow_versions"
    ALIAS = "v"
    BASE = ("id", "workflow_id", "number")
    EXPRESSIONS = {"graph_text": "v.graph::text"}
    id: uuid.UUID
    workflow_id: uuid.UUID
    number: int
    message: str | None
    restored_from: int | None
    created_by_id: uuid.UUID | None
    created_at: datetime
    diagnostics: Any
    graph_text: str


class RunRecord(Record):
    """Columns of a ``runs`` row."""

    __slots__ = (
        "error",
        "error_node_id",
        "finished_at",
        "id",
        "input",
        "output",
        "queued_at",
        "retry_of_id",
        "started_at",
        "status",
        "trigger",
        "version_number",
        "workflow_id",
    )
    TABLE = "runs"
    ALIAS = "r"
    BASE = ("id", "workflow_id", "queued_at")
    CONVERT = {"status": RunStatus, "trigger": RunTrigger}
    id: uuid.UUID
    workflow_id: uuid.UUID
    version_number: int
    status: RunStatus
    trigger: RunTrigger
    input: Any
    output: Any
    error: str | None
    error_node_id: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    retry_of_id: uuid.UUID | None


class WorkspaceRecord(Record):
    """Columns of a ``workspaces`` row."""

    __slots__ = ("created_at", "id", "name", "run_retention_days")
    TABLE = "workspaces"
    ALIAS = "s"
    BASE = ("id",)
    id: uuid.UUID
    name: str
    created_at: datetime
    run_retention_days: int


class UserRecord(Record):
    """Columns of a ``users`` row."""

    __slots__ = ("email", "id", "name")
    TABLE = "users"
    ALIAS = "u"
    BASE = ("id", "email", "name")
    id: uuid.UUID
    email: str
    name: str


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to read some columns of a table: select lists, and a record from a row."""

    inner: str  # inside a subquery, with the expressions
    outer: str  # around it, by name
    make: Callable[[Sequence[Any]], Any]


_plans: dict[tuple[type[Record], frozenset[str]], _Plan] = {}


def _plan(kind: type[Record], columns: frozenset[str]) -> _Plan:
    plan = _plans.get((kind, columns))
    if plan is not None:
        return plan
    unknown = columns - kind.selectable()
    if unknown:
        raise ValueError(f"not columns of {kind.TABLE}: {sorted(unknown)}")
    names = kind.BASE + tuple(sorted(columns - set(kind.BASE)))
    # Names come from the record's own slots (checked above), never from a request.
    inner = [kind.EXPRESSIONS.get(n, f'{kind.ALIAS}."{n}"') + f' AS "{n}"' for n in names]
    outer = [f'{kind.ALIAS}."{n}"' for n in names]
    plan = _Plan(", ".join(inner), ", ".join(outer), _maker(kind, names))
    if len(_plans) < 1024:  # column sets come from the schema's fields: few
        _plans[(kind, columns)] = plan
    return plan


def columns_of(kind: type[Record], columns: Iterable[str]) -> frozenset[str]:
    """A checked column set of ``kind`` (the base columns are always read)."""
    chosen = frozenset(columns)
    _plan(kind, chosen)
    return chosen


def _maker(kind: type[Record], names: tuple[str, ...]) -> Callable[[Sequence[Any]], Any]:
    """A record of ``kind`` from a row of ``names``."""
    setters = [getattr(kind, n).__set__ for n in names]
    convert = [(n, kind.CONVERT[n]) for n in names if n in kind.CONVERT]

    def make(values: Sequence[Any]) -> Record:
        record = kind.__new__(kind)
        for set_value, value in zip(setters, values, strict=True):
            set_value(record, value)
        for name, to_value in convert:
            value = getattr(record, name)
            if value is not None:
                setattr(record, name, to_value(value))
        return record

    return make


async def _records(
    conn: Connection, kind: type[R], columns: frozenset[str], template: str, params: Any
) -> list[R]:
    """Rows of ``template``, whose ``{columns}`` is the select list."""
    plan = _plan(kind, columns)
    cursor = await conn.execute(template.replace("{columns}", plan.inner), params)
    make = plan.make
    return [make(row) for row in await cursor.fetchall()]


async def _keyed_records(
    conn: Connection, kind: type[R], columns: frozenset[str], template: str, params: Any
) -> list[tuple[int, R]]:
    """Rows whose first column is the ordinal of the key they answer; ``{inner}`` is the
    select list of the paging subquery, ``{outer}`` the one around it."""
    plan = _plan(kind, columns)
    statement = template.replace("{inner}", plan.inner).replace("{outer}", plan.outer)
    cursor = await conn.execute(statement, params)
    make = plan.make
    return [(row[0], make(row[1:])) for row in await cursor.fetchall()]


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
    found = await _records(
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
    rows = await _records(
        conn,
        UserRecord,
        frozenset(),
        "SELECT {columns} FROM users u WHERE u.id = ANY(%s)",
        (user_ids,),
    )
    return {row.id: row for row in rows}


# --- workflows ----------------------------------------------------------------------------


async def read_workflow(
    conn: Connection,
    *,
    principal: Principal,
    workflow_id: uuid.UUID,
    columns: frozenset[str],
    role: Role = Role.VIEWER,
) -> WorkflowRecord:
    """A workflow of the caller's workspaces (NotFound otherwise), with ``role`` there."""
    workspaces = list(principal.roles)
    found = await _records(
        conn,
        WorkflowRecord,
        columns,
        "SELECT {columns} FROM workflows w WHERE w.id = %s AND w.workspace_id = ANY(%s)",
        (workflow_id, workspaces),
    )
    if not found:
        raise NotFound("Workflow")
    principal.require(found[0].workspace_id, role, "Workflow")
    return found[0]


WORKFLOW_PAGE = (
    "SELECT {columns} FROM workflows w WHERE w.workspace_id = %(ws)s"
    " AND (w.updated_at, w.id) < (%(at)s, %(id)s)"
    " ORDER BY w.updated_at DESC, w.id DESC LIMIT %(size)s"
)
WORKFLOW_PAGE_SEARCH = WORKFLOW_PAGE.replace(
    " ORDER BY", " AND w.name ILIKE %(pattern)s ESCAPE '\\' ORDER BY"
)


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
    rows = await _records(
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
    rows = await _records(
        conn,
        VersionRecord,
        columns,
        "SELECT {columns} FROM unnest(%s::uuid[], %s::int[]) AS k(workflow_id, number)"
        " JOIN workflow_versions v ON v.workflow_id = k.workflow_id AND v.number = k.number",
        ([k[0] for k in keys], [k[1] for k in keys]),
    )
    return {(row.workflow_id, row.number): row for row in rows}


async def read_graph_texts(
    conn: Connection, *, version_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The graphs of versions as their stored JSON text, by version id (never decoded)."""
    cursor = await conn.execute(
        "SELECT id, graph::text FROM workflow_versions WHERE id = ANY(%s)", (version_ids,)
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
    rows = await _keyed_records(
        conn,
        VersionRecord,
        columns,
        "SELECT k.ord, {outer}"
        " FROM unnest(%s::uuid[], %s::int[], %s::int[]) WITH ORDINALITY"
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
        for key, found in zip(keys, _group(rows, len(keys)), strict=True)
    ]


def _group(rows: list[tuple[int, R]], count: int) -> list[list[R]]:
    groups: list[list[R]] = [[] for _ in range(count)]
    for ordinal, record in rows:
        groups[ordinal - 1].append(record)
    return groups


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
    rows = await _keyed_records(
        conn,
        RunRecord,
        columns,
        "SELECT k.ord, {outer}"
        " FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::uuid[], %s::int[])"
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
        for key, found in zip(keys, _group(rows, len(keys)), strict=True)
    ]


async def count_runs_of(
    conn: Connection, *, keys: Sequence[tuple[uuid.UUID, RunStatus | None]]
) -> list[int]:
    """How many runs each (workflow, status or any) has: one statement for all."""
    cursor = await conn.execute(
        "SELECT (SELECT count(*) FROM runs r WHERE r.workflow_id = k.workflow_id"
        "   AND (k.status IS NULL OR r.status = k.status))"
        " FROM unnest(%s::uuid[], %s::text[]) WITH ORDINALITY AS k(workflow_id, status, ord)"
        " ORDER BY k.ord",
        ([k[0] for k in keys], [k[1].value if k[1] else None for k in keys]),
    )
    return [int(row[0]) for row in await cursor.fetchall()]
