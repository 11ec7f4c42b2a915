"""User errors in payloads, and the top-level error policy (codes, masking, request ids)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import TypeAlias, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from app.errors import (
    SERVICE_UNAVAILABLE,
    UNAVAILABLE_MESSAGE,
    AccessError,
    ErrorCode,
    InputErrors,
    database_unavailable,
)
from app.logs import current_request_id, log_database_unavailable

log = logging.getLogger("flowdeck.graphql")

T = TypeVar("T")

# The service layer's ErrorCode, shown to clients as UserErrorCode.
UserErrorCode: TypeAlias = ErrorCode
strawberry.enum(UserErrorCode, name="UserErrorCode", description="Why an input was refused.")


@strawberry.type(description="An expected failure of a mutation; nothing was written.")
class UserError:
    field: list[str] | None = strawberry.field(
        description="Path to the input field at fault, e.g. [input, graph, nodes, 3, id]."
    )
    code: UserErrorCode = strawberry.field(description="Machine-readable reason.")
    message: str = strawberry.field(description="Human-readable explanation.")


def user_errors(error: InputErrors) -> list[UserError]:
    """The payload form of a service's InputErrors."""
    return [
        UserError(
            field=list(e.field) if e.field is not None else None,
            code=e.code,
            message=e.message,
        )
        for e in error.errors
    ]


def graphql_error(error: Exception) -> GraphQLError:
    """The client's view of an error raised outside a resolver's reach (subscriptions)."""
    if isinstance(error, GraphQLError):
        return shape_error(error)
    return shape_error(GraphQLError(str(error), original_error=error), where="subscription")


async def guarded(source: AsyncIterator[T]) -> AsyncIterator[T]:
    """Relay a subscription's items; its errors reach the client shaped like any other."""
    try:
        async for item in source:
            yield item
    except Exception as error:  # every failure is reported to the subscriber, shaped
        raise graphql_error(error) from error


def shape_error(error: GraphQLError, where: str = "resolver") -> GraphQLError:
    """Give access errors their code; mask and log database failures and anything unexpected.

    Syntax and validation errors pass as they are; so does an error shaped already (it has
    no original error), so shaping twice changes nothing.
    """
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return error
    if isinstance(original, AccessError):
        return GraphQLError(
            str(original), nodes=error.nodes, path=error.path, extensions={"code": original.code}
        )
    if isinstance(original, InputErrors):
        first = original.errors[0]
        return GraphQLError(
            str(original),
            nodes=error.nodes,
            path=error.path,
            extensions={
                "code": "BAD_USER_INPUT",
                "reason": first.code.value,
                "field": list(first.field or ()),
            },
        )
    request_id = current_request_id()
    if database_unavailable(original):
        located = {"path": error.path} if error.path else {}
        log_database_unavailable(log, f"database unavailable in {where}", original, **located)
        return GraphQLError(
            UNAVAILABLE_MESSAGE,
            nodes=error.nodes,
            path=error.path,
            extensions={"code": SERVICE_UNAVAILABLE, "requestId": request_id},
        )
    log.error(
        f"unexpected error in {where}",
        exc_info=(type(original), original, original.__traceback__),
        extra={"path": error.path, "request_id": request_id},
    )
    return GraphQLError(
        "Unexpected error. It has been logged; quote the request id when reporting it.",
        nodes=error.nodes,
        path=error.path,
        extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
    )


class ErrorPolicy(SchemaExtension):
    """Give access errors their ``extensions.code``; mask and log everything unexpected."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is None or not errors:
            return
        result.errors = [shape_error(error) for error in errors]
