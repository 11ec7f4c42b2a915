"""A real local HTTP server for tests (the outside world, faked by a real server)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Hit:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LocalHTTP:
    """Serves ``routes`` on 127.0.0.1 in a thread; records every request."""

    routes: dict[str, Handler] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        """How many requests ``path`` received."""
        return sum(1 for hit in self.hits if hit.path == path)

    async def _dispatch(self, request: Request) -> Response:
        body = await request.body()
        self.hits.append(Hit(request.method, request.url.path, dict(request.headers), body))
        handler = self.routes.get(request.url.path)
        if handler is None:
            return JSONResponse({"error": "no such route"}, status_code=404)
        return await handler(request)

    def start(self) -> LocalHTTP:
        """Start serving; returns when the server accepts connections."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._dispatch,
                    methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
                )
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("local HTTP server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=10)


async def slow(seconds: float, body: object) -> Response:
    """A response after ``seconds``."""
    await asyncio.sleep(seconds)
    return JSONResponse(body)
