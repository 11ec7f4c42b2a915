"""The ``http.request`` node: call an HTTP API under the outbound policy.

The request goes through ``app.engine.outbound``, which refuses loopback, private, link-local
and metadata addresses (unless configuration allows them), checks every redirect, and caps
the response's size and time. The output is ``{status, headers, body}``, cut to the stored
step cap (``app.engine.caps``) when larger; a status the node
does not expect fails the step, with that output kept on the error.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from app.engine import outbound
from app.engine.caps import cap_output
from app.engine.nodes.base import (
    NodeConfig,
    NodeContext,
    NodeFailure,
    NodeOutcome,
    NodeType,
    register,
)

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
StatusCode = Annotated[int, Field(ge=100, le=599)]

EXCERPT_CHARS = 200
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


class HttpRequestConfig(NodeConfig):
    """The configuration of an ``http.request`` node."""

    method: HttpMethod = Field("GET", description="The HTTP method.")
    url: str = Field(
        min_length=1,
        max_length=8192,
        description="The address to call: an http or https URL.",
    )
    headers: dict[str, str] | None = Field(
        None, description="Request headers, name to value (ASCII, no line breaks)."
    )
    query: dict[str, str | int | float | bool] | None = Field(
        None, description="Query parameters, added to those already in the URL."
    )
    body: Any = Field(
        None,
        description="The request body, if any: a string is sent as text (text/plain), any "
        "other JSON value as JSON (application/json), unless a Content-Type header says "
        "otherwise.",
    )
    expect_status: list[StatusCode] | None = Field(
        None,
        min_length=1,
        description="The response statuses that count as success; by default any 2xx.",
    )
    follow_redirects: bool = Field(
        True,
        description="Follow redirects (at most 5 by default), each destination checked again.",
    )

    @field_validator("method", mode="before")
    @classmethod
    def _upper_case_method(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, headers: dict[str, str] | None) -> dict[str, str] | None:
        for name, value in (headers or {}).items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if not _HEADER_VALUE.fullmatch(value):
                raise ValueError(f"header {name!r} has a value that is not printable ASCII")
        return headers


class HttpStatusError(NodeFailure):
    """A response with a status the node does not expect; ``output`` is what it would return."""

    def __init__(self, message: str, output: dict[str, Any]) -> None:
        super().__init__(message)
        self.output = output


async def run(ctx: NodeContext, config: HttpRequestConfig, input: Any) -> NodeOutcome:
    """Send the configured request and return its status, headers and body."""
    text_body = config.body if isinstance(config.body, str) else None
    response = await outbound.request(
        outbound.OutboundPolicy.from_settings(ctx.settings).for_node(config.timeout_seconds),
        config.method,
        config.url,
        headers=_request_headers(ctx, config),
        params=config.query,
        content=text_body,
        json=None if text_body is not None else config.body,
        follow_redirects=config.follow_redirects,
    )
    # Capped here, so the output later nodes get is the one stored (FLOWDECK_MAX_STEP_IO_BYTES).
    output = await cap_output(
        {"status": response.status, "headers": response.headers, "body": _parsed_body(response)},
        ctx.settings,
    )
    if not _is_expected(response.status, config.expect_status):
        excerpt = _excerpt(response.text())
        message = f"HTTP {response.status} from {response.host}"
        raise HttpStatusError(f"{message}: {excerpt}" if excerpt else message, output)
    return NodeOutcome(output)


def _request_headers(ctx: NodeContext, config: HttpRequestConfig) -> dict[str, str]:
    headers = dict(config.headers or {})
    present = {name.lower() for name in headers}
    if "idempotency-key" not in present:
        # The same key on every attempt, so a retried call can be deduplicated by the API.
        headers["Idempotency-Key"] = f"{ctx.run_id}:{ctx.node_id}"
    if isinstance(config.body, str) and "content-type" not in present:
        headers["Content-Type"] = "text/plain; charset=utf-8"
    return headers


def _parsed_body(response: outbound.OutboundResponse) -> Any:
    """The JSON value when the response says JSON and is valid JSON, else the text."""
    if response.is_json:
        try:
            return json.loads(response.content, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            pass
    return response.text()


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and JSONB cannot store them: keep such a body as text.
    raise ValueError(f"{name} is not JSON")


def _is_expected(status: int, expect_status: list[int] | None) -> bool:
    return 200 <= status <= 299 if expect_status is None else status in expect_status


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


NODE_TYPE = register(
    NodeType(
        type="http.request",
        category="Integrations",
        label="HTTP request",
        description="Call an HTTP API and output its status, headers and body. Private, "
        "loopback and cloud metadata addresses are refused unless configuration allows them.",
        config_model=HttpRequestConfig,
        run=run,
    )
)
