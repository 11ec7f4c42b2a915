"""GraphQL over HTTP, as its specification's draft says: media types, status codes, GET rules.

Strawberry's view executes operations; this layer decides what the HTTP exchange around them
looks like (https://graphql.github.io/graphql-over-http/draft/):

- The response media type follows the ``Accept`` header: ``application/graphql-response+json``
  when the client asks for it, ``application/json`` for legacy clients (no ``Accept``,
  ``*/*``, or only ``application/json``), 406 when it accepts neither.
- With ``application/graphql-response+json`` the status says what happened: 200 for data
  without errors, 294 (partial success) for data with errors, 400 for a document that does
  not parse, 422 for one that does not validate, an operation that cannot be chosen,
  variables that do not coerce, or a request that is not a well-formed GraphQL request,
  401 when no valid token came. Request errors carry no ``data`` entry. Legacy clients keep
  what they always had: 200 with the result (as the spec's earlier drafts asked for
  application/json), 400 for a request refused before execution.
- A POST body must be ``application/json`` in UTF-8 (415 otherwise); GET runs queries only
  (a mutation is 405 with ``Allow: POST``); another method is 405. Every refusal is a
  GraphQL-shaped body: ``{"errors": [{"message": ...}]}``, sent as application/json when
  the refusal comes before any GraphQL (method, Accept, Content-Type, a body that is not
  JSON), as the spec keeps graphql-response+json for GraphQL responses.

Subscriptions stream over WebSocket or Server-Sent Events, outside the spec; a subscription
sent as a plain request is refused with the way to stream it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import lru_cache
from typing import Any

import orjson
from cross_web import HTTPException, StarletteRequestAdapter
from graphql import GraphQLError, GraphQLSyntaxError, OperationDefinitionNode, parse
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.typevars import Context, RootValue
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from app.errors import SERVICE_UNAVAILABLE
from app.persisted_queries import PersistedQueries, PersistedQueryError

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
PARTIAL_SUCCESS = 294  # the spec's own status for a response with both data and errors
METHODS = ("GET", "POST")
STATE_MEDIA_TYPE = "graphql_media_type"
STATE_STATUS = "graphql_status"

NOT_ACCEPTABLE = (
    "Cannot answer in any media type the Accept header allows: send Accept: "
    f"{GRAPHQL_RESPONSE}, {JSON};q=0.9"
)
SUBSCRIPTION_NEEDS_STREAM = (
    "A subscription streams: open a WebSocket (graphql-transport-ws) or send "
    "Accept: text/event-stream (graphql-sse)."
)
OPERATION_NAME_TYPE = (
    "The GraphQL operation's `operationName` must be a string or null, if provided."
)


class MethodNotAllowed(HTTPException):
    """A request in a method the operation cannot use (405, with the methods that it can)."""

    def __init__(self, reason: str, allow: str) -> None:
        super().__init__(405, reason)
        self.allow = allow


def negotiate(accept: str | None) -> str | None:
    """The response media type for an ``Accept`` header; None when neither JSON type fits.

    Each candidate takes the quality of the most specific range that matches it (RFC 9110);
    the higher quality wins. On a tie, a type named outright beats one matched by a wildcard,
    graphql-response+json beats application/json when both are named, and wildcards alone
    (``*/*``, what many HTTP libraries send) give application/json, which legacy clients read.
    """
    if accept is None or not accept.strip():
        return JSON
    best = {GRAPHQL_RESPONSE: (0.0, 0), JSON: (0.0, 0)}  # media type -> (quality, specificity)
    for part in accept.split(","):
        media_range, _, parameters = part.partition(";")
        media_range = media_range.strip().lower()
        quality = _quality(parameters)
        for candidate, (_, specificity) in best.items():
            matched = _specificity(media_range, candidate)
            if matched > specificity:
                best[candidate] = (quality, matched)
    (modern, modern_specificity), (legacy, legacy_specificity) = best[GRAPHQL_RESPONSE], best[JSON]
    if max(modern, legacy) <= 0:
        return None
    if modern != legacy:
        return GRAPHQL_RESPONSE if modern > legacy else JSON
    named = modern_specificity == 3 or modern_specificity > legacy_specificity
    return GRAPHQL_RESPONSE if named else JSON


def _quality(parameters: str) -> float:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value.strip()), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


def _specificity(media_range: str, media_type: str) -> int:
    """3 when the range names the type, 2 for ``type/*``, 1 for ``*/*``, 0 when it misses."""
    if media_range == media_type:
        return 3
    if media_range == media_type.split("/")[0] + "/*":
        return 2
    return 1 if media_range == "*/*" else 0


def content_type_problem(content_type: str | None) -> str | None:
    """Why a POST body's ``Content-Type`` is refused (415), or None for JSON in UTF-8."""
    media_type, _, parameters = (content_type or "").partition(";")
    if media_type.strip().lower() != JSON:
        return f"Send the request body as {JSON} (Content-Type: {JSON})."
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return "The request body must be UTF-8 (charset=utf-8, or no charset)."
    return None


@lru_cache(maxsize=256)
def operation_type(query: str | None, operation_name: str | None) -> str | None:
    """``query``, ``mutation`` or ``subscription`` for the operation a request names.

    None when the document does not parse or names no single operation: execution then
    reports that, as the GraphQL spec words it.
    """
    if not query:
        return None
    try:
        document = parse(query, max_tokens=10_000, no_location=True)
    except (GraphQLError, RecursionError):
        return None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    return operations[0].operation.value if len(operations) == 1 else None


def result_status(result: ExecutionResult) -> int:
    """The status of a result sent as application/graphql-response+json."""
    errors = result.errors or []
    if not errors:
        return 200
    if any((error.extensions or {}).get("code") == SERVICE_UNAVAILABLE for error in errors):
        return 503  # the database failed the request: retry later (Retry-After is set)
    if result.data is not None or any(error.path for error in errors):
        return PARTIAL_SUCCESS  # execution ran: a field error, not a request error
    if any(isinstance(error, GraphQLSyntaxError) for error in errors):
        return 400
    codes = {(error.extensions or {}).get("code") for error in errors}
    if "UNAUTHENTICATED" in codes:
        return 401
    if "FORBIDDEN" in codes:
        return 403
    return 422  # validation, the operation to run, variable coercion


def refusal(error: HTTPException, media_type: str) -> tuple[int, str]:
    """The status and media type of a request Strawberry refused.

    A body that is not JSON is no GraphQL request: 400 as application/json. Anything else
    is a GraphQL request error (not well-formed, no operation to run): 422 for clients that
    read graphql-response+json, and the 400 legacy clients always had.
    """
    if isinstance(error.__cause__, ValueError | RecursionError):
        return error.status_code, JSON
    if error.status_code == 400 and media_type == GRAPHQL_RESPONSE:
        return 422, media_type
    return error.status_code, media_type


def error_response(
    status: int,
    message: str,
    media_type: str,
    headers: Mapping[str, str] | None = None,
    *,
    code: str | None = None,
) -> Response:
    """A GraphQL-shaped error body: ``{"errors": [{"message": ..., "extensions"?: {code}}]}``."""
    error: dict[str, Any] = {"message": message}
    if code is not None:
        error["extensions"] = {"code": code}
    return Response(
        orjson.dumps({"errors": [error]}),
        status_code=status,
        media_type=f"{media_type}; charset=utf-8",
        headers=dict(headers or {}),
    )


class MediaTypeRequestAdapter(StarletteRequestAdapter):
    """Starlette's request adapter with the media type lower-cased (it is case-insensitive:
    Strawberry would refuse ``Application/JSON``)."""

    @property
    def content_type(self) -> str | None:
        """The Content-Type header, lower-cased."""
        value = self.headers.get("content-type")
        return value.lower() if value is not None else None


class GraphQLOverHTTP(GraphQL[Context, RootValue]):
    """Strawberry's ASGI view, answering as the GraphQL-over-HTTP specification asks."""

    request_adapter_class = MediaTypeRequestAdapter
    # Automatic persisted queries (app/persisted_queries.py); None: not offered.
    persisted_queries: PersistedQueries | None = None
    # A faster answer to a POSTed query, or None to let Strawberry execute it.
    compiled: Callable[[Request, str], Awaitable[Response | None]] | None = None

    async def run(
        self,
        request: Request | WebSocket,
        context: Context = UNSET,
        root_value: RootValue | None = UNSET,
    ) -> Any:
        if self.is_websocket_request(request):
            return await super().run(request, context, root_value)
        assert isinstance(request, Request)
        if request.method not in METHODS:
            message = "GraphQL is served over GET (queries) and POST."
            return error_response(405, message, JSON, {"allow": ", ".join(METHODS)})
        if self.should_render_graphql_ide(self.request_adapter_class(request)):
            return await super().run(request, context, root_value)  # the page, or 404 when off
        streams = self._get_stream_transport_from_headers(request.headers) is not None
        media_type = JSON if streams else negotiate(request.headers.get("accept"))
        if media_type is None:
            return error_response(406, NOT_ACCEPTABLE, JSON)
        if request.method == "POST" and (
            problem := content_type_problem(request.headers.get("content-type"))
        ):
            return error_response(415, problem, JSON)
        if not streams:
            if request.method == "POST" and self.compiled is not None:
                answered = await self.compiled(request, media_type)
                if answered is not None:
                    return answered
            setattr(request.state, STATE_MEDIA_TYPE, media_type)
        try:
            response = await super().run(request, context, root_value)
        except MethodNotAllowed as error:
            return error_response(405, error.reason, media_type, {"allow": error.allow})
        except PersistedQueryError as error:
            return error_response(error.status, error.message, media_type, code=error.code)
        except HTTPException as error:
            status, answered_as = refusal(error, media_type)
            return error_response(status, error.reason, answered_as)
        if streams or isinstance(response, StreamingResponse):
            return response
        status = getattr(request.state, STATE_STATUS, 200)
        if response.status_code == 200:  # a status set by a resolver stands
            response.status_code = status
        response.headers["content-type"] = f"{media_type}; charset=utf-8"
        if status == 401:
            response.headers["www-authenticate"] = "Bearer"
        return response

    async def parse_http_body(self, request: Any) -> Any:
        parsed = await super().parse_http_body(request)
        persisted = self.persisted_queries
        if persisted is None:
            return parsed
        if isinstance(parsed, list):
            return [persisted.resolve(item) for item in parsed]
        return persisted.resolve(parsed)

    async def execute_single(
        self,
        request: Any,
        request_adapter: Any,
        sub_response: Any,
        context: Context,
        root_value: Any,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        if not isinstance(request_data.operation_name, str | None):
            raise HTTPException(400, OPERATION_NAME_TYPE)
        kind = operation_type(request_data.query, request_data.operation_name)
        if kind == "mutation" and request_adapter.method == "GET":
            raise MethodNotAllowed("Mutations are sent with POST, not GET.", allow="POST")
        if kind == "subscription":
            raise HTTPException(400, SUBSCRIPTION_NEEDS_STREAM)
        return await super().execute_single(
            request, request_adapter, sub_response, context, root_value, request_data
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        response = await super().process_result(request, result)
        media_type = getattr(request.state, STATE_MEDIA_TYPE, None)
        if media_type == GRAPHQL_RESPONSE:
            status = result_status(result)
            setattr(request.state, STATE_STATUS, status)
            if status >= 400:
                response.pop("data", None)  # a request error: execution never began
        return response

    def parse_query_params(self, params: Any) -> dict[str, Any]:
        # GET: an empty optional parameter is the same as an absent one.
        present = {
            name: value
            for name, value in dict(params).items()
            if value != "" or name not in ("operationName", "variables", "extensions")
        }
        return super().parse_query_params(present)
