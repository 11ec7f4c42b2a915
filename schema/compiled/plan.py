"""A validated query document as a plan, when every field in it is one the compiler knows.

Fields are collected as the GraphQL spec's CollectFields does (response keys in document
order, fields of the same key merged, fragments spread in place), restricted to what a
plan can answer exactly: object types only (fragments on the type itself), no directives
(no @skip/@include/@defer), no introspection but ``__typename``, and in a connection one
``edges``/``node`` selection (aliases of them decline). ``compile_query`` returns None for
anything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInt,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
)

from app.services.records import plan_of
from schema.compiled.core import (
    ConnectionPlan,
    FieldPlan,
    Leaf,
    Link,
    ObjectPlan,
    Pages,
    checked_int,
)
from schema.compiled.types import TYPES


class Uncompilable(Exception):
    """The document asks for something a plan does not answer."""


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """A query operation as a plan over its root."""

    operation: OperationDefinitionNode
    root: ObjectPlan
    fragments: dict[str, FragmentDefinitionNode]
    # Whether an argument can hold text (checked as storable on every request, as the
    # general path's StorableStrings does).
    takes_text: bool = False


def compile_query(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None
) -> CompiledQuery | None:
    """The plan of a document's query (validated already), or None when it has none."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [
            o for o in operations if o.name is not None and o.name.value == operation_name
        ]
    if len(operations) != 1 or operations[0].operation is not OperationType.QUERY:
        return None
    operation = operations[0]
    if operation.directives:
        return None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    root_type = schema.query_type
    assert root_type is not None
    try:
        root = _Compiler(schema, fragments).object(root_type, [operation.selection_set])
    except Uncompilable:
        return None
    return CompiledQuery(operation, root, fragments)


class _Compiler:
    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode]):
        self.schema = schema
        self.fragments = fragments

    def collect(
        self, type_name: str, selection_sets: Iterable[SelectionSetNode]
    ) -> dict[str, list[FieldNode]]:
        """The fields by response key, in document order, fragments spread in place."""
        fields: dict[str, list[FieldNode]] = {}
        for selection_set in selection_sets:
            self._collect(type_name, selection_set, fields, set())
        return fields

    def _collect(
        self,
        type_name: str,
        selection_set: SelectionSetNode,
        into: dict[str, list[FieldNode]],
        spread: set[str],
    ) -> None:
        for selection in selection_set.selections:
            if selection.directives:
                raise Uncompilable("directive")
            if isinstance(selection, FieldNode):
                key = (selection.alias or selection.name).value
                into.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                if condition is not None and condition.name.value != type_name:
                    raise Uncompilable("fragment on another type")
                self._collect(type_name, selection.selection_set, into, spread)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or fragment.directives:
                    raise Uncompilable("fragment")
                if fragment.type_condition.name.value != type_name:
                    raise Uncompilable("fragment on another type")
                if name not in spread:  # a fragment spread twice adds nothing the second time
                    spread.add(name)
                    self._collect(type_name, fragment.selection_set, into, spread)

    def object(
        self, graphql_type: GraphQLObjectType, selection_sets: Iterable[SelectionSetNode]
    ) -> ObjectPlan:
        """An object's plan: each response key, and the columns they read."""
        known = TYPES.get(graphql_type.name)
        if known is None:
            raise Uncompilable(graphql_type.name)
        plan = ObjectPlan(known)
        columns: set[str] = set()
        for key, nodes in self.collect(graphql_type.name, selection_sets).items():
            name = nodes[0].name.value
            if name == "__typename":
                plan.fields.append(FieldPlan(key, name, None, None, None))
                continue
            kind = known.fields.get(name)
            definition = graphql_type.fields.get(name)
            if kind is None or definition is None:
                raise Uncompilable(f"{graphql_type.name}.{name}")
            columns.update(kind.columns)
            if (
                isinstance(kind, Leaf)
                and not kind.int4
                and get_named_type(definition.type) is GraphQLInt
            ):
                kind = checked_int(kind)
            item = FieldPlan(key, name, kind, definition, nodes[0])
            below = [n.selection_set for n in nodes if n.selection_set is not None]
            target = get_named_type(definition.type)
            if isinstance(kind, Link):
                assert isinstance(target, GraphQLObjectType)
                assert target.name == kind.target
                item.child = self.object(target, below)
            elif isinstance(kind, Pages):
                assert isinstance(target, GraphQLObjectType)
                item.connection = self.connection(target, kind, below)
            plan.fields.append(item)
        plan.columns = frozenset(columns)
        if known.record is not None:
            plan_of(known.record, plan.columns)  # every column is one of the table's
        return plan

    def connection(
        self, graphql_type: GraphQLObjectType, kind: Pages, selection_sets: list[SelectionSetNode]
    ) -> ConnectionPlan:
        """A connection's plan: its keys, its edges' and pageInfo's, and the node's plan."""
        edge_type = get_named_type(graphql_type.fields["edges"].type)
        info_type = get_named_type(graphql_type.fields["pageInfo"].type)
        assert isinstance(edge_type, GraphQLObjectType)
        assert isinstance(info_type, GraphQLObjectType)
        plan = ConnectionPlan(
            fields=[],
            edges=[],
            page_info=[],
            typenames={
                "connection": graphql_type.name,
                "edge": edge_type.name,
                "pageInfo": info_type.name,
            },
            node=None,
            counts=False,
        )
        edge_sets: list[SelectionSetNode] = []
        info_sets: list[SelectionSetNode] | None = None
        for key, nodes in self.collect(graphql_type.name, selection_sets).items():
            name = nodes[0].name.value
            below = [n.selection_set for n in nodes if n.selection_set is not None]
            if name == "edges":
                if edge_sets:
                    raise Uncompilable("two edges selections")
                edge_sets = below
            elif name == "pageInfo":
                if info_sets is not None:
                    raise Uncompilable("two pageInfo selections")
                info_sets = below
            elif name == "totalCount":
                plan.counts = True
            elif name != "__typename":
                raise Uncompilable(f"{graphql_type.name}.{name}")
            plan.fields.append((key, name))
        node_sets: list[SelectionSetNode] = []
        for key, nodes in self.collect(edge_type.name, edge_sets).items():
            name = nodes[0].name.value
            if name == "node":
                if node_sets:
                    raise Uncompilable("two node selections")
                node_sets = [n.selection_set for n in nodes if n.selection_set is not None]
            elif name == "cursor":
                plan.cursors = True
            elif name != "__typename":
                raise Uncompilable(f"{edge_type.name}.{name}")
            plan.edges.append((key, name))
        if node_sets:
            node_type = get_named_type(edge_type.fields["node"].type)
            assert isinstance(node_type, GraphQLObjectType)
            assert node_type.name == kind.target
            plan.node = self.object(node_type, node_sets)
        for key, nodes in self.collect(info_type.name, info_sets or []).items():
            name = nodes[0].name.value
            if name not in ("hasNextPage", "endCursor", "__typename"):
                raise Uncompilable(f"{info_type.name}.{name}")
            plan.page_info.append((key, name))
        return plan
