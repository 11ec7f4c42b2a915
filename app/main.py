"""The Starlette application factory and lifespan: the one composition root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from app.middleware import BodySizeLimit, RequestContext
from app.ops import healthz, metrics, readyz
from app.runtime import Runtime
from app.settings import Settings
from schema import build_schema
from schema.context import Context, bearer_token


class FlowdeckGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with Flowdeck's per-request context."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if settings.graphiql_enabled else None,
            # graphql-transport-ws only: the legacy graphql-ws protocol stays off.
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        )
        self.runtime = runtime

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        token = bearer_token(request.headers.get("authorization"))
        return Context(self.runtime, request, token)

    def encode_json(self, data: object) -> str:
        # orjson: fast, and it splices stored graphs (orjson.Fragment) in without re-encoding.
        return orjson.dumps(data).decode()


def create_app(settings: Settings, engine: AsyncEngine, *, own_engine: bool = True) -> Starlette:
    """The ASGI app over an engine; it disposes the engine at shutdown when it owns it."""
    runtime = Runtime.build(settings, engine)
    graphql = FlowdeckGraphQL(runtime)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if own_engine:
            await engine.dispose()

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/", _root),
        ],
        middleware=[
            Middleware(RequestContext),
            Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app


async def _root(request: Request) -> Response:
    return Response(status_code=307, headers={"location": "/graphql"})
