"""The upstream of the secret tests: it echoes what it got, and refuses quoting the key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tests.servers import LocalHTTP


@pytest.fixture
def upstream() -> Iterator[LocalHTTP]:
    """An upstream that echoes, refuses, and answers like a careless API."""

    async def echo(request: Request) -> Response:
        return JSONResponse(
            {
                "headers": dict(request.headers),
                "query": dict(request.query_params),
                "body": (await request.body()).decode(),
                "url": str(request.url),
            },
            headers={"x-echo": request.headers.get("x-key", "none")},
        )

    async def refuse(request: Request) -> Response:
        return JSONResponse(
            {"error": f"key {request.headers.get('x-key')} is revoked"}, status_code=403
        )

    async def refuse_long(request: Request) -> Response:
        # A plain-text error whose excerpt (200 characters) cuts through the key
        return PlainTextResponse(
            "Denied. " + "x" * 170 + " key=" + request.headers.get("x-key", ""), status_code=403
        )

    async def refuse_raw(request: Request) -> Response:
        return PlainTextResponse("bad key:\n" + request.headers.get("x-key", ""), status_code=500)

    server = LocalHTTP(
        routes={
            "/echo": echo,
            "/refuse": refuse,
            "/refuse-long": refuse_long,
            "/refuse-raw": refuse_raw,
        }
    ).start()
    yield server
    server.stop()
