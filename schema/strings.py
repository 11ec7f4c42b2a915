"""One check of every String argument of every operation: text PostgreSQL can store.

PostgreSQL's text refuses NUL (U+0000), and a lone surrogate (U+D800 to U+DFFF, which JSON's
``\\ud800`` escapes can carry) is not Unicode at all: the driver cannot encode it. Either one
in any ``String`` argument, or in a ``String`` field of an input object at any depth, as a
literal or in a variable, refuses the whole operation before any resolver runs: one
top-level error per offending value, with ``extensions: {code: BAD_USER_INPUT, reason:
INVALID, field: [argument, field, index, ...]}`` (a subscription ends with the first).
``ID`` arguments are not checked here (an ID that does not decode reads as NOT_FOUND), nor
``JSON`` values (a graph or a run input names the offending key in its own diagnostics).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from functools import lru_cache
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    GraphQLSchema,
    ListValueNode,
    Node,
    ObjectValueNode,
    OperationDefinitionNode,
    StringValueNode,
    TypeInfo,
    TypeInfoVisitor,
    ValueNode,
    VariableNode,
    Visitor,
    visit,
)
from graphql.language.visitor import SKIP
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

# Errors reported for one operation at most (a list of a million bad strings is one answer).
MAX_REPORTED = 20
_NUL = re.compile("\x00")
_SURROGATE = re.compile("[\ud800-\udfff]")

Path = tuple[str | int, ...]


def text_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store this text, or None when it can."""
    if _NUL.search(value):
        return "cannot contain a NUL character (U+0000)"
    if _SURROGATE.search(value):
        return "cannot contain a lone surrogate (U+D800 to U+DFFF); send valid Unicode"
    return None


def _is_string(type_: GraphQLInputType) -> bool:
    return isinstance(type_, GraphQLScalarType) and type_.name == "String"


class _Finder:
    """Walks argument values (literals and variables) along their input types."""

    def __init__(self, variables: dict[str, Any], defaults: dict[str, ValueNode]) -> None:
        self.variables = variables
        self.defaults = defaults
        self.found: list[tuple[Path, str, Node]] = []

    def literal(self, node: ValueNode, type_: GraphQLInputType, path: Path) -> None:
        """Check a value written in the document (it may name a variable)."""
        if isinstance(type_, GraphQLNonNull):
            type_ = type_.of_type
        if isinstance(node, VariableNode):
            name = node.name.value
            if name in self.variables:
                self.raw(self.variables[name], type_, path, node)
            elif name in self.defaults:
                self.literal(self.defaults[name], type_, path)
        elif isinstance(type_, GraphQLList):
            items = node.values if isinstance(node, ListValueNode) else (node,)
            for index, item in enumerate(items):
                self.literal(item, type_.of_type, (*path, index))
        elif isinstance(type_, GraphQLInputObjectType) and isinstance(node, ObjectValueNode):
            for field in node.fields:
                definition = type_.fields.get(field.name.value)
                if definition is not None:
                    self.literal(field.value, definition.type, (*path, field.name.value))
        elif _is_string(type_) and isinstance(node, StringValueNode):
            self._check(node.value, path, node)

    def raw(self, value: Any, type_: GraphQLInputType, path: Path, node: Node) -> None:
        """Check a variable's value as sent (JSON), along the type where it is used."""
        if isinstance(type_, GraphQLNonNull):
            type_ = type_.of_type
        if value is None:
            return
        if isinstance(type_, GraphQLList):
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                self.raw(item, type_.of_type, (*path, index), node)
        elif isinstance(type_, GraphQLInputObjectType) and isinstance(value, dict):
            for name, definition in type_.fields.items():
                if name in value:
                    self.raw(value[name], definition.type, (*path, name), node)
        elif _is_string(type_) and isinstance(value, str):
            self._check(value, path, node)

    def _check(self, value: str, path: Path, node: Node) -> None:
        problem = text_problem(value)
        if problem is not None and len(self.found) < MAX_REPORTED:
            self.found.append((path, problem, node))


class _ArgumentVisitor(Visitor):
    """Hands every argument's value, with its declared type, to the finder."""

    def __init__(self, type_info: TypeInfo, finder: _Finder) -> None:
        super().__init__()
        self.type_info = type_info
        self.finder = finder
        self.fields: list[str] = []
        self.spreads: list[str] = []

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        self.fields.append((node.alias or node.name).value)

    def leave_field(self, node: FieldNode, *_: Any) -> None:
        self.fields.pop()

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> None:
        self.spreads.append(node.name.value)

    def enter_argument(self, node: Any, *_: Any) -> Any:
        argument = self.type_info.get_argument()
        if argument is not None:
            before = len(self.finder.found)
            self.finder.literal(node.value, argument.type, (node.name.value,))
            owner = self.fields[-1] if self.fields else "a directive"
            self.finder.found[before:] = [
                (path, f'Argument "{_dotted(path)}" of "{owner}" {problem}.', where)
                for path, problem, where in self.finder.found[before:]
            ]
        return SKIP  # the value was walked above, along its type


def _dotted(path: Path) -> str:
    return ".".join(str(part) for part in path)


def unstorable_arguments(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
) -> list[GraphQLError]:
    """A BAD_USER_INPUT error for each String argument value PostgreSQL cannot store."""
    defaults: dict[str, ValueNode] = {
        definition.variable.name.value: definition.default_value
        for definition in operation.variable_definitions or ()
        if definition.default_value is not None
    }
    finder = _Finder(variables, defaults)
    pending: list[Node] = [operation]
    visited: set[str] = set()
    while pending:
        type_info = TypeInfo(schema)
        visitor = _ArgumentVisitor(type_info, finder)
        visit(pending.pop(), TypeInfoVisitor(type_info, visitor))
        for name in visitor.spreads:
            if name not in visited and name in fragments:
                visited.add(name)
                pending.append(fragments[name])
    return [
        GraphQLError(
            message,
            nodes=[node],
            extensions={"code": "BAD_USER_INPUT", "reason": "INVALID", "field": list(path)},
        )
        for path, message, node in finder.found
    ]


def _can_hold_text(type_: GraphQLInputType, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a value of this input type can hold a String anywhere inside it."""
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        type_ = type_.of_type
    if isinstance(type_, GraphQLInputObjectType):
        if type_.name in seen:  # a recursive input type: its fields are being looked at
            return False
        inner = seen | {type_.name}
        return any(_can_hold_text(field.type, inner) for field in type_.fields.values())
    return _is_string(type_)


class _TextArguments(Visitor):
    """Finds whether any argument of an operation can hold a String."""

    def __init__(self, type_info: TypeInfo) -> None:
        super().__init__()
        self.type_info = type_info
        self.found = False
        self.spreads: list[str] = []

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> None:
        self.spreads.append(node.name.value)

    def enter_argument(self, node: Any, *_: Any) -> Any:
        argument = self.type_info.get_argument()
        if argument is not None and _can_hold_text(argument.type):
            self.found = True
        return SKIP


@lru_cache(maxsize=256)
def takes_text(schema: GraphQLSchema, document: Any, operation_name: str | None) -> bool:
    """Whether an operation has any argument that can hold a String (else there is nothing
    to check). Kept per document: the parser cache hands the same document to every request
    with the same text, and most reads (an ID, a number) take none."""
    operation = _operation(document, operation_name)
    if operation is None:
        return False
    fragments = dict(_fragments(document))
    pending: list[Node] = [operation]
    visited: set[str] = set()
    while pending:
        type_info = TypeInfo(schema)
        visitor = _TextArguments(type_info)
        visit(pending.pop(), TypeInfoVisitor(type_info, visitor))
        if visitor.found:
            return True
        for name in visitor.spreads:
            if name not in visited and name in fragments:
                visited.add(name)
                pending.append(fragments[name])
    return False


def _operation(document: Any, name: str | None) -> OperationDefinitionNode | None:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            name is None or (definition.name is not None and definition.name.value == name)
        ):
            return definition
    return None


def _fragments(document: Any) -> Iterator[tuple[str, FragmentDefinitionNode]]:
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            yield definition.name.value, definition


class StorableStrings(SchemaExtension):
    """Refuse an operation whose String arguments PostgreSQL cannot store (see module doc)."""

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        document = execution.graphql_document
        # Runs after sign-in (RequireSignIn comes first): a refused caller learns nothing here.
        if (
            execution.result is None
            and document is not None
            and takes_text(execution.schema._schema, document, execution.operation_name)
        ):
            operation = _operation(document, execution.operation_name)
            if operation is not None:
                errors = unstorable_arguments(
                    execution.schema._schema,
                    operation,
                    dict(_fragments(document)),
                    execution.variables or {},
                )
                if errors and execution.operation_type is OperationType.SUBSCRIPTION:
                    # Strawberry subscribes whatever result an extension sets; an error
                    # raised here ends the stream with it instead (the first one only).
                    raise errors[0]
                if errors:
                    execution.result = ExecutionResult(data=None, errors=errors)
        yield
