"""A real OpenAI-compatible chat completions server for tests, on 127.0.0.1.

``POST /v1/chat/completions`` checks the Bearer key (when one is configured), records the
request, and answers deterministically: the last user message in upper case, the model
name with a snapshot date, and usage counted in words. ``mode`` makes it fail instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.servers import Hit, LocalHTTP

Mode = Literal["ok", "server_error", "malformed"]

SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"
MALFORMED = {"id": "chatcmpl-stub", "object": "chat.completion", "choices": []}
SNAPSHOT = "2024-07-18"


def _error(status: int, message: str, type_: str, code: str | None = None) -> Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


@dataclass
class OpenAIStub:
    """The stub: ``api_key`` None accepts any caller; ``requests`` holds the JSON bodies.

    In ``malformed`` mode it answers 200 with ``malformed_body`` (JSON, or bytes as HTML).
    """

    api_key: str | None = None
    mode: Mode = "ok"
    malformed_body: Any = field(default_factory=lambda: MALFORMED)
    requests: list[dict[str, Any]] = field(default_factory=list)
    http: LocalHTTP = field(default_factory=LocalHTTP)

    @property
    def base_url(self) -> str:
        """The base URL a node is configured with (``/v1``, as OpenAI's)."""
        return self.http.url("/v1")

    @property
    def hits(self) -> list[Hit]:
        """Every HTTP request received, headers included."""
        return self.http.hits

    def start(self) -> OpenAIStub:
        """Start serving; returns when the server accepts connections."""
        self.http.routes["/v1/chat/completions"] = self._chat_completions
        self.http.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.http.stop()

    async def _chat_completions(self, request: Request) -> Response:
        if request.method != "POST":
            return _error(405, "Method not allowed.", "invalid_request_error")
        refusal = self._authorization_problem(request.headers.get("authorization"))
        if refusal is not None:
            return refusal
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
        self.requests.append(body)
        if self.mode == "server_error":
            return _error(500, SERVER_ERROR, "server_error")
        if self.mode == "malformed":
            if isinstance(self.malformed_body, bytes):
                return Response(self.malformed_body, media_type="text/html")
            return JSONResponse(self.malformed_body)
        return JSONResponse(_completion(body))

    def _authorization_problem(self, header: str | None) -> Response | None:
        if self.api_key is None:
            return None
        if not header or not header.startswith("Bearer "):
            return _error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
            )
        given = header.removeprefix("Bearer ")
        if given != self.api_key:
            # Quotes the whole key it was given, as a careless server might.
            return _error(
                401,
                f"Incorrect API key provided: {given}.",
                "invalid_request_error",
                "invalid_api_key",
            )
        return None


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    messages = body["messages"]
    last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    text = last_user.upper()
    prompt_tokens = sum(len(m["content"].split()) for m in messages)
    completion_tokens = len(text.split())
    limit = body.get("max_tokens")
    finish_reason = "stop"
    if limit is not None and completion_tokens > limit:
        text = " ".join(text.split()[:limit])
        completion_tokens, finish_reason = limit, "length"
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1_721_260_800,
        "model": f"{body['model']}-{SNAPSHOT}",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
