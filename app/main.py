"""The Starlette application factory and lifespan: the one composition root."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import GraphQLError, OperationDefinitionNode, parse
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_SSE_PROTOCOL, GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ConnectionInitMessage
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from app import graphiql
from app.encoding import dumps
from app.engine.nodes.base import load_catalogue
from app.errors import SERVICE_UNAVAILABLE, Unauthenticated, database_unavailable
from app.graphql_http import GraphQLOverHTTP
from app.logs import current_request_id, log_database_unavailable
from app.metrics import WEBSOCKETS, watch_event_loop
from app.middleware import BodySizeLimit, RequestContext, unexpected_error_body
from app.ops import healthz, metrics, readyz
from app.persisted_queries import PersistedQueries
from app.runtime import Runtime
from app.services.secrets import check_keyring
from app.settings import Settings
from app.webhooks import HooksEndpoint
from app.worker.runner import run_worker
from schema import FlowdeckSchema, build_schema
from schema.compiled.http import CompiledReads
from schema.context import Context, bearer_token
from schema.errors import shape_error
from schema.ids import encode_id

SOCKET_USER_KEY = "flowdeck.socket_user"
SLOW_PEER_CODE = 4408
SLOW_PEER_REASON = "Too slow to keep up: reconnect and resume with afterSeq."
TRY_AGAIN_LATER = 1013  # RFC 6455's registry: the server is overloaded or cannot serve now

log = logging.getLogger(__name__)


class SlowPeerGuard:
    """A WebSocket's ASGI send and receive, with a time limit on sends.

    A client that stopped reading blocks its sends (uvicorn applies backpressure); past the
    limit the connection is ended, so the server holds nothing for it. Its events stay in the
    log: it resumes with afterSeq. The close frame (4408) is sent, but cannot overtake the
    data queued before it.
    """

    def __init__(self, send: Any, receive: Any, limit_seconds: float) -> None:
        self._send = send
        self._receive = receive
        self.limit = limit_seconds
        self.tripped = asyncio.Event()

    async def send(self, message: Any) -> None:
        """Send, or end the connection when the client has not read for too long."""
        if self.tripped.is_set():
            raise WebSocketDisconnect(code=SLOW_PEER_CODE, reason=SLOW_PEER_REASON)
        try:
            await asyncio.wait_for(self._send(message), self.limit)
        except TimeoutError:
            self.tripped.set()
            log.warning("ending a WebSocket whose client stopped reading")
            close = {"type": "websocket.close", "code": SLOW_PEER_CODE, "reason": SLOW_PEER_REASON}
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._send(close), 1.0)
            raise WebSocketDisconnect(code=SLOW_PEER_CODE, reason=SLOW_PEER_REASON) from None

    async def receive(self) -> Any:
        """The client's next message, or a disconnect once the guard has tripped."""
        incoming = asyncio.ensure_future(self._receive())
        tripped = asyncio.ensure_future(self.tripped.wait())
        done, _ = await asyncio.wait({incoming, tripped}, return_when=asyncio.FIRST_COMPLETED)
        if incoming in done:
            tripped.cancel()
            return incoming.result()
        incoming.cancel()
        return {"type": "websocket.disconnect", "code": SLOW_PEER_CODE}


class SocketUnavailable(Exception):
    """Raised by on_ws_connect when the database cannot sign the socket in."""


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, closing with 1013 (try again later) when sign-in cannot reach
    the database, instead of 4403 (which says the token is bad) or a crash."""

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except SocketUnavailable:
            request_id = current_request_id() or ""
            # A close reason is at most 123 bytes: the code and the request id fit.
            reason = f"{SERVICE_UNAVAILABLE} request {request_id}"[:123]
            await self.websocket.close(code=TRY_AGAIN_LATER, reason=reason)


class FlowdeckGraphQL(GraphQLOverHTTP[Context, None]):
    """Strawberry's ASGI view with Flowdeck's per-request context, over HTTP as the spec says."""

    graphql_transport_ws_handler_class = TransportWSHandler

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if settings.graphiql_enabled else None,
            # graphql-transport-ws and graphql-sse; the legacy graphql-ws protocol stays off.
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_SSE_PROTOCOL),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
            allowed_origins=settings.allowed_origins,
        )
        self.runtime = runtime
        self.sockets_per_user: Counter[uuid.UUID] = Counter()
        self.persisted_queries = PersistedQueries(
            max_entries=settings.persisted_queries, max_bytes=settings.persisted_query_max_bytes
        )
        if settings.compiled_reads:
            schema = self.schema
            assert isinstance(schema, FlowdeckSchema)
            self.compiled = CompiledReads(
                schema._schema,
                schema.limit_rules,
                max_tokens=settings.max_tokens,
                persisted=self.persisted_queries,
                context=self.plain_context,
            ).answer

    def plain_context(self, request: Request) -> Context:
        """The context of a plain (not streaming) HTTP request."""
        return Context(self.runtime, request, bearer_token(request.headers.get("authorization")))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        socket = scope["type"] == "websocket"
        if socket:
            guard = SlowPeerGuard(send, receive, self.runtime.settings.slow_subscriber_seconds)
            send, receive = guard.send, guard.receive
            WEBSOCKETS.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            if socket:
                WEBSOCKETS.dec()
            user_id = scope.get(SOCKET_USER_KEY)
            if user_id is not None:
                self.sockets_per_user[user_id] -= 1
                if self.sockets_per_user[user_id] <= 0:
                    del self.sockets_per_user[user_id]

    async def on_ws_connect(self, context: Context) -> Any:
        """Sign in from connection_init's payload; a bad token closes the socket with 4403."""
        params = context.connection_params or {}
        token = params.get("token") or bearer_token(
            str(params.get("Authorization") or params.get("authorization") or "")
        )
        context.use_token(token if isinstance(token, str) else None)
        try:
            principal = await context.principal()
        except Unauthenticated as error:
            raise ConnectionRejectionError({"reason": str(error)}) from error
        except Exception as error:
            if not database_unavailable(error):
                raise
            log_database_unavailable(log, "database unavailable in websocket sign-in", error)
            raise SocketUnavailable from error
        limit = self.runtime.settings.max_connections_per_user
        if self.sockets_per_user[principal.user_id] >= limit:
            raise ConnectionRejectionError({"reason": f"At most {limit} connections per user."})
        self.sockets_per_user[principal.user_id] += 1
        context.connection.scope[SOCKET_USER_KEY] = principal.user_id
        return UNSET

    def parse_json(self, data: str | bytes) -> Any:
        # Anything the JSON parser cannot turn into an object is the client's error: bad
        # UTF-8, nesting past the parser's recursion, integers of thousands of digits.
        try:
            # Strict UTF-8 first: json.loads(bytes) would let encoded surrogates through.
            value = self.decode_json(data.decode("utf-8") if isinstance(data, bytes) else data)
        except (ValueError, RecursionError) as error:
            raise HTTPException(400, "Unable to parse request body as JSON") from error
        if not isinstance(value, dict | list):
            raise HTTPException(400, "The request body must be a JSON object.")
        return value

    async def execute_single(
        self,
        request: Any,
        request_adapter: Any,
        sub_response: Any,
        context: Context,
        root_value: Any,
        request_data: Any,
    ) -> Any:
        # Strawberry runs the first operation when several come without operationName;
        # the GraphQL spec requires an error instead, before anything runs.
        if request_data.operation_name is None and operation_count(request_data.query) > 1:
            raise HTTPException(
                400, "Must provide operation name if query contains multiple operations."
            )
        return await super().execute_single(
            request, request_adapter, sub_response, context, root_value, request_data
        )

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        token = bearer_token(request.headers.get("authorization"))
        streaming = self._get_stream_transport_from_headers(request.headers) is not None
        return Context(self.runtime, request, token, streaming=streaming)

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql.page_response()  # served from the package: no CDN

    def encode_json(self, data: object) -> str:
        # orjson: fast, and it splices stored graphs (orjson.Fragment) in without re-encoding.
        # dumps() also takes the lone surrogates an error message may quote back.
        try:
            return dumps(data).decode()
        except orjson.JSONEncodeError:
            log.error("a GraphQL response could not be encoded", exc_info=True)
            return dumps(unexpected_error_body()).decode()

    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        # ErrorPolicy shapes what execution returns; an error raised around it (an extension's
        # hook) reaches here unshaped. Shaping is idempotent.
        if result.errors:
            result.errors = [shape_error(error) for error in result.errors]
        return await super().process_result(request, result)

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        answers = response_data if isinstance(response_data, list) else [response_data]
        codes = {
            extensions.get("code")
            for answer in answers
            for error in answer.get("errors") or ()
            if isinstance(error, dict) and isinstance(extensions := error.get("extensions"), dict)
        }
        if SERVICE_UNAVAILABLE in codes:
            # The database failed this request: tell clients and proxies to retry, and when.
            response.status_code = 503
            response.headers["retry-after"] = str(self.runtime.settings.retry_after_seconds)
        return response


@lru_cache(maxsize=256)
def operation_count(query: str | None) -> int:
    """How many operations a document defines (0 when it does not parse: reported later)."""
    if not query or (query.count("{") < 2):
        return 0
    try:
        document = parse(query, max_tokens=10_000)
    except GraphQLError:
        return 0
    return sum(1 for d in document.definitions if isinstance(d, OperationDefinitionNode))


def create_app(
    settings: Settings,
    engine: AsyncEngine,
    url: str,
    *,
    own_engine: bool = True,
    embedded_worker: bool = False,
) -> Starlette:
    """The ASGI app over an engine (and, optionally, a worker in the same process)."""
    runtime = Runtime.build(settings, engine, url)
    if settings.inline_runs > 0:
        runtime.drive_inline()
    graphql = FlowdeckGraphQL(runtime)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Refuse to start with a key that cannot open the stored secrets (KeyringError).
        async with runtime.sessions() as session:
            await check_keyring(session, keyring=runtime.keyring)
        await runtime.hub.start()
        # Importing the node types (pypdf, CEL, jsonschema…) took 0.7-1.9 s of the first save's
        # time on the event loop, stalling every other request: do it before serving.
        load_catalogue()
        # Everything loaded at start-up lives as long as the process: keep it out of the
        # collector's way (full collections over it showed as 100+ ms request stalls).
        gc.collect()
        gc.freeze()
        loop_watch = asyncio.create_task(watch_event_loop())
        async with runtime.opened():
            worker = (
                asyncio.create_task(run_worker(runtime, install_signal_handlers=False))
                if embedded_worker
                else None
            )
            try:
                yield
            finally:
                if worker is not None:
                    worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker
                loop_watch.cancel()
        await runtime.hub.stop()
        if own_engine:
            await engine.dispose()

    app = Starlette(
        routes=[
            Route("/graphql", graphql),  # every method: the view answers 405 itself, as JSON
            WebSocketRoute("/graphql", graphql),
            *graphiql.routes(graphql.schema.as_str(), graphiql_enabled=settings.graphiql_enabled),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route(
                "/hooks/{token}",
                HooksEndpoint(runtime, lambda run_id: encode_id("Run", run_id)).handle,
                methods=["POST"],
            ),
            Route("/", _root),
        ],
        middleware=[
            Middleware(RequestContext, retry_after=settings.retry_after_seconds),
            Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app


async def _root(request: Request) -> Response:
    return Response(status_code=307, headers={"location": "/graphql"})
