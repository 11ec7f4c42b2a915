"""Sign-in is required for every operation except pure introspection."""

from __future__ import annotations

from collections.abc import AsyncIterator

from graphql import ExecutionResult, FieldNode, GraphQLError, OperationDefinitionNode
from strawberry.extensions import SchemaExtension

from app.errors import Unauthenticated
from schema.errors import shape_error


def introspection_only(operation: OperationDefinitionNode | None) -> bool:
    """True for an operation that only asks about the schema (GraphiQL's docs)."""
    if operation is None:
        return False
    return all(
        isinstance(selection, FieldNode) and selection.name.value.startswith("__")
        for selection in operation.selection_set.selections
    )


class RequireSignIn(SchemaExtension):
    """Authenticate once, before any resolver runs: no input is looked at before the token."""

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        operation = None
        document = execution.graphql_document
        if document is not None:
            for definition in document.definitions:
                if isinstance(definition, OperationDefinitionNode) and (
                    execution.operation_name is None
                    or (definition.name and definition.name.value == execution.operation_name)
                ):
                    operation = definition
                    break
        if not introspection_only(operation):
            try:
                await execution.context.principal()
            except Unauthenticated as error:
                # Short-circuits execution: no resolver runs, no input is looked at.
                execution.result = ExecutionResult(
                    data=None,
                    errors=[GraphQLError(str(error), extensions={"code": error.code})],
                )
            except Exception as error:  # e.g. the database is down: shaped, never its text
                failure = GraphQLError(str(error), original_error=error)
                execution.result = ExecutionResult(
                    data=None, errors=[shape_error(failure, where="sign-in")]
                )
        yield
