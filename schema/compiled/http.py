"""The compiled path of a POSTed query: a request a plan can answer is answered here.

Called by the GraphQL view after its HTTP checks (method, Accept, Content-Type) and before
Strawberry. Returns None (and the view carries on as before) for anything it does not
answer itself: a body that is not one JSON request object, a persisted query it cannot
resolve, a document without a plan, variables that do not coerce or hold text PostgreSQL
cannot store, a caller that does not sign in, an object that is not found or not visible,
an argument a read refuses, a value its field's type cannot show. Every one of those is then
reported by the general path, exactly as without this one. A database fault is answered here
(503, masked, logged with the request id, no data, as the general path answers a sign-in the
database failed): handing it on would make the request wait for the database a second time.

What a compiled answer keeps from the general path: the request's sign-in (the token
cache, its revocation), tenancy (each read's workspace check), the limits (validation with
the schema's own rules, depth and aliases included; page sizes and cursors by the reads),
the operation metrics and, when traces are on, the server span.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from graphql import GraphQLError, GraphQLSchema, parse, specified_rules
from graphql.execution.values import get_variable_values
from graphql.validation import ASTValidationRule
from starlette.requests import Request
from starlette.responses import Response
from strawberry.http import GraphQLRequestData
from strawberry.schema.schema import validate_document

from app import tracing
from app.encoding import dumps
from app.errors import AccessError, InputErrors, database_unavailable
from app.graphql_http import GRAPHQL_RESPONSE
from app.metrics import COMPILED_QUERIES, GRAPHQL_DURATION, GRAPHQL_OPERATIONS
from app.persisted_queries import PersistedQueries, PersistedQueryError
from schema.compiled.core import Decline, Execution
from schema.compiled.plan import CompiledQuery, compile_query
from schema.context import Context
from schema.errors import shape_error
from schema.strings import takes_text, unstorable_arguments

log = logging.getLogger(__name__)

PLANS = 256  # documents kept (with a plan or as known not to have one)
# A planned request is a document (or its hash) and a few variables; a larger body (a save
# with its graph) is not parsed here, only by the general path.
MAX_BODY = 64 * 1024
# A request nested deeper than this is left to the general path (whose parser's recursion
# limit depends on its stack: near the limit the two could disagree).
MAX_DEPTH = 64


def _observe(
    plan: CompiledQuery,
    request: Request,
    started: float,
    started_ns: int,
    error: str | None = None,
) -> None:
    """Count, time and (traces on) trace a query this path answered, as ``OperationMetrics``
    does for the general path: ``error`` is the error code of an answer without data."""
    COMPILED_QUERIES.labels("answered").inc()
    GRAPHQL_OPERATIONS.labels("query", "ok" if error is None else "error").inc()
    GRAPHQL_DURATION.labels("query").observe(time.perf_counter() - started)
    if tracing.enabled():
        name = plan.operation.name.value if plan.operation.name is not None else None
        attributes = {"graphql.operation.type": "query"}
        if name:
            attributes["graphql.operation.name"] = name
        span_name = f"query {name}" if name else "query"
        tracing.record_server_span(span_name, request.headers, started_ns, attributes, error)


class CompiledReads:
    """Plans by document text, and the answer to a request one of them can give."""

    def __init__(
        self,
        schema: GraphQLSchema,
        rules: tuple[type[ASTValidationRule], ...],
        *,
        max_tokens: int,
        persisted: PersistedQueries | None,
        context: Callable[[Request], Context],
    ) -> None:
        self.schema = schema
        self.rules = (*specified_rules, *rules)
        self.max_tokens = max_tokens
        self.persisted = persisted
        self.context = context
        self._plans: OrderedDict[tuple[str, str | None], CompiledQuery | None] = OrderedDict()

    def plan(self, query: str, operation_name: str | None) -> CompiledQuery | None:
        """The document's plan (kept), or None when it has none."""
        key = (query, operation_name)
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        plan = self._compile(query, operation_name)
        self._plans[key] = plan
        while len(self._plans) > PLANS:
            self._plans.popitem(last=False)
        return plan

    def _compile(self, query: str, operation_name: str | None) -> CompiledQuery | None:
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except (GraphQLError, RecursionError):
            return None
        if validate_document(self.schema, document, self.rules):
            return None
        try:
            plan = compile_query(self.schema, document, operation_name)
        except Exception:
            log.exception("a valid query could not be compiled; it takes the general path")
            return None
        if plan is not None and takes_text(self.schema, document, operation_name):
            plan = replace(plan, takes_text=True)
        return plan

    async def answer(self, request: Request, media_type: str) -> Response | None:
        """The response to a POSTed query when a plan answers it, else None."""
        started = time.perf_counter()
        started_ns = time.time_ns()
        body = await request.body()
        found = self._request(body) if len(body) <= MAX_BODY else None
        if found is None:
            COMPILED_QUERIES.labels("none").inc()
            return None
        plan, variables = found
        coerced = get_variable_values(
            self.schema, plan.operation.variable_definitions or [], variables
        )
        if isinstance(coerced, list) or (
            plan.takes_text
            and unstorable_arguments(self.schema, plan.operation, plan.fragments, variables)
        ):
            COMPILED_QUERIES.labels("declined").inc()
            return None
        context = self.context(request)
        try:
            principal = await context.principal()
            async with context.runtime.pool.connection() as conn:
                execution = Execution(conn, principal, coerced, context.public_base_url)
                (data,) = await execution.fill(plan.root, [None])
        except (AccessError, InputErrors, GraphQLError, Decline):
            COMPILED_QUERIES.labels("declined").inc()
            return None  # the general path reports it
        except Exception as error:
            if database_unavailable(error):
                # Answered here, as the general path answers a failed sign-in: trying it
                # there too would wait for the database twice.
                unavailable = self._unavailable(error, media_type, context)
                _observe(plan, request, started, started_ns, error="SERVICE_UNAVAILABLE")
                return unavailable
            log.exception("a compiled query failed; it takes the general path")
            COMPILED_QUERIES.labels("declined").inc()
            return None
        _observe(plan, request, started, started_ns)
        return Response(
            dumps({"data": data}), status_code=200, media_type=f"{media_type}; charset=utf-8"
        )

    def _unavailable(self, error: Exception, media_type: str, context: Context) -> Response:
        """503, as the general path answers a request the database failed before any field
        ran: the masked error (logged with the request id), no data, Retry-After."""
        shaped = shape_error(GraphQLError(str(error), original_error=error), "compiled read")
        answer: dict[str, Any] = {"data": None, "errors": [shaped.formatted]}
        if media_type == GRAPHQL_RESPONSE:
            del answer["data"]  # a request error: no data entry (GraphQL over HTTP)
        retry_after = str(context.runtime.settings.retry_after_seconds)
        return Response(
            dumps(answer),
            status_code=503,
            media_type=f"{media_type}; charset=utf-8",
            headers={"retry-after": retry_after},
        )

    def _request(self, body: bytes) -> tuple[CompiledQuery, dict[str, Any]] | None:
        """The plan and raw variables of a single JSON request whose document has one."""
        try:
            # As the general path parses it (FlowdeckGraphQL.parse_json): strict UTF-8, then
            # the standard library's JSON, so both read the same values.
            data = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            return None
        if type(data) is not dict or _deeper_than(data, MAX_DEPTH):
            return None
        query = data.get("query")
        operation_name = data.get("operationName")
        variables = data.get("variables")
        extensions = data.get("extensions")
        if not (variables is None or type(variables) is dict):
            return None
        if not (operation_name is None or type(operation_name) is str):
            return None
        if extensions is not None:
            if type(extensions) is not dict:
                return None
            if "persistedQuery" in extensions:
                if self.persisted is None or not (query is None or type(query) is str):
                    return None
                request = GraphQLRequestData(
                    query=query,
                    variables=variables,
                    operation_name=operation_name,
                    extensions=extensions,
                )
                try:
                    query = self.persisted.resolve(request).query
                except PersistedQueryError:
                    return None
        if type(query) is not str:
            return None
        plan = self.plan(query, operation_name)
        return (plan, variables or {}) if plan is not None else None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests lists and objects deeper than ``limit``."""
    level = [value]
    for _ in range(limit):
        level = [
            inner
            for outer in level
            for inner in (outer.values() if isinstance(outer, dict) else outer)
            if isinstance(inner, dict | list)
        ]
        if not level:
            return False
    return True
