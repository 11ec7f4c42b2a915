"""What a compiled plan is made of, and how it is executed level by level."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import FieldNode, GraphQLField
from graphql.execution.values import VariableValues, get_argument_values

from app.auth.principal import Principal
from app.services.pagination import Page
from app.services.records import Connection, Record

Arguments = dict[str, Any]
# One child per parent: None, a row, or a list of rows.
Children = list[Any]
LoadChildren = Callable[["Execution", list[Any], Arguments, "ObjectPlan"], Awaitable[Children]]
LoadPages = Callable[
    ["Execution", list[Any], Arguments, frozenset[str]], Awaitable[list[Page[Any]]]
]
CountPages = Callable[["Execution", list[Any], Arguments], Awaitable[list[int]]]


class Decline(Exception):
    """The plan cannot answer this request: the general path will."""


INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # GraphQL's Int


def int32(value: Any) -> Any:
    """An Int field's value as GraphQL shows it; one it cannot show (past 32 bits: the
    general path answers null and an error) declines."""
    if value is not None and not (type(value) is int and INT_MIN <= value <= INT_MAX):
        raise Decline("not a GraphQL Int")
    return value


def checked_int(leaf: Leaf) -> Leaf:
    """The leaf of an Int field, its values checked."""
    value = leaf.value
    return Leaf(leaf.columns, lambda row: int32(value(row)))


@dataclass(frozen=True, slots=True)
class Leaf:
    """A field shown from its row: the columns it reads, and its value from the row."""

    columns: tuple[str, ...]
    value: Callable[[Any], Any]
    # Its values are shown as they are: an integer column of 32 bits needs no Int check.
    int4: bool = False


@dataclass(frozen=True, slots=True)
class Computed:
    """A field shown from its row, its arguments (checked: a refusal declines) and the
    request (the caller, the public base URL)."""

    columns: tuple[str, ...]
    value: Callable[[Any, Arguments, Execution], Any]


@dataclass(frozen=True, slots=True)
class Link:
    """A field whose value is another object (or a list of them), loaded for every parent
    at once: the parent's columns it needs, the child's type, and the loader."""

    columns: tuple[str, ...]
    target: str
    load: LoadChildren


@dataclass(frozen=True, slots=True)
class Pages:
    """A connection field: a page per parent in one statement, and, when ``totalCount`` is
    asked, a count per parent."""

    columns: tuple[str, ...]
    target: str
    load: LoadPages
    count: CountPages


@dataclass(frozen=True, slots=True)
class ObjectType:
    """The fields of a GraphQL object type the compiler knows."""

    name: str
    record: type[Record] | None  # the table's record (columns are checked against it)
    fields: Mapping[str, Leaf | Computed | Link | Pages]


@dataclass(slots=True)
class ConnectionPlan:
    """What a connection's selection shows: (response key, field name) at each level."""

    fields: list[tuple[str, str]]
    edges: list[tuple[str, str]]
    page_info: list[tuple[str, str]]
    typenames: dict[str, str]  # Connection, Edge and PageInfo's type names
    node: ObjectPlan | None
    counts: bool
    cursors: bool = False  # whether an edge's cursor is shown (else none is encoded)


@dataclass(slots=True)
class FieldPlan:
    """One response key of an object: how its value is made."""

    key: str
    name: str
    kind: Leaf | Computed | Link | Pages | None  # None: __typename
    definition: GraphQLField | None
    node: FieldNode | None
    child: ObjectPlan | None = None
    connection: ConnectionPlan | None = None


@dataclass(slots=True)
class ObjectPlan:
    """An object's selection: its fields in response order and the columns they read."""

    type: ObjectType
    fields: list[FieldPlan] = field(default_factory=list)
    columns: frozenset[str] = frozenset()


class Execution:
    """One request's run of a plan: its connection, caller and variables."""

    def __init__(
        self,
        conn: Connection,
        principal: Principal,
        variables: VariableValues,
        public_base_url: Callable[[], str],
    ) -> None:
        self.conn = conn
        self.principal = principal
        self.public_base_url = public_base_url
        self.variables = variables
        # Rows a parent's statement read for a child ahead of time (the editor's version).
        self.primed: dict[Any, Any] = {}

    def arguments(self, plan: FieldPlan) -> Arguments:
        """The field's arguments, coerced as graphql-core does (defaults included)."""
        assert plan.definition is not None
        assert plan.node is not None
        return get_argument_values(plan.definition, plan.node, self.variables)

    async def fill(self, plan: ObjectPlan, rows: list[Any]) -> list[dict[str, Any]]:
        """Each row's object, its fields in selection order; every link is read once for
        all the rows."""
        made: dict[str, list[Any]] = {}
        for item in plan.fields:
            kind = item.kind
            if isinstance(kind, Link):
                assert item.child is not None
                children = await kind.load(self, rows, self.arguments(item), item.child)
                made[item.key] = await self._fill_children(item.child, children)
            elif isinstance(kind, Pages):
                made[item.key] = await self._connections(item, kind, rows)
            elif isinstance(kind, Computed):
                arguments = self.arguments(item)
                made[item.key] = [kind.value(row, arguments, self) for row in rows]
        # Each key's values for all the rows, then the objects, key by key in order
        columns: list[tuple[str, list[Any]]] = []
        for item in plan.fields:
            kind = item.kind
            if kind is None:
                columns.append((item.key, [plan.type.name] * len(rows)))
            elif isinstance(kind, Leaf):
                value = kind.value
                columns.append((item.key, [value(row) for row in rows]))
            else:
                columns.append((item.key, made[item.key]))
        if not columns:
            return [{} for _ in rows]
        keys = [key for key, _ in columns]
        rows_of_values = zip(*(values for _, values in columns), strict=True)
        return [dict(zip(keys, values, strict=True)) for values in rows_of_values]

    async def _fill_children(self, plan: ObjectPlan, children: Children) -> list[Any]:
        flat: list[Any] = []
        for child in children:
            if isinstance(child, list):
                flat.extend(child)
            elif child is not None:
                flat.append(child)
        filled = iter(await self.fill(plan, flat))
        values: list[Any] = []
        for child in children:
            if isinstance(child, list):
                values.append([next(filled) for _ in child])
            else:
                values.append(None if child is None else next(filled))
        return values

    async def _connections(self, item: FieldPlan, kind: Pages, rows: list[Any]) -> list[Any]:
        plan = item.connection
        assert plan is not None
        arguments = self.arguments(item)
        columns = plan.node.columns if plan.node is not None else frozenset()
        pages = await kind.load(self, rows, arguments, columns)
        counts = await kind.count(self, rows, arguments) if plan.counts else []
        nodes: Any = iter(())
        if plan.node is not None:
            nodes = iter(await self.fill(plan.node, [r for page in pages for r in page.items]))
        values = []
        for index, page in enumerate(pages):
            edges = []
            cursors = page.cursors if plan.cursors else page.items
            for cursor in cursors:
                edge: dict[str, Any] = {}
                for key, name in plan.edges:
                    if name == "cursor":
                        edge[key] = cursor
                    elif name == "node":
                        edge[key] = next(nodes)
                    else:
                        edge[key] = plan.typenames["edge"]
                edges.append(edge)
            info: dict[str, Any] = {}
            for key, name in plan.page_info:
                if name == "hasNextPage":
                    info[key] = page.has_next_page
                elif name == "endCursor":
                    info[key] = page.end_cursor
                else:
                    info[key] = plan.typenames["pageInfo"]
            value: dict[str, Any] = {}
            for key, name in plan.fields:
                if name == "edges":
                    value[key] = edges
                elif name == "pageInfo":
                    value[key] = info
                elif name == "totalCount":
                    value[key] = int32(counts[index])
                else:
                    value[key] = plan.typenames["connection"]
            values.append(value)
        return values
