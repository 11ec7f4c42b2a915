"""Tests for app.engine.outbound against real local HTTP servers: the policy, pinning, caps."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpcore
import pytest

from app.engine.outbound import (
    OutboundBlocked,
    OutboundError,
    OutboundPolicy,
    OutboundResponse,
    OutboundTimeout,
    ResponseTooLarge,
    is_forbidden_address,
    request,
)

MIB = 1024 * 1024
ALLOW_LOCAL = OutboundPolicy.from_settings(SimpleNamespace(outbound_allow=["127.0.0.1/32"]))
STRICT = OutboundPolicy()
SELF_SIGNED_FOR_LOCALHOST = [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=localhost",
]


@dataclass(frozen=True)
class Reply:
    """What the stub answers; without ``length`` the body ends when the connection closes."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    length: bool = True


@dataclass(frozen=True)
class Received:
    """One request as the stub read it off the socket."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


# A route answers with a Reply, computes one, or (None) never answers.
Route = Reply | Callable[[Received], Reply] | None


@dataclass
class StubServer:
    """A tiny HTTP/1.1 server on a real socket that records every connection and request."""

    host: str = "127.0.0.1"
    routes: dict[str, Route] = field(default_factory=dict)
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    ssl_context: ssl.SSLContext | None = None
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, port: int = 0) -> StubServer:
        self._server = await asyncio.start_server(
            self._serve, self.host, port, ssl=self.ssl_context
        )
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def close(self) -> None:
        assert self._server is not None
        # Handlers end on their own (EOF, or the closing event): on Python 3.11, cancelling
        # a stream handler task logs a spurious error.
        self._server.close()
        self._closing.set()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while (received := await _read_request(reader)) is not None:
                self.requests.append(received)
                route = self.routes.get(received.target.split("?")[0], Reply(404, b"no route"))
                reply = route(received) if callable(route) else route
                if reply is None:
                    await self._closing.wait()
                    return
                await _write_reply(writer, received.method, reply)
                if not reply.length:
                    break
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)
            self._writers.discard(writer)


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    method, target, _ = request_line.split(" ")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Received(method, target, headers, body)


async def _write_reply(writer: asyncio.StreamWriter, method: str, reply: Reply) -> None:
    lines = [f"HTTP/1.1 {reply.status} Stub"]
    lines += [f"{name}: {value}" for name, value in reply.headers]
    lines.append(f"Content-Length: {len(reply.body)}" if reply.length else "Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if method != "HEAD":
        writer.write(reply.body)
    await writer.drain()


@pytest.fixture
async def server() -> AsyncIterator[StubServer]:
    stub = await StubServer().start()
    yield stub
    await stub.close()


@pytest.fixture
async def other_server() -> AsyncIterator[StubServer]:
    stub = await StubServer().start()
    yield stub
    await stub.close()


def settings(**values: object) -> OutboundPolicy:
    return OutboundPolicy.from_settings(SimpleNamespace(**values))


async def send(policy: OutboundPolicy, method: str, url: str, **options: Any) -> OutboundResponse:
    """One request under ``policy``, with a guard against hanging the test run."""
    return await asyncio.wait_for(request(policy, method, url, **options), 10)


# --- the address check -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("192.0.0.192", "cloud metadata"),
        ("168.63.129.16", "cloud metadata"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.2.1", "documentation"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fd00::1", "private"),
        ("fc00::1", "private"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "cloud metadata"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("::ffff:169.254.169.254", "IPv4-mapped cloud metadata"),
        ("::127.0.0.1", "IPv4-compatible loopback"),
        ("::8.8.8.8", "reserved"),
        ("64:ff9b::10.0.0.1", "NAT64 private"),
        ("2002:a9fe:a9fe::", "6to4 cloud metadata"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo loopback"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("172.32.0.1", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::8.8.8.8", None),
        ("2002:808:808::", None),
    ],
)
def test_is_forbidden_address_names_the_reason(address: str, reason: str | None) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address)) == reason


def test_policy_from_settings_reads_allow_list_and_caps() -> None:
    policy = settings(
        outbound_allow=["Internal.Example.", "10.0.0.0/8", "127.0.0.1", "fd00::/8"],
        http_max_response_bytes=1000,
        http_timeout_seconds=2,
        http_max_redirects=1,
    )

    assert policy == OutboundPolicy(
        allow_hosts=frozenset({"internal.example"}),
        allow_networks=(
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("127.0.0.1/32"),
            ipaddress.ip_network("fd00::/8"),
        ),
        max_response_bytes=1000,
        timeout_seconds=2.0,
        max_redirects=1,
    )


def test_policy_from_settings_defaults_when_settings_are_missing() -> None:
    assert settings() == OutboundPolicy(
        allow_hosts=frozenset(),
        allow_networks=(),
        max_response_bytes=5 * MIB,
        timeout_seconds=30.0,
        max_redirects=5,
    )


def test_policy_refusal_honours_allowed_hosts_and_networks() -> None:
    policy = settings(outbound_allow=["internal.example", "127.0.0.1/32"])
    ip = ipaddress.ip_address

    assert policy.refusal("INTERNAL.example.", ip("10.1.2.3")) is None
    assert policy.refusal("other.example", ip("10.1.2.3")) == "private"
    assert policy.refusal("127.0.0.1", ip("127.0.0.1")) is None
    assert policy.refusal("::ffff:127.0.0.1", ip("::ffff:127.0.0.1")) is None
    assert policy.refusal("127.0.0.2", ip("127.0.0.2")) == "loopback"
    assert policy.refusal("example.com", ip("93.184.216.34")) is None


# --- requests through the allow-list -----------------------------------------------------


async def test_get_reaches_an_allowed_server(server: StubServer) -> None:
    server.routes["/hello"] = Reply(200, b"hi", (("Content-Type", "text/plain"), ("X-A", "1")))

    response = await send(ALLOW_LOCAL, "GET", server.url("/hello"), params={"q": "a b", "n": 2})

    assert response.status == 200
    assert response.url == server.url("/hello?q=a+b&n=2")
    assert response.headers == {"content-type": "text/plain", "x-a": "1", "content-length": "2"}
    assert response.content == b"hi"
    assert response.text() == "hi"
    assert server.connections == 1
    [received] = server.requests
    assert (received.method, received.target, received.body) == ("GET", "/hello?q=a+b&n=2", b"")
    assert received.headers["host"] == f"127.0.0.1:{server.port}"
    assert received.headers["user-agent"] == "Flowdeck/0.1"


async def test_post_sends_json_and_text_bodies(server: StubServer) -> None:
    server.routes["/in"] = Reply(201)

    await send(ALLOW_LOCAL, "POST", server.url("/in"), json={"a": [1, True, None]})
    await send(ALLOW_LOCAL, "PUT", server.url("/in"), content="plain", headers={"X-B": "2"})

    first, second = server.requests
    assert (first.method, first.body, first.headers["content-type"]) == (
        "POST",
        b'{"a":[1,true,null]}',
        "application/json",
    )
    assert (second.method, second.body, second.headers["x-b"]) == ("PUT", b"plain", "2")


async def test_allowed_hostname_keeps_host_header_and_connects_to_checked_address(
    server: StubServer,
) -> None:
    server.routes["/"] = Reply(204)
    policy = settings(outbound_allow=["localhost"])

    response = await send(policy, "GET", f"http://localhost:{server.port}/")

    assert response.status == 204
    assert [r.headers["host"] for r in server.requests] == [f"localhost:{server.port}"]


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f.1", "127.1"])
async def test_legacy_ipv4_forms_mean_the_address_they_spell(server: StubServer, host: str) -> None:
    server.routes["/"] = Reply(204)

    response = await send(ALLOW_LOCAL, "GET", f"http://{host}:{server.port}/")

    assert response.status == 204
    assert [r.headers["host"] for r in server.requests] == [f"127.0.0.1:{server.port}"]


# --- SSRF refusals without the allow-list ------------------------------------------------


@pytest.fixture
async def loopback_v6(server: StubServer) -> AsyncIterator[StubServer | None]:
    """A listener on [::1] at the same port, where the host has IPv6 loopback."""
    try:
        stub = await StubServer(host="::1").start(server.port)
    except OSError:
        yield None
        return
    yield stub
    await stub.close()


def first_address(host: str) -> str:
    """The address the system resolver gives first for ``host`` (hosts files differ)."""
    return str(socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)[0][4][0])


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("127.0.0.1", "127.0.0.1: loopback"),
        ("localhost", "localhost: loopback"),
        ("0.0.0.0", "0.0.0.0: unspecified"),
        ("[::1]", "::1: loopback"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1: IPv4-mapped loopback"),
        ("2130706433", "127.0.0.1: loopback"),
        ("0177.0.0.1", "127.0.0.1: loopback"),
        ("0x7f.0.0.1", "127.0.0.1: loopback"),
        ("127.1", "127.0.0.1: loopback"),
        ("10.0.0.1", "10.0.0.1: private"),
        ("172.16.0.1", "172.16.0.1: private"),
        ("192.168.1.1", "192.168.1.1: private"),
        ("169.254.169.254", "169.254.169.254: cloud metadata"),
        ("100.64.0.1", "100.64.0.1: carrier-grade NAT"),
        ("[fd00::1]", "fd00::1: private"),
        ("[fe80::1]", "fe80::1: link-local"),
    ],
)
async def test_forbidden_destinations_are_refused_before_connecting(
    server: StubServer, loopback_v6: StubServer | None, host: str, message: str
) -> None:
    server.routes["/"] = Reply(200, b"secret")

    with pytest.raises(OutboundBlocked) as refused:
        await send(STRICT, "GET", f"http://{host}:{server.port}/")

    assert str(refused.value) == f"Refused to connect to {message} address is not allowed."
    assert (server.connections, loopback_v6.connections if loopback_v6 else 0) == (0, 0)


async def test_other_schemes_are_refused() -> None:
    with pytest.raises(OutboundBlocked) as refused:
        await send(ALLOW_LOCAL, "GET", "file:///etc/passwd")

    assert str(refused.value) == "Refused the URL scheme 'file': only http and https are allowed."
    assert refused.value.reason == "scheme"


# --- redirects ---------------------------------------------------------------------------


def redirect(location: str, status: int = 302) -> Reply:
    return Reply(status, b"", (("Location", location),))


@pytest.fixture
async def second_loopback() -> AsyncIterator[StubServer]:
    stub = await StubServer(host="127.0.0.2").start()
    yield stub
    await stub.close()


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254: cloud metadata"),
        ("http://127.0.0.2:{port}/", "127.0.0.2: loopback"),
        ("http://0x7f.0.0.2:{port}/", "127.0.0.2: loopback"),
        ("//2130706434:{port}/", "127.0.0.2: loopback"),
        ("http://[::ffff:127.0.0.2]:{port}/", "::ffff:127.0.0.2: IPv4-mapped loopback"),
    ],
)
async def test_every_redirect_hop_is_checked(
    server: StubServer, second_loopback: StubServer, location: str, message: str
) -> None:
    server.routes["/start"] = redirect(location.format(port=second_loopback.port))

    with pytest.raises(OutboundBlocked) as refused:
        await send(ALLOW_LOCAL, "GET", server.url("/start"))

    assert str(refused.value) == f"Refused to connect to {message} address is not allowed."
    assert [r.target for r in server.requests] == ["/start"]
    assert second_loopback.connections == 0


async def test_redirect_to_another_scheme_is_refused(server: StubServer) -> None:
    server.routes["/start"] = redirect("gopher://127.0.0.1/")

    with pytest.raises(OutboundBlocked) as refused:
        await send(ALLOW_LOCAL, "GET", server.url("/start"))

    assert str(refused.value) == "Refused the URL scheme 'gopher': only http and https are allowed."


@pytest.mark.parametrize(
    ("method", "status", "after"),
    [
        ("POST", 301, ("GET", b"")),
        ("POST", 302, ("GET", b"")),
        ("POST", 303, ("GET", b"")),
        ("PUT", 303, ("GET", b"")),
        ("PUT", 302, ("PUT", b"data")),
        ("POST", 307, ("POST", b"data")),
        ("POST", 308, ("POST", b"data")),
    ],
)
async def test_redirects_change_method_and_body_as_browsers_do(
    server: StubServer, method: str, status: int, after: tuple[str, bytes]
) -> None:
    server.routes["/old"] = redirect("/new", status)
    server.routes["/new"] = Reply(200, b"done")

    response = await send(ALLOW_LOCAL, method, server.url("/old"), content="data")

    assert (response.status, response.url, response.content) == (200, server.url("/new"), b"done")
    first, second = server.requests
    assert (first.method, first.body) == (method, b"data")
    assert (second.target, second.method, second.body) == ("/new", *after)
    assert ("content-length" in second.headers) == (after[1] != b"")


async def test_authorization_is_dropped_on_cross_origin_redirects(
    server: StubServer, other_server: StubServer
) -> None:
    server.routes["/a"] = redirect("/b")
    server.routes["/b"] = redirect(other_server.url("/c"))
    other_server.routes["/c"] = Reply(200, b"ok")
    headers = {"Authorization": "Bearer t0ken", "X-Keep": "yes"}

    await send(ALLOW_LOCAL, "GET", server.url("/a"), headers=headers)

    assert [(r.target, r.headers.get("authorization")) for r in server.requests] == [
        ("/a", "Bearer t0ken"),
        ("/b", "Bearer t0ken"),
    ]
    [last] = other_server.requests
    assert (last.headers.get("authorization"), last.headers["x-keep"]) == (None, "yes")
    assert last.headers["host"] == f"127.0.0.1:{other_server.port}"


async def test_redirects_stop_at_the_limit(server: StubServer) -> None:
    for hop in range(3):
        server.routes[f"/{hop}"] = redirect(f"/{hop + 1}")
    server.routes["/3"] = Reply(200, b"end")

    with pytest.raises(OutboundError) as failed:
        await send(
            settings(outbound_allow=["127.0.0.1"], http_max_redirects=2), "GET", server.url("/0")
        )
    reached = await send(
        settings(outbound_allow=["127.0.0.1"], http_max_redirects=3), "GET", server.url("/0")
    )

    assert str(failed.value) == "Too many redirects (more than 2) from 127.0.0.1."
    assert reached.content == b"end"


async def test_redirects_are_not_followed_when_asked_not_to(server: StubServer) -> None:
    server.routes["/old"] = redirect("/new")

    response = await send(ALLOW_LOCAL, "GET", server.url("/old"), follow_redirects=False)

    assert (response.status, response.headers["location"]) == (302, "/new")
    assert [r.target for r in server.requests] == ["/old"]


# --- caps --------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [True, False])
async def test_a_response_over_the_size_cap_is_aborted(server: StubServer, length: bool) -> None:
    server.routes["/big"] = Reply(200, b"x" * (6 * MIB), length=length)
    policy = settings(outbound_allow=["127.0.0.1/32"])

    with pytest.raises(ResponseTooLarge) as too_large:
        await send(policy, "GET", server.url("/big"))

    assert str(too_large.value) == "Response from 127.0.0.1 is larger than 5242880 bytes."


async def test_head_is_not_refused_for_the_size_it_declares(server: StubServer) -> None:
    server.routes["/big"] = Reply(200, b"x" * (6 * MIB))

    response = await send(ALLOW_LOCAL, "HEAD", server.url("/big"))

    assert (response.status, response.content) == (200, b"")
    assert response.headers == {"content-length": "6291456"}


async def test_a_response_at_the_size_cap_is_read(server: StubServer) -> None:
    server.routes["/exact"] = Reply(200, b"y" * 1000, length=False)
    server.routes["/over"] = Reply(200, b"y" * 1001, length=False)
    policy = settings(outbound_allow=["127.0.0.1/32"], http_max_response_bytes=1000)

    response = await send(policy, "GET", server.url("/exact"))
    with pytest.raises(ResponseTooLarge) as too_large:
        await send(policy, "GET", server.url("/over"))

    assert response.content == b"y" * 1000
    assert str(too_large.value) == "Response from 127.0.0.1 is larger than 1000 bytes."


async def test_a_server_that_never_answers_times_out(server: StubServer) -> None:
    server.routes["/slow"] = None
    policy = settings(outbound_allow=["127.0.0.1/32"], http_timeout_seconds=0.5)

    with pytest.raises(OutboundTimeout) as timed_out:
        await send(policy, "GET", server.url("/slow"))

    assert str(timed_out.value) == "No complete response from 127.0.0.1 within 0.5 seconds."
    assert [r.target for r in server.requests] == ["/slow"]


async def test_a_closed_port_is_an_outbound_error(server: StubServer) -> None:
    port = server.port
    await server.close()

    with pytest.raises(OutboundError) as failed:
        await send(ALLOW_LOCAL, "GET", f"http://127.0.0.1:{port}/")

    assert type(failed.value) is OutboundError
    assert isinstance(failed.value.__cause__, httpcore.ConnectError)


# --- TLS: the pinned connection still speaks to the hostname ------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, *SELF_SIGNED_FOR_LOCALHOST, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_uses_the_hostname_for_sni_and_verification(
    certificate: tuple[Path, Path],
) -> None:
    names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    context.sni_callback = lambda _socket, name, _context: names.append(name)
    tls_server = await StubServer(ssl_context=context).start()
    url = f"https://localhost:{tls_server.port}/"
    try:
        with pytest.raises(OutboundError) as failed:
            await send(settings(outbound_allow=["localhost"]), "GET", url)
    finally:
        await tls_server.close()

    assert names == ["localhost"]
    connect_error = failed.value.__cause__
    assert isinstance(connect_error, httpcore.ConnectError)
    [verification] = connect_error.args
    assert isinstance(verification, ssl.SSLCertVerificationError)
    assert verification.verify_code == 18  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    assert tls_server.requests == []
