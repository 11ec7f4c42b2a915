"""Outbound HTTP for node types: a client that connects only where the SSRF policy allows.

Every connection goes through one choke point, ``_GuardedBackend.connect_tcp`` (an httpcore
network backend): it resolves the host once, refuses when any resolved address is forbidden
and not allowed by configuration, then connects to an address it checked. No second lookup
happens, so a DNS answer that changes in between (rebinding) never reaches a socket. The URL
keeps the hostname, so the Host header, TLS SNI and certificate check all use the name.
Redirects are followed here, hop by hop, and every hop passes the same choke point. The
policy itself (forbidden addresses, what settings allow, the caps, the resolver) is in
``app.engine.outbound_policy``; its public names import from here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

from app.engine.outbound_policy import (
    OutboundBlocked,
    OutboundError,
    OutboundPolicy,
    OutboundTimeout,
    ResponseTooLarge,
    is_forbidden_address,
    resolve_allowed,
)

__all__ = [
    "USER_AGENT",
    "OutboundBlocked",
    "OutboundError",
    "OutboundPolicy",
    "OutboundResponse",
    "OutboundTimeout",
    "ResponseTooLarge",
    "is_forbidden_address",
    "request",
    "resolve_allowed",
]

USER_AGENT = "Flowdeck/0.1"
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CROSS_ORIGIN_HEADERS = ("authorization", "proxy-authorization", "cookie")
_BODY_HEADERS = ("content-type", "content-length", "content-encoding", "transfer-encoding")

# httpx and httpcore log each request's full URL (INFO) and more (DEBUG); a node's URL can
# carry a secret in its query, so their chatter stays off whatever the root level is.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)


class _GuardedBackend(httpcore.AnyIOBackend):
    """An httpcore network backend that connects only to addresses the policy allows."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve and check ``host``, then connect to the first checked address that answers."""
        *others, last = await resolve_allowed(self._policy, host, port)
        for address in others:
            with contextlib.suppress(httpcore.ConnectError):
                return await super().connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
        return await super().connect_tcp(last, port, timeout, local_address, socket_options)


class _PoolStream(httpx.AsyncByteStream):
    """An httpcore response body as an httpx stream."""

    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_stream():
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class _GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool whose every connection is guarded."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(), network_backend=_GuardedBackend(policy)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        )
        pool_request = httpcore.Request(
            request.method,
            url,
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = await self._pool.handle_async_request(pool_request)
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=_PoolStream(response),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    """A complete response: status, lower-case headers (repeats joined by ", "), body bytes."""

    status: int
    url: str
    headers: dict[str, str]
    content: bytes
    encoding: str

    @property
    def host(self) -> str:
        """The host that answered (after redirects)."""
        return urlsplit(self.url).hostname or ""

    @property
    def is_json(self) -> bool:
        """Whether the content type says JSON (application/json or any +json type)."""
        media_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
        return media_type == "application/json" or media_type.endswith("+json")

    def text(self) -> str:
        """The body decoded with the response's charset (UTF-8 by default)."""
        return self.content.decode(self.encoding, errors="replace")


async def request(
    policy: OutboundPolicy,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str | int | float | bool] | None = None,
    content: str | bytes | None = None,
    json: Any = None,
    follow_redirects: bool = True,
) -> OutboundResponse:
    """Send a request under ``policy``, following redirects hop by hop, and read the capped body."""
    target = _parse_url(url)
    client = httpx.AsyncClient(
        transport=_GuardedTransport(policy),
        headers={"User-Agent": USER_AGENT},
        timeout=policy.timeout_seconds,
        follow_redirects=False,
        trust_env=False,
    )
    try:
        async with client, asyncio.timeout(policy.timeout_seconds):
            with _as_outbound_errors(target.host, policy):
                # Merged by hand: httpx's params= replaces the query already in the URL.
                url_with_query = target.copy_merge_params(params) if params else target
                outgoing = client.build_request(
                    method, url_with_query, headers=headers, content=content, json=json
                )
            return await _exchange(client, outgoing, policy, follow_redirects)
    except TimeoutError as exc:
        raise OutboundTimeout(_timeout_message(target.host, policy)) from exc


async def _exchange(
    client: httpx.AsyncClient,
    outgoing: httpx.Request,
    policy: OutboundPolicy,
    follow_redirects: bool,
) -> OutboundResponse:
    start = outgoing.url.host
    for _ in range(policy.max_redirects + 1):
        with _as_outbound_errors(outgoing.url.host, policy):
            response = await client.send(outgoing, stream=True)
            try:
                if not (follow_redirects and _is_redirect(response)):
                    content = await _read_capped(response, policy.max_response_bytes)
                    return OutboundResponse(
                        status=response.status_code,
                        url=str(response.url),
                        headers=dict(response.headers.items()),
                        content=content,
                        encoding=response.encoding or "utf-8",
                    )
            finally:
                await response.aclose()
        outgoing = _redirected(outgoing, response)
    raise OutboundError(f"Too many redirects (more than {policy.max_redirects}) from {start}.")


@contextlib.contextmanager
def _as_outbound_errors(host: str, policy: OutboundPolicy) -> Iterator[None]:
    try:
        yield
    except (httpcore.TimeoutException, httpx.TimeoutException) as exc:
        raise OutboundTimeout(_timeout_message(host, policy)) from exc
    except httpcore.LocalProtocolError as exc:  # its text may quote header values (secrets)
        raise OutboundError(f"Request to {host} is not valid HTTP: check its headers.") from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpx.HTTPError) as exc:
        raise OutboundError(f"Request to {host} failed: {exc or type(exc).__name__}.") from exc
    except UnicodeEncodeError as exc:
        raise OutboundError(f"Request to {host} has a header that is not ASCII.") from exc


def _timeout_message(host: str, policy: OutboundPolicy) -> str:
    return f"No complete response from {host} within {policy.timeout_seconds:g} seconds."


def _parse_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(_canonical_ipv4_host(url))
    except (httpx.InvalidURL, ValueError) as exc:
        raise OutboundError(f"Invalid URL: {exc}.") from exc
    if parsed.scheme not in _DEFAULT_PORTS:
        raise OutboundBlocked(
            f"Refused the URL scheme {parsed.scheme!r}: only http and https are allowed.",
            host=parsed.host,
            reason="scheme",
        )
    if not parsed.host:
        raise OutboundError("Invalid URL: it has no host.")
    return parsed


def _canonical_ipv4_host(url: str) -> str:
    """``url`` with a numeric IPv4 host in a legacy form (0x7f.1, 0177.0.0.1) written plainly."""
    parts = urlsplit(url)
    userinfo, at, host_port = parts.netloc.rpartition("@")
    if host_port.startswith("["):
        return url
    host, colon, port = host_port.partition(":")
    address = _legacy_ipv4(host)
    if address is None or str(address) == host:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{address}{colon}{port}"))


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a numeric host in any inet_aton form denotes (2130706433, 127.1, 0x7f.1)."""
    if not _NUMERIC_HOST.fullmatch(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _is_redirect(response: httpx.Response) -> bool:
    return response.status_code in _REDIRECT_STATUSES and "location" in response.headers


def _redirected(previous: httpx.Request, response: httpx.Response) -> httpx.Request:
    """The next hop's request, as browsers make it (Fetch): method, body and credentials."""
    location = _canonical_ipv4_host(response.headers["location"])
    try:
        target = previous.url.join(location)
    except (httpx.InvalidURL, ValueError) as exc:
        raise OutboundError(f"Invalid redirect from {previous.url.host}: {exc}.") from exc
    target = _parse_url(str(target))
    method, body = previous.method, previous.content
    headers = httpx.Headers(previous.headers)
    headers.pop("host", None)
    status = response.status_code
    if (status == 303 and method not in ("GET", "HEAD")) or (
        status in (301, 302) and method == "POST"
    ):
        method, body = "GET", b""
        for name in _BODY_HEADERS:
            headers.pop(name, None)
    if _origin(target) != _origin(previous.url):
        for name in _CROSS_ORIGIN_HEADERS:
            headers.pop(name, None)
    return httpx.Request(method, target, headers=headers, content=body or None)


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS[url.scheme]


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    if response.request.method == "HEAD":  # its Content-Length describes a body not sent
        return b""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(response, limit)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise _too_large(response, limit)
    return bytes(body)


def _too_large(response: httpx.Response, limit: int) -> ResponseTooLarge:
    return ResponseTooLarge(f"Response from {response.url.host} is larger than {limit} bytes.")
