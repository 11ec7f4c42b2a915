"""Records: some columns of a row, read by plain psycopg, and how to read them.

A ``Record`` holds exactly the columns a query selected (reading another one raises
AttributeError), so a resolver can never show a column nobody read. ``plan_of`` turns a set of
column names into the SQL select lists and a row-to-record maker, once per set.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import psycopg

from app.models import FireOutcome, RunStatus, RunTrigger

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
    BASE = ("id", "updated_at", "current_version")
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
    BASE = ("number",)
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


class FireRecord(Record):
    """Columns of a ``schedule_fires`` row."""

    __slots__ = ("error", "fire_at", "id", "missed", "outcome", "run_id", "workflow_id")
    TABLE = "schedule_fires"
    ALIAS = "f"
    BASE = ("id", "workflow_id", "fire_at", "outcome", "error", "missed", "run_id")
    CONVERT = {"outcome": FireOutcome}
    id: uuid.UUID
    workflow_id: uuid.UUID
    fire_at: datetime
    outcome: FireOutcome
    error: str | None
    missed: int
    run_id: uuid.UUID | None


class WebhookRecord(Record):
    """Columns of a ``webhooks`` row (never its signing secret)."""

    __slots__ = (
        "created_at",
        "enabled",
        "id",
        "require_signature",
        "token",
        "updated_at",
        "wait_for_result",
        "workflow_id",
        "workspace_id",
    )
    TABLE = "webhooks"
    ALIAS = "h"
    BASE = ("id", "workflow_id", "workspace_id", "token")
    id: uuid.UUID
    workflow_id: uuid.UUID
    workspace_id: uuid.UUID
    token: str
    enabled: bool
    require_signature: bool
    wait_for_result: bool
    created_at: datetime
    updated_at: datetime


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


def plan_of(kind: type[Record], columns: frozenset[str]) -> _Plan:
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
    plan_of(kind, chosen)
    return chosen


def _maker(kind: type[Record], names: tuple[str, ...]) -> Callable[[Sequence[Any]], Any]:
    """A record of ``kind`` from a row of ``names``: a function written for these columns
    (as dataclasses writes ``__init__``), 4-5x faster than setting them one by one in a loop,
    which the workflow list does for 300 rows a request."""
    if not names or not all(n in kind.__slots__ and n.isidentifier() for n in names):
        raise ValueError(f"not columns of {kind.TABLE}: {names}")
    lines = [
        "def make(values):",
        "    record = new(kind)",
        f"    {', '.join(f'record.{n}' for n in names)}, = values",
    ]
    scope: dict[str, Any] = {"new": kind.__new__, "kind": kind}
    for name in names:
        if name in kind.CONVERT:
            scope[f"to_{name}"] = kind.CONVERT[name]
            lines.append(f"    if record.{name} is not None:")
            lines.append(f"        record.{name} = to_{name}(record.{name})")
    lines.append("    return record")
    # Names are the record's own slots (checked above), never from a request.
    exec("\n".join(lines), scope)  # noqa: S102
    make: Callable[[Sequence[Any]], Any] = scope["make"]
    return make


async def records(
    conn: Connection, kind: type[R], columns: frozenset[str], template: str, params: Any
) -> list[R]:
    """Rows of ``template``, whose ``{columns}`` is the select list."""
    plan = plan_of(kind, columns)
    cursor = await conn.execute(template.replace("{columns}", plan.inner), params)
    make = plan.make
    return [make(row) for row in await cursor.fetchall()]


async def keyed_records(
    conn: Connection, kind: type[R], columns: frozenset[str], template: str, params: Any
) -> list[tuple[int, R]]:
    """Rows whose first column is the ordinal of the key they answer; ``{inner}`` is the
    select list of the paging subquery, ``{outer}`` the one around it."""
    plan = plan_of(kind, columns)
    statement = template.replace("{inner}", plan.inner).replace("{outer}", plan.outer)
    cursor = await conn.execute(statement, params)
    make = plan.make
    return [(row[0], make(row[1:])) for row in await cursor.fetchall()]


def group_by_key(rows: list[tuple[int, R]], count: int) -> list[list[R]]:
    groups: list[list[R]] = [[] for _ in range(count)]
    for ordinal, record in rows:
        groups[ordinal - 1].append(record)
    return groups
